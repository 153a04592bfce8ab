"""Synthesize an offline spoken corpus (digits or English->German sentences) with eSpeak NG (and Piper).

Why: tests, demos and CI need real speech with exact transcripts and no downloads.

Voices: a voice is an (accent, variant) pair: every English accent eSpeak NG ships (en-gb, en-us,
en-029, en-gb-scotland, ...) crossed with synthesiser variants (default, m1-m7, f1-f4, klatt...),
see `speeched.data.espeak`. Rate, pitch and intonation range are drawn per utterance.
- train covers the seen accents x seen variants broadly;
- dev and test use (accent, variant) COMBINATIONS that train never hears, though train hears each of
  their accents and variants in other combinations (generalisation to new combinations);
- test_unseen uses whole accents and variants that train never hears at all (generalisation to new
  accents/synthesisers), with the column `unseen` saying which part is new.
`corpus.json` records the voices, accents and variants of every split.

`piper_fraction` > 0: that share of the train split is spoken instead by a neural voice (Piper's
`en_US-joe-medium`, see `speeched.data.piper_voice`), with its rate and variation drawn per utterance. dev/test/test_unseen stay eSpeak, so their numbers keep measuring the same thing;
speech from a synthesiser never trained on (CMU Flite, `bench/flite_digits.py`) measures what it buys.

Determinism: everything is planned up front from one `random.Random(seed)`. Because eSpeak keeps
hidden state between utterances (see `speeched.data.espeak`), the plan is cut into fixed shards of
`SHARD_SIZE` utterances and each shard is synthesized in a fresh Python process (never a fork of
a parent that may already have used eSpeak). Same seed -> identical manifests and audio
bytes, whatever `workers` is (Piper too: its noise nodes are seeded per shard process). `noise=True`
adds reverberation and noise with `speeched.data.augment`, seeded per utterance from (seed, utterance
number).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from speeched.data import piper_voice
from speeched.data.augment import AugmentConfig, Augmenter
from speeched.data.espeak import (
    BROAD_VARIANTS,
    DEFAULT_VARIANT_NAME,
    SAMPLE_RATE,
    Espeak,
    english_accents,
    parse_variant,
    parse_voice,
    voice_name,
)
from speeched.data.grammar import GENERATORS, KINDS
from speeched.data.piper_voice import VOICE_NAME as PIPER_VOICE
from speeched.data.piper_voice import PiperStyle, PiperVoiceEngine
from speeched.errors import UsageError

SPLITS: tuple[str, ...] = ("train", "dev", "test", "test_unseen")
MANIFEST_NAMES = {split: f"{split}.jsonl" for split in SPLITS}
METADATA = "corpus.json"
# Held out of train entirely, for test_unseen: one accent and two variants (a formant variant and a
# Klatt one), so the split measures both kinds of novelty.
DEFAULT_UNSEEN_ACCENTS: tuple[str, ...] = ("en-029",)
DEFAULT_UNSEEN_VARIANTS: tuple[str, ...] = ("f4", "klatt3")
# What `noise=True` adds (robustness demos): reverberation in half the utterances, then noise.
NOISE_AUGMENT = AugmentConfig(reverb={"p": 0.5, "rt60": (0.2, 0.7)}, noise={"p": 1.0, "snr_db": (5.0, 25.0)})
SHARD_SIZE = 128  # utterances per worker process: amortises its ~0.3 s start-up
RATE_RANGE = (130, 200)  # words per minute
PITCH_RANGE = (30, 70)  # eSpeak pitch, 0-100
PITCH_VARIATION_RANGE = (30, 80)  # eSpeak intonation range, 0-100 (low = monotone)


@dataclass
class SynthResult:
    """Where the corpus went and what it holds."""

    out_dir: Path
    manifests: dict[str, Path]  # split -> manifest path (all are written, possibly empty)
    counts: dict[str, int]
    voices: dict[str, list[str]]  # split -> eSpeak voices (accent[+variant]) it uses
    audio_seconds: float
    wall_seconds: float
    metadata: Path | None = None  # corpus.json

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
    def test_unseen(self) -> Path:
        return self.manifests["test_unseen"]

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio made per second of wall time (higher is faster)."""
        return self.audio_seconds / max(self.wall_seconds, 1e-9)


Combo = tuple[str, str]  # (accent, variant); variant "" = the accent's default voice


