"""speeched: fine-tune speech encoder + text decoder models for ASR and speech translation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["SpeechEncoderDecoderConfig", "SpeechEncoderDecoderModel"]

if TYPE_CHECKING:
    from speeched.modeling.configuration import SpeechEncoderDecoderConfig
    from speeched.modeling.model import SpeechEncoderDecoderModel


def __getattr__(name: str) -> Any:
    # Lazy: `speeched --help` and data commands should not pay for importing torch/transformers.
    if name == "SpeechEncoderDecoderConfig":
        from speeched.modeling.configuration import SpeechEncoderDecoderConfig

        return SpeechEncoderDecoderConfig
    if name == "SpeechEncoderDecoderModel":
        from speeched.modeling.model import SpeechEncoderDecoderModel

        return SpeechEncoderDecoderModel
    raise AttributeError(f"module 'speeched' has no attribute {name!r}")
