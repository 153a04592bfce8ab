"""Waveforms → the encoder's input tensors, and the checks that keep silence and NaN away from decoding.

Digital silence is answered without decoding: a feature extractor with per-utterance normalisation
(Speech2Text's log-mel CMVN) divides by a zero variance and returns NaN, and a decoder fed NaN (or
nothing) runs to its token cap producing garbage, which for a 10-minute file takes longer than 10
minutes. So an input whose peak is below `SILENCE_PEAK` never reaches `generate()`; and a row whose
features are not finite anyway is taken out of its batch (`finite_rows`) instead of being decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from speeched.data.audio import NON_FINITE, AudioError
from speeched.data.feature_cache import padding_kwargs
from speeched.inference.options import Decoded

#: Peak amplitude below which an input is digital silence (-80 dBFS): empty text, no decoding.
SILENCE_PEAK = 1e-4


def is_silent(audio: np.ndarray) -> bool:
    """True for empty input or a peak amplitude below `SILENCE_PEAK`."""
    return audio.size == 0 or float(np.max(np.abs(audio))) < SILENCE_PEAK


def has_non_finite(audio: np.ndarray) -> bool:
    return bool(audio.size) and not bool(np.isfinite(audio).all())


def featurize(feature_extractor: Any, arrays: Sequence[np.ndarray], device: Any) -> dict[str, torch.Tensor]:
    """Pad a batch of waveforms (at the extractor's sampling rate) with the feature extractor and move
    to `device`; keep only what the encoder takes.

    The attention mask is passed only when the extractor produces one by default: wav2vec2 checkpoints
    with group-norm feature encoders must see zero padding without a mask (as in transformers). A
    fixed-window extractor (Whisper's `n_samples`) pads as in training (`padding_kwargs`): `padding=True`
    alone would pad Whisper's inputs to the longest, which transformers' Whisper encoder refuses.
    """
    sr = feature_extractor.sampling_rate
    pad = padding_kwargs(feature_extractor)
    # Rows a per-utterance normalisation turns into NaN (zero variance) are caught by `finite_rows`.
    with np.errstate(divide="ignore", invalid="ignore"):
        enc = feature_extractor(list(arrays), sampling_rate=sr, return_tensors="pt", **pad)
    names = list(getattr(feature_extractor, "model_input_names", ["input_values"])) + ["attention_mask"]
    return {k: v.to(device) for k, v in enc.items() if k in names}


def finite_rows(inputs: dict[str, torch.Tensor]) -> list[bool]:
    """Per batch row: are all of its encoder inputs finite?"""
    name = "input_values" if "input_values" in inputs else "input_features"
    x = inputs[name]
    return torch.isfinite(x.reshape(x.shape[0], -1).float()).all(dim=1).tolist()


def select_rows(inputs: dict[str, torch.Tensor], keep: Sequence[int]) -> dict[str, torch.Tensor]:
    index = torch.tensor(list(keep), dtype=torch.long, device=next(iter(inputs.values())).device)
    return {k: v.index_select(0, index) for k, v in inputs.items()}


SILENCE = "digital silence"


def screen(audio: np.ndarray, index: int, batch: int) -> Decoded | None:
    """The answer for an input that must not reach decoding (non-finite samples, digital silence), else None.

    Every backend (torch `decode`, ONNX `decode_onnx`) screens its inputs with this one function."""
    if has_non_finite(audio):
        detail = f"{int((~np.isfinite(audio)).sum())} non-finite samples"
        return Decoded("", batch=batch, error=AudioError(NON_FINITE, f"input {index}", detail))
    if is_silent(audio):
        return Decoded("", batch=batch, skipped=SILENCE)
    return None
