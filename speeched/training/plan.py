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
    train_utts = []
    for src in recipe.data.train:
        res = scan(load_source(src), src.filters, task=recipe.task, normalize_target=normalize)
        lines.append(f"train {src.name or src.path}: {res.summary()}")
        train_utts.extend(res.kept)
    for src in recipe.data.dev:
        res = scan(load_source(src), src.filters, task=recipe.task)
        lines.append(f"dev {src.name or src.path}: {res.summary()}")
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

    if getattr(model, "init_report", None):
        lines.append(format_init_report(model.init_report))
    lines += [
        f"model: {cfg.encoder.model_type} encoder + {cfg.decoder.model_type} decoder, {n / 1e6:.1f} M parameters, "
        f"coupling={cfg.coupling}, ctc={ctc}",
        f"special tokens: start={cfg.decoder_start_token_id} eos={cfg.eos_token_id} pad={cfg.pad_token_id}",
        f"training audio: {hours:.2f} h; batches of ≤{recipe.data.batching.max_duration} s",
        f"steps: {recipe.train.max_steps or f'{recipe.train.epochs} epochs'}, grad_accum={recipe.train.grad_accum}, "
        f"lr groups={recipe.optim.group_lrs()}",
        "dry run OK: nothing was trained",
    ]
    return "\n".join(lines)
