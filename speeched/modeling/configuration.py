"""`SpeechEncoderDecoderConfig`: a composite config (encoder + decoder sub-configs) plus speeched's extensions.

It keeps `model_type = "speech-encoder-decoder"` so that a plain composition saved by speeched is read
by transformers' `SpeechEncoderDecoderModel` and vice versa. Every extension defaults to "off"; a config
with all extensions off describes exactly the reference architecture.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from speeched.errors import SpeechedError

COUPLINGS = ("cross_attention", "prefix")
PROJECTORS = ("linear", "mlp")
# Types of the extension fields, checked before their values (`ctc_weight="abc"` from a command line must be
# a clear error, not a TypeError inside a comparison).
EXTENSION_TYPES: dict[str, tuple[type, ...]] = {
    "coupling": (str,),
    "adaptor_layers": (int,),
    "adaptor_stride": (int,),
    "adaptor_kernel_size": (int,),
    "projector": (str, type(None)),
    "layer_weighting": (bool,),
    "ctc_weight": (int, float),
    "ctc_vocab": (list, type(None)),
    "ctc_units": (str,),
    "spec_augment": (dict, type(None)),
    "prompt": (str, type(None)),
}
TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a mapping",
    type(None): "null",
}


class ModelConfigError(SpeechedError, ValueError):
    """An extension setting that cannot work (wrong type, out of range, missing companion); exit 2."""


def check_extension_types(values: dict[str, Any]) -> None:
    """Each known extension value has its type (bool is not a number here, a number not a bool)."""
    for key, value in values.items():
        types = EXTENSION_TYPES.get(key)
        if types is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = [TYPE_NAMES[t] for t in types if not (t is int and float in types)]
            raise ModelConfigError(f"{key} must be {' or '.join(names)}, got {value!r}")


class SpeechEncoderDecoderConfig(PreTrainedConfig):
    """Configuration of a speech encoder warm-started together with a text decoder.

    Extension fields (all off by default, so the model equals transformers' class):
      coupling: "cross_attention" (decoder attends to encoder states) or "prefix" (projected speech
        frames are prepended to a decoder-only LLM's input embeddings).
      adaptor_layers / adaptor_stride / adaptor_kernel_size: strided 1-D conv + GLU layers that cut the
        encoder sequence by stride**layers (fairseq xm_transformer / ESPnet style).
      projector: None (reference behaviour: a Linear only when widths differ), "linear" or "mlp".
      layer_weighting: learnable softmax weights over all encoder layers' hidden states (SUPERB).
      ctc_weight: λ in loss = (1-λ)·CE + λ·CTC; `ctc_vocab` lists the CTC units (index 0 = blank).
      ctc_units: "char" or "word" units for the CTC vocabulary.
      spec_augment: time/frequency masking for log-mel encoders in training, e.g.
        {"time_masks": 2, "time_width": 0.05, "freq_masks": 2, "freq_width": 8}.
      prompt: text prompt placed after the speech prefix in "prefix" coupling.
      decoder_prompt: the decoder prompt (task/language tokens) definition (speeched.modeling.prompting.PromptSpec as a
        dict): mBART-50 language token, Whisper-style tokens or a template; None = no prompt.
      decoding: {"num_beams", "ctc_weight"} the model was validated with in training; the defaults of
        `speeched eval` and `speeched transcribe`.
    """

    model_type = "speech-encoder-decoder"
    sub_configs_defaults = {
        "encoder": SubConfigSpec(config_class=AutoConfig, model_type="wav2vec2"),
        "decoder": SubConfigSpec(
            config_class=AutoConfig,
            model_type="bert",
            init_kwargs={"is_decoder": True, "add_cross_attention": True},
        ),
    }

    encoder: PreTrainedConfig | dict | None = None
    decoder: PreTrainedConfig | dict | None = None
    is_encoder_decoder: bool | None = True
    decoder_start_token_id: int | None = None
    pad_token_id: int | None = None
    eos_token_id: int | None = None
    bos_token_id: int | None = None

    coupling: str = "cross_attention"
    adaptor_layers: int = 0
    adaptor_stride: int = 2
    adaptor_kernel_size: int = 3
    projector: str | None = None
    layer_weighting: bool = False
    ctc_weight: float = 0.0
    ctc_vocab: list[str] | None = None
    ctc_units: str = "char"
    spec_augment: dict | None = None
    prompt: str | None = None
    decoder_prompt: dict | None = None
    decoding: dict | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.validate_extensions()

    def validate_extensions(self) -> None:
        """Fail at construction, with the fix, rather than deep inside a forward pass."""
        check_extension_types({key: getattr(self, key) for key in EXTENSION_TYPES})
        if self.coupling not in COUPLINGS:
            raise ModelConfigError(f"coupling={self.coupling!r} is not supported: choose one of {COUPLINGS}")
        if self.projector is not None and self.projector not in PROJECTORS:
            raise ModelConfigError(
                f"projector={self.projector!r} is not supported: choose one of {PROJECTORS} or None"
            )
        if self.adaptor_layers < 0:
            raise ModelConfigError(f"adaptor_layers must be >= 0, got {self.adaptor_layers}")
        if self.adaptor_layers and self.adaptor_stride < 1:
            raise ModelConfigError(f"adaptor_stride must be >= 1, got {self.adaptor_stride}")
        if not 0.0 <= self.ctc_weight < 1.0:
            raise ModelConfigError(f"ctc_weight must be in [0, 1), got {self.ctc_weight}")
        if self.ctc_weight > 0 and not self.ctc_vocab:
            raise ModelConfigError(
                "ctc_weight > 0 needs a CTC vocabulary: pass ctc_vocab=[...] or build one from transcripts with "
                "speeched.modeling.ctc.build_ctc_vocab(texts)"
            )
        if self.ctc_units not in ("char", "word"):
            raise ModelConfigError(f"ctc_units must be 'char' or 'word', got {self.ctc_units!r}")

    @property
    def uses_extensions(self) -> bool:
        """True when transformers' own SpeechEncoderDecoderModel can no longer load this model faithfully."""
        return bool(
            self.coupling != "cross_attention"
            or self.adaptor_layers
            or self.projector is not None
            or self.layer_weighting
            or self.ctc_vocab
            or self.spec_augment
        )

    @classmethod
    def from_encoder_decoder_configs(
        cls, encoder_config: PreTrainedConfig, decoder_config: PreTrainedConfig, **kwargs: Any
    ) -> SpeechEncoderDecoderConfig:
        """Compose from two configs. With cross-attention coupling the decoder becomes a cross-attending decoder.

        Unlike the reference this never *reads* `decoder_config.is_decoder`: transformers-5 configs of
        GPT-2 and Llama do not have that attribute.
        """
        if kwargs.get("coupling", "cross_attention") == "cross_attention":
            decoder_config.is_decoder = True
            decoder_config.add_cross_attention = True
        else:
            decoder_config.add_cross_attention = False
        return cls(encoder=encoder_config.to_dict(), decoder=decoder_config.to_dict(), **kwargs)
