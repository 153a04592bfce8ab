"""Tiny models whose transcripts depend on the audio, for the export and ONNX tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from extension_helpers import NO_DROPOUT
from helpers import minilm_path, tiny_encoder_dir

from speeched.modeling.compose import ComposeSpec, init_model


def audio_model_dir(
    root: Path, name: str = "model", gain: float = 40.0, tiny_decoder: bool = False, **extensions
) -> Path:
    """`speeched init` on a tiny wav2vec2 + 1-layer MiniLM, with the encoder→decoder weights scaled up.

    A randomly initialised tiny encoder barely moves the decoder: every input would give the same
    transcript and a parity test could not tell inputs apart. Scaling the projection (or the adaptor
    stack's last layer) makes the greedy transcript depend on the audio. `tiny_decoder`: a random 2-layer
    BERT of width 48 with MiniLM's tokenizer instead of the real MiniLM (graphs export several times faster)."""
    enc = tiny_encoder_dir(Path(root), "wav2vec2", **NO_DROPOUT)
    out = Path(root) / name
    init_model(
        ComposeSpec(
            encoder=str(enc),
            decoder=minilm_path(),
            decoder_options={
                "num_hidden_layers": 1,
                "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0,
            },
            extensions=extensions,
        ),
        out,
    )
    from speeched.modeling.model import SpeechEncoderDecoderModel

    model = SpeechEncoderDecoderModel.from_pretrained(str(out))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith("enc_to_dec_proj") and n.endswith("weight"):
                p.mul_(gain)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def set_decoding(model_dir: Path, **decoding) -> None:
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["decoding"] = decoding
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=2))


def waveforms(seconds=(1.0, 0.7, 1.3, 0.5), seed: int = 3, sr: int = 16000) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i, s in enumerate(seconds):
        t = np.arange(int(sr * s)) / sr
        tone = np.sin(2 * np.pi * (150 + 120 * i) * t) * (0.3 + 0.1 * i)
        out.append((tone + 0.05 * rng.standard_normal(t.shape)).astype(np.float32))
    return out


def write_wavs(root: Path, arrays: list[np.ndarray], sr: int = 16000) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(arrays):
        p = root / f"utt{i}.wav"
        sf.write(p, a, sr, subtype="FLOAT")
        paths.append(p)
    return paths
