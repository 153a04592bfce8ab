"""Waveform augmentation for training: speed, reverberation, additive noise, gain, concatenation.

Configured by `AugmentConfig` (the recipe's `data.augment`; everything is off by default) and applied
per utterance inside DataLoader workers, before feature extraction.

Determinism: every random choice is drawn from the `numpy.random.Generator` passed to the call. The
dataset derives that generator from (seed, epoch, sample index), e.g.
``np.random.default_rng([seed, epoch, index])``, so the same sample in the same epoch gets the same
augmentation whichever worker handles it, and a resumed run reproduces it exactly (`item_rng`).
With a feature cache, set `copies` and key the cache by (index, epoch % copies).

How the pipeline uses it (speeched.data.sampler / dataset / streaming):

- `DurationBucketSampler(..., augment=cfg)` yields `SampleKey(index, epoch, partners, copy)`; the epoch
  travels with the key into the DataLoader workers. Concatenation is decided there: `concat_groups`
  groups an epoch's utterances (same source, 2..max_items with probability p) and the sampler packs the
  groups by `unit_seconds` (utterances + the longest pause per gap), so the batch budget holds.
- `SpeechDataset(..., augment=cfg, seed=s)[key]` loads the utterance and its partners, joins them with
  `concatenate` (transcripts and translations with a space) and applies `Augmenter` with
  `key_rng(s, key, cfg.copies)` (== `item_rng(s, epoch, index, copies)` for a first copy).
- The streaming loader does the same per pool: partners from the same pool, rng from (seed, pass,
  source, shard, row).

Concatenation changes the transcript, so it happens where the text is still a string (before
tokenisation). Speed perturbation with factors < 1 and the silence stage are the ones that lengthen an
item after the batch was packed: a batch may exceed its `max_duration` by a factor 1 / min(speed.factors)
plus twice `silence.seconds[1]` per item.

Libraries: audiomentations does the noise (`AddColorNoise` for generated white/pink/brown noise,
`AddBackgroundNoise` for a folder of noise files) and the gain (`Gain`). audiomentations draws its
randomness from the global `random` and `numpy.random` modules, not from a Generator, so each call is
wrapped in `_seeded_globals(rng)`, which seeds both from `rng` and restores their previous state
afterwards. We deviate from audiomentations in two places:
- speed perturbation: audiomentations has no Kaldi-style speed change (its `TimeStretch` keeps the
  pitch), so we resample with soxr (tempo and pitch change together, as in Kaldi/ESPnet `speed_perturb`);
- reverberation: simulated rooms come from pyroomacoustics (image source method, deterministic given
  the room), and folder RIRs are applied with the same code; audiomentations' `ApplyImpulseResponse`
  keeps the propagation delay, which shifts speech later in time; we cut the RIR at its direct-path peak
  and rescale to the input's RMS, so reverberation neither delays the words nor changes the loudness
  (gain is its own stage).
Compatibility: audiomentations 0.43 declares `soxr<1.0`, so a fresh install resolves soxr 0.5.x; the
only soxr call here (`soxr.resample`) has the same API in 0.5 and 1.x (tests pass with 0.5.0.post1
and 1.1.0).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import soundfile as sf
import soxr
from pydantic import Field, model_validator

from speeched.data.config import StrictModel
from speeched.errors import UsageError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
NOISE_COLOURS = {"white": 0.0, "pink": -3.01, "brown": -6.02}  # PSD decay in dB per octave


def _check_range(name: str, value: tuple[float, float]) -> None:
    if value[0] > value[1]:
        raise ValueError(f"{name}: the lower bound {value[0]} is above the upper bound {value[1]}")


class SpeedConfig(StrictModel):
    """Kaldi-style speed perturbation: resample so the utterance plays `factor` times faster."""

    p: float = Field(0.0, ge=0, le=1, description="probability of changing the speed (0 = off)")
    factors: list[float] = Field(
        [0.9, 1.1],
        min_length=1,
        description="speed factors drawn uniformly when applied; 1.1 = 10% faster and shorter, pitch up",
    )

    @model_validator(mode="after")
    def _positive(self) -> SpeedConfig:
        bad = [f for f in self.factors if not 0.5 <= f <= 2.0]
        if bad:
            raise ValueError(f"speed factors must lie in [0.5, 2.0], got {bad}")
        return self


class NoiseConfig(StrictModel):
    """Additive noise at a random signal-to-noise ratio (relative to the utterance's RMS)."""

    p: float = Field(0.0, ge=0, le=1, description="probability of adding noise (0 = off)")
    snr_db: tuple[float, float] = Field(
        (10.0, 30.0), description="SNR range in dB, drawn uniformly; lower = noisier"
    )
    folder: str | None = Field(
        None,
        description="folder of noise recordings (wav/flac/ogg, searched recursively); "
        "None = generated noise of the colours below",
    )
    colours: list[Literal["white", "pink", "brown"]] = Field(
        ["white", "pink", "brown"], min_length=1, description="generated noise colours, drawn uniformly"
    )

    @model_validator(mode="after")
    def _ranges(self) -> NoiseConfig:
        _check_range("snr_db", self.snr_db)
        return self


class ReverbConfig(StrictModel):
    """Reverberation: convolve with a room impulse response (simulated or from a folder)."""

    p: float = Field(0.0, ge=0, le=1, description="probability of adding reverberation (0 = off)")
    folder: str | None = Field(
        None, description="folder of measured RIRs (wav/flac); None = rooms simulated with pyroomacoustics"
    )
    rt60: tuple[float, float] = Field(
        (0.2, 0.8), description="simulated rooms: reverberation time RT60 range in seconds"
    )
    room_size: tuple[float, float] = Field(
        (3.0, 10.0), description="simulated rooms: range of each wall's length in metres (height 2.5-4 m)"
    )
    num_rooms: int = Field(
        64,
        ge=1,
        description="simulated rooms: size of the pool of RIRs (room k is always the same; "
        "each worker simulates a room the first time it is drawn and keeps it)",
    )

    @model_validator(mode="after")
    def _ranges(self) -> ReverbConfig:
        _check_range("rt60", self.rt60)
        _check_range("room_size", self.room_size)
        if self.rt60[0] <= 0.05 or self.room_size[0] < 2.0:
            raise ValueError("rt60 must be > 0.05 s and room_size >= 2 m")
        return self


class GainConfig(StrictModel):
    """Random loudness change."""

    p: float = Field(0.0, ge=0, le=1, description="probability of changing the gain (0 = off)")
    gain_db: tuple[float, float] = Field((-6.0, 6.0), description="gain range in dB, drawn uniformly")

    @model_validator(mode="after")
    def _ranges(self) -> GainConfig:
        _check_range("gain_db", self.gain_db)
        return self


class SilenceConfig(StrictModel):
    """Leading/trailing silence and a recording noise floor.

    Real recordings start and end with silence and are never digitally silent; synthesised speech starts
    within ~10 ms and is exact zeros between words. A model trained only on the latter misreads the same
    words with 0.1 s of silence added (measured on the demo model: 10% -> 45% WER), because per-utterance
    feature normalisation then sees other statistics. This stage pads each end with a random silence and
    adds white noise at a random level (dB relative to full scale) over the whole item.
    """

    p: float = Field(0.0, ge=0, le=1, description="probability of padding with silence (0 = off)")
    seconds: tuple[float, float] = Field(
        (0.0, 0.4), description="silence added at each end, seconds, drawn uniformly per end"
    )
    floor_db: tuple[float, float] = Field(
        (-90.0, -50.0), description="noise floor over the whole item in dBFS (RMS), drawn uniformly"
    )
    digital_p: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability that a padded item gets no noise floor: exact zeros, as in synthesised or "
        "edited audio and the pauses of recordings made from it",
    )

    @model_validator(mode="after")
    def _ranges(self) -> SilenceConfig:
        _check_range("seconds", self.seconds)
        _check_range("floor_db", self.floor_db)
        if self.seconds[0] < 0:
            raise ValueError("seconds must be >= 0")
        return self


