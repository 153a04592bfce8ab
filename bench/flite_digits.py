"""Spoken digits from another synthesiser (CMU Flite): speech the demo model never trained on.

The demo corpus is eSpeak NG (formant synthesis). Flite's voices are different engines and different
speakers (kal/kal16: diphone concatenation; awb, rms, slt: CMU ARCTIC clustergen voices built from
recordings), so a model that learned "speech" rather than eSpeak's acoustics should still read them.
This is the nearest offline stand-in for new speakers (issue 15). Flite is a Debian package
(`apt-get install flite`), not a Python wheel, so it is not part of `make install`; the demo and
`bench/bench_generalisation.py` use it when the `flite` binary is on PATH.

Texts come from the same grammar as `speeched data synth --kind digits`; each utterance gets a voice,
a speaking-rate stretch and a pitch drawn from `--seed`. Audio is resampled to 16 kHz with soxr (kal
speaks at 8 kHz), written as 16-bit WAV with a manifest `test.jsonl` that `speeched eval` reads.

    .venv/bin/python bench/flite_digits.py --out data/flite-digits --num 200
    .venv/bin/speeched eval runs/demo/best --data data/flite-digits/test.jsonl --normalizer basic
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import soundfile as sf
import soxr

from speeched.data.grammar import GENERATORS

VOICES = ("kal", "kal16", "awb", "rms", "slt")
F0_MEAN = {"kal": 105, "kal16": 105, "awb": 110, "rms": 100, "slt": 170}  # Hz, about each voice's own
SAMPLE_RATE = 16000
STRETCH = (0.85, 1.2)  # duration_stretch: > 1 is slower speech
F0_SHIFT = (0.85, 1.2)  # multiplies each voice's mean pitch


def available() -> bool:
    return shutil.which("flite") is not None


def synthesize(out: Path, num: int = 200, seed: int = 0, voices: tuple[str, ...] = VOICES) -> Path:
    """Write `num` utterances and `out/test.jsonl`; returns the manifest path."""
    flite = shutil.which("flite")
    if flite is None:
        raise SystemExit("flite is not installed: `apt-get install flite` (Debian/Ubuntu), then run again")
    rng = random.Random(seed)
    generate = GENERATORS["digits"]
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        for i in range(num):
            text = generate(rng).text
            voice = voices[i % len(voices)]
            stretch = rng.uniform(*STRETCH)
            f0 = rng.uniform(*F0_SHIFT)
            # argument list, never a shell string; the text is our own grammar's output
            args = ["-voice", voice, "--setf", f"duration_stretch={stretch:.3f}"]
            args += ["--setf", f"int_f0_target_mean={F0_MEAN[voice] * f0:.0f}", "-t", text, "-o", str(raw)]
            subprocess.run([flite, *args], check=True, capture_output=True)
            audio, sr = sf.read(raw, dtype="float32")
            if sr != SAMPLE_RATE:
                audio = soxr.resample(audio, sr, SAMPLE_RATE)
            rel = f"wavs/flite-{i:05d}.wav"
            sf.write(out / rel, audio, SAMPLE_RATE, subtype="PCM_16")
            rows.append(
                {
                    "id": f"flite-{i:05d}",
                    "audio": rel,
                    "text": text,
                    "duration": round(len(audio) / SAMPLE_RATE, 4),
                    "voice": f"flite-{voice}",
                    "accent": f"flite-{voice}",
                    "variant": "flite",
                    "stretch": round(stretch, 3),
                }
            )
    manifest = out / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/flite-digits")
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(synthesize(Path(a.out), a.num, a.seed))


if __name__ == "__main__":
    main()
