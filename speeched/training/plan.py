"""`speeched train --dry-run`: everything a real run checks before its first step, then the plan.

It calls `prepare_run` (run.py), the function `train` builds with, so it refuses exactly what training
refuses; then a smoke run on 2 samples. Nothing is written.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from speeched.data.audio import load_audio
from speeched.modeling.compose import format_init_report
from speeched.modeling.ctc import encode_ctc
from speeched.training.optim import parameter_group, unfreeze_stages
from speeched.training.run import prepare_run
from speeched.training.trainer import INPUT_KEYS


def dry_run(recipe: Any, resume: str | None = None) -> str:
    """Build the run as training would (without writing anything); return the plan."""
    run = prepare_run(recipe, resume=resume, dry_run=True)
    model = run.model
    lines = [f"task: {recipe.task}", f"output_dir: {recipe.output_dir}", *run.lines]
    if run.resume_from is not None:
        lines.append(f"resume from: {run.resume_from.path} (step {run.resume_from.step})")
    hours = float(np.nansum(run.data.durations)) / 3600  # the table's column; a sample's when streamed
    n = sum(p.numel() for p in model.parameters())
    cfg = model.config
    ctc = f"on (λ={cfg.ctc_weight:.2f}, {len(cfg.ctc_vocab)} units)" if cfg.ctc_vocab else "off"
    if getattr(model, "init_report", None):
        lines.append(format_init_report(model.init_report))
    lines += (
        smoke_run(run, run.train_utts[:2])
        if run.train_utts is not None
        else ["smoke run: skipped (streamed data: the first batch comes from the stream's workers)"]
    )
    lines += [
        f"model: {cfg.encoder.model_type} encoder + {cfg.decoder.model_type} decoder, {n / 1e6:.1f} M parameters, "
        f"coupling={cfg.coupling}, ctc={ctc}",
        f"special tokens: start={cfg.decoder_start_token_id} eos={cfg.eos_token_id} pad={cfg.pad_token_id}",
        f"training audio: {hours:.2f} h{' in the sampled rows' if run.streamed else ''} (durations {run.training_durations}); batches of "
        f"≤{recipe.data.batching.max_duration} s",
        f"steps: {run.total_steps}, grad_accum={recipe.train.grad_accum}, lr groups={recipe.optim.group_lrs()}",
        unfreeze_plan(recipe, model),
        "dry run OK: nothing was trained",
    ]
    return "\n".join(lines)


def unfreeze_plan(recipe: Any, model: Any) -> str:
    """The staged-unfreezing stages (group, start step, lr). With `epochs`, a preset's start steps depend on
    the batching, resolved when training starts: shown as percentages of the total steps then."""
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


def smoke_run(run: Any, utts: list[Any]) -> list[str]:
    """Forward, backward and generate on 2 real training samples through the training collator; report
    encoder frames per second of audio and warn where the shapes cannot work (CTC targets longer than the
    frames, very long LLM prefixes)."""
    if not utts:
        return ["smoke run: skipped (no training utterances)"]
    model, sr = run.model, int(run.feature_extractor.sampling_rate)
    batch = run.collator(
        [{"id": u.id, "array": load_audio(u, sr), "sampling_rate": sr, "utterance": u} for u in utts]
    )
    inputs = {k: batch[k] for k in INPUT_KEYS if k in batch}
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
