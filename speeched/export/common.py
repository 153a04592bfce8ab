"""What every export shares: the error type, loading the source model dir, refusing to overwrite output."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from speeched.errors import UsageError
from speeched.modeling.model_dir import load_model_dir
from speeched.modeling.prompting import decoder_prompt

logger = logging.getLogger("speeched")

CARD_JSON = "model_card.json"  # the machine-readable facts behind README.md (see model_card.py)
TOKENIZER_AND_FEATURES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
    "added_tokens.json",
    "preprocessor_config.json",
)


class ExportError(UsageError):
    """The model cannot be exported as asked (exit 2); the message says what to do instead."""


def check_output(out: Path) -> None:
    """Never write into something that exists: an export is a fresh directory."""
    if out.exists():
        raise ExportError(
            f"output path {out} already exists: pass a new directory (an export never overwrites), "
            "or remove the old one first"
        )
    if not out.parent.exists():
        raise ExportError(f"the parent directory of {out} does not exist: create {out.parent} first")


def load_source(model_dir: Path) -> Any:
    """`speeched.modeling.model_dir.load_model_dir` with its errors turned into one ExportError."""
    if not model_dir.is_dir() or not (model_dir / "config.json").is_file():
        raise ExportError(
            f"{model_dir} is not a model directory (no config.json): pass a directory written by "
            "`speeched init` or `speeched train` (e.g. runs/NAME/best)"
        )
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ExportError(f"{model_dir}/config.json is not readable JSON: {err}") from err
    if config.get("model_type") != "speech-encoder-decoder":
        raise ExportError(
            f"{model_dir} holds a {config.get('model_type')!r} model, not a speeched speech encoder-decoder: "
            "pass a directory written by `speeched init` or `speeched train`"
        )
    try:
        return load_model_dir(model_dir, "cpu")
    except (ValueError, OSError) as err:
        raise ExportError(f"cannot load {model_dir}: {err}") from err


def copy_assets(src: Path, out: Path) -> None:
    """Tokenizer and feature extractor files, as the source model dir has them."""
    for name in TOKENIZER_AND_FEATURES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)


def read_card(model_dir: Path) -> dict[str, Any]:
    """The facts `write_model_card` stored (metrics per decoding, data, recipe); {} when there are none."""
    path = model_dir / CARD_JSON
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        logger.warning("%s is not valid JSON; the export's card and warnings go without it", path)
        return {}


def known_scores(model_dir: Path) -> list[dict[str, Any]]:
    """Dev scores recorded with the model: the card's metrics, else the trainer's best.json."""
    metrics = list(read_card(model_dir).get("metrics") or [])
    best = model_dir / "best.json"
    if not metrics and best.is_file():
        try:
            data = json.loads(best.read_text())
            cfg = json.loads((model_dir / "config.json").read_text())
            metrics = [
                {
                    "metric": data.get("metric"),
                    "value": data.get("value"),
                    "split": "dev",
                    "decoding": cfg.get("decoding") or {},
                }
            ]
        except (OSError, ValueError):
            pass
    return metrics


def score_for(metrics: list[dict[str, Any]], ctc: bool) -> str | None:
    """'wer=0.025 (dev)' for the first score measured with (ctc=True) or without CTC weight."""
    for m in metrics:
        lam = float((m.get("decoding") or {}).get("ctc_weight", 0.0) or 0.0)
        if (lam > 0) == ctc and m.get("value") is not None:
            return (
                f"{m.get('metric', 'score')}={m['value']:.4g} ({m.get('dataset') or m.get('split') or 'dev'})"
            )
    return None


def probe_arrays(sampling_rate: int, seconds: tuple[float, ...] = (1.0, 0.6)) -> list[np.ndarray]:
    """Waveforms of different lengths (so padding and masks are traced, not constant-folded)."""
    rng = np.random.default_rng(0)
    return [rng.standard_normal(int(sampling_rate * s)).astype(np.float32) * 0.1 for s in seconds]


def prefix_ids(model: Any, tokenizer: Any) -> list[int]:
    if not getattr(model.config, "decoder_prompt", None):
        return []
    try:
        return list(decoder_prompt(model, tokenizer).ids())
    except ValueError as err:
        raise ExportError(f"cannot build the model's decoder prompt: {err}") from err
