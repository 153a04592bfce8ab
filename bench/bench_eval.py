"""Eval throughput on a 200-utterance set: duration-sorted batches (speeched eval) vs fixed-size batches.

Both decode the same utterances with the same model (see bench_transcribe.build_model) and the same
fixed max_new_tokens (a random decoder never stops by itself), so the difference is padding and batch
shapes only. Fixed-size batches are cut in manifest order, as a plain DataLoader(batch_size=B) would.

Run: .venv/bin/python bench/bench_eval.py [--n 200 --batch-size 16 --max-duration 64 --tokens 12]
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

from bench_transcribe import build_model  # noqa: E402

from speeched.data.records import Utterance  # noqa: E402


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


def fixed_batches(loaded: tuple, utts: list[Utterance], batch_size: int, tokens: int) -> float:
    from speeched.data.audio import load_audio
    from speeched.evaluation.runner import DecodeOptions, generate_batch

    model, tok, fe = loaded
    opts = DecodeOptions(max_new_tokens=tokens)
    t0 = time.perf_counter()
    for i in range(0, len(utts), batch_size):
        arrays = [load_audio(u, fe.sampling_rate) for u in utts[i : i + batch_size]]
        generate_batch(model, tok, fe, arrays, opts)
    return time.perf_counter() - t0


def duration_sorted(
    loaded: tuple, utts: list[Utterance], max_duration: float, tokens: int
) -> tuple[float, int]:
    from speeched.evaluation.runner import DecodeOptions, evaluate_utterances

    opts = DecodeOptions(max_new_tokens=tokens, max_duration=max_duration)
    t0 = time.perf_counter()
    result = evaluate_utterances(*loaded, utts, "asr", opts, "basic")
    return time.perf_counter() - t0, 1 + max(p.batch for p in result.predictions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-duration", type=float, default=64.0)
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging

    from speeched.evaluation.runner import load_inference_model

    logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        loaded = load_inference_model(build_model(root), "cpu")
        utts = make_set(root, args.n)
        audio = sum(u.duration or 0 for u in utts)
        t_fixed = fixed_batches(loaded, utts, args.batch_size, args.tokens)
        t_sorted, n_batches = duration_sorted(loaded, utts, args.max_duration, args.tokens)
    print(
        f"\n{args.n} utterances, {audio:.0f} s of audio, max_new_tokens={args.tokens}, threads={args.threads}\n"
    )
    print("| batching | batches | wall s | RTFx | speed-up |")
    print("|---|---:|---:|---:|---:|")
    n_fixed = -(-args.n // args.batch_size)
    print(
        f"| fixed batch size {args.batch_size}, manifest order | {n_fixed} | {t_fixed:.1f} | {audio / t_fixed:.1f} | 1.00x |"
    )
    print(
        f"| duration-sorted, <= {args.max_duration:.0f} s per batch | {n_batches} | {t_sorted:.1f} "
        f"| {audio / t_sorted:.1f} | {t_fixed / t_sorted:.2f}x |"
    )


if __name__ == "__main__":
    main()
