"""`make bench-gpu`: bf16 training throughput, peak memory and MFU vs Seq2SeqTrainer; transcription RTFx.

    .venv/bin/python bench/bench_gpu.py [--steps 20 --repeats 3 --json runs/bench/gpu.json]
    .venv/bin/python bench/bench_gpu.py --cpu-check     # the same code paths on CPU at tiny sizes

Without CUDA it prints "skipped: no CUDA" and exits 0.

Training: bench/bench_train.py's workers with `--bf16` on the `base` composition (wav2vec2-base-sized
encoder: 12 layers × 768, the 7-layer 512-channel CNN, random init from its config; the MiniLM decoder,
random weights where $SPEECHED_BENCH_DECODER names a config-only copy), Seq2SeqTrainer with
group_by_length (as shipped, and with `torch.backends.cuda.enable_cudnn_sdp(False)`, the SDPA choice
speeched makes on CUDA) vs `speeched train`, the same trainable parameters (CNN frozen in both), the same AdamW,
batches of 16 utterances vs a matching duration cap, the same DataLoader workers, interleaved rounds.
Peak memory: torch.cuda.max_memory_allocated in each run's process. MFU: model FLOPs per audio-second
(counted by torch.utils.flop_counter on one forward+backward of 8 × 4 s, the trainable set as in training)
× measured audio-seconds per second / the GPU's dense bf16 peak (H100/H200 SXM: 989 TFLOP/s; A100: 312;
`--peak-tflops` for others). FLOPs scale with audio length almost linearly here (frames ≤ 600 per
utterance, attention a small share), which is the approximation this MFU makes.

Transcription: speeched's `decode` vs transformers' `generate` in batches of 16 on the same 128 noise
inputs of 4–12 s (random weights never emit EOS, so both generate exactly --tokens tokens per input);
RTFx = audio-seconds / wall-second, median of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt_range, interleave, load_average, log, machine_lines, ratio_range, run_worker  # noqa: E402

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}


def peak_tflops(override: float) -> float | None:
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def flops_per_audio_second(model_dir: Path, composition: str, device: str, dtype: torch.dtype) -> float:
    """Forward+backward FLOPs of one 8 × 4 s batch (12-token labels) / 32 audio-seconds."""
    from bench_train import trainer_model
    from torch.utils.flop_counter import FlopCounterMode

    model = trainer_model(model_dir, composition).to(device).train()
    x = torch.randn(8, 4 * 16000, device=device)
    labels = torch.randint(1000, 2000, (8, 12), device=device)
    with (
        FlopCounterMode(display=False) as fc,
        torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32),
    ):
        out = model(input_values=x, labels=labels)
        out.loss.backward()
    return fc.get_total_flops() / 32.0


def train_section(a: argparse.Namespace, root: Path) -> tuple[list[str], dict]:
    import bench_train as bt

    comp = "w2v" if a.cpu_check else "base"
    manifest, durations = bt.make_corpus(root / "data", a.num)
    model = bt.make_model(root, comp, tiny=a.cpu_check)
    expect = bt.trainable(bt.trainer_model(model, comp))
    max_duration = round(a.batch_size * float(np.mean(durations)), 1)
    me = str(Path(bt.__file__).resolve())
    # The Trainer as shipped, and with the one line that gives it speeched's SDPA choice on CUDA (cuDNN's
    # attention off: see speeched/modeling/attention_backends.py), so the ratio is not that line alone.
    sides = ["trainer-gbl", "trainer-gbl-sdpa", "speeched"]

    def one(side: str, r: int) -> dict:
        ns = argparse.Namespace(steps=a.steps, warmup=a.warmup, batch_size=a.batch_size, max_duration=max_duration,
                                seed=0, workers=a.workers, bf16=not a.cpu_check)  # fmt: skip
        args = bt.worker_args(ns, side, comp, model, manifest, root / f"run-{side}-{r}")
        return run_worker(me, [*args, "--expect-trainable", str(expect)], env=bt.side_environment(side))

    res = interleave(sides, a.repeats, one, log)
    device = "cuda" if torch.cuda.is_available() and not a.cpu_check else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    fpas = flops_per_audio_second(model, comp, device, dtype)
    peak = peak_tflops(a.peak_tflops)
    lines = [
        f"### bf16 training, {'tiny w2v (CPU check)' if a.cpu_check else 'wav2vec2-base-sized + MiniLM'} "
        f"({expect / 1e6:.1f} M trainable on both sides)",
        "",
        f"{a.steps} timed steps after {a.warmup} warm-up, {a.repeats} interleaved rounds; Trainer batches of "
        f"{a.batch_size}, speeched ≤ {max_duration:g} s; {a.workers} DataLoader workers on both sides; "
        f"{fpas / 1e9:.1f} GFLOP per audio-second (fwd+bwd); decoder weights "
        f"{'random (MiniLM config)' if os.environ.get('SPEECHED_BENCH_DECODER') else 'MiniLM (real)'}.",
        "",
        "| side | audio-s per wall-s | s per step | peak memory (GiB) | MFU |",
        "|---|---:|---:|---:|---:|",
    ]
    for side, runs in res.items():
        rate = [r["audio_per_s"] for r in runs]
        mem = [r.get("peak_mem_gb", float("nan")) for r in runs]
        mfu = "n/a" if not peak else fmt_range([100 * fpas * x / (peak * 1e12) for x in rate], 1, "%")
        lines.append(f"| {bt.SIDES[side]} | {fmt_range(rate)} | {fmt_range([r['s_per_step'] for r in runs], 3)} "
                     f"| {fmt_range(mem, 2)} | {mfu} |")  # fmt: skip
    ours = [r["audio_per_s"] for r in res["speeched"]]
    lines.append("")
    for side in ("trainer-gbl", "trainer-gbl-sdpa"):
        ref = [r["audio_per_s"] for r in res[side]]
        lines.append(f"- speeched vs {bt.SIDES[side]}: **{ratio_range(ours, ref)}**")
    lines.append("")
    return lines, {"trainable": expect, "flops_per_audio_s": fpas, "peak_tflops": peak, "runs": res}


def transcribe_section(a: argparse.Namespace, root: Path) -> tuple[list[str], dict]:
    import bench_train as bt
    from transformers import SpeechEncoderDecoderModel

    from speeched.inference import DecodeOptions, decode, load_inference_model

    comp = "w2v" if a.cpu_check else "base"
    model_dir = root / f"model-{comp}"
    if not model_dir.exists():
        model_dir = bt.make_model(root, comp, tiny=a.cpu_check)
    device = "cuda" if torch.cuda.is_available() and not a.cpu_check else "cpu"
    rng = np.random.default_rng(0)
    n = 16 if a.cpu_check else 128
    arrays = [
        (0.1 * rng.standard_normal(int(rng.uniform(4, 12) * 16000))).astype(np.float32) for _ in range(n)
    ]
    audio = sum(len(x) for x in arrays) / 16000
    im = load_inference_model(model_dir, device)
    ref = SpeechEncoderDecoderModel.from_pretrained(model_dir).to(device).eval()
    fe = im.feature_extractor
    batch = 16

    def ours() -> float:
        t0 = time.perf_counter()
        decode(im, arrays, DecodeOptions(num_beams=1, ctc_weight=0.0, max_new_tokens=a.tokens, max_batch_size=batch,
                                         max_duration=1e9, device=device))  # fmt: skip
        sync()
        return time.perf_counter() - t0

    def theirs() -> float:
        t0 = time.perf_counter()
        order = np.argsort([len(x) for x in arrays])  # sorted batches like ours: only batching differs less
        with torch.inference_mode():
            for i in range(0, n, batch):
                chunk = [arrays[j] for j in order[i : i + batch]]
                f = fe(
                    chunk, sampling_rate=16000, return_tensors="pt", padding=True, return_attention_mask=True
                )
                ref.generate(f.input_values.to(device), attention_mask=f.attention_mask.to(device),
                             max_new_tokens=a.tokens, min_new_tokens=a.tokens, num_beams=1)  # fmt: skip
        sync()
        return time.perf_counter() - t0

    times = {"speeched decode": [], "transformers generate (length-sorted batches)": []}
    for _ in range(a.repeats):
        times["speeched decode"].append(ours())
        times["transformers generate (length-sorted batches)"].append(theirs())
    lines = [
        f"### Transcription RTFx ({n} inputs, {audio:.0f} s, batches of {batch}, greedy, {a.tokens} tokens each)",
        "",
        "| system | RTFx |",
        "|---|---:|",
        *[f"| {k} | {fmt_range([audio / t for t in v])} |" for k, v in times.items()],
        "",
    ]
    return lines, {"audio_s": audio, "times": times}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num", type=int, default=800)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=4, help="DataLoader workers (both sides)")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--peak-tflops", type=float, default=0.0)
    ap.add_argument("--cpu-check", action="store_true", help="run the code paths on CPU at tiny sizes")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if not torch.cuda.is_available() and not a.cpu_check:
        print("skipped: no CUDA (bench/bench_gpu.py measures bf16 training and transcription on a GPU)")
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps({"skipped": "no CUDA", "load_average": load_average()}))
        return
    if a.cpu_check:
        a.steps, a.warmup, a.repeats, a.num, a.batch_size, a.workers, a.tokens = 2, 1, 1, 24, 4, 0, 4
    device = (
        torch.cuda.get_device_name() if torch.cuda.is_available() and not a.cpu_check else "CPU (check only)"
    )
    out = [f"- device: {device}", *machine_lines(), ""]
    report: dict = {"device": device}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lines, report["train"] = train_section(a, root)
        out += lines
        lines, report["transcribe"] = transcribe_section(a, root)
        out += lines
    out.append(f"- load average at end: {load_average()}; command: `.venv/bin/python bench/bench_gpu.py "
               f"{' '.join(sys.argv[1:])}`")  # fmt: skip
    print("\n".join(out))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({**report, "markdown": "\n".join(out)}, indent=1, default=str))


if __name__ == "__main__":
    main()
