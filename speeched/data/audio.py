"""Decode audio with soundfile, mix to mono, resample with soxr, and classify every way a file can be bad.

soundfile (libsndfile) reads WAV/FLAC/OGG/MP3 without ffmpeg or torchcodec, and `soundfile.info` reads
only the header, so durations are cheap. soxr is used for resampling because it is a fast, high-quality
(VHQ-capable) polyphase resampler with no torch dependency, works on float32 numpy directly and is
what librosa itself uses by default.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from speeched.data.records import Utterance

# Reason strings: one per kind of unusable entry. They appear verbatim in warnings and bad_audio.jsonl.
MISSING = "missing file"
EMPTY_FILE = "0-byte file"
TRUNCATED = "truncated"
NOT_AUDIO = "not audio"
UNSUPPORTED = "unsupported format"
NON_FINITE = "NaN/inf samples"
SILENT = "all silence"
TOO_LONG = "too long"
TOO_SHORT = "too short"
BAD_ENCODING = "unreadable text encoding"
EMPTY_TEXT = "empty transcript"
TOO_MANY_TOKENS = "too many target tokens"

#: Reasons that mean the file itself is unusable (as opposed to a filter choice such as "too long").
DEFECT_REASONS = frozenset(
    {MISSING, EMPTY_FILE, TRUNCATED, NOT_AUDIO, UNSUPPORTED, NON_FINITE, SILENT, BAD_ENCODING}
)

# Leading bytes of containers libsndfile may or may not decode: a file that starts with one of these and
# still fails to open is audio we cannot read ("unsupported format"), not "not audio".
_AUDIO_MAGIC = (
    b"RIFF",
    b"RIFX",
    b"RF64",
    b"fLaC",
    b"OggS",
    b"FORM",
    b"ID3",
    b"caff",
    b".snd",
    b"wvpk",
    b"MThd",
)
_MP4_BRAND = b"ftyp"  # at offset 4 in mp4/m4a

#: Peak amplitude at or below which a decoded file counts as all-silence (about -100 dBFS).
SILENCE_PEAK = 1e-5


class AudioError(Exception):
    """An audio entry that cannot be used; `reason` is one of the reason strings above."""

    def __init__(self, reason: str, where: str, detail: str = "") -> None:
        self.reason, self.where, self.detail = reason, where, detail
        super().__init__(f"{where}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class AudioInfo:
    """Header facts read without decoding the samples."""

    duration: float
    sampling_rate: int
    channels: int
    frames: int


def _source_name(utt: Utterance | str) -> str:
    if isinstance(utt, str):
        return utt
    where = utt.audio or f"<in-memory audio of {utt.id}>"
    return f"{where} [{utt.origin}]" if utt.origin else where


def _riff_truncated(path: str, size: int) -> bool:
    """A WAV whose RIFF/data chunk sizes promise more bytes than the file holds was cut off mid-copy.

    libsndfile opens such files quietly and returns fewer frames, so this is checked by hand.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return len(head) < 12 and head[:4] == b"RIFF"
        riff_size = struct.unpack("<I", head[4:8])[0]
        if riff_size + 8 > size and riff_size != 0xFFFFFFFF:
            return True
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return True
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:8])[0]
            if cid == b"data":
                return csize != 0xFFFFFFFF and pos + 8 + csize > size
            pos += 8 + csize + (csize & 1)
        return True  # no data chunk before the end of the file


def _classify_open_error(path: str, err: Exception) -> AudioError:
    with open(path, "rb") as f:
        head = f.read(12)
    if head.startswith(_AUDIO_MAGIC) or head[4:8] == _MP4_BRAND or head[:2] in (b"\xff\xfb", b"\xff\xf3"):
        if head[:4] == b"RIFF" and _riff_truncated(path, os.path.getsize(path)):
            return AudioError(TRUNCATED, path, f"header promises more bytes than the file holds; {err}")
        return AudioError(UNSUPPORTED, path, f"libsndfile cannot decode this codec/container: {err}")
    return AudioError(NOT_AUDIO, path, f"not a recognised audio file: {err}")


def _check_path(path: str) -> int:
    if not os.path.exists(path):
        raise AudioError(
            MISSING, path, "check the path in the manifest (relative paths are resolved against it)"
        )
    size = os.path.getsize(path)
    if size == 0:
        raise AudioError(EMPTY_FILE, path, "the file is empty; re-copy or re-export it")
    return size


