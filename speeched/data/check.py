"""`speeched data check` logic: scan a source, summarise durations, draw a histogram, list bad entries."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from speeched.data.config import DataSource, Filters
from speeched.data.scan import BadEntry, DurationCache, scan
from speeched.data.sources import load_source

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


@dataclass
class CheckReport:
    """Everything `data check` prints; `ok` is True when every entry is usable."""

    source: str
    total: int
    durations: list[float]
    bad: list[BadEntry] = field(default_factory=list)
    histogram: str | None = None
    report_path: str | None = None

    @property
    def ok(self) -> bool:
        return not self.bad

    @property
    def hours(self) -> float:
        return float(sum(self.durations)) / 3600

    def percentiles(self) -> dict[int, float]:
        if not self.durations:
            return {}
        values = np.percentile(np.asarray(self.durations), PERCENTILES)
        return {p: float(v) for p, v in zip(PERCENTILES, values, strict=True)}

    def lines(self) -> list[str]:
        out = [
            f"source: {self.source}",
            f"utterances: {self.total} total, {len(self.durations)} usable, {len(self.bad)} unusable",
            f"hours (usable): {self.hours:.3f}",
        ]
        if self.durations:
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
                "hours": self.hours,
                "percentiles": self.percentiles(),
                "histogram": self.histogram,
                "bad": [b.__dict__ for b in self.bad],
            },
            ensure_ascii=False,
            indent=2,
        )


def plot_histogram(durations: list[float], path: str, title: str) -> str:
    """Duration histogram PNG (Agg backend: works headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(durations, bins=min(60, max(5, len(durations) // 5)), color="#4477aa")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("utterances")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def check_data(
    source: DataSource,
    out_dir: str | None = None,
    decode: bool = True,
    cache: DurationCache | None = None,
) -> CheckReport:
    """Scan everything (full decode by default: NaN/silence too) under `source.filters`; never raises for
    bad audio. Writes `bad_audio.jsonl` and `durations.png` into `out_dir` when given."""
    utts = load_source(source)
    result = scan(utts, source.filters, decode=decode, on_bad_audio="skip", report_dir=out_dir, cache=cache)
    report = CheckReport(
        source=source.path,
        total=result.total,
        durations=[u.duration or 0.0 for u in result.kept],
        bad=result.bad,
        report_path=result.report_path,
    )
    if out_dir and report.durations:
        report.histogram = plot_histogram(
            report.durations, os.path.join(out_dir, "durations.png"), os.path.basename(source.path)
        )
    return report


__all__ = ["CheckReport", "Filters", "check_data", "plot_histogram"]
