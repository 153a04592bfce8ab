"""AdamW implementations on CPU: for-loop (torch's default on CPU), foreach, fused (speeched's default: `optim.implementation: auto`).

    .venv/bin/python bench/bench_optimizer.py [--repeats 7]

29.1 M parameters in 285 tensors shaped like the w2v bench composition's trainable set (MiniLM's 30522 × 384
embeddings, 6 BERT layers of width 384, 4 wav2vec2 layers of width 256, vectors), random gradients. Each
implementation: one warm-up step, then --repeats timed steps, interleaved across implementations; median
(min–max, n). `optimizer.step()` only: the cost the training profile attributes to AdamW.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt_range, load_average  # noqa: E402

SHAPES = (
    [(30522, 384)]
    + [(384, 384)] * 4 * 6
    + [(1536, 384), (384, 1536)] * 6
    + [(384, 384)] * 4 * 6
    + [(256, 256)] * 16
    + [(1024, 256), (256, 1024)] * 4
    + [(384,)] * 200
)
KINDS = {
    "for-loop (torch default on CPU)": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    torch.manual_seed(0)
    opts = {}
    for name, kw in KINDS.items():
        ps = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in SHAPES]
        for p in ps:
            p.grad = torch.randn_like(p) * 1e-3
        opts[name] = torch.optim.AdamW(ps, lr=1e-4, **kw)
        opts[name].step()  # warm-up (allocates the state)
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for _ in range(a.repeats):
        for name, opt in opts.items():
            t0 = time.perf_counter()
            opt.step()
            times[name].append(time.perf_counter() - t0)
    n = sum(torch.Size(s).numel() for s in SHAPES)
    base = sorted(times[next(iter(KINDS))])[a.repeats // 2]
    print(f"{n / 1e6:.1f} M parameters in {len(SHAPES)} tensors, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {a.repeats} interleaved steps each; load {load_average()}\n")  # fmt: skip
    print("| AdamW implementation | ms per step | speed-up vs for-loop |")
    print("|---|---:|---:|")
    for name, ts in times.items():
        med = sorted(ts)[a.repeats // 2]
        print(f"| {name} | {fmt_range([1000 * t for t in ts], 0)} | {base / med:.2f}× |")


if __name__ == "__main__":
    main()
