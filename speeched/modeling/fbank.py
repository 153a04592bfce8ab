"""Speech2Text's log-mel filterbank, all frames in one numpy pass.

Without torchaudio, transformers' `Speech2TextFeatureExtractor` computes its Kaldi-style fbank with
`audio_utils.spectrogram`, which loops over frames in Python (100 iterations per second of audio). On the
demo's long-form transcription bench that loop was ~1.5 s of ~8 s. `kaldi_fbank` does the same
arithmetic on every frame at once (float64 frames, DC removal, pre-emphasis, Povey window, a 512-point
rfft rounded to complex64 as transformers stores it, power, mel floor, natural log) and returns the same
float32 array, bit for bit (tests/test_fbank.py compares them). With torchaudio installed, or with
dither, the extractor's own code runs, so nothing changes where its numerics differ.

The mel product runs on one BLAS thread. numpy's OpenBLAS keeps the threads of a multithreaded call
spinning for about 2**28 cycles (~0.1 s, its THREAD_TIMEOUT) after it returns, on the same cores torch's
threads then compute on: a log-mel training step, whose features are computed between steps, ran
~25% slower for it (docs/benchmark-notes.md, eleventh session). The product is small (80 x 257 x
frames); one thread computes it as fast, the same numbers, and leaves nothing spinning.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController
from transformers import Speech2TextFeatureExtractor
from transformers.utils import is_speech_available

FRAME, HOP, FFT, PREEMPHASIS, MEL_FLOOR = 400, 160, 512, 0.97, 1.192092955078125e-07

#: numpy's BLAS (loaded with numpy, above); `kaldi_fbank` limits it to one thread around its product.
NUMPY_BLAS = ThreadpoolController().select(user_api="blas")


def kaldi_fbank(waveform: np.ndarray, window: np.ndarray, mel_filters: np.ndarray) -> np.ndarray:
    """(frames, mel bins) log-mel features of a 1-D waveform in [-1, 1]; at least FRAME samples."""
    x = np.asarray(waveform, dtype=np.float64) * 2**15  # Kaldi compliance: 16-bit integer scale
    n = 1 + (x.size - FRAME) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP][:n].copy()
    frames -= frames.mean(axis=1, keepdims=True)
    frames[:, 1:] -= PREEMPHASIS * frames[:, :-1]  # numpy buffers the overlapping right-hand side
    frames[:, 0] *= 1 - PREEMPHASIS
    frames *= window.astype(np.float64)
    spectrum = np.fft.rfft(frames, n=FFT, axis=1).astype(np.complex64)
    power = np.abs(spectrum, dtype=np.float64) ** 2.0
    with NUMPY_BLAS.limit(limits=1):
        mel = np.maximum(MEL_FLOOR, np.dot(mel_filters.T, power.T))
    return np.asarray(np.log(mel), dtype=np.float32).T


class VectorisedSpeech2TextFeatureExtractor(Speech2TextFeatureExtractor):
    """`Speech2TextFeatureExtractor` with `kaldi_fbank`; saves itself as the stock class (same config file)."""

    def _extract_fbank_features(self, waveform: np.ndarray) -> np.ndarray:
        waveform = np.squeeze(waveform)
        if is_speech_available() or self.dither or waveform.ndim != 1 or waveform.size < FRAME:
            return super()._extract_fbank_features(waveform)
        return kaldi_fbank(waveform, self.window, self.mel_filters)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["feature_extractor_type"] = Speech2TextFeatureExtractor.__name__
        return out


def vectorised(feature_extractor: Any) -> Any:
    """The same extractor with the one-pass fbank when it is a stock Speech2Text one; others as they are."""
    if type(feature_extractor) is Speech2TextFeatureExtractor:
        return VectorisedSpeech2TextFeatureExtractor.from_dict(feature_extractor.to_dict())
    return feature_extractor
