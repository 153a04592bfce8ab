"""`speeched train --dry-run`: everything a real run checks before its first step, then the plan."""

from __future__ import annotations

from typing import Any


def dry_run(recipe: Any) -> str:
    """Validate the recipe (already done by load_recipe), scan data, compose the model; return the plan."""
    from speeched.data.scan import scan
    from speeched.data.sources import load_source
    from speeched.data.text import build_normalizer
    from speeched.training.build import build_model, target_texts

    lines = [f"task: {recipe.task}", f"output_dir: {recipe.output_dir}"]
    normalize = build_normalizer(recipe.data.target_normalization)
    train_utts, dev_utts = [], []
    for src in recipe.data.train:
        res = scan(load_source(src), src.filters, task=recipe.task, normalize_target=normalize)
        lines.append(f"train {src.name or src.path}: {res.summary()}")
        train_utts.extend(res.kept)
    for src in recipe.data.dev:
        res = scan(load_source(src), src.filters, task=recipe.task)
        lines.append(f"dev {src.name or src.path}: {res.summary()}")
        dev_utts.extend(res.kept)
    hours = sum(u.duration or 0 for u in train_utts) / 3600
    texts = [
        normalize(t) if normalize else t for t in target_texts(train_utts, "asr")
    ]  # CTC reads transcripts
    loaded = build_model(recipe, texts)
    model = loaded.model
    n = sum(p.numel() for p in model.parameters())
    cfg = model.config
    ctc = f"on (λ={cfg.ctc_weight:.2f}, {len(cfg.ctc_vocab)} units)" if cfg.ctc_vocab else "off"
    from speeched.modeling.compose import format_init_report
    from speeched.modeling.prompting import decoder_prompt, describe

    if getattr(model, "init_report", None):
        lines.append(format_init_report(model.init_report))
    prompt = decoder_prompt(model, loaded.tokenizer)
    prompt.check([*train_utts, *dev_utts])  # a missing or unknown language stops here, naming the line
    lines.append(describe(prompt.spec, loaded.tokenizer))
    lines += smoke_run(loaded, train_utts[:2], recipe)
    lines += [
        f"model: {cfg.encoder.model_type} encoder + {cfg.decoder.model_type} decoder, {n / 1e6:.1f} M parameters, "
        f"coupling={cfg.coupling}, ctc={ctc}",
        f"special tokens: start={cfg.decoder_start_token_id} eos={cfg.eos_token_id} pad={cfg.pad_token_id}",
        f"training audio: {hours:.2f} h; batches of ≤{recipe.data.batching.max_duration} s",
        f"steps: {recipe.train.max_steps or f'{recipe.train.epochs} epochs'}, grad_accum={recipe.train.grad_accum}, "
        f"lr groups={recipe.optim.group_lrs()}",
        unfreeze_plan(recipe, model),
        "dry run OK: nothing was trained",
    ]
    return "\n".join(lines)


def unfreeze_plan(recipe: Any, model: Any) -> str:
    """The staged-unfreezing stages (group, start step, lr). With `epochs`, a preset's start steps depend on
    the batching, resolved when training starts: shown as percentages of the total steps then."""
    from speeched.training.optim import parameter_group, unfreeze_stages

    o = recipe.optim
    random_init = set((getattr(model, "init_report", None) or {}).get("random_init_parameters", []))
    present = {parameter_group(name, random_init) for name, _ in model.named_parameters()}
    if recipe.finetune.method == "freeze_encoder":
        present.discard("encoder")
    percent = recipe.train.max_steps is None and isinstance(o.unfreeze, str)
    starts = o.unfreeze_starts(100 if percent else recipe.train.max_steps or 0)
    stages = unfreeze_stages(starts, o.group_lrs(), o.unfreeze_warmup, present, percent=percent)
    name = o.unfreeze if isinstance(o.unfreeze, str) else "by step"
    return f"unfreeze ({name}): " + "; ".join(stages)


def smoke_run(loaded: Any, utts: list[Any], recipe: Any) -> list[str]:
    """Forward, backward and generate on 2 real training samples; report encoder frames per second of audio
    and warn where the shapes cannot work (CTC targets longer than the frames, very long LLM prefixes)."""
    import torch

    from speeched.data.audio import load_audio
    from speeched.modeling.ctc import encode_ctc
    from speeched.training.build import training_collator

    if not utts:
        return ["smoke run: skipped (no training utterances)"]
    model, fe = loaded.model, loaded.feature_extractor
    sr = int(fe.sampling_rate)
    collator = training_collator(model, loaded.tokenizer, fe, recipe.task)
    batch = collator(
        [{"id": u.id, "array": load_audio(u, sr), "sampling_rate": sr, "utterance": u} for u in utts]
    )
    keys = ("input_values", "input_features", "attention_mask", "labels", "decoder_input_ids", "prompt_ids")
    inputs = {k: batch[k] for k in keys if k in batch}
    model.train()
    lam = model.config.ctc_weight if model.config.ctc_vocab else 0.0
    out = model(**inputs, ctc_labels=batch["transcripts"] if lam > 0 else None)
    out.loss.backward()
    model.zero_grad(set_to_none=True)
    model.eval()
    gen_inputs = {
        k: v for k, v in inputs.items() if k in ("input_values", "input_features", "attention_mask")
    }
    with torch.no_grad():
        enc = model.encode(**gen_inputs)
        generated = model.generate(**gen_inputs, max_new_tokens=8)
    seconds = batch["audio_seconds"]
    frames = (
        int(enc.attention_mask.sum())
        if enc.attention_mask is not None
        else enc.last_hidden_state.shape[1] * 2
    )
    raw = int(enc.raw_attention_mask.sum()) if enc.raw_attention_mask is not None else frames
    lines = [
        f"smoke run on 2 samples: loss {out.loss.item():.3f}, backward ok, generate ok ({tuple(generated.shape)}); "
        f"encoder: {raw / seconds:.1f} frames/s, decoder input: {frames / seconds:.1f} frames/s"
    ]
    if model.config.ctc_vocab:
        targets = encode_ctc(batch["transcripts"], model.config.ctc_vocab, model.config.ctc_units)
        lengths = model.ctc_frame_lengths(enc).tolist()
        short = [u.id for u, t, n in zip(utts, targets, lengths, strict=True) if len(t) > n]
        if short:
            lines.append(
                f"WARNING: CTC targets longer than the encoder output for {short}: use ctc_units=word or less "
                "subsampling"
            )
    if model.config.coupling == "prefix" and frames / seconds > 25:
        lines.append(
            f"WARNING: {frames / seconds:.0f} prefix frames per second of audio: add model.adaptor_layers to "
            "shorten the LLM's input"
        )
    return lines