class ConcatConfig(StrictModel):
    """Join 2-3 utterances with pauses (and their transcripts with a space): longer inputs, pauses."""

    p: float = Field(0.0, ge=0, le=1, description="probability that an item is a concatenation (0 = off)")
    max_items: int = Field(3, ge=2, le=8, description="a concatenation joins 2..max_items utterances")
    pause: tuple[float, float] = Field((0.2, 1.0), description="pause between utterances, seconds, uniform")
    max_duration: float = Field(
        20.0, gt=0, description="seconds; utterances that would make the item longer are left out"
    )

    @model_validator(mode="after")
    def _ranges(self) -> ConcatConfig:
        _check_range("pause", self.pause)
        if self.pause[0] < 0:
            raise ValueError("pause must be >= 0 seconds")
        return self


class AugmentConfig(StrictModel):
    """Training-time waveform augmentation (`data.augment`); every part is off unless its `p` > 0.

    Order per utterance: (concatenation) -> speed -> reverberation -> noise -> gain -> silence. Dev/test
    data is never augmented.
    """

    speed: SpeedConfig = Field(
        default_factory=SpeedConfig, description="speed perturbation by resampling (changes the duration)"
    )
    reverb: ReverbConfig = Field(
        default_factory=ReverbConfig, description="room reverberation: simulated rooms or a folder of RIRs"
    )
    noise: NoiseConfig = Field(
        default_factory=NoiseConfig, description="additive noise at a random SNR: generated or from a folder"
    )
    gain: GainConfig = Field(default_factory=GainConfig, description="random loudness change in dB")
    silence: SilenceConfig = Field(
        default_factory=SilenceConfig,
        description="leading/trailing silence and a noise floor (lengthens items after batching, like speed)",
    )
    concat: ConcatConfig = Field(
        default_factory=ConcatConfig,
        description="join 2-3 utterances with pauses and their transcripts with a space",
    )
    copies: int | None = Field(
        None,
        ge=1,
        description="None = a fresh augmentation every epoch. K = only K distinct augmented versions of "
        "each utterance (version = epoch mod K), so a feature cache can keep them: log-mel extraction "
        "costs ~5x more than all augmentations together on this CPU",
    )

    @property
    def enabled(self) -> bool:
        parts = (self.speed, self.reverb, self.noise, self.gain, self.silence, self.concat)
        return any(part.p > 0 for part in parts)


