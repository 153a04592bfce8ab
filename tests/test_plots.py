"""metrics.jsonl survives crashes and resumes; plots are real PNGs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from speeched.training.metrics_log import MetricsLogger, read_metrics
from speeched.training.plots import plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fill(out: Path) -> None:
    with MetricsLogger(out) as log:
        for step in range(10, 210, 10):
            log.log(step, "train", {"loss": 5.0 / step**0.5, "lr": 1e-3 * step / 200, "lr_encoder": 1e-4})
        for step in (100, 200):
            log.log(step, "dev/clean", {"wer_percent": 0.5 / step * 100, "cer_percent": 20.0, "loss": 1.0})
            log.log(step, "dev/other", {"wer_percent": 0.8 / step * 100, "cer_percent": 40.0})


def test_log_and_read_back(tmp_path: Path) -> None:
    fill(tmp_path)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert len(records) == 24
    assert records[0]["split"] == "train" and records[0]["step"] == 10
    assert set(records[0]) == {"step", "split", "time", "values"}


def test_non_finite_values_become_null(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path) as log:
        log.log(1, "train", {"loss": math.nan, "lr": 1.0})
    line = (tmp_path / "metrics.jsonl").read_text().strip()
    assert json.loads(line)["values"] == {"loss": None, "lr": 1.0}
    assert "NaN" not in line


def test_truncated_last_line_is_skipped_and_resume_drops_later_steps(tmp_path: Path) -> None:
    fill(tmp_path)
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as f:
        f.write('{"step": 210, "split": "tr')  # crash mid-write
    assert len(read_metrics(path)) == 24
    with MetricsLogger(tmp_path, resume_step=100) as log:
        log.log(110, "train", {"loss": 1.0})
    records = read_metrics(path)
    assert max(r["step"] for r in records) == 110
    assert [r["step"] for r in records if r["step"] > 100] == [110]
    assert all(json.loads(line) for line in path.read_text().splitlines())  # every line parses again


def test_plots_are_valid_pngs(tmp_path: Path) -> None:
    fill(tmp_path)
    written = plot_training_curves(tmp_path / "metrics.jsonl", tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert names == ["cer_percent.png", "loss.png", "lr.png", "wer_percent.png"]
    for p in written:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 5000


def test_plots_with_no_metrics_write_nothing(tmp_path: Path) -> None:
    assert plot_training_curves(tmp_path / "missing.jsonl", tmp_path / "plots") == []
