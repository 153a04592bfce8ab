"""The two pretrained halves: loading them (hub IDs or local dirs, config-only dirs, encoders of seq2seq
checkpoints), checking each can play its part, and wiring them to the composite config.

Keeps the reference's behaviour where it is right and fixes where it is not: decoders whose
transformers-5 configs lack `is_decoder` (GPT-2, Llama), encoders that are halves of encoder-decoder
checkpoints (Whisper, Speech2Text), and decoders that silently have no cross-attention.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    MODEL_MAPPING,
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)

from speeched.errors import SpeechedError
from speeched.modeling.ctranslate2_whisper import is_ct2_whisper_dir
from speeched.modeling.whisper_encoder import any_length

logger = logging.getLogger("speeched")

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
CROSS_ATTENTION_NAMES = ("crossattention", "cross_attn", "encoder_attn", "cross_attention")
SPEECH_INPUTS = (
    "input_values",
    "input_features",
)  # what a speech encoder's forward reads (raw audio, log-mel)
DECODER_FAMILIES = (
    "with cross-attention (the default): BERT, RoBERTa, ELECTRA, GPT-2 and the decoders of BART, mBART, "
    "Marian, Pegasus, Whisper; decoder-only LLMs (Llama, Qwen2, Mistral, GPT-2, ...) with "
    "--model-option coupling=prefix"
)
SPEECH_ENCODER_FAMILIES = "wav2vec2, HuBERT, WavLM, data2vec-audio, Whisper, Speech2Text"


class HalfLoadError(SpeechedError, ValueError):
    """A pretrained half could not be found or built, or cannot play its part; the message says what to do."""


def hub_offline() -> bool:
    """True when the environment forbids hub access (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(
        os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_unreachable(err: Exception) -> bool:
    """The error says the hub could not be contacted (offline or no network), not that a repo is missing."""
    text = str(err)
    return hub_offline() or "couldn't connect" in text or "offline mode" in text


@dataclass
class HalfLoadInfo:
    """Where a half's parameters came from (the preflight's load report reads this)."""

    source: str
    random_init: bool
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)


def is_config_only_dir(path: str) -> bool:
    """A local directory with a config.json and no weights: build a randomly initialised half from it."""
    return (
        os.path.isdir(path)
        and os.path.isfile(os.path.join(path, "config.json"))
        and not any(os.path.exists(os.path.join(path, f)) for f in WEIGHT_FILES)
    )


def _offline_hint(name: str, err: Exception) -> HalfLoadError:
    if hub_offline():
        where = "the hub is off limits (offline: HF_HUB_OFFLINE is set)"
    elif hub_unreachable(err):
        where = "the hub could not be reached (no network)"
    else:
        where = "the hub has no such repo"
    return HalfLoadError(
        f"{name!r} was not found locally and {where}: pass a local directory (a folder with config.json and "
        f"model.safetensors, or just a config.json for random init). Original error: {type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}"
    )


def load_config(
    name: str, trust_remote_code: bool = False, **overrides: Any
) -> tuple[PretrainedConfig, dict]:
    if is_ct2_whisper_dir(name):
        raise HalfLoadError(
            f"{name!r} is a faster-whisper (CTranslate2) model, which transformers cannot read: convert it first, "
            f"e.g. `speeched convert {name} --out models/whisper --pad longest`, then pass --encoder models/whisper"
        )
    try:
        return AutoConfig.from_pretrained(
            name, trust_remote_code=trust_remote_code, return_unused_kwargs=True, **overrides
        )
    except OSError as err:
        raise _offline_hint(name, err) from err
    except ValueError as err:  # e.g. "Unrecognized model", or a config.json without model_type
        raise HalfLoadError(
            f"{name!r}: transformers cannot read its config.json: {str(err).splitlines()[0]}"
        ) from err


def base_model_class(config: PretrainedConfig) -> type | None:
    """The AutoModel class of a config (None for classes transformers does not map, e.g. remote code)."""
    return MODEL_MAPPING.get(type(config), None)  # _LazyAutoMapping.get needs the default positionally


def check_speech_encoder(name: str, config: PretrainedConfig) -> None:
    """Refuse a text model as the speech encoder: it would build, then fail at the first forward on audio."""
    cls = base_model_class(config)
    reads = getattr(cls, "main_input_name", None)
    if cls is None or reads in SPEECH_INPUTS:
        return
    raise HalfLoadError(
        f"--encoder {name!r} is a {config.model_type} model, which reads {reads} (text), not audio: the encoder "
        f"must be a speech model ({SPEECH_ENCODER_FAMILIES}, ...). Did you mean to pass it as --decoder?"
    )


def check_decoder(name: str, config: PretrainedConfig) -> None:
    """Refuse a model transformers cannot run as a token-by-token decoder, naming the families that work."""
    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return
    cls = base_model_class(config)
    if getattr(cls, "main_input_name", None) in SPEECH_INPUTS:
        why = "it is a speech model (it reads audio, not text; did you mean to pass it as --encoder?)"
    elif getattr(config, "is_encoder_decoder", False):
        why = (
            f"{config.model_type} is an encoder-decoder model whose decoder transformers cannot load on its own "
            "(it has no causal-LM class)"
        )
    else:
        why = f"{config.model_type} has no causal-LM (text generating) class in transformers"
    raise HalfLoadError(
        f"--decoder {name!r} cannot be the text decoder: {why}. Decoders that work: {DECODER_FAMILIES}."
    )


def encoder_from_config(config: PretrainedConfig) -> PreTrainedModel:
    """Build a speech encoder from its config; for encoder-decoder configs (Whisper, Speech2Text) only the encoder.

    The full model is built on the meta device only to discover its encoder class, so no memory is spent
    on a decoder that is thrown away.
    """
    if not getattr(config, "is_encoder_decoder", False):
        return AutoModel.from_config(config)
    with torch.device("meta"):
        full = AutoModel.from_config(config)
    encoder_cls = type(full.get_encoder())
    if encoder_cls is type(full):
        raise HalfLoadError(f"{type(full).__name__} has no separate encoder to take")
    return any_length(encoder_cls(config))


def load_encoder(
    name: str, trust_remote_code: bool = False, **overrides: Any
) -> tuple[PreTrainedModel, HalfLoadInfo]:
    """A speech encoder from a hub ID or local dir: plain encoders as they are, seq2seq checkpoints' encoders."""
    config, unused = load_config(name, trust_remote_code=trust_remote_code, **overrides)
    if unused:
        raise HalfLoadError(f"unknown encoder option(s) for {name!r}: {sorted(unused)}")
    check_speech_encoder(name, config)
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        config.is_decoder = False
        config.add_cross_attention = False
    if is_config_only_dir(name):
        logger.warning(
            "RANDOM INIT: %s holds only a config.json; the encoder's weights are randomly initialised.", name
        )
        return encoder_from_config(config), HalfLoadInfo(source=name, random_init=True)
    try:
        model, info = AutoModel.from_pretrained(
            name, config=config, trust_remote_code=trust_remote_code, output_loading_info=True
        )
    except OSError as err:
        raise _offline_hint(name, err) from err
    if getattr(config, "is_encoder_decoder", False):
        # Missing/unexpected keys of the full model are about the discarded decoder too; keep the encoder's.
        model = any_length(model.get_encoder())
    return model, HalfLoadInfo(
        source=name,
        random_init=False,
        missing_keys=list(info.get("missing_keys", [])),
        unexpected_keys=list(info.get("unexpected_keys", [])),
    )


def has_cross_attention(decoder: nn.Module) -> bool:
    """True when the decoder really contains cross-attention layers (a config flag alone is not proof:
    Llama accepts `add_cross_attention=True` and then silently ignores the encoder)."""
    return any(any(k in name.lower() for k in CROSS_ATTENTION_NAMES) for name, _ in decoder.named_modules())


def require_cross_attention(decoder: nn.Module) -> None:
    if not has_cross_attention(decoder):
        raise HalfLoadError(
            f"The decoder {type(decoder).__name__} has no cross-attention layers, so it cannot attend to the "
            "speech encoder: with coupling='cross_attention' the audio would be silently ignored. Use a decoder "
            "that supports `add_cross_attention=True` (BERT, RoBERTa, GPT-2, the decoders of BART/mBART/Marian), "
            "or compose with coupling='prefix' to feed the speech as a prefix of a decoder-only LLM."
        )


def prepare_decoder_config(config: PretrainedConfig, coupling: str) -> PretrainedConfig:
    if coupling == "cross_attention":
        config.is_decoder = True
        config.add_cross_attention = True
    else:
        config.add_cross_attention = False
        if hasattr(config, "is_decoder"):
            config.is_decoder = True
    return config


def load_decoder(
    name: str, coupling: str = "cross_attention", trust_remote_code: bool = False, **overrides: Any
) -> tuple[PreTrainedModel, HalfLoadInfo]:
    """A causal-LM decoder; with cross-attention coupling its cross-attention layers are added (random init)."""
    config, unused = load_config(name, trust_remote_code=trust_remote_code, **overrides)
    if unused:
        raise HalfLoadError(f"unknown decoder option(s) for {name!r}: {sorted(unused)}")
    check_decoder(name, config)
    config = prepare_decoder_config(config, coupling)
    if is_config_only_dir(name):
        logger.warning(
            "RANDOM INIT: %s holds only a config.json; the decoder's weights are randomly initialised.", name
        )
        decoder = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        info = HalfLoadInfo(source=name, random_init=True)
    else:
        try:
            decoder, loading = AutoModelForCausalLM.from_pretrained(
                name, config=config, trust_remote_code=trust_remote_code, output_loading_info=True
            )
        except OSError as err:
            raise _offline_hint(name, err) from err
        info = HalfLoadInfo(
            source=name,
            random_init=False,
            missing_keys=list(loading.get("missing_keys", [])),
            unexpected_keys=list(loading.get("unexpected_keys", [])),
        )
    if coupling == "cross_attention":
        require_cross_attention(decoder)
    return decoder, info


def encoder_output_dim(encoder_config: Any) -> int:
    """Width of what the encoder returns: wav2vec2-family adapters change it to `output_hidden_size`."""
    if getattr(encoder_config, "add_adapter", False) and getattr(encoder_config, "output_hidden_size", None):
        return int(encoder_config.output_hidden_size)
    return int(encoder_config.hidden_size)


def share_config(half: nn.Module, shared: Any) -> None:
    """Point `half` and every submodule that holds the half's own config object at `shared`.

    The reference rebinds only the top module's `config`; transformers 5 submodules (e.g.
    `Wav2Vec2Encoder`, which reads `config.layerdrop` at every forward) keep the object they were built
    with, so a later `model.config.encoder.layerdrop = 0` would not reach them.
    """
    own = half.config
    for module in half.modules():
        if getattr(module, "config", None) is own:
            module.config = shared


LAYERDROP_KEYS = ("layerdrop", "encoder_layerdrop")


def no_layerdrop_with_layer_weighting(encoder_config: Any) -> list[str]:
    """Layer weighting needs every layer's output, every step; encoder layerdrop skips layers at random in
    training (transformers 5 then returns fewer hidden states, sometimes none). Switch it off, loudly.

    Weighting only the layers that ran is not possible: which layers were dropped is not reported."""
    changed = []
    for key in LAYERDROP_KEYS:
        value = getattr(encoder_config, key, 0.0) or 0.0
        if value > 0:
            setattr(encoder_config, key, 0.0)
            changed.append(f"{key}={value}")
    if changed:
        logger.warning(
            "layer_weighting: encoder %s switched off (layer weighting needs the output of every layer; "
            "layerdrop skips layers at random during training)",
            ", ".join(changed),
        )
    return changed


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "tokenizer.model",
)


def try_load_tokenizer(name: str, trust_remote_code: bool) -> Any:
    """The decoder's tokenizer when it ships one (used for special token ids), else None."""
    if os.path.isdir(name) and not any(os.path.exists(os.path.join(name, f)) for f in TOKENIZER_FILES):
        return None  # AutoTokenizer would build an empty tokenizer whose ids are all 0
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - a missing tokenizer is not fatal here; config ids are the fallback
        logger.debug(
            "no tokenizer loadable from %s (%s); special tokens come from the decoder config", name, err
        )
        return None