def audio_info(utt: Utterance | str) -> AudioInfo:
    """Read duration/rate/channels from the header only; raises AudioError with a specific reason."""
    if isinstance(utt, Utterance) and utt.audio is None:
        if utt.array is not None:
            sr = int(utt.sampling_rate or 0)
            if sr <= 0:
                raise AudioError(UNSUPPORTED, _source_name(utt), "in-memory array without sampling_rate")
            arr = np.asarray(utt.array)
            frames = arr.shape[0]
            return AudioInfo(frames / sr, sr, 1 if arr.ndim == 1 else arr.shape[1], frames)
        data = utt.audio_bytes()
        if not data:
            raise AudioError(EMPTY_FILE, _source_name(utt), "no audio path, array or bytes")
        try:
            info = sf.info(io.BytesIO(data))
        except Exception as err:  # noqa: BLE001 - libsndfile raises several types
            raise AudioError(NOT_AUDIO, _source_name(utt), str(err)) from err
        return AudioInfo(info.frames / info.samplerate, info.samplerate, info.channels, info.frames)
    path = utt if isinstance(utt, str) else utt.audio
    assert path is not None
    size = _check_path(path)
    try:
        info = sf.info(path)
    except Exception as err:  # noqa: BLE001
        raise _classify_open_error(path, err) from err
    if info.format in ("WAV", "WAVEX") and _riff_truncated(path, size):
        raise AudioError(TRUNCATED, path, "the file ends before the data its header declares; re-copy it")
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(TRUNCATED, path, f"header reports {info.frames} frames at {info.samplerate} Hz")
    return AudioInfo(info.frames / info.samplerate, info.samplerate, info.channels, info.frames)


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono float32 with soxr ('HQ' quality: transparent for speech, fast)."""
    if orig_sr == target_sr:
        return x
    return soxr.resample(x, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def _to_mono(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 1 else x.mean(axis=1, dtype=np.float32)


def check_samples(x: np.ndarray, where: str) -> None:
    """Raise for NaN/inf or all-silent samples: both poison training (NaN loss, or CTC/attention on nothing)."""
    if x.size and not np.isfinite(x).all():
        raise AudioError(NON_FINITE, where, f"{int((~np.isfinite(x)).sum())} non-finite samples")
    if x.size == 0 or float(np.abs(x).max()) <= SILENCE_PEAK:
        raise AudioError(SILENT, where, f"peak amplitude <= {SILENCE_PEAK}")


def load_audio(utt: Utterance | str, target_sr: int, check: bool = True) -> np.ndarray:
    """Decode `utt` (path, Utterance with path/array/`audio_bytes()`) to float32 mono at `target_sr`.

    Raises AudioError (never a bare libsndfile error) so callers can report the file and the reason.
    `check` also rejects NaN/inf and all-silent audio.
    """
    where = _source_name(utt)
    if isinstance(utt, Utterance) and utt.audio is None:
        if utt.array is not None:
            x, sr = np.asarray(utt.array, dtype=np.float32), int(utt.sampling_rate or 0)
            if sr <= 0:
                raise AudioError(UNSUPPORTED, where, "in-memory array without sampling_rate")
        else:
            data = utt.audio_bytes()
            if not data:
                raise AudioError(EMPTY_FILE, where, "no audio path, array or bytes")
            try:
                x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
            except Exception as err:  # noqa: BLE001
                raise AudioError(NOT_AUDIO, where, str(err)) from err
    else:
        path = utt if isinstance(utt, str) else utt.audio
        assert path is not None
        size = _check_path(path)
        try:
            x, sr = sf.read(path, dtype="float32", always_2d=False)
        except sf.LibsndfileError as err:
            if "Error opening" in str(err):
                raise _classify_open_error(path, err) from err
            raise AudioError(TRUNCATED, where, f"decoding stopped early: {err}") from err
        except Exception as err:  # noqa: BLE001
            raise AudioError(TRUNCATED, where, f"decoding failed: {err}") from err
        if path.lower().endswith((".wav", ".wave")) and _riff_truncated(path, size):
            raise AudioError(
                TRUNCATED, where, "the file ends before the data its header declares; re-copy it"
            )
    x = _to_mono(np.asarray(x, dtype=np.float32))
    if check:
        check_samples(x, where)
    return resample(x, int(sr), target_sr)
