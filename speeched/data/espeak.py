"""A minimal ctypes wrapper around the eSpeak NG shipped in the `espeakng-loader` wheel.

Why ctypes and not a subprocess: no `espeak-ng` binary is installed, and keeping the library in
process makes synthesis hundreds of times faster than real time. eSpeak keeps global state, so the
library is initialised once per process and every call holds a lock.

Determinism: the noise generators are reseeded before every utterance, but eSpeak also keeps
hidden static state (the pitch-flutter phase, the gain control) that carries from one utterance
to the next. So audio is byte-identical for the same *sequence* of calls in a fresh process, not
for the same call in any process; `speeched.data.synth` relies on exactly that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from functools import lru_cache
from pathlib import Path

import espeakng_loader
import numpy as np
import soxr

SAMPLE_RATE = 16_000

# English voice variants that give clear, intelligible speech (the `!v` variant files shipped with
# eSpeak NG). Whisper/croak/robot variants are left out: they are hard to understand even for people.
ENGLISH_VOICES: tuple[str, ...] = (
    "en",
    "en-us",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-us+f1",
    "en-us+f2",
    "en-us+f3",
    "en-us+f4",
    "en-us+m1",
    "en-us+m2",
    "en-us+m3",
    "en-us+m4",
    "en+f2",
    "en+f5",
    "en+m3",
    "en+m5",
    "en+m7",
    "en-gb-x-rp+f3",
    "en-gb-x-rp+m2",
)

# Synthesiser variants (files in espeak-ng-data/voices/!v) crossed with every English accent by
# `speeched data synth`: the default voice ("", written "default" in manifests), the male/female
# formant variants and the Klatt synthesiser variants, as in issue 15's accent measurements. The many
# novelty variants (whisper, croak, robots, character voices) are left out; any `!v` file can still be
# named with --variants.
CLEAR_VARIANTS: tuple[str, ...] = (
    "",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
)
# The named human-voice variants in the same folder (each a different pitch range, formant scaling,
# roughness or Klatt setting), added to the clear ones for training data that covers many more speakers
# (issue 15: a model trained on 16 variants does not read a 17th). Left out: robots, whisper, croak,
# the cartoon and child voices (zac, shelby, Tweaky, Demonic...) and voices that are only comments.
NAMED_VARIANTS: tuple[str, ...] = (
    "f5",
    "m8",
    "klatt5",
    "klatt6",
    "Alex",
    "Alicia",
    "Andrea",
    "Andy",
    "Annie",
    "adam",
    "anika",
    "aunty",
    "belinda",
    "benjamin",
    "david",
    "ed",
    "edward",
    "Gene",
    "grandma",
    "grandpa",
    "iven",
    "Lee",
    "linda",
    "max",
    "michel",
    "Mike",
    "paul",
    "quincy",
    "Reed",
    "rob",
    "robert",
    "steph",
    "travis",
    "victor",
)
BROAD_VARIANTS: tuple[str, ...] = CLEAR_VARIANTS + NAMED_VARIANTS  # `data synth`'s default grid
DEFAULT_VARIANT_NAME = "default"
# Language files that are English in name but not in the Latin script our texts use.
_NOT_LATIN_SCRIPT = ("en-shaw",)

# From speak_lib.h (eSpeak NG 1.5x).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_EE_OK = 0

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()
_state: dict[str, object] = {}


def _library() -> tuple[ctypes.CDLL, int]:
    """Load and initialise libespeak-ng once per process; returns (library, native sample rate)."""
    if "lib" in _state:
        return _state["lib"], _state["rate"]  # type: ignore[return-value]
    lib_path, data_path = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    try:
        lib = ctypes.CDLL(lib_path)
    except OSError as exc:
        raise RuntimeError(
            f"cannot load eSpeak NG from {lib_path}: {exc}; reinstall espeakng-loader"
        ) from exc
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    # eSpeak draws noise from libc's rand(); reseeding it before every utterance makes the audio a
    # pure function of (text, voice, rate, pitch, range), whatever was synthesized before.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.srand.argtypes = [ctypes.c_uint]
    libc.srand.restype = None
    if hasattr(lib, "espeak_ng_SetRandSeed"):  # eSpeak NG >= 1.52 has its own generator too
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT)
    if rate <= 0:
        raise RuntimeError(f"espeak_Initialize failed (returned {rate}) with data path {data_path}")
    chunks: list[np.ndarray] = []

    def on_audio(wav: ctypes.POINTER(ctypes.c_short), num_samples: int, events: int) -> int:  # type: ignore[valid-type]
        if wav and num_samples > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = keep synthesizing

    # ctypes does not keep the callback alive: eSpeak would call freed memory. Keep it in _state.
    callback = _CALLBACK(on_audio)
    lib.espeak_SetSynthCallback(callback)
    _state.update(lib=lib, libc=libc, rate=rate, callback=callback, chunks=chunks)
    return lib, rate


def _data_path() -> Path:
    return Path(espeakng_loader.get_data_path())


@lru_cache(maxsize=1)
def english_accents() -> tuple[str, ...]:
    """Every English accent (language voice) in the installed eSpeak NG data, e.g. en-us, en-029.

    The names of espeak-ng-data/lang/gmw/en* (lowercased: what `espeak_SetVoiceByName` takes; `en`
    is British English); the Shavian-alphabet voice is left out (our texts are in the Latin script).
    """
    names = (p.name.lower() for p in sorted((_data_path() / "lang" / "gmw").glob("en*")))
    return tuple(name for name in names if name not in _NOT_LATIN_SCRIPT)


@lru_cache(maxsize=1)
def all_variants() -> tuple[str, ...]:
    """Every synthesiser variant file eSpeak NG ships (espeak-ng-data/voices/!v)."""
    return tuple(sorted(p.name for p in (_data_path() / "voices" / "!v").iterdir() if p.is_file()))


def voice_name(accent: str, variant: str) -> str:
    """The eSpeak voice string for an (accent, variant) pair; variant "" = the accent's default."""
    return f"{accent}+{variant}" if variant else accent