@dataclass(frozen=True)
class _Job:
    split: str
    id: str
    text: str
    translation: str | None
    accent: str
    variant: str
    unseen: str | None  # test_unseen: "accent", "variant" or "both"
    rate: int
    pitch: int
    pitch_range: int
    audio: str  # relative to out_dir
    noise_seed: list[int] | None  # (seed, utterance number) when noise is added
    piper: dict | None = None  # spoken by Piper, not eSpeak: a PiperStyle's fields
    piper_seed: int | None = None  # seeds the shard's Piper engine when this is its first Piper utterance

    @property
    def voice(self) -> str:
        return PIPER_VOICE if self.piper is not None else voice_name(self.accent, self.variant)


def split_combos(
    combos: list[Combo],
    rng: random.Random,
    needed: dict[str, int],
    unseen_accents: tuple[str, ...] = (),
    unseen_variants: tuple[str, ...] = (),
) -> dict[str, list[Combo]]:
    """Assign (accent, variant) combinations to splits.

    Combinations with an unseen accent or variant go to test_unseen only. Of the others, test gets
    about a fifth and dev about a tenth (at least one each when that split has utterances), chosen so
    that train still hears each of their accents and variants in another combination where possible;
    train keeps the rest. No combination is in two splits.
    """
    combos = list(dict.fromkeys(combos))
    unseen = [c for c in combos if c[0] in unseen_accents or c[1] in unseen_variants]
    seen = [c for c in combos if c not in unseen]
    active = [s for s in ("train", "dev", "test") if needed.get(s, 0) > 0]
    if len(seen) < len(active):
        raise UsageError(
            f"{len(seen)} voice(s) outside the held-out accents/variants cannot give {', '.join(active)} "
            f"disjoint voices: pass at least {len(active)} (accent, variant) combinations "
            "(--voices, --accents/--variants), or set the dev/test fractions to 0"
        )
    if needed.get("test_unseen", 0) > 0 and not unseen:
        raise UsageError(
            "no voice uses a held-out accent or variant, so test_unseen would be empty: name some with "
            "--unseen-accents/--unseen-variants (and include them in --voices), or pass --unseen-fraction 0"
        )
    shuffled = seen[:]
    rng.shuffle(shuffled)
    n_test = max(1, round(len(seen) * 0.2)) if needed.get("test") else 0
    n_dev = max(1, round(len(seen) * 0.1)) if needed.get("dev") else 0
    if needed.get("train"):  # train keeps at least one combination
        while n_test + n_dev > len(seen) - 1:
            if n_test >= n_dev and n_test > 1:
                n_test -= 1
            else:
                n_dev -= 1
    held: list[Combo] = []
    train = list(shuffled)
    # First pass: only combinations whose accent and variant train keeps hearing elsewhere.
    for strict in (True, False):
        for combo in list(train):
            if len(held) == n_test + n_dev:
                break
            if strict and (
                sum(c[0] == combo[0] for c in train) < 2 or sum(c[1] == combo[1] for c in train) < 2
            ):
                continue
            train.remove(combo)
            held.append(combo)
    return {
        "train": train if needed.get("train") else [],
        "test": held[:n_test],
        "dev": held[n_test:],
        "test_unseen": unseen if needed.get("test_unseen") else [],
    }


def _split_counts(num: int, fractions: dict[str, float]) -> dict[str, int]:
    """Utterances per split; a split with a fraction > 0 that would get none is refused, not left empty."""
    if sum(fractions.values()) >= 1:
        raise UsageError(
            f"the dev, test and test_unseen fractions sum to {sum(fractions.values()):g}: "
            "they must leave a share for train (sum < 1)"
        )
    counts = {split: math.floor(num * fraction + 0.5) for split, fraction in fractions.items()}
    counts["train"] = num - sum(counts.values())
    empty = [split for split, fraction in fractions.items() if fraction > 0 and counts[split] == 0]
    if empty or counts["train"] < 1:
        minimum = max(math.ceil(0.5 / fractions[s]) for s in empty) if empty else 0
        what = f"gives no {' and no '.join(empty)} utterances" if empty else "leaves nothing to train on"
        raise UsageError(
            f"--num {num} {what} with these fractions ({', '.join(f'{s} {f}' for s, f in fractions.items())}): "
            f"use --num {max(minimum, len(fractions) + 1)} or more, or set that fraction to 0"
        )
    return counts


