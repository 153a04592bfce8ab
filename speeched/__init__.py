"""speeched: fine-tune speech encoder + text decoder models for ASR and speech translation."""

from speeched.modeling.configuration import SpeechEncoderDecoderConfig
from speeched.modeling.model import SpeechEncoderDecoderModel

__all__ = ["SpeechEncoderDecoderConfig", "SpeechEncoderDecoderModel"]
__version__ = "0.1.0"