def parse_voice(voice: str) -> tuple[str, str]:
    """Split `accent[+variant]` and check both exist; raises ValueError naming the valid choices.

    eSpeak itself accepts unknown names (it falls back to a default voice), so we check against its
    data files instead of asking it.
    """
    accent, _, variant = voice.strip().partition("+")
    accent = accent.lower()
    if accent not in english_accents():
        raise ValueError(
            f"unknown English eSpeak accent {accent!r} in voice {voice!r}; valid accents: "
            f"{', '.join(english_accents())} (optionally +VARIANT, e.g. en-us+f2)"
        )
    return accent, parse_variant(variant, f" in voice {voice!r}")


def parse_variant(variant: str, where: str = "") -> str:
    """Check a synthesiser variant name ("default" or "" = none); raises ValueError naming valid ones."""
    variant = variant.strip()
    if variant.lower() == DEFAULT_VARIANT_NAME:
        return ""
    if variant and variant not in all_variants():
        raise ValueError(
            f"unknown eSpeak variant {variant!r}{where}; e.g. {DEFAULT_VARIANT_NAME}, "
            f"{', '.join(v for v in CLEAR_VARIANTS if v)} (all: espeak-ng-data/voices/!v)"
        )
    return variant


class Espeak:
    """Text to 16 kHz float32 speech with eSpeak NG (process-global engine, thread-safe calls)."""

    def __init__(self) -> None:
        self._lib, self.native_rate = _library()

    def has_voice(self, voice: str) -> bool:
        """Whether eSpeak NG accepts `voice` (a language, optionally with a `+variant`)."""
        with _lock:
            return self._lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK

    @staticmethod
    def list_voices() -> list[str]:
        """The curated English voice variants (`language[+variant]`) known to sound clear."""
        return list(ENGLISH_VOICES)

    def synthesize(
        self, text: str, voice: str = "en-us", rate: int = 165, pitch: int = 50, pitch_range: int = 50
    ) -> np.ndarray:
        """Speak `text`; rate in words per minute (80-450), pitch and pitch_range 0-100."""
        if not 80 <= rate <= 450:
            raise ValueError(f"rate={rate} words/minute is outside eSpeak's 80-450")
        for name, value in (("pitch", pitch), ("pitch_range", pitch_range)):
            if not 0 <= value <= 100:
                raise ValueError(f"{name}={value} is outside 0-100")
        lib = self._lib
        chunks: list[np.ndarray] = _state["chunks"]  # type: ignore[assignment]
        with _lock:
            if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise ValueError(f"eSpeak NG has no voice {voice!r}; try one of {', '.join(ENGLISH_VOICES)}")
            for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_VOLUME, 100)):
                lib.espeak_SetParameter(param, int(value), 0)
            chunks.clear()
            _state["libc"].srand(0)  # type: ignore[attr-defined]
            if hasattr(lib, "espeak_ng_SetRandSeed"):
                lib.espeak_ng_SetRandSeed(0)
            data = text.encode("utf-8") + b"\0"
            err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
            chunks.clear()
        if err != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with error {err} on text {text!r}")
        samples = audio.astype(np.float32) / 32768.0
        if self.native_rate != SAMPLE_RATE and samples.size:
            samples = soxr.resample(samples, self.native_rate, SAMPLE_RATE, quality="HQ")
        # Resampling can overshoot full scale by a hair; clip so 16-bit files never wrap around.
        return np.clip(samples, -1.0, 32767 / 32768, dtype=np.float32)
