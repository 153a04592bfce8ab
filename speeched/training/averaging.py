"""Checkpoint weight averaging: the mean of the last few checkpoints usually decodes better than any one.

Inputs are training checkpoints (`checkpoints/step-N`, model in `model/model.safetensors`) or model
directories (`model.safetensors`). Float tensors are summed in fp32 one checkpoint at a time (memory
stays at two copies of the model, whatever N is) and cast back to their dtype; integer and bool
buffers (step counters, position ids) cannot be averaged and are taken from the newest checkpoint.
The output is a complete model directory: config and generation config from the newest checkpoint,
tokenizer and feature extractor files from `assets_from` (or the run's `best/`), weights as safetensors.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from speeched.errors import SpeechedError
from speeched.training.checkpoint import (
    META,
    WEIGHTS,
    CheckpointManager,
    atomic_export,
    checkpoint_model_dir,
)

logger = logging.getLogger("speeched")

#: Files taken from the newest checkpoint's model dir, not from the assets dir.
FROM_NEWEST = ("config.json", "generation_config.json")
_WEIGHT_FILE = re.compile(r"^(model.*\.safetensors|pytorch_model.*\.bin|.*\.safetensors\.index\.json)$")
_STEP = re.compile(r"^step-(\d+)$")


class AveragingError(SpeechedError, ValueError):
    """The checkpoints cannot be averaged; the message names the checkpoint and what to do."""


@dataclass(frozen=True)
class Source:
    """One input: where it was given, its model directory and (for training checkpoints) its step."""

    given: Path
    model_dir: Path
    step: int | None


def resolve_source(path: str | Path) -> Source:
    """A training checkpoint dir or a model dir -> the folder holding model.safetensors (and its step)."""
    p = Path(path)
    if not p.exists():
        raise AveragingError(f"checkpoint {p} does not exist")
    if (checkpoint_model_dir(p) / WEIGHTS).is_file():
        step = None
        try:
            step = int(json.loads((p / META).read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            m = _STEP.match(p.name)
            step = int(m.group(1)) if m else None
        return Source(p, checkpoint_model_dir(p), step)
    if (p / WEIGHTS).is_file():
        return Source(p, p, None)
    if (p / "model.safetensors.index.json").is_file() or (
        p / "model" / "model.safetensors.index.json"
    ).is_file():
        raise AveragingError(f"checkpoint {p} is sharded; averaging supports single-file model.safetensors")
    raise AveragingError(
        f"checkpoint {p} has no {WEIGHTS} (nor model/{WEIGHTS}): give checkpoints/step-N dirs or model dirs"
    )


def _newest(sources: list[Source]) -> Source:
    """Highest step among training checkpoints; the last one given when no steps are known."""
    stepped = [s for s in sources if s.step is not None]
    return max(stepped, key=lambda s: s.step) if stepped else sources[-1]


def average_state_dicts(sources: list[Source]) -> dict[str, torch.Tensor]:
    """Mean of the float tensors (in fp32), integer/bool tensors from the newest; keys and shapes must match."""
    if not sources:
        raise AveragingError("no checkpoints to average")
    newest = _newest(sources)
    ref_src = sources[0]
    sums: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    taken: dict[str, torch.Tensor] = {}
    for src in sources:
        with safe_open(str(src.model_dir / WEIGHTS), framework="pt") as f:
            if src is ref_src:
                names = f.keys()  # safe_open handles are not iterable
                for k in names:
                    t = f.get_tensor(k)
                    dtypes[k], shapes[k] = t.dtype, tuple(t.shape)
                    if t.is_floating_point():
                        sums[k] = t.to(torch.float32)
            else:
                _add(src, ref_src, f, sums, shapes)
        if src is newest:
            with safe_open(str(src.model_dir / WEIGHTS), framework="pt") as f:
                names = f.keys()
                taken = {k: f.get_tensor(k) for k in names if k not in sums}
    n = float(len(sources))
    out = {k: (v / n).to(dtypes[k]) for k, v in sums.items()}
    out.update(taken)
    return dict(sorted(out.items()))


def _add(
    src: Source,
    ref_src: Source,
    f: Any,
    sums: dict[str, torch.Tensor],
    shapes: dict[str, tuple[int, ...]],
) -> None:
    """Add one checkpoint's float tensors to `sums`, refusing any key or shape that differs from the first."""
    keys = set(f.keys())
    missing, extra = sorted(set(shapes) - keys), sorted(keys - set(shapes))
    if missing or extra:
        parts = [f"missing {missing[:5]}" if missing else "", f"unexpected {extra[:5]}" if extra else ""]
        raise AveragingError(
            f"checkpoint {src.given} does not match {ref_src.given}: {'; '.join(p for p in parts if p)} "
            "(only checkpoints of the same model can be averaged)"
        )
    for k in sorted(keys):
        t = f.get_tensor(k)
        if tuple(t.shape) != shapes[k]:
            raise AveragingError(
                f"checkpoint {src.given}: {k} has shape {list(t.shape)} but {list(shapes[k])} in "
                f"{ref_src.given} (only checkpoints of the same architecture can be averaged)"
            )
        if k in sums:
            if not t.is_floating_point():
                raise AveragingError(f"checkpoint {src.given}: {k} is {t.dtype}, expected a float tensor")
            sums[k] += t.to(torch.float32)


