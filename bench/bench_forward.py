"""Forward/generate time of speeched's model vs transformers' SpeechEncoderDecoderModel, same weights.

    .venv/bin/python bench/bench_forward.py

wav2vec2 (random init, 4 layers, width 256) + the real MiniLM decoder, batch 8 × 4 s, 12-token labels.
Both models hold identical weights (ours saved, the reference loads that directory). Each operation is
timed --repeats times per model, interleaved (ours, theirs, ours, ...) after one warm-up call each; the
table gives medians (min–max).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def interleaved(fa, fb, repeats: int) -> tuple[list[float], list[float]]:
    fa(), fb()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        for f, out in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            f()
            out.append(time.perf_counter() - t0)
    return ta, tb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from bench_train import make_model
    from common import fmt_range, load_average
    from transformers import SpeechEncoderDecoderModel as Reference

    from speeched import SpeechEncoderDecoderModel

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(Path(tmp), "w2v")
        ours = SpeechEncoderDecoderModel.from_pretrained(model_dir).eval()
        ref = Reference.from_pretrained(model_dir).eval()
    torch.manual_seed(0)
    x = torch.randn(8, 64000)
    mask = torch.ones(8, 64000, dtype=torch.long)
    labels = torch.randint(1000, 2000, (8, 12))
    rows = []
    with torch.inference_mode():
        for name, fn in (
            ("forward with labels", lambda m: m(input_values=x, attention_mask=mask, labels=labels)),
            (
                "greedy generate, 20 tokens",
                lambda m: m.generate(
                    input_values=x, attention_mask=mask, max_new_tokens=20, min_new_tokens=20
                ),
            ),
            (
                "4-beam generate, 20 tokens",
                lambda m: m.generate(
                    input_values=x, attention_mask=mask, max_new_tokens=20, min_new_tokens=20, num_beams=4
                ),
            ),
        ):
            a, b = interleaved(lambda fn=fn: fn(ours), lambda fn=fn: fn(ref), args.repeats)
            rows.append((name, a, b))
    print(
        f"{args.repeats} interleaved repeats per model after a warm-up; median (min–max, n); load {load_average()}\n"
    )
    print("| batch 8 × 4 s | speeched (s) | transformers (s) | ratio of medians (ref / ours) |")
    print("|---|---:|---:|---:|")
    for name, a, b in rows:
        ratio = sorted(b)[len(b) // 2] / sorted(a)[len(a) // 2]
        print(f"| {name} | {fmt_range(a, 3)} | {fmt_range(b, 3)} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
