"""CPU speed of greedy decoding: torch `generate` vs ONNX Runtime (fp32 and int8), on the same audio.

All three decode the same waveforms in the same batches with the same fixed token budget (a random
decoder never stops by itself, so every run generates exactly --tokens tokens per input) and the same
number of threads. Reports RTFx (seconds of audio per second of wall time), the speed-up over torch, and
how far each ONNX variant's transcripts are from torch's (WER against torch's output: 0 for fp32 is
the parity check, int8's is the price of quantisation).

Run: .venv/bin/python bench/bench_onnx.py [--model DIR] [--n 16 --batch-size 8 --tokens 20 --threads 2]
(without --model: bench_transcribe's random wav2vec2 + 2-layer MiniLM). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import jiwer
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))


def waves(n: int, seed: int = 0) -> list[np.ndarray]:
    """Tones with noise, 2-6 s (lengths vary, so batches are padded as in real use)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        seconds = rng.uniform(2.0, 6.0)
        t = np.arange(int(seconds * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(120, 300) * t) + 0.02 * rng.standard_normal(t.size)
        out.append(x.astype(np.float32))
        del i
    return out


def timed(fn, batches):
    texts: list[str] = []
    start = time.perf_counter()
    for b in batches:
        texts += fn(b)
    return time.perf_counter() - start, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from transformers.utils import logging as hf_logging

    from speeched.export.onnx_export import export_onnx
    from speeched.inference.features import featurize
    from speeched.inference.onnx_backend import OnnxSpeechModel
    from speeched.modeling.model_dir import load_model_dir

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.model is None:
            from bench_transcribe import build_model

            model_dir = build_model(root)
        else:
            model_dir = args.model
        export_onnx(model_dir, root / "fp32")
        export_onnx(model_dir, root / "int8", quantize="int8")
        loaded = load_model_dir(model_dir)
        arrays = waves(args.n)
        seconds = sum(len(a) for a in arrays) / 16000
        order = sorted(range(len(arrays)), key=lambda i: len(arrays[i]))
        batches = [
            [arrays[i] for i in order[k : k + args.batch_size]] for k in range(0, len(order), args.batch_size)
        ]

        def torch_greedy(batch):
            with torch.inference_mode():
                ids = loaded.model.generate(
                    **featurize(loaded.feature_extractor, batch, "cpu"),
                    max_new_tokens=args.tokens,
                    min_new_tokens=args.tokens,
                    num_beams=1,
                    do_sample=False,
                )
            return loaded.tokenizer.batch_decode(ids, skip_special_tokens=True)

        runs = {"torch": torch_greedy}
        sizes = {}
        for name in ("fp32", "int8"):
            onnx_model = OnnxSpeechModel(root / name, threads=args.threads)
            runs[f"onnxruntime {name}"] = lambda b, m=onnx_model: m.transcribe(b, max_new_tokens=args.tokens)
            sizes[f"onnxruntime {name}"] = sum(f.stat().st_size for f in (root / name).glob("*.onnx")) / 2**20
        sizes["torch"] = sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors")) / 2**20
        for fn in runs.values():  # warm-up: first-call allocations and graph optimisation
            fn(batches[0][:1])
        results = {}
        for name, fn in runs.items():
            wall, texts = timed(fn, batches)
            results[name] = {"seconds": wall, "rtfx": seconds / wall, "texts": [t.strip() for t in texts]}
    ref = results["torch"]["texts"]
    rows = [
        "| backend | wall s | RTFx | vs torch | model MiB | WER vs torch's transcripts |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    summary = {
        "audio_seconds": seconds,
        "inputs": args.n,
        "batch_size": args.batch_size,
        "tokens": args.tokens,
        "threads": args.threads,
    }
    for name, r in results.items():
        wer = 0.0 if name == "torch" else jiwer.wer(ref, r["texts"])
        speedup = r["rtfx"] / results["torch"]["rtfx"]
        rows.append(
            f"| {name} | {r['seconds']:.2f} | {r['rtfx']:.1f} | {speedup:.2f}x | {sizes[name]:.1f} | {100 * wer:.1f}% |"
        )
        summary[name] = {
            "wall_s": round(r["seconds"], 3),
            "rtfx": round(r["rtfx"], 2),
            "speedup": round(speedup, 3),
            "wer_vs_torch": round(wer, 4),
            "mib": round(sizes[name], 1),
        }
    print(
        f"{args.n} inputs, {seconds:.1f} s of audio, batches of {args.batch_size}, {args.tokens} tokens each, {args.threads} threads\n"
    )
    print("\n".join(rows))
    print("\n" + json.dumps(summary))


if __name__ == "__main__":
    main()
