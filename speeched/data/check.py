"""`speeched data check` logic: scan a source, summarise durations, draw a histogram, list bad entries."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

from speeched.data.check_stream import check_stream, is_stream_path
from speeched.data.config import DataSource, Filters
from speeched.data.scan import BadEntry, DurationCache, scan
from speeched.data.sources import load_source
from speeched.data.table import durations_of

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


@dataclass
class CheckReport:
    """Everything `data check` prints; `ok` is True when every entry is usable."""

    source: str
    total: int
    durations: np.ndarray
    bad: list[BadEntry] = field(default_factory=list)
    histogram: str | None = None
    report_path: str | None = None

    @property
    def ok(self) -> bool:
        return not self.bad

    @property
    def hours(self) -> float:
        return float(np.sum(self.durations)) / 3600

    def percentiles(self) -> dict[int, float]:
        if not len(self.durations):
            return {}
        values = np.percentile(np.asarray(self.durations), PERCENTILES)
        return {p: float(v) for p, v in zip(PERCENTILES, values, strict=True)}

    def lines(self) -> list[str]:
        out = [
            f"source: {self.source}",
            f"utterances: {self.total} total, {len(self.durations)} usable, {len(self.bad)} unusable",
            f"hours (usable): {self.hours:.3f}",
        ]
        if len(self.durations):
            pct = self.percentiles()
            out.append("duration seconds: " + "  ".join(f"p{p}={v:.2f}" for p, v in pct.items()))
        if self.histogram:
            out.append(f"histogram: {self.histogram}")
        if self.bad:
            out.append(f"unusable entries ({len(self.bad)}):")
            out.extend(f"  {b.describe()}" for b in self.bad)
        if self.report_path:
            out.append(f"report: {self.report_path}")
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "source": self.source,
                "total": self.total,
                "usable": len(self.durations),
                "report": self.report_path,
                "hours": self.hours,
                "percentiles": self.percentiles(),
                "histogram": self.histogram,
                "bad": [b.__dict__ for b in self.bad],
            },
            ensure_ascii=False,
            indent=2,
        )


def plot_histogram(durations: np.ndarray | list[float], path: str, title: str) -> str:
    """Duration histogram PNG. A bare `Figure` (no pyplot): renders with Agg headless, never touches the
    global backend, nothing to close."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.hist(durations, bins=min(60, max(5, len(durations) // 5)), color="#4477aa")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("utterances")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def default_out_dir(path: str) -> str:
    """Where `data check` writes when not told: runs/data-check/<source name> under the current folder
    (runs/ is where training writes too, and is git-ignored), never next to the data (often read-only)."""
    name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or "source"
    return os.path.join("runs", "data-check", name)


def check_data(
    source: DataSource,
    out_dir: str | None = None,
    decode: bool = True,
    cache: DurationCache | None = None,
    progress: bool = False,
) -> CheckReport:
    """Scan everything (every file probed; full decode by default: NaN/silence too) under
    `source.filters`; never raises for bad audio. Writes `bad_audio.jsonl` and `durations.png` into
    `out_dir` when given. An empty source raises `ManifestError` (exit 2) from `load_source`.

    Streamed data (`source.streaming`, a shard folder with index.json, a glob or .parquet/.tar shards)
    is read record by record through the stream reader (speeched.data.check_stream); bad records are
    reported with their shard and offset."""
    if source.streaming or is_stream_path(source.path):
        total, durations, bad, report_path = check_stream(
            source, decode=decode, out_dir=out_dir, progress=progress
        )
        report = CheckReport(source.path, total, durations, bad, report_path=report_path)
        if out_dir and len(durations):
            name = os.path.basename(source.path.rstrip("/"))
            report.histogram = plot_histogram(durations, os.path.join(out_dir, "durations.png"), name)
        return report
    utts = load_source(source.model_copy(update={"durations": "probe"}))  # check every file's header
    result = scan(
        utts,
        source.filters,
        decode=decode,
        on_bad_audio="skip",
        report_dir=out_dir,
        cache=cache,
        progress=progress,
    )
    report = CheckReport(
        source=source.path,
        total=result.total,
        durations=np.nan_to_num(durations_of(result.kept), nan=0.0),
        bad=result.bad,
        report_path=result.report_path,
    )
    if out_dir and len(report.durations):
        report.histogram = plot_histogram(
            report.durations, os.path.join(out_dir, "durations.png"), os.path.basename(source.path)
        )
    return report


__all__ = ["CheckReport", "Filters", "check_data", "default_out_dir", "plot_histogram"]
