"""PNG training curves from `metrics.jsonl`: loss, learning rates and one plot per dev metric.

Uses matplotlib's object API with the Agg canvas (no pyplot): no display needed and no global
backend switch for whoever imported us.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from speeched.training.metrics_log import read_metrics


def _series(records: list[dict[str, Any]], split: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric in one split; null (non-finite) points are left out; last write wins."""
    points: dict[int, float] = {}
    for r in records:
        value = r.get("values", {}).get(key)
        if r["split"] == split and isinstance(value, (int, float)) and not isinstance(value, bool):
            points[r["step"]] = float(value)
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def _save(
    lines: dict[str, tuple[list[int], list[float]]], title: str, ylabel: str, path: Path, log_y: bool
) -> bool:
    lines = {label: xy for label, xy in lines.items() if xy[0]}
    if not lines:
        return False
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, (steps, values) in lines.items():
        ax.plot(steps, values, label=label, marker="o" if len(steps) < 30 else None, markersize=3)
    if log_y and all(v > 0 for _, vals in lines.values() for v in vals):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    return True


PLOTTED_METRICS = {
    "wer_percent",
    "cer_percent",
    "raw_wer_percent",
    "raw_cer_percent",
    "bleu",
    "chrf",
    "length_ratio",
}


def plot_training_curves(
    metrics_jsonl: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Write loss.png, lr.png and <metric>.png (one line per dev set) into `out_dir`; return the files written."""
    records = read_metrics(metrics_jsonl)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev_splits = sorted({r["split"] for r in records if r["split"] != "train"})
    keys_by_split: dict[str, set[str]] = defaultdict(set)
    for r in records:
        keys_by_split[r["split"]].update(r.get("values", {}))
    written: list[Path] = []

    loss = {"train": _series(records, "train", "loss")}
    loss.update({s: _series(records, s, "loss") for s in dev_splits})
    if _save(loss, "loss", "loss", out / "loss.png", log_y=True):
        written.append(out / "loss.png")

    lr_keys = sorted(k for k in keys_by_split["train"] if k == "lr" or k.startswith("lr_"))
    lrs = {k: _series(records, "train", k) for k in lr_keys}
    if _save(lrs, "learning rate", "lr", out / "lr.png", log_y=False):
        written.append(out / "lr.png")

    # Quality metrics only: counts and timings are in metrics.jsonl, nobody wants a plot of them.
    metrics = sorted({k for s in dev_splits for k in keys_by_split[s]} & PLOTTED_METRICS)
    for metric in metrics:
        curves = {s.removeprefix("dev/"): _series(records, s, metric) for s in dev_splits}
        target = out / (re.sub(r"[^\w.-]", "_", metric) + ".png")
        if _save(curves, f"dev {metric}", metric, target, log_y=False):
            written.append(target)
    return written
