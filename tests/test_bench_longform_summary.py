"""bench/bench_longform.py's summary table over several models: a model whose one-by-one WER is 0 has no
ratio (long-form / 0), and the table says so instead of crashing (it did, on the make demo seeds)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_longform  # noqa: E402


def result(model: str, ratio: float | None, one: float) -> dict:
    row = {"ratio": ratio, "wer_longform": 0.02, "wer_one_by_one": one, "word_boundary_median_error_s": 0.05}
    return {"model": model, "clean": row, "floor-60dBFS": row, "snr10": row}


def test_summary_with_an_undefined_ratio():
    args = argparse.Namespace(floor_db=-60.0, snr=10.0)
    rows = bench_longform._summary(
        args, [result("a", 1.2, 0.01), result("b", None, 0.0), result("c", 1.4, 0.01)]
    )
    text = "\n".join(rows)
    assert "| b | n/a (2.0% / 0.0%)" in text
    assert "**1.30 (1.20–1.40) of 2; 1 n/a**" in text  # the median of the defined ratios, and the count
    all_defined = "\n".join(bench_longform._summary(args, [result("a", 1.2, 0.01), result("c", 1.4, 0.01)]))
    assert "**1.30 (1.20–1.40)**" in all_defined
