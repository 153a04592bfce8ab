"""The model card of what training exports (`best/`, `averaged/`): facts only the trainer knows.

`card_info(...)` assembles the `info` of `speeched.export.write_model_card` (its docstring lists the keys):
the composition's sources, task and languages, every data source with hours and utterances, the recipe,
dev metrics with their normaliser and decoding, the training compute, and whether the speech is
synthetic (a `speeched data synth` corpus: `corpus.json` next to the manifest). The card itself (the
composition read from config.json and the weights) is written by the export package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from speeched.data.synth import METADATA as SYNTH_METADATA

__all__ = ["card_info", "data_entry", "is_synthetic", "metric_entries"]


def data_entry(src: Any, role: str, seconds: float | None, utterances: int | None) -> dict[str, Any]:
    """One row of the card's data table."""
    hours = None if seconds is None or not np.isfinite(seconds) else round(float(seconds) / 3600.0, 4)
    return {
        "name": src.name or src.path,
        "path": src.path,
        "role": role,
        "hours": hours,
        "utterances": utterances,
    }


def is_synthetic(sources: list[Any], base_dir: str | None = None) -> bool:
    """Every train source is a `speeched data synth` corpus (its corpus.json lies next to the manifest)."""

    def synthetic(src: Any) -> bool:
        path = Path(src.path)
        if base_dir and not path.is_absolute():
            path = Path(base_dir) / path
        folder = path if path.is_dir() else path.parent
        return (folder / SYNTH_METADATA).is_file()

    return bool(sources) and all(synthetic(s) for s in sources)


def metric_entries(
    results: dict[str, dict[str, Any]], recipe: Any, ctc_weight: float | None = None
) -> list[dict[str, Any]]:
    """{dev name: metrics} -> card rows (every numeric metric), each with its normaliser and decoding."""
    e = recipe.eval
    decoding = {"num_beams": e.num_beams, "ctc_weight": e.ctc_weight if ctc_weight is None else ctc_weight}
    rows = []
    for dev, metrics in results.items():
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name in _METRICS:
                rows.append(
                    {"metric": name, "value": float(value), "dataset": dev, "normalizer": e.normalizer,
                     "decoding": dict(decoding)}
                )  # fmt: skip
    return rows


_METRICS = ("wer", "cer", "bleu", "chrf", "wer_percent", "cer_percent")


def _languages(recipe: Any, examples: list[Any]) -> list[str]:
    """The recipe's languages, else those of the examples (one per distinct (lang, tgt_lang) pair)."""
    langs = [x for x in (recipe.languages.src_lang, recipe.languages.tgt_lang) if x]
    if not langs:
        langs = [v for u in examples for v in (getattr(u, "lang", None), getattr(u, "tgt_lang", None)) if v]
    return list(dict.fromkeys(langs))


def card_info(
    recipe: Any,
    model: Any,
    data: list[dict[str, Any]],
    examples: list[Any],
    metrics: list[dict[str, Any]],
    compute: dict[str, Any],
    synthetic: bool,
    note: str | None = None,
) -> dict[str, Any]:
    """The `info` dict of `write_model_card` for a model this run exported."""
    cfg = model.config
    enc = recipe.model.encoder or getattr(cfg.encoder, "_name_or_path", None) or recipe.model.path
    dec = recipe.model.decoder or getattr(cfg.decoder, "_name_or_path", None) or recipe.model.path
    info: dict[str, Any] = {
        "encoder": str(enc or "?"),
        "decoder": str(dec or "?"),
        "task": recipe.task,
        "language": _languages(recipe, examples),
        "data": data,
        "recipe": recipe.model_dump(mode="json"),
        "metrics": metrics,
        "compute": compute,
        "synthetic": synthetic,
    }
    if note:
        info["limitations"] = [note]
    return info


def compute_info(accelerator: Any, steps: int, wall_seconds: float) -> dict[str, Any]:
    device = accelerator.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "device": name,
        "processes": accelerator.num_processes,
        "precision": accelerator.mixed_precision,
        "steps": steps,
        "wall_seconds": round(wall_seconds, 1),
    }