#: config.json keys an exported model has and a training checkpoint's config lacks (written at export).
RUN_FACTS = ("training_durations", "decoding")


def _carry_run_facts(exported: Path, target: Path) -> None:
    """Copy RUN_FACTS from an exported model's config (the run's best/) where the averaged config lacks them:
    long-form transcription reads the training duration range, eval/transcribe the decoding defaults."""
    if not (exported.is_file() and target.is_file()) or exported == target:
        return
    have, given = json.loads(target.read_text()), json.loads(exported.read_text())
    missing = {k: given[k] for k in RUN_FACTS if k in given and k not in have}
    if missing:
        target.write_text(json.dumps({**have, **missing}, indent=2, sort_keys=True) + "\n")


def _find_assets(sources: list[Source], assets_from: Path | None) -> Path:
    """Where the tokenizer/preprocessor files come from: explicit dir, else a run's best/, else an input."""
    if assets_from is not None:
        if not (Path(assets_from) / "preprocessor_config.json").is_file():
            raise AveragingError(
                f"--assets-from {assets_from} has no preprocessor_config.json: give a model directory"
            )
        return Path(assets_from)
    candidates = []
    for s in reversed(sources):
        candidates.append(s.model_dir)
        if s.step is not None:  # run/checkpoints/step-N -> run/best
            candidates.append(s.given.parent.parent / "best")
    for c in candidates:
        if (c / "preprocessor_config.json").is_file():
            return c
    raise AveragingError(
        "found no tokenizer/feature extractor files (no preprocessor_config.json in the inputs or the run's "
        "best/): pass --assets-from MODEL_DIR"
    )


def average_checkpoints(
    checkpoints: list[str | Path], out: str | Path, assets_from: str | Path | None = None
) -> Path:
    """Average `checkpoints` into the model directory `out` (written next to it, then swapped in)."""
    sources = [resolve_source(c) for c in checkpoints]
    if not sources:
        raise AveragingError("no checkpoints to average")
    assets = _find_assets(sources, Path(assets_from) if assets_from is not None else None)
    newest = _newest(sources)
    weights = average_state_dicts(sources)
    out = Path(out)

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        for f in sorted(assets.iterdir()):
            if f.is_file() and not _WEIGHT_FILE.match(f.name) and f.name not in FROM_NEWEST:
                shutil.copy2(f, tmp / f.name)
        for name in FROM_NEWEST:
            if (newest.model_dir / name).is_file():
                shutil.copy2(newest.model_dir / name, tmp / name)
        _carry_run_facts(assets / "config.json", tmp / "config.json")
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})
        record = {"averaged": [str(s.given) for s in sources], "newest": str(newest.given)}
        (tmp / "averaged.json").write_text(json.dumps(record, indent=2))

    atomic_export(out, write)
    logger.info("averaged %d checkpoints into %s", len(sources), out)
    return out


def average_last_checkpoints(
    run_dir: str | Path, k: int, out: str | Path | None = None, assets_from: str | Path | None = None
) -> Path:
    """Average the newest `k` complete checkpoints of a run into `out` (default `run_dir/averaged`)."""
    if k < 1:
        raise AveragingError(f"average_last must be >= 1, got {k}")
    found = CheckpointManager(run_dir, keep_last=max(k, 1)).checkpoints()
    if not found:
        raise AveragingError(f"no complete checkpoint under {Path(run_dir) / 'checkpoints'}")
    if len(found) < k:
        logger.warning("average_last=%d but only %d checkpoints exist: averaging those", k, len(found))
    chosen = [c.path for c in found[-k:]]
    return average_checkpoints(chosen, Path(out) if out else Path(run_dir) / "averaged", assets_from)