def _plan(
    kind: str,
    num: int,
    seed: int,
    combos: list[Combo],
    fractions: dict[str, float],
    unseen_accents: tuple[str, ...],
    unseen_variants: tuple[str, ...],
    noise: bool,
    piper_fraction: float = 0.0,
) -> tuple[list[_Job], dict[str, int], dict[str, list[Combo]]]:
    """Every utterance's text, voice and prosody, drawn up front so the result is seed-determined.

    The Piper share is drawn from a second generator, so texts and eSpeak voices are the same as without
    it: a Piper utterance takes over one planned train utterance (same text, id and file)."""
    rng = random.Random(seed)
    counts = _split_counts(num, fractions)
    counts = {split: counts.get(split, 0) for split in SPLITS}
    by_split = split_combos(combos, rng, counts, unseen_accents, unseen_variants)
    generate = GENERATORS[kind]
    # test_unseen is drawn group by group (each held-out accent with seen variants, each held-out variant
    # with seen accents, and the held-out pairs), so one group with many voices (a held-out accent x 50
    # variants) does not drown the others and every group's WER rests on about as many utterances.
    unseen_groups: dict[tuple[str, str], list[Combo]] = {}
    for combo in by_split["test_unseen"]:
        key = (
            combo[0] if combo[0] in unseen_accents else "",
            combo[1] if combo[1] in unseen_variants else "*",
        )
        unseen_groups.setdefault(key, []).append(combo)
    jobs: list[_Job] = []
    for split in SPLITS:
        for i in range(counts[split]):
            prompt = generate(rng)
            uid = f"{kind}-{split}-{i:06d}"
            unseen = None
            if split != "test_unseen":
                accent, variant = rng.choice(by_split[split])
            else:
                accent, variant = rng.choice(unseen_groups[rng.choice(sorted(unseen_groups))])
                new_accent, new_variant = accent in unseen_accents, variant in unseen_variants
                unseen = "both" if new_accent and new_variant else "accent" if new_accent else "variant"
            jobs.append(
                _Job(
                    split=split,
                    id=uid,
                    text=prompt.text,
                    translation=prompt.translation,
                    accent=accent,
                    variant=variant,
                    unseen=unseen,
                    rate=rng.randint(*RATE_RANGE),
                    pitch=rng.randint(*PITCH_RANGE),
                    pitch_range=rng.randint(*PITCH_VARIATION_RANGE),
                    audio=f"wavs/{split}/{uid}.wav",
                    noise_seed=[seed, len(jobs)] if noise else None,
                )
            )
    n_piper = math.floor(piper_fraction * counts["train"] + 0.5)
    if n_piper:
        prng = random.Random(f"{seed}/piper")
        for i in sorted(prng.sample(range(counts["train"]), n_piper)):  # train jobs come first
            style = PiperStyle.draw(prng)
            jobs[i] = dataclasses.replace(
                jobs[i],
                accent="en-us",
                variant="piper-joe",
                piper=asdict(style),
                piper_seed=(seed * 100_003 + i) % 2**20,
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
            f"synthesis worker for {jobs[0].id}..{jobs[-1].id} failed (exit code {code}, "
            f"{len(lengths)}/{len(jobs)} utterances done):\n{stderr.strip()[-2000:]}"
        )
    return lengths


