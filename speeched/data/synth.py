"""Synthesize an offline spoken corpus (digits or English->German sentences) with eSpeak NG.

Why: tests, demos and CI need real speech with exact transcripts and no downloads. Dev and test
use eSpeak voice variants that train never hears, so scores measure generalisation to new voices.

Determinism: everything is planned up front from one `random.Random(seed)`. Because eSpeak keeps
hidden state between utterances (see `speeched.data.espeak`), the plan is cut into fixed shards of
`SHARD_SIZE` utterances and each shard is synthesized in a fresh Python process (never a fork of
a parent that may already have used eSpeak). Same seed -> identical manifests and audio
bytes, whatever `workers` is.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from speeched.data.espeak import ENGLISH_VOICES, SAMPLE_RATE, Espeak
from speeched.data.grammar import GENERATORS, KINDS

SPLITS: tuple[str, ...] = ("train", "dev", "test")
SHARD_SIZE = 128  # utterances per worker process: amortises its ~0.3 s start-up
RATE_RANGE = (130, 200)  # words per minute
PITCH_RANGE = (30, 70)  # eSpeak pitch, 0-100
PITCH_VARIATION_RANGE = (30, 80)  # eSpeak intonation range, 0-100 (low = monotone)


@dataclass
class SynthResult:
    """Where the corpus went and what it holds."""

    out_dir: Path
    manifests: dict[str, Path]  # split -> manifest path (all three are written, possibly empty)
    counts: dict[str, int]
    voices: dict[str, list[str]]  # split -> voice variants used
    audio_seconds: float
    wall_seconds: float

    @property
    def train(self) -> Path:
        return self.manifests["train"]

    @property
    def dev(self) -> Path:
        return self.manifests["dev"]

    @property
    def test(self) -> Path:
        return self.manifests["test"]

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio made per second of wall time (higher is faster)."""
        return self.audio_seconds / max(self.wall_seconds, 1e-9)


@dataclass(frozen=True)
class _Job:
    split: str
    id: str
    text: str
    translation: str | None
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    audio: str  # relative to out_dir


def split_voices(voices: list[str], rng: random.Random, needed: dict[str, int]) -> dict[str, list[str]]:
    """Partition voices so dev and test only use variants train never hears.

    Test gets about a fifth of the voices, dev about a tenth (at least one each when that split has
    utterances), train the rest.
    """
    voices = list(dict.fromkeys(voices))  # unique, order kept
    active = [s for s in SPLITS if needed.get(s, 0) > 0]
    if len(voices) < len(active):
        raise ValueError(
            f"{len(voices)} voice(s) ({', '.join(voices)}) cannot give {', '.join(active)} disjoint voices: "
            f"pass at least {len(active)} with --voices, or set the dev/test fractions to 0"
        )
    shuffled = voices[:]
    rng.shuffle(shuffled)
    n_test = max(1, round(len(voices) * 0.2)) if needed.get("test") else 0
    n_dev = max(1, round(len(voices) * 0.1)) if needed.get("dev") else 0
    if needed.get("train"):  # train keeps at least one voice
        while n_test + n_dev > len(voices) - 1:
            if n_test >= n_dev and n_test > 1:
                n_test -= 1
            else:
                n_dev -= 1
    return {
        "test": shuffled[:n_test],
        "dev": shuffled[n_test : n_test + n_dev],
        "train": shuffled[n_test + n_dev :] if needed.get("train") else [],
    }


def _plan(
    kind: str, num: int, seed: int, voices: list[str], dev_fraction: float, test_fraction: float
) -> tuple[list[_Job], dict[str, int], dict[str, list[str]]]:
    """Every utterance's text, voice and prosody, drawn up front so the result is seed-determined."""
    rng = random.Random(seed)
    n_test = round(num * test_fraction)
    n_dev = round(num * dev_fraction)
    counts = {"train": num - n_test - n_dev, "dev": n_dev, "test": n_test}
    by_split = split_voices(voices, rng, counts)
    generate = GENERATORS[kind]
    jobs: list[_Job] = []
    for split in SPLITS:
        for i in range(counts[split]):
            prompt = generate(rng)
            uid = f"{kind}-{split}-{i:06d}"
            jobs.append(
                _Job(
                    split=split,
                    id=uid,
                    text=prompt.text,
                    translation=prompt.translation,
                    voice=rng.choice(by_split[split]),
                    rate=rng.randint(*RATE_RANGE),
                    pitch=rng.randint(*PITCH_RANGE),
                    pitch_range=rng.randint(*PITCH_VARIATION_RANGE),
                    audio=f"wavs/{split}/{uid}.wav",
                )
            )
    return jobs, counts, by_split


