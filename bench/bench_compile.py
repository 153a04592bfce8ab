"""torch.compile on CPU: does fusing a training step's non-matmul work make it faster? (issue 16)

    .venv/bin/python bench/bench_compile.py [--steps 10 --composition w2v]

The training bench (bench_train.py) gives `speeched train` and Seq2SeqTrainer the same work and finds them
equally fast; the profile there puts ~60% of a step in matmuls and convolutions and the rest in
elementwise ops, copies and the optimizer. Inductor fuses elementwise ops into generated C++ loops, so it
is the one remaining kernel-level gain on a CPU without native bf16. This bench measures it on the same
composition, in one process:

- two copies of one model (`speeched init`, bench_train.make_model), the CNN frozen in both, each with its
  own fused AdamW; one eager, one with *regional* compilation: every encoder and decoder layer compiled
  with `dynamic=True` (speech batches change length every step; compiling the whole model failed in
  inductor with torch 2.13: "ValueRangeError: Invalid ranges [0:-1]", and printed here if it still does);
- the same batches on both (lognormal durations, median 4 s, filled to about 32 s of audio like speeched's
  duration buckets, 13-token targets), each batch stepped by both copies in alternating order;
- warm-up batches first (the compiled copy's first step includes compilation, reported on its own),
  then --steps timed batches; median and range of the per-batch times and of their ratio.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import make_model  # noqa: E402
from common import fmt_range, load_average, log, machine_lines  # noqa: E402

SR = 16000


def compile_layers(model: torch.nn.Module) -> int:
    """Compile each repeated block (encoder and decoder layers) in place; returns how many."""
    n = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] in ("layers", "layer"):
            for block in module:
                block.compile(dynamic=True)
                n += 1
    return n


def batches(count: int, input_name: str, seed: int) -> list[dict[str, torch.Tensor]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        seconds = float(np.clip(rng.lognormal(np.log(4.0), 0.5), 1.0, 12.0))
        n = max(1, int(32.0 // seconds))
        if input_name == "input_values":
            x = torch.randn(n, int(seconds * SR)) * 0.1
        else:
            x = torch.randn(n, int(seconds * 100), 80)
        mask = torch.ones(x.shape[:2], dtype=torch.long)
        labels = torch.from_numpy(rng.integers(1000, 2000, size=(n, 13)))
        out.append({input_name: x, "attention_mask": mask, "labels": labels, "seconds": n * seconds})
    return out


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict) -> float:
    inputs = {k: v for k, v in batch.items() if k != "seconds"}
    t0 = time.perf_counter()
    loss = model(**inputs).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--composition", default="w2v", help="w2v or logmel (bench_train.make_model)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from transformers.utils import logging as hf_logging

    from speeched.modeling.model_dir import load_model_dir

    hf_logging.set_verbosity_error()
    torch.manual_seed(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_model_dir(make_model(Path(tmp), a.composition))
    eager = loaded.model.train()
    eager.freeze_feature_encoder()
    compiled = copy.deepcopy(eager)
    blocks = compile_layers(compiled)
    input_name = loaded.feature_extractor.model_input_names[0]
    opts = {
        name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4, fused=True)
        for name, m in (("eager", eager), ("compiled", compiled))
    }
    models = {"eager": eager, "compiled": compiled}
    try:  # the whole model at once: reported, not used
        b = batches(1, input_name, a.seed + 1)[0]
        probe = torch.compile(copy.deepcopy(eager), dynamic=True)
        probe(**{k: v for k, v in b.items() if k != "seconds"}).loss.backward()
        whole = "compiled and ran"
    except Exception as err:  # noqa: BLE001 - reported in the page, whatever inductor raises
        whole = f"failed: {type(err).__name__}: {' '.join(str(err).split())[:120]}"
    probe = None
    log(f"whole-model torch.compile(dynamic=True): {whole}")
    data = batches(a.warmup + a.steps, input_name, a.seed)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    first_compiled = 0.0
    for i, batch in enumerate(data):
        order = ["eager", "compiled"] if i % 2 == 0 else ["compiled", "eager"]
        took = {name: step(models[name], opts[name], batch) for name in order}
        if i == 0:
            first_compiled = took["compiled"]
        if i >= a.warmup:
            for name in times:
                times[name].append(took[name])
        log(f"batch {i + 1}/{len(data)} ({batch['seconds']:.1f} s): eager {took['eager']:.2f} s, "
            f"compiled {took['compiled']:.2f} s")  # fmt: skip
    ratios = [e / c for e, c in zip(times["eager"], times["compiled"], strict=True)]
    audio = [b["seconds"] for b in data[a.warmup :]]
    trainable = sum(p.numel() for p in eager.parameters() if p.requires_grad)
    print(
        "\n".join(
            [
                f"composition {a.composition} ({trainable / 1e6:.2f} M trainable, CNN frozen), {blocks} layers "
                f"compiled (`dynamic=True`), fused AdamW on both; {a.steps} timed batches of "
                f"{np.median(audio):.1f} s of audio (median) after {a.warmup} warm-up, each stepped by both "
                "copies in alternating order",
                "",
                *machine_lines(),
                "",
                "| model | s per step | audio-s per wall-s |",
                "|---|---:|---:|",
                *(
                    f"| {name} | {fmt_range(times[name], 2)} | "
                    f"{fmt_range([s / t for s, t in zip(audio, times[name], strict=True)])} |"
                    for name in times
                ),
                "",
                f"- compiled vs eager: **{np.median(ratios):.2f}×** per batch (range "
                f"{min(ratios):.2f}–{max(ratios):.2f}×, n={len(ratios)})",
                f"- first compiled step (compilation included): {first_compiled:.0f} s",
                f"- whole model, `torch.compile(model, dynamic=True)`: {whole}",
                f"- load average at end: {load_average()}",
            ]
        )
    )


if __name__ == "__main__":
    main()
