"""Eval throughput on a 200-utterance set: duration-sorted batches (speeched eval) vs fixed-size batches.

Both decode the same utterances with the same model (common.tiny_model) through speeched.inference.decode,
greedy, with the same fixed max_new_tokens (a random decoder never stops by itself), so the difference is
padding and batch shapes only. Fixed-size batches are cut in manifest order, one `decode` call each, as a
plain DataLoader(batch_size=B) would. Interleaved repeats; median (min–max, n).

Run: .venv/bin/python bench/bench_eval.py [--n 200 --batch-size 16 --max-duration 64 --tokens 12 --repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import fmt_range, load_average, tiny_model  # noqa: E402

from speeched.data.records import Utterance  # noqa: E402
from speeched.inference import DecodeOptions, decode, load_inference_model  # noqa: E402


def make_set(root: Path, n: int) -> list[Utterance]:
    """Lognormal durations (median 3 s, 0.5-12 s): the spread of real test sets, scaled down for CPU."""
    rng = np.random.default_rng(0)
    utts = []
    for i, dur in enumerate(np.clip(rng.lognormal(np.log(3.0), 0.6, n), 0.5, 12.0)):
        x = 0.1 * rng.standard_normal(int(dur * 16000)).astype(np.float32)
        path = root / f"u{i}.wav"
        sf.write(path, x, 16000)
        utts.append(Utterance(id=f"u{i}", audio=str(path), text="some reference words", duration=float(dur)))
    return utts


def fixed_batches(im, utts: list[Utterance], batch_size: int, tokens: int) -> float:
    opts = DecodeOptions(num_beams=1, ctc_weight=0.0, max_new_tokens=tokens, max_duration=1e9)
    t0 = time.perf_counter()
    for i in range(0, len(utts), batch_size):
        decode(im, utts[i : i + batch_size], opts)
    return time.perf_counter() - t0


def duration_sorted(im, utts: list[Utterance], max_duration: float, tokens: int) -> tuple[float, int]:
    opts = DecodeOptions(num_beams=1, ctc_weight=0.0, max_new_tokens=tokens, max_duration=max_duration)
    t0 = time.perf_counter()
    result = decode(im, utts, opts)
    return time.perf_counter() - t0, 1 + max(d.batch for d in result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-duration", type=float, default=64.0)
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging

    logging.set_verbosity_error()
    fixed, sorted_, n_batches = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        im = load_inference_model(tiny_model(root), "cpu")
        utts = make_set(root, args.n)
        audio = sum(u.duration or 0 for u in utts)
        for _ in range(args.repeats):
            fixed.append(fixed_batches(im, utts, args.batch_size, args.tokens))
            t, n_batches = duration_sorted(im, utts, args.max_duration, args.tokens)
            sorted_.append(t)
    print(
        f"\n{args.n} utterances, {audio:.0f} s of audio, greedy, max_new_tokens={args.tokens}, threads={args.threads}, "
        f"{args.repeats} interleaved rounds, median (min–max, n); load average {load_average()}\n"
    )
    print("| batching | batches | wall s | RTFx | speed-up (median) |")
    print("|---|---:|---:|---:|---:|")
    n_fixed = -(-args.n // args.batch_size)
    med_f, med_s = sorted(fixed)[len(fixed) // 2], sorted(sorted_)[len(sorted_) // 2]
    print(
        f"| fixed batch size {args.batch_size}, manifest order | {n_fixed} | {fmt_range(fixed)} "
        f"| {fmt_range([audio / t for t in fixed])} | 1.00× |"
    )
    print(
        f"| duration-sorted, ≤ {args.max_duration:.0f} s per batch | {n_batches} | {fmt_range(sorted_)} "
        f"| {fmt_range([audio / t for t in sorted_])} | {med_f / med_s:.2f}× |"
    )


if __name__ == "__main__":
    main()
