"""`make bench`: run every benchmark side by side on this machine and write docs/benchmarks.md.

Each benchmark is a script that prints a markdown table; this collects them with the machine, the
library versions and the exact commands, and adds the demo's time-to-WER curve when runs/demo exists.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHES = [
    ("Training throughput vs Seq2SeqTrainer", ["bench/bench_train.py", "--steps", "15"]),
    ("Model forward / generate vs transformers' SpeechEncoderDecoderModel", ["bench/bench_forward.py"]),
    ("Padding: duration buckets vs random and group-by-length", ["bench/bench_padding.py"]),
    ("Loader throughput", ["bench/bench_loader.py"]),
    ("Transcribe throughput vs transformers' ASR pipeline", ["bench/bench_transcribe.py"]),
    ("Eval throughput: duration batches vs fixed batch size", ["bench/bench_eval.py"]),
]


def machine() -> str:
    import accelerate
    import torch
    import transformers

    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    return (
        f"- machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}\n"
        f"- python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"accelerate {accelerate.__version__}\n- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def demo_section() -> str:
    metrics = ROOT / "runs/demo/metrics.jsonl"
    summary = ROOT / "runs/demo/eval/summary.json"
    if not metrics.exists():
        return "_runs/demo not found: run `make demo` first._"
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    lines = ["| step | training time (s) | dev WER (joint CTC/attention) |", "|---:|---:|---:|"]
    for r in rows:
        if r["split"].startswith("dev/") and "wer" in r["values"]:
            v = r["values"]
            lines.append(f"| {r['step']} | {v.get('elapsed_s', 0):.0f} | {100 * v['wer']:.2f}% |")
    if summary.exists():
        s = json.loads(summary.read_text())
        lines.append(
            f"\nHeld-out test split ({s['num_utterances']} utterances, voices never heard in training): "
            f"**WER {100 * s['wer']:.2f}%**, CER {100 * s['cer']:.2f}% ({s['decoding']['strategy']})."
        )
    return "\n".join(lines)


def demo_st_section() -> str:
    summary = ROOT / "runs/demo-st/eval/summary.json"
    metrics = ROOT / "runs/demo-st/metrics.jsonl"
    if not summary.exists():
        return "_runs/demo-st not found: run `make demo-st` first._"
    s = json.loads(summary.read_text())
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.exists() else []
    train_s = max((r["values"].get("elapsed_s", 0) for r in rows if r["split"] == "train"), default=0)
    sig = s.get("bleu_signature") or s.get("normalized", {}).get("bleu_signature", "")
    return (
        f"English speech -> German text, {s['num_utterances']} held-out utterances (unseen voices), "
        f"{train_s / 60:.1f} min of training: **BLEU {s['bleu']:.1f}**, chrF {s['chrf']:.1f} "
        f"({s['decoding']['strategy']}). References and hypotheses are lowercased (MiniLM's tokenizer is "
        f"uncased); the German grammar has no umlauts. {sig}"
    )


def main() -> None:
    out = [
        "# Benchmarks",
        "",
        "Written by `make bench` (bench/run_all.py). Every comparison is measured side by side in the same run",
        "on this machine; these machines are shared and noisy, so read ratios, not absolute speeds.",
        "",
        machine(),
        "",
    ]
    for title, cmd in BENCHES:
        print(f"== {title}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True)
        took = time.perf_counter() - t0
        body = (
            proc.stdout.strip()
            if proc.returncode == 0
            else f"FAILED (exit {proc.returncode}):\n\n```\n{proc.stderr[-2000:]}\n```"
        )
        out += [f"## {title}", "", f"`.venv/bin/python {' '.join(cmd)}` ({took:.0f} s)", "", body, ""]
    out += ["## Demo: time to WER (`make demo`)", "", demo_section(), ""]
    out += ["## Speech translation demo (`make demo-st`)", "", demo_st_section(), ""]
    extra = ROOT / "docs" / "benchmarks-notes.md"
    if extra.exists():
        out += [extra.read_text()]
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(out) + "\n")
    print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
