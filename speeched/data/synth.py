"""Synthesize an offline spoken corpus (digits or English->German sentences) with eSpeak NG.

Why: tests, demos and CI need real speech with exact transcripts and no downloads. Dev and test
use eSpeak voice variants that train never hears, so scores measure generalisation to new voices.

Determinism: everything is planned up front from one `random.Random(seed)`. Because eSpeak keeps
hidden state between utterances (see `speeched.data.espeak`), the plan is cut into fixed shards of
`SHARD_SIZE` utterances and each shard is synthesized in a fresh process (forkserver/spawn, never a
fork of a parent that may already have used eSpeak). Same seed -> identical manifests and audio
bytes, whatever `workers` is.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speeched.data.espeak import ENGLISH_VOICES, SAMPLE_RATE, Espeak
from speeched.data.grammar import GENERATORS, KINDS

SPLITS: tuple[str, ...] = ("train", "dev", "test")
SHARD_SIZE = 64
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
    extra: dict[str, object] = field(default_factory=dict)

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


def _plan(kind: str, num: int, seed: int, voices: list[str], dev_fraction: float, test_fraction: float):
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


def _synth_shard(args: tuple[str, list[_Job]]) -> list[int]:
    """Runs in a fresh worker process: synthesize and write one shard; returns sample counts."""
    import soundfile as sf

    out_dir, jobs = args
    engine = Espeak()
    lengths = []
    for job in jobs:
        audio = engine.synthesize(job.text, job.voice, job.rate, job.pitch, job.pitch_range)
        pcm = np.round(audio * 32768.0).clip(-32768, 32767).astype(np.int16)
        sf.write(os.path.join(out_dir, job.audio), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        lengths.append(int(pcm.shape[0]))
    return lengths


def _context() -> multiprocessing.context.BaseContext:
    """A start method whose children never inherit this process's eSpeak state."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["speeched.data.synth"])  # numpy/soxr/soundfile imported once
        return ctx
    return multiprocessing.get_context("spawn")


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

    shards = [(str(out), jobs[i : i + SHARD_SIZE]) for i in range(0, len(jobs), SHARD_SIZE)]
    lengths: list[list[int]] = [[] for _ in shards]
    ctx = _context()
    with (
        ctx.Pool(processes=min(workers, len(shards)), maxtasksperchild=1) as pool,
        tqdm(total=len(jobs), unit="utt", desc=f"synth {kind}", disable=not progress) as bar,
    ):
        pending = {i: pool.apply_async(_synth_shard, (shard,)) for i, shard in enumerate(shards)}
        while pending:
            for i in [i for i, r in pending.items() if r.ready()]:
                lengths[i] = pending.pop(i).get()
                bar.update(len(shards[i][1]))
            if pending:
                time.sleep(0.02)

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
