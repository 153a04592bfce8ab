"""speeched: fine-tune speech encoder + text decoder models for ASR and speech translation."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["SpeechEncoderDecoderConfig", "SpeechEncoderDecoderModel"]

if TYPE_CHECKING:
    from speeched.modeling.configuration import SpeechEncoderDecoderConfig
    from speeched.modeling.model import SpeechEncoderDecoderModel

# `speeched.SpeechEncoderDecoderModel` resolves on first access (PEP 562), not at `import speeched`: every
# `speeched.*` import runs this file, and `speeched --help` or a recipe check must not pay for importing
# torch and transformers. The TYPE_CHECKING block above states the dependency for readers and tools.
_LAZY = {
    "SpeechEncoderDecoderConfig": "speeched.modeling.configuration",
    "SpeechEncoderDecoderModel": "speeched.modeling.model",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'speeched' has no attribute {name!r}")