def _worker_main() -> None:
    """Child side of `_run_shard`: jobs as JSON on stdin, one sample count per line on stdout."""
    request = json.load(sys.stdin)
    out_dir = request["out_dir"]
    engine = Espeak()
    piper = None  # loaded at this shard's first Piper utterance (~1 s)
    augmenter = None
    for raw in request["jobs"]:
        job = _Job(**raw)
        if job.piper is not None:
            piper = piper or PiperVoiceEngine(seed=job.piper_seed)
            audio = piper.synthesize(job.text, PiperStyle(**job.piper))
        else:
            audio = engine.synthesize(job.text, job.voice, job.rate, job.pitch, job.pitch_range)
        if job.noise_seed is not None:
            augmenter = augmenter or Augmenter(NOISE_AUGMENT, SAMPLE_RATE)
            audio = augmenter(audio, np.random.default_rng(job.noise_seed))
            peak = float(np.abs(audio).max(initial=0.0))
            if peak > 0.99:  # noise can push peaks past full scale: scale down rather than clip
                audio = audio * (0.99 / peak)
        pcm = np.round(audio * 32768.0).clip(-32768, 32767).astype(np.int16)
        sf.write(os.path.join(out_dir, job.audio), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        print(pcm.shape[0], flush=True)


def _prepare_out_dir(out: Path, force: bool) -> None:
    """Refuse to write over a file or a non-empty folder; with `force`, clear a previous corpus."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: give a folder for the corpus")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UsageError(
                f"--out {out} is not empty: pass --force to replace the corpus there, or choose another folder"
            )
        looks_like_corpus = (out / METADATA).is_file() or (out / "train.jsonl").is_file()
        if not looks_like_corpus:
            raise UsageError(
                f"--out {out} holds files that are not a speeched corpus (no {METADATA} or train.jsonl); "
                "--force only replaces a corpus: choose an empty folder"
            )
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --out {out}: {exc.strerror or exc}") from exc


def _combos(voices: list[str] | None, accents: list[str] | None, variants: list[str] | None) -> list[Combo]:
    """The (accent, variant) pairs to use: `voices` as given, else the grid accents x variants."""
    try:
        if voices:
            return [parse_voice(v) for v in voices]
        accent_list = [parse_voice(a)[0] for a in accents] if accents else list(english_accents())
        variant_list = [parse_variant(v) for v in variants] if variants else list(BROAD_VARIANTS)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return [(a, v) for a in accent_list for v in variant_list]


def _metadata(
    jobs: list[_Job],
    kind: str,
    num: int,
    seed: int,
    counts: dict[str, int],
    by_split: dict[str, list[Combo]],
    unseen_accents: tuple[str, ...],
    unseen_variants: tuple[str, ...],
    noise: bool,
) -> dict:
    def names(combos: list[Combo], index: int) -> list[str]:
        return sorted({c[index] or DEFAULT_VARIANT_NAME for c in combos})

    used: dict[str, set[Combo]] = {split: set() for split in SPLITS}
    used_voices: dict[str, set[str]] = {split: set() for split in SPLITS}
    for job in jobs:
        used[job.split].add((job.accent, job.variant))
        used_voices[job.split].add(job.voice)
    return {
        "kind": kind,
        "num": num,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "counts": counts,
        "manifests": MANIFEST_NAMES,
        "splits": {
            split: {
                "voices": sorted(used_voices[split]),
                "accents": names(list(used[split]), 0),
                "variants": names(list(used[split]), 1),
                "voice_pool": sorted(voice_name(*c) for c in combos),  # allotted; `voices` = used
            }
            for split, combos in by_split.items()
        },
        "unseen_accents": list(unseen_accents),
        "unseen_variants": [v or DEFAULT_VARIANT_NAME for v in unseen_variants],
        "rate_range_wpm": list(RATE_RANGE),
        "pitch_range": list(PITCH_RANGE),
        "pitch_variation_range": list(PITCH_VARIATION_RANGE),
        "noise": NOISE_AUGMENT.model_dump(mode="json") if noise else None,
    }


def _piper_metadata(jobs: list[_Job], fraction: float) -> dict | None:
    n = sum(job.piper is not None for job in jobs)
    if not n:
        return None
    return {
        "voice": PIPER_VOICE,
        "fraction": fraction,
        "train_utterances": n,
        "length_scale_range": list(piper_voice.LENGTH_SCALE_RANGE),
        "noise_scale_range": list(piper_voice.NOISE_SCALE_RANGE),
        "noise_w_range": list(piper_voice.NOISE_W_RANGE),
        "shift_range": list(piper_voice.SHIFT_RANGE),
    }


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
    *,
    accents: list[str] | None = None,
    variants: list[str] | None = None,
    unseen_accents: list[str] | tuple[str, ...] = DEFAULT_UNSEEN_ACCENTS,
    unseen_variants: list[str] | tuple[str, ...] = DEFAULT_UNSEEN_VARIANTS,
    unseen_fraction: float = 0.1,
    noise: bool = False,
    force: bool = False,
    piper_fraction: float = 0.0,
) -> SynthResult:
    """Write `out_dir/wavs/<split>/<id>.wav` (16 kHz, 16-bit), `out_dir/<split>.jsonl` and corpus.json.

    Voices: `voices` (accent[+variant] strings) as given, else every accent in `accents` (default: all
    English accents eSpeak ships) x every variant in `variants` (default: `BROAD_VARIANTS`). Accents
    in `unseen_accents` and variants in `unseen_variants` are heard only in test_unseen.

    `piper_fraction` of the train utterances are spoken by Piper's neural voice instead (needs the
    `voices` extra); the other splits stay eSpeak.

    Each manifest line: id, audio (relative to the manifest), text, duration, voice, accent, variant,
    rate, pitch, pitch_range (Piper lines: engine "piper", length_scale, noise_scale, noise_w, shift);
    in test_unseen also `unseen` (accent | variant | both); for `sentences` also translation, lang
    ("en") and tgt_lang ("de").
    Raises `UsageError` for bad arguments, an existing output (unless `force`) and splits that would be
    empty.
    """
    start = time.perf_counter()
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    if num < 1:
        raise UsageError(f"num={num}: ask for at least 1 utterance")
    if workers < 1:
        raise UsageError(f"workers={workers}: use at least 1 worker process")
    fractions = {"dev": dev_fraction, "test": test_fraction, "test_unseen": unseen_fraction}
    for name, value in fractions.items():
        if not 0 <= value < 1:
            raise UsageError(f"{name} fraction {value} must be in [0, 1)")
    combos = _combos(voices, accents, variants)
    try:
        held_accents = tuple(parse_voice(a)[0] for a in unseen_accents)
        held_variants = tuple(parse_variant(v) for v in unseen_variants)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if unseen_fraction == 0:
        held_accents, held_variants = (), ()
    if not 0 <= piper_fraction <= 1:
        raise UsageError(f"piper fraction {piper_fraction} must be in [0, 1] (a share of the train split)")
    Espeak()  # fail here, not in a worker, if eSpeak cannot load
    if piper_fraction > 0:
        piper_voice.check_available()  # likewise for the Piper voice

    out = Path(out_dir)
    jobs, counts, by_split = _plan(
        kind, num, seed, combos, fractions, held_accents, held_variants, noise, piper_fraction
    )
    _prepare_out_dir(out, force)
    for split in SPLITS:
        (out / "wavs" / split).mkdir(parents=True, exist_ok=True)

    # Piper utterances get shards of their own (each shard process loads the voice once, ~1.5 s), queued
    # first because they are the slow ones (~13x eSpeak per utterance).
    shards = [
        group[i : i + SHARD_SIZE]
        for group in ([j for j in jobs if j.piper is not None], [j for j in jobs if j.piper is None])
        for i in range(0, len(group), SHARD_SIZE)
    ]
    with (
        tqdm(total=len(jobs), unit="utt", desc=f"synth {kind}", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=min(workers, len(shards))) as pool,
    ):
        lock = threading.Lock()

        def tick() -> None:
            with lock:
                bar.update(1)

        lengths = list(pool.map(lambda shard: _run_shard(out, shard, tick), shards))

    done = {
        job.id: n
        for shard, shard_lengths in zip(shards, lengths, strict=True)
        for job, n in zip(shard, shard_lengths, strict=True)
    }
    samples = [done[job.id] for job in jobs]
    manifests = {split: out / name for split, name in MANIFEST_NAMES.items()}
    handles = {split: open(path, "w", encoding="utf-8") for split, path in manifests.items()}  # noqa: SIM115
    try:
        for job, n in zip(jobs, samples, strict=True):
            row = {
                "id": job.id,
                "audio": job.audio,
                "text": job.text,
                "duration": round(n / SAMPLE_RATE, 4),
                "voice": job.voice,
                "accent": job.accent,
                "variant": job.variant or DEFAULT_VARIANT_NAME,
            }
            if job.piper is None:
                row.update(rate=job.rate, pitch=job.pitch, pitch_range=job.pitch_range)
            else:
                row.update(job.piper, engine="piper")
            if job.unseen is not None:
                row["unseen"] = job.unseen
            if kind == "sentences":
                row.update(translation=job.translation, lang="en", tgt_lang="de")
            handles[job.split].write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        for handle in handles.values():
            handle.close()
    metadata = out / METADATA
    info = _metadata(jobs, kind, num, seed, counts, by_split, held_accents, held_variants, noise)
    info["piper"] = _piper_metadata(jobs, piper_fraction)
    metadata.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return SynthResult(
        out_dir=out,
        manifests=manifests,
        counts=counts,
        voices={split: info["splits"][split]["voices"] for split in SPLITS},
        audio_seconds=sum(samples) / SAMPLE_RATE,
        wall_seconds=time.perf_counter() - start,
        metadata=metadata,
    )


if __name__ == "__main__":
    _worker_main()
