"""`make bench-gpu` (bench/bench_gpu.py): it skips cleanly where there is no CUDA, and its code paths run
end to end on CPU at tiny sizes (`--cpu-check`), so a session that is lent a GPU does not find a broken
script on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_gpu.py"


def run(args: list[str], tmp_path: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=timeout,
    )


def test_bench_gpu_skips_without_cuda(tmp_path):
    out = tmp_path / "runs" / "gpu.json"
    proc = run(["--json", str(out)], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "skipped: no CUDA" in proc.stdout
    assert "Traceback" not in proc.stderr
    report = json.loads(out.read_text())
    assert report["skipped"] == "no CUDA"
    assert "load_average" in report


def test_bench_gpu_cpu_check_runs_every_section(tmp_path):
    out = tmp_path / "gpu.json"
    proc = run(["--cpu-check", "--json", str(out)], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    train = report["train"]
    assert set(train["runs"]) == {"trainer-gbl", "trainer-gbl-sdpa", "speeched"}
    for side, runs in train["runs"].items():
        assert runs and all(r["audio_per_s"] > 0 for r in runs), side
    assert train["flops_per_audio_s"] > 0
    times = report["transcribe"]["times"]
    assert all(t and min(t) > 0 for t in times.values())
    md = report["markdown"]
    assert md.count("- speeched vs Seq2SeqTrainer") == 2  # the Trainer as shipped, and without cuDNN SDPA
    assert "Transcription RTFx" in md
