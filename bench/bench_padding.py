"""Padding at matched randomness: random batches, transformers' LengthGroupedSampler, DurationBucketSampler.

    .venv/bin/python bench/bench_padding.py [--num 2000 --epochs 5]

LibriSpeech-like durations: lognormal, median 12 s, sigma 0.5, clipped to 1–35 s. Padding alone says
little: a fully sorted order pads least and is not random at all. So every sampler also gets three
randomness measures, averaged over consecutive epoch pairs / epochs:
- *batches repeated next epoch*: share of batches (as sets of utterances) that reappear in the next
  epoch (0% = fresh batches each epoch, 100% = the same batches);
- *batch neighbourhood*: how far apart in the duration-sorted list a batch's members lie, as
  (max rank − min rank + 1) / batch size, mean over batches (1.0 = consecutive sorted utterances; random
  batches ≈ N / batch size);
- *displacement from sorted order*: mean |position in the epoch − rank in the sorted order| / N, the
  smaller of ascending and descending (0 = sorted, ≈ 0.33 = random order).
Rows sweep each sampler's randomness knob (LengthGroupedSampler's `mega_batch_mult`, ours' `jitter`) so
padding can be read at matched randomness. The full-sort row is one mega-batch holding the whole data set.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from speeched.data.sampler import DurationBucketSampler, padding_fraction

MEDIAN, SIGMA, BATCH, MAX_DURATION = 12.0, 0.5, 16, 200.0


def durations(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(MEDIAN), SIGMA, n), 1.0, 35.0)


def chunks(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def repeated(a: list[list[int]], b: list[list[int]]) -> float:
    """Share of the batches of epoch a that reappear, as a set, in epoch b."""
    sb = {frozenset(x) for x in b}
    return sum(frozenset(x) in sb for x in a) / len(a)


def neighbourhood(batches: list[list[int]], rank: np.ndarray) -> float:
    return float(np.mean([(rank[b].max() - rank[b].min() + 1) / len(b) for b in batches]))


def displacement(batches: list[list[int]], rank: np.ndarray) -> float:
    order = np.array([i for b in batches for i in b])
    n = len(order)
    pos = np.arange(n)
    r = rank[order]
    return float(min(np.abs(pos - r).mean(), np.abs(pos - (n - 1 - r)).mean()) / n)


def samplers(d: np.ndarray, epochs: int) -> list[tuple[str, list[list[list[int]]]]]:
    n = len(d)
    lengths = (d * 1000).astype(int).tolist()  # LengthGroupedSampler wants integer lengths: milliseconds
    rows = []
    rand = [
        chunks(torch.randperm(n, generator=torch.Generator().manual_seed(e)).tolist(), BATCH)
        for e in range(epochs)
    ]
    rows.append((f"random, {BATCH}/batch", rand))
    default_mult = min(n // (BATCH * 4), 50)
    for mult, label in [(4, "4"), (default_mult, f"{default_mult} (transformers' default)"),
                        (-(-n // BATCH), "all: one fully sorted mega-batch")]:  # fmt: skip
        eps = []
        for e in range(epochs):
            g = torch.Generator().manual_seed(e)
            eps.append(
                chunks(get_length_grouped_indices(lengths, BATCH, mega_batch_mult=mult, generator=g), BATCH)
            )
        rows.append((f"transformers LengthGroupedSampler, {BATCH}/batch, mega_batch_mult {label}", eps))
    for jitter in (0.0, 0.01, 0.03, 0.1, 0.3):
        s = DurationBucketSampler(d, max_duration=MAX_DURATION, seed=0, jitter=jitter, world_size=1, rank=0)
        eps = []
        for e in range(epochs):
            s.set_epoch(e)
            eps.append([list(b) for b in s])
        default = " (default)" if jitter == 0.01 else ""
        rows.append(
            (f"speeched DurationBucketSampler, ≤ {MAX_DURATION:.0f} s/batch, jitter {jitter}{default}", eps)
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=5)
    a = ap.parse_args()
    d = durations(a.num)
    rank = np.empty(len(d), dtype=np.int64)
    rank[np.argsort(d, kind="stable")] = np.arange(len(d))
    print(
        f"{a.num} utterances, lognormal median {MEDIAN} s, sigma {SIGMA}, clipped 1–35 s, {d.sum() / 3600:.2f} h; "
        f"mean over {a.epochs} epochs (`.venv/bin/python bench/bench_padding.py --num {a.num} --epochs {a.epochs}`); "
        "deterministic: no repeats needed.\n"
    )
    print(
        "| sampler | padded audio | mean batch size | batches repeated next epoch | batch neighbourhood "
        "| displacement from sorted order |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, eps in samplers(d, a.epochs):
        pad = np.mean([padding_fraction(b, d) for b in eps])
        size = np.mean([np.mean([len(x) for x in b]) for b in eps])
        rep = np.mean([repeated(eps[i], eps[i + 1]) for i in range(len(eps) - 1)])
        nb = np.mean([neighbourhood(b, rank) for b in eps])
        disp = np.mean([displacement(b, rank) for b in eps])
        print(f"| {name} | {pad:.2%} | {size:.1f} | {rep:.0%} | {nb:.1f} | {disp:.3f} |")
    print(
        "\nRead padding against randomness: the fully sorted LengthGroupedSampler pads about as little as "
        "our sampler, with the same batches every epoch. Our lower padding at the default settings is a trade "
        "of randomness for padding (near-sorted batches, re-cut each epoch by `jitter` and a random first-batch "
        "size, shuffled batch order), not a better grouping algorithm."
    )


if __name__ == "__main__":
    main()