def _run_shard(out_dir: Path, jobs: list[_Job], on_done: Callable[[], None]) -> list[int]:
    """Synthesize one shard in a fresh `python -m speeched.data.synth` process; returns sample counts.

    A subprocess (not multiprocessing) so nothing depends on the caller's `__main__` guard, and the
    child can report each finished utterance on stdout for the progress bar.
    """
    payload = json.dumps({"out_dir": str(Path(out_dir).resolve()), "jobs": [asdict(job) for job in jobs]})
    # The child must import this very copy of speeched, installed or not.
    root = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(
        [sys.executable, "-m", "speeched.data.synth"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(payload)
        proc.stdin.close()
        lengths = []
        for line in proc.stdout:
            lengths.append(int(line))
            on_done()
        stderr = proc.stderr.read()
        code = proc.wait()
    if code != 0 or len(lengths) != len(jobs):
        raise RuntimeError(
            f"eSpeak worker for {jobs[0].id}..{jobs[-1].id} failed (exit code {code}, "
            f"{len(lengths)}/{len(jobs)} utterances done):\n{stderr.strip()[-2000:]}"
        )
    return lengths


def _worker_main() -> None:
    """Child side of `_run_shard`: jobs as JSON on stdin, one sample count per line on stdout."""
    import soundfile as sf

    request = json.load(sys.stdin)
    out_dir = request["out_dir"]
    engine = Espeak()
    for raw in request["jobs"]:
        job = _Job(**raw)
        audio = engine.synthesize(job.text, job.voice, job.rate, job.pitch, job.pitch_range)
        pcm = np.round(audio * 32768.0).clip(-32768, 32767).astype(np.int16)
        sf.write(os.path.join(out_dir, job.audio), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        print(pcm.shape[0], flush=True)


def synthesize_corpus(
    out_dir: str | Path,
    kind: str = "digits",
    num: int = 2000,
    seed: int = 0,
    voices: list[str] | None = None,
    dev_fraction: float = 0.05,
    test_fraction: float = 0.1,
    workers: int = 1,
    progress: bool = True,
) -> SynthResult:
    """Write `out_dir/wavs/<split>/<id>.wav` (16 kHz, 16-bit) and `out_dir/{train,dev,test}.jsonl`.

    Each manifest line: id, audio (relative to the manifest), text, duration, voice, rate, pitch,
    pitch_range, and for `sentences` also translation, lang ("en") and tgt_lang ("de").
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    if num < 1:
        raise ValueError(f"num={num}: ask for at least 1 utterance")
    if workers < 1:
        raise ValueError(f"workers={workers}: use at least 1 worker process")
    for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name}={value} must be in [0, 1)")
    if dev_fraction + test_fraction >= 1:
        raise ValueError(
            f"dev_fraction + test_fraction = {dev_fraction + test_fraction} leaves nothing to train on"
        )
    voices = list(voices) if voices else list(ENGLISH_VOICES)
    engine = Espeak()
    unknown = [v for v in voices if not engine.has_voice(v)]
    if unknown:
        raise ValueError(
            f"unknown eSpeak voice(s) {', '.join(unknown)}; e.g. {', '.join(ENGLISH_VOICES[:6])}"
        )

    out = Path(out_dir)
    jobs, counts, by_split = _plan(kind, num, seed, voices, dev_fraction, test_fraction)
    for split in SPLITS:
        (out / "wavs" / split).mkdir(parents=True, exist_ok=True)

    shards = [jobs[i : i + SHARD_SIZE] for i in range(0, len(jobs), SHARD_SIZE)]
    with (
        tqdm(total=len(jobs), unit="utt", desc=f"synth {kind}", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=min(workers, len(shards))) as pool,
    ):
        lock = threading.Lock()

        def tick() -> None:
            with lock:
                bar.update(1)

        lengths = list(pool.map(lambda shard: _run_shard(out, shard, tick), shards))

    samples = [n for shard in lengths for n in shard]
    manifests = {split: out / f"{split}.jsonl" for split in SPLITS}
    handles = {split: open(path, "w", encoding="utf-8") for split, path in manifests.items()}  # noqa: SIM115
    try:
        for job, n in zip(jobs, samples, strict=True):
            row = {
                "id": job.id,
                "audio": job.audio,
                "text": job.text,
                "duration": round(n / SAMPLE_RATE, 4),
                "voice": job.voice,
                "rate": job.rate,
                "pitch": job.pitch,
                "pitch_range": job.pitch_range,
            }
            if kind == "sentences":
                row.update(translation=job.translation, lang="en", tgt_lang="de")
            handles[job.split].write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        for handle in handles.values():
            handle.close()
    return SynthResult(
        out_dir=out,
        manifests=manifests,
        counts=counts,
        voices=by_split,
        audio_seconds=sum(samples) / SAMPLE_RATE,
        wall_seconds=time.perf_counter() - start,
    )


if __name__ == "__main__":
    _worker_main()
