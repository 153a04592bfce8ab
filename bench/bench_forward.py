"""Forward/generate time of speeched's model vs transformers' SpeechEncoderDecoderModel, same weights.

    .venv/bin/python bench/bench_forward.py

wav2vec2 (random init, 4 layers, width 256) + the real MiniLM decoder, batch 8 × 4 s, 12-token labels.
Both models hold identical weights (ours saved, the reference loads that directory).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def timed(fn, repeats: int = 5) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    from bench_train import make_model
    from transformers import SpeechEncoderDecoderModel as Reference

    from speeched import SpeechEncoderDecoderModel

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(Path(tmp))
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
            a, b = timed(lambda fn=fn: fn(ours), 3), timed(lambda fn=fn: fn(ref), 3)
            rows.append((name, a, b))
    print("| batch 8 x 4 s | speeched (s) | transformers (s) | ratio (ref / ours) |")
    print("|---|---:|---:|---:|")
    for name, a, b in rows:
        print(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