def item_rng(seed: int, epoch: int, index: int, copies: int | None = None) -> np.random.Generator:
    """The Generator for sample `index` in `epoch`: what a dataset passes to the augmenter.

    With `copies` = K, epochs e and e + K get the same augmentation, so (index, epoch % K) is a valid
    feature-cache key. Independent of worker, batch composition and resumption.
    """
    version = epoch if copies is None else epoch % copies
    return np.random.default_rng([seed, version, index])


@contextmanager
def _seeded_globals(rng: np.random.Generator) -> Iterator[None]:
    """Seed `random` and `numpy.random` from `rng` for one audiomentations call, then restore them."""
    py_state, np_state = random.getstate(), np.random.get_state()
    seed = int(rng.integers(2**32))
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _audio_files(folder: str, what: str) -> list[str]:
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"data.augment: {what} folder {folder} does not exist or is not a folder")
    files = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise UsageError(
            f"data.augment: {what} folder {folder} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})"
        )
    return files


def speed_perturb(audio: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Play `audio` `factor` times faster (length / factor, pitch up by the same factor), like Kaldi."""
    if factor == 1.0 or audio.size == 0:
        return audio
    return soxr.resample(audio, sample_rate, sample_rate / factor, quality="HQ").astype(np.float32)


@lru_cache(maxsize=256)
def simulated_rir(
    room: int, sample_rate: int, rt60: tuple[float, float], room_size: tuple[float, float]
) -> np.ndarray:
    """Room `room` of the pool: a shoebox room drawn from `room` alone, simulated by pyroomacoustics.

    Cached per process: simulating one room takes tens of milliseconds, applying it far less.
    """
    import pyroomacoustics as pra

    rng = np.random.default_rng([20251130, room])
    dims = np.array([*rng.uniform(*room_size, size=2), rng.uniform(2.5, 4.0)])
    target_rt60 = float(rng.uniform(*rt60))
    try:
        absorption, max_order = pra.inverse_sabine(target_rt60, dims)
    except ValueError:  # the room is too small for that RT60: take the most reverberant it allows
        absorption, max_order = 0.02, 40
    max_order = min(int(max_order), 40)  # bounds simulation time; the late tail matters little here
    shoebox = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order)
    margin = 0.5
    source = rng.uniform(margin, dims - margin)
    mic = rng.uniform(margin, dims - margin)
    shoebox.add_source(source)
    shoebox.add_microphone(mic)
    shoebox.compute_rir()
    return np.asarray(shoebox.rir[0][0], dtype=np.float32)


@lru_cache(maxsize=256)
def _file_rir(path: str, sample_rate: int) -> np.ndarray:
    rir, rate = sf.read(path, dtype="float32", always_2d=True)
    rir = rir[:, 0]
    if rate != sample_rate:
        rir = soxr.resample(rir, rate, sample_rate).astype(np.float32)
    return rir


def _fft_convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full linear convolution through numpy's FFT: what `scipy.signal.fftconvolve` computes, without
    importing scipy.signal (seconds of start-up in every DataLoader worker)."""
    n = a.size + b.size - 1
    nfft = 1 << (n - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(a, nfft) * np.fft.rfft(b, nfft), nfft)[:n]
    return out


def apply_rir(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with `rir` from its direct-path peak on; same length and RMS as the input."""
    if audio.size == 0 or rir.size == 0:
        return audio
    rir = rir[int(np.argmax(np.abs(rir))) :]
    out = _fft_convolve(audio, rir)[: audio.size]
    rms_in, rms_out = np.sqrt(np.mean(audio**2)), np.sqrt(np.mean(out**2))
    if rms_out > 0:
        out = out * (rms_in / rms_out)
    return out.astype(np.float32)


def add_silence(
    audio: np.ndarray,
    lead: float,
    trail: float,
    floor_db: float | None,
    sample_rate: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """`lead`/`trail` seconds of silence around `audio`, then white noise at `floor_db` dBFS RMS on all of it
    (`None`: no noise, the padding stays exact zeros).

    Plain numpy (audiomentations' noise transforms set the level relative to the signal, not to full scale).
    """
    out = np.pad(
        np.asarray(audio, np.float32), (int(round(lead * sample_rate)), int(round(trail * sample_rate)))
    )
    if floor_db is None:
        return out
    noise = rng.standard_normal(out.size).astype(np.float32) * np.float32(10 ** (floor_db / 20))
    return np.clip(out + noise, -1.0, 1.0)


class Augmenter:
    """Applies an `AugmentConfig` to one utterance at a time; deterministic given the Generator."""

    def __init__(self, config: AugmentConfig, sample_rate: int) -> None:
        from audiomentations import AddBackgroundNoise, AddColorNoise, Gain

        self.config = config
        self.sample_rate = sample_rate
        noise = config.noise
        lo, hi = noise.snr_db
        self._noise_files = _audio_files(noise.folder, "noise") if noise.folder and noise.p > 0 else []
        # p=1: whether to apply is decided here from our rng; audiomentations only draws the parameters.
        self._colour_noise = {
            colour: AddColorNoise(min_snr_db=lo, max_snr_db=hi, min_f_decay=d, max_f_decay=d, p=1.0)
            for colour, d in NOISE_COLOURS.items()
        }
        self._background = (
            AddBackgroundNoise(sounds_path=self._noise_files, min_snr_db=lo, max_snr_db=hi, p=1.0)
            if self._noise_files
            else None
        )
        self._gain = Gain(min_gain_db=config.gain.gain_db[0], max_gain_db=config.gain.gain_db[1], p=1.0)
        reverb = config.reverb
        self._rir_files = _audio_files(reverb.folder, "RIR") if reverb.folder and reverb.p > 0 else []

    def __repr__(self) -> str:
        return f"Augmenter({self.config!r}, sample_rate={self.sample_rate})"

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Speed -> reverb -> noise -> gain, each with its probability; returns float32 mono."""
        cfg = self.config
        audio = np.asarray(audio, dtype=np.float32)
        # Every stage draws its coin (and parameters) unconditionally in a fixed order, so turning one
        # stage on or off does not reshuffle what the others draw for the same item.
        coins = rng.random(4)
        speed = float(rng.choice(cfg.speed.factors))
        room = int(rng.integers(max(len(self._rir_files), cfg.reverb.num_rooms)))
        colour = str(rng.choice(cfg.noise.colours))
        sub_rngs = rng.spawn(2)
        if coins[0] < cfg.speed.p:
            audio = speed_perturb(audio, speed, self.sample_rate)
        if coins[1] < cfg.reverb.p:
            audio = apply_rir(audio, self._rir(room))
        if coins[2] < cfg.noise.p and np.any(audio):
            transform = self._background or self._colour_noise[colour]
            with _seeded_globals(sub_rngs[0]):
                audio = transform(samples=audio, sample_rate=self.sample_rate)
        if coins[3] < cfg.gain.p:
            with _seeded_globals(sub_rngs[1]):
                audio = self._gain(samples=audio, sample_rate=self.sample_rate)
        # drawn after the stages above so that adding this stage left their draws unchanged
        silence_coin = rng.random()
        lead, trail = rng.uniform(*cfg.silence.seconds, size=2)
        floor_db = rng.uniform(*cfg.silence.floor_db)
        digital = rng.random() < cfg.silence.digital_p
        if silence_coin < cfg.silence.p:
            audio = add_silence(audio, lead, trail, None if digital else floor_db, self.sample_rate, rng)
        return np.asarray(audio, dtype=np.float32)

    def _rir(self, room: int) -> np.ndarray:
        if self._rir_files:
            return _file_rir(self._rir_files[room % len(self._rir_files)], self.sample_rate)
        r = self.config.reverb
        return simulated_rir(room % r.num_rooms, self.sample_rate, tuple(r.rt60), tuple(r.room_size))

    def concat_count(self, rng: np.random.Generator) -> int:
        """How many utterances this item joins: 1 (no concatenation) or 2..max_items."""
        c = self.config.concat
        coin, extra = rng.random(), int(rng.integers(2, c.max_items + 1))
        return extra if coin < c.p else 1

    def concatenate(
        self, items: Sequence[tuple[np.ndarray, str]], rng: np.random.Generator
    ) -> tuple[np.ndarray, str]:
        """Join (audio, text) items with this config's pause range and duration cap."""
        c = self.config.concat
        return concatenate(items, rng, c.pause, self.sample_rate, c.max_duration)


def concatenate(
    items: Sequence[tuple[np.ndarray, str]],
    rng: np.random.Generator,
    pause_range: tuple[float, float] = (0.2, 1.0),
    sample_rate: int = 16_000,
    max_duration: float | None = None,
) -> tuple[np.ndarray, str]:
    """Join utterances with silent pauses of random length (seconds, uniform in `pause_range`).

    Texts are joined with one space. The first item is always kept; a later one that would make the
    result longer than `max_duration` seconds is left out (with its text). Returns (audio, text).
    """
    if not items:
        raise ValueError("concatenate needs at least one (audio, text) item")
    pauses = rng.uniform(*pause_range, size=len(items))  # drawn up front: same draws whatever is dropped
    pieces = [np.asarray(items[0][0], dtype=np.float32)]
    texts = [items[0][1].strip()]
    total = pieces[0].size
    limit = None if max_duration is None else int(max_duration * sample_rate)
    for (audio, text), pause in zip(items[1:], pauses[1:], strict=True):
        gap = np.zeros(int(round(pause * sample_rate)), dtype=np.float32)
        audio = np.asarray(audio, dtype=np.float32)
        if limit is not None and total + gap.size + audio.size > limit:
            continue
        pieces += [gap, audio]
        texts.append(text.strip())
        total += gap.size + audio.size
    return np.concatenate(pieces), " ".join(t for t in texts if t)


# ---- how datasets and samplers use it ----------------------------------------------------------------
class SampleKey(NamedTuple):
    """One training item as an augmenting sampler yields it (the DataLoader hands it to `dataset[key]`).

    The epoch travels with the key, so DataLoader workers (which hold their own copy of the dataset, and
    with `persistent_workers` never see a `set_epoch` made in the main process) always know it.
    `partners`: utterances joined after `index` (concatenation, chosen by the sampler so the batch's
    duration budget holds). `copy`: the k-th occurrence of `index` in this epoch (weighted up-sampling),
    so copies get different augmentations.
    """

    index: int
    epoch: int
    partners: tuple[int, ...] = ()
    copy: int = 0


def key_rng(seed: int, key: SampleKey, copies: int | None = None) -> np.random.Generator:
    """The Generator for one item: `item_rng(seed, epoch, index, copies)`, with the copy number mixed
    in for a second or later occurrence of the same utterance in an epoch."""
    if key.copy == 0:
        return item_rng(seed, key.epoch, key.index, copies)
    version = key.epoch if copies is None else key.epoch % copies
    return np.random.default_rng([seed, version, key.index, key.copy])


def concat_groups(
    durations: np.ndarray,
    groups_of: np.ndarray,
    concat: ConcatConfig,
    rng: np.random.Generator,
    cap: float | None = None,
    lookahead: int = 16,
) -> list[list[int]]:
    """Partition positions 0..n-1 into units of 1..`max_items` (concatenations), every position once.

    With probability `p` a unit starts a concatenation of 2..max_items: its partners are the next unused
    positions (in a random order, at most `lookahead` ahead) of the same group (`groups_of`, e.g. the
    source: never join two languages) whose duration fits. A unit's budgeted duration (`unit_seconds`)
    is the sum of its utterances plus the longest pause per gap; it never exceeds
    min(`concat.max_duration`, `cap`), so a sampler packing units by that duration keeps its batch
    budget exactly. A deterministic function of `rng`'s state.
    """
    n = len(durations)
    limit = min(concat.max_duration, cap if cap is not None else math.inf)
    perm = rng.permutation(n).tolist()
    coins = rng.random(n)
    sizes = rng.integers(2, concat.max_items + 1, size=n)
    used = np.zeros(n, dtype=bool)
    d = np.asarray(durations, dtype=np.float64).tolist()
    gid = np.asarray(groups_of).tolist()
    gap = concat.pause[1]
    units: list[list[int]] = []
    for t, i in enumerate(perm):
        if used[i]:
            continue
        used[i] = True
        unit, total = [i], d[i]
        if coins[i] < concat.p:
            want = int(sizes[i]) - 1
            for j in perm[t + 1 : t + 1 + lookahead]:
                if not want:
                    break
                if used[j] or gid[j] != gid[i] or total + gap + d[j] > limit:
                    continue
                used[j] = True
                unit.append(j)
                total += gap + d[j]
                want -= 1
        units.append(unit)
    return units


def unit_seconds(unit: Sequence[int], durations: np.ndarray, concat: ConcatConfig) -> float:
    """The duration a sampler budgets for a unit: its utterances plus the longest pause per gap."""
    return float(sum(durations[i] for i in unit)) + concat.pause[1] * (len(unit) - 1)
