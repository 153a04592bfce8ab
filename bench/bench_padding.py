"""Padded-audio fraction: random batches vs transformers' LengthGroupedSampler vs DurationBucketSampler.

LibriSpeech-like durations: lognormal, median 12 s, clipped to 1-35 s, 2000 utterances; batches of ~16
utterances / 200 s. Prints a markdown table (mean over 5 epochs) and how much batches change per epoch.
Run: .venv/bin/python bench/bench_padding.py
"""

from __future__ import annotations

import numpy as np
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from speeched.data.sampler import DurationBucketSampler, padding_fraction

N, MEDIAN, SIGMA, BATCH, MAX_DURATION, EPOCHS = 2000, 12.0, 0.5, 16, 200.0, 5


def durations(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(MEDIAN), SIGMA, N), 1.0, 35.0)


def chunks(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def batch_overlap(a: list[list[int]], b: list[list[int]]) -> float:
    """Share of batches of epoch a that reappear, as a set, in epoch b (1.0 = identical batches)."""
    sb = {frozenset(x) for x in b}
    return sum(frozenset(x) in sb for x in a) / len(a)


def main() -> None:
    d = durations()
    rows = []
    rand = []
    for e in range(EPOCHS):
        g = torch.Generator().manual_seed(e)
        rand.append(chunks(torch.randperm(N, generator=g).tolist(), BATCH))
    rows.append(("random, 16/batch", rand))
    lgs = []
    for e in range(EPOCHS):
        g = torch.Generator().manual_seed(e)
        # LengthGroupedSampler wants integer lengths: use milliseconds.
        s = LengthGroupedSampler(BATCH, lengths=(d * 1000).astype(int).tolist(), generator=g)
        lgs.append(chunks(list(s), BATCH))
    rows.append(("transformers LengthGroupedSampler, 16/batch", lgs))
    for jitter in (0.0, 0.01, 0.03):
        ours = []
        s = DurationBucketSampler(d, max_duration=MAX_DURATION, seed=0, jitter=jitter, world_size=1, rank=0)
        for e in range(EPOCHS):
            s.set_epoch(e)
            ours.append(list(s))
        rows.append(
            (f"speeched DurationBucketSampler, max_duration {MAX_DURATION:.0f}s, jitter {jitter}", ours)
        )
    print(
        f"{N} utterances, lognormal median {MEDIAN}s sigma {SIGMA}, clipped 1-35 s, {d.sum() / 3600:.2f} h\n"
    )
    print("| sampler | padded audio | batches/epoch | mean batch size | batches repeated next epoch |")
    print("|---|---:|---:|---:|---:|")
    for name, epochs in rows:
        pad = np.mean([padding_fraction(b, d) for b in epochs])
        nb = np.mean([len(b) for b in epochs])
        size = np.mean([np.mean([len(x) for x in b]) for b in epochs])
        rep = np.mean([batch_overlap(epochs[i], epochs[i + 1]) for i in range(EPOCHS - 1)])
        print(f"| {name} | {pad:.2%} | {nb:.0f} | {size:.1f} | {rep:.0%} |")


if __name__ == "__main__":
    main()
