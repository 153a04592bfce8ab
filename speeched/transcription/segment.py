"""Cut long recordings into decodable segments while streaming them, with bounded memory.

An hour of 16 kHz float32 is 230 MB, and an encoder-decoder trained on short utterances cannot decode
it in one go anyway. So a file is read in blocks (`SoundFile.read(frames)`), mixed to mono and
resampled block by block with soxr's streaming resampler, and a segmenter turns the stream into
segments with sample-exact start/end times. Only a window of a few segments is held at once.

Segments stay within the duration range the model was trained on (`segment_limit`: an exported model
records `config.training_durations`); a model trained on 1-3 s utterances and handed 18 s spans of
several utterances collapses into repetitions, so by default one pause-delimited stretch of speech is
one segment (no packing of several), and stretches longer than the limit are cut at their quietest
point within it.

Segmenters:
- `VadSegmenter` ("vad"): speech spans from Silero VAD (`silero-vad` package, whose wheel ships the
  model; run through torch, never its torchaudio-based file reader).
- `SilenceSegmenter` ("energy", alias "silence"): voiced regions by frame energy relative to the
  loudest frame (`energy_split`, librosa's `effects.split` rule); the fallback when silero-vad is not
  importable.
- `FixedSegmenter` ("fixed"): fixed windows with `overlap` seconds shared by neighbours; the duplicated
  words are removed when stitching (see `runner.stitch`).
Pause segmenters never overlap, so their text is simply concatenated. `SegmentationReport` records
what was done per file (method, count, min/median/max length, the limit and where it came from).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch

# Frames for the energy analysis (64 ms / 16 ms at 16 kHz).
FRAME_SECONDS = 0.064
HOP_SECONDS = 0.016
# A window whose peak power is this low (~ -50 dBFS) is all silence; the energy rule's reference frame
# RMS never drops below it either.
ABSOLUTE_FLOOR_POWER = 1e-5
# Without a recorded training range (models exported before it was recorded): the old default.
DEFAULT_MAX_SEGMENT = 20.0
# A limit derived from training durations is kept within these bounds (seconds).
LIMIT_FLOOR, LIMIT_CEILING = 2.0, 30.0
SEGMENTATIONS = ("vad", "energy", "silence", "fixed")
# What is left of a region after cutting it at the limit, if shorter than this, is dropped: it is
# the padding or the fading tail of a region just over the limit, and alone it only invites a hallucination.
MIN_TAIL_SECONDS = 0.25
# Digital silence (runs of exact zeros, at least 10 ms: synthesised or edited audio; no microphone produces
# them) inside a segment is filled with white noise at this level before decoding. A segment's padding
# reaches into the pauses around it. With exact zeros there, the log-mel frames sit at the extractor's
# floor, log(1e-7), and shift the segment's per-utterance normalisation. Measured with
# bench/bench_longform.py on the demo models of seeds 42/1/2/3: long-form WER was 1.33/1.87/1.36/1.72x the
# one-by-one WER with exact-zero pauses, and 1.09/0.75/1.14/0.83x with a -60 dBFS floor over the whole
# recording. Kaldi dithers its fbank input for the same reason.
DIGITAL_SILENCE_FILL_DBFS = -60.0
MIN_ZERO_RUN_SECONDS = 0.01


@dataclass
class Segment:
    """Audio between `start` and `end` seconds of its file (at the model's sampling rate)."""

    start: float
    end: float
    audio: np.ndarray

    @property
    def duration(self) -> float:
        return self.end - self.start


def stream_audio(path: str, target_sr: int, block_seconds: float = 30.0) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks at `target_sr`; the whole file is never in memory at once."""
    with sf.SoundFile(path) as f:
        sr = f.samplerate
        frames = max(1, int(block_seconds * sr))
        stream = (
            soxr.ResampleStream(sr, target_sr, 1, dtype="float32", quality="HQ") if sr != target_sr else None
        )
        while True:
            block = f.read(frames, dtype="float32", always_2d=True)
            last = len(block) < frames
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            out = stream.resample_chunk(mono, last=last) if stream is not None else mono
            if len(out):
                yield np.ascontiguousarray(out, dtype=np.float32)
            if last:
                return


class _PauseSegmenter:
    """Segments between pauses, each at most `max_segment` seconds; feed blocks, then `finish()`.

    Subclasses find the voiced spans (`_voiced`); this class bridges gaps under `min_gap`, pads spans by
    `pad` (never past the middle of a pause), cuts spans longer than `max_segment` at their quietest
    frame, and, only when `pack` is set, joins neighbours while they fit in `max_segment`.
    """

    method = "pause"

    def __init__(
        self,
        sampling_rate: int,
        max_segment: float = DEFAULT_MAX_SEGMENT,
        min_gap: float = 0.3,
        pad: float = 0.15,
        window: float | None = None,
        pack: bool = False,
    ) -> None:
        if max_segment <= 1.0:
            raise ValueError(f"max_segment must be more than 1 second, got {max_segment}")
        self.sr = sampling_rate
        self.max_len = int(max_segment * sampling_rate)
        self.min_gap = int(min_gap * sampling_rate)
        self.pad = int(pad * sampling_rate)
        self.pack = pack
        self.frame = max(16, int(FRAME_SECONDS * sampling_rate))
        self.hop = max(4, int(HOP_SECONDS * sampling_rate))
        self.window = int((window or max(60.0, 3 * max_segment)) * sampling_rate)
        self.margin = self.pad + self.min_gap + self.frame
        self._buf = np.zeros(0, dtype=np.float32)
        self._offset = 0  # sample index of _buf[0] in the file

    def feed(self, block: np.ndarray) -> list[Segment]:
        self._buf = np.concatenate([self._buf, block]) if len(self._buf) else block
        out: list[Segment] = []
        while len(self._buf) >= self.window:
            out.extend(self._process(final=False))
        return out

    def finish(self) -> list[Segment]:
        return self._process(final=True)

    # ---- internals --------------------------------------------------------------------------------
    def _voiced(self, y: np.ndarray) -> list[tuple[int, int]]:
        raise NotImplementedError

    def _regions(self, y: np.ndarray) -> list[tuple[int, int]]:
        if not len(y) or float(np.abs(y).max()) ** 2 <= ABSOLUTE_FLOOR_POWER:
            return []  # digital silence or near it: nothing to decode (and no model call)
        regions: list[list[int]] = []
        for s, e in self._voiced(y):
            # Bridge short pauses (within words, between close words), unless the bridged region would
            # outgrow the limit: then the pause itself is the cut, rather than a quiet frame found later.
            if (
                regions
                and s - regions[-1][1] < self.min_gap
                and e - regions[-1][0] + 2 * self.pad <= self.max_len
            ):
                regions[-1][1] = max(regions[-1][1], e)
            else:
                regions.append([s, e])
        padded: list[tuple[int, int]] = []
        for k, (s, e) in enumerate(regions):
            lo = s - self.pad if k == 0 else max(s - self.pad, (regions[k - 1][1] + s) // 2)
            hi = e + self.pad if k == len(regions) - 1 else min(e + self.pad, (e + regions[k + 1][0]) // 2)
            padded.append((max(0, lo), min(len(y), hi)))
        pieces: list[tuple[int, int]] = []
        for s, e in padded:
            pieces.extend(self._split_long(y, s, e))
        return pieces

    def _split_long(self, y: np.ndarray, s: int, e: int) -> list[tuple[int, int]]:
        """Cut a region longer than max_segment at its quietest frame in the second half of the limit."""
        out = []
        while e - s > self.max_len:
            lo, hi = s + self.max_len // 2, s + self.max_len - self.frame
            seg = y[lo:hi]
            n = max(1, (len(seg) - self.frame) // self.hop + 1)
            energy = np.array([np.mean(seg[i * self.hop : i * self.hop + self.frame] ** 2) for i in range(n)])
            cut = lo + int(np.argmin(energy)) * self.hop + self.frame // 2
            out.append((s, cut))
            s = cut
        if not out or e - s >= MIN_TAIL_SECONDS * self.sr:
            out.append((s, e))  # else: a sliver past the quietest point of a region just over the limit
        return out

    def _pack(self, regions: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """With `pack`: join neighbouring regions while the joined span fits in max_segment."""
        if not self.pack:
            return regions
        chunks: list[list[int]] = []
        for s, e in regions:
            if chunks and e - chunks[-1][0] <= self.max_len:
                chunks[-1][1] = e
            else:
                chunks.append([s, e])
        return [(s, e) for s, e in chunks]

    def _process(self, final: bool) -> list[Segment]:
        y = self._buf
        regions = self._regions(y)
        if final:
            done, keep_from = regions, len(y)
        else:
            # Regions touching the end of the window may continue in the next block: keep them.
            limit = len(y) - self.margin
            done = [r for r in regions if r[1] <= limit]
            carried = [r for r in regions if r[1] > limit]
            keep_from = carried[0][0] if carried else limit
            if keep_from <= 0:  # cannot happen with window > max_segment + margin; guard against a stall
                keep_from = done[-1][1] if done else len(y) // 2
        segs = [
            Segment((self._offset + s) / self.sr, (self._offset + e) / self.sr, y[s:e].copy())
            for s, e in self._pack(done)
        ]
        self._buf = y[keep_from:].copy()
        self._offset += keep_from
        return segs


class SilenceSegmenter(_PauseSegmenter):
    """Energy-based: frames within `top_db` of the loudest frame of the window are voiced."""

    method = "energy"

    def __init__(
        self, sampling_rate: int, max_segment: float = DEFAULT_MAX_SEGMENT, top_db: float = 35.0, **kw: Any
    ) -> None:
        super().__init__(sampling_rate, max_segment, **kw)
        self.top_db = top_db

    def _voiced(self, y: np.ndarray) -> list[tuple[int, int]]:
        if len(y) < self.frame:
            return [(0, len(y))]
        return energy_split(y, self.top_db, self.frame, self.hop, ABSOLUTE_FLOOR_POWER)


def energy_split(
    y: np.ndarray, top_db: float, frame_length: int, hop_length: int, ref_floor: float = 0.0
) -> list[tuple[int, int]]:
    """(start, end) samples of the regions whose frame RMS is within `top_db` of the loudest frame's.

    The rule of `librosa.effects.split(y, top_db, ref=lambda rms: max(rms.max(), ref_floor), ...)`
    (centred frames, zero padding, 1e-5 amplitude floor), which tests check it against. Why not call
    librosa: its first call in a process JIT-compiles (numba) for 5-9 s on this 2-core machine, longer
    than transcribing a short file; these few numpy lines cost nothing to start.
    """
    half = frame_length // 2
    padded = np.pad(np.asarray(y, dtype=np.float32), (half, half))
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float32), axis=-1))
    ref = max(float(rms.max()), ref_floor)
    amin = 1e-10  # librosa.amplitude_to_db's floor (on power)
    db = 10.0 * np.log10(np.maximum(amin, rms.astype(np.float64) ** 2)) - 10.0 * np.log10(max(amin, ref**2))
    voiced = db > -top_db
    edges = list(np.flatnonzero(np.diff(voiced.astype(np.int8))) + 1)
    if voiced[0]:
        edges.insert(0, 0)
    if voiced[-1]:
        edges.append(len(voiced))
    samples = np.minimum(np.asarray(edges, dtype=np.int64) * hop_length, len(y)).reshape(-1, 2)
    return [(int(a), int(b)) for a, b in samples.tolist()]


_SILERO: dict[str, Any] = {}


def _import_silero() -> Any:
    """`import silero_vad`, keeping torch's thread count: the package calls `torch.set_num_threads(1)` when
    imported (silero_vad/model.py), which left every later model call of the process on one thread
    (measured: the demo model decoded long-form files at 1 thread after the first VAD pass)."""
    threads = torch.get_num_threads()
    try:
        import silero_vad

        return silero_vad
    finally:
        torch.set_num_threads(threads)


def silero_available() -> bool:
    """Whether Silero VAD can be loaded (the `silero-vad` package; its wheel ships the model)."""
    try:
        _import_silero()
    except ImportError:
        return False
    return True


def _silero_model() -> Any:
    """Silero's "sequence" ONNX model when onnxruntime is installed, else its TorchScript model (both ship in
    the wheel). The stock path calls the model once per 32 ms window from a Python loop; the sequence model
    takes up to 16 s of windows per call, with the same probabilities (silero-vad 6.2's sequence_vad).
    Measured on a 35 s file: 0.95 s -> 0.12 s, identical timestamps, probabilities within 1e-5."""
    if "model" not in _SILERO:
        silero = _import_silero()
        try:
            import onnxruntime  # noqa: F401  (optional: the `onnx`/`dev` extras)

            _SILERO["model"] = silero.load_silero_vad(sequence=True)
        except (ImportError, TypeError):  # no onnxruntime, or a silero-vad without the sequence model
            _SILERO["model"] = silero.load_silero_vad()
    return _SILERO["model"]


def _is_sequence(model: Any) -> bool:
    return hasattr(model, "session")  # SileroVADSequence holds an onnxruntime session; the JIT model does not


class VadSegmenter(_PauseSegmenter):
    """Silero VAD speech spans (speech probability per 32 ms chunk, hysteresis at `threshold`).

    Silero runs at 16 kHz (the TorchScript model also at 8 kHz); other rates are resampled for the
    detector only.
    """

    method = "silero"

    def __init__(
        self, sampling_rate: int, max_segment: float = DEFAULT_MAX_SEGMENT, threshold: float = 0.5, **kw: Any
    ) -> None:
        kw.setdefault("pad", 0.1)
        kw.setdefault("min_gap", 0.2)  # silero declares the end of speech late: a 0.4 s pause looks ~0.25 s
        super().__init__(sampling_rate, max_segment, **kw)
        self.threshold = threshold
        self.model = _silero_model()
        self.sequence = _is_sequence(self.model)
        if self.sequence:
            self._speech_timestamps = importlib.import_module(
                "silero_vad.sequence_vad"
            ).get_speech_timestamps_sequence
            self._rates: tuple[int, ...] = (16000,)
        else:
            self._speech_timestamps = _import_silero().get_speech_timestamps
            self._rates = (8000, 16000)

    def _voiced(self, y: np.ndarray) -> list[tuple[int, int]]:
        vad_sr = self.sr if self.sr in self._rates else 16000  # the rates this silero model runs at
        x = y
        if vad_sr != self.sr:
            x = soxr.resample(y, self.sr, vad_sr, quality="HQ").astype(np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model run 31 times per second: threads only add overhead
        try:
            with torch.no_grad():
                spans = self._speech_timestamps(
                    x if self.sequence else torch.from_numpy(x),
                    self.model,
                    threshold=self.threshold,
                    sampling_rate=vad_sr,
                    min_speech_duration_ms=250,  # silero's default: noise blips under it are dropped
                    min_silence_duration_ms=int(1000 * self.min_gap / self.sr),
                    speech_pad_ms=30,
                )
        finally:
            torch.set_num_threads(threads)
        if not self.sequence:
            self.model.reset_states()
        scale = self.sr / vad_sr
        return [(int(sp["start"] * scale), min(len(y), int(sp["end"] * scale))) for sp in spans]


class FixedSegmenter:
    """Windows of `max_segment` seconds advancing by `max_segment - overlap`; silent windows are skipped."""

    def __init__(self, sampling_rate: int, max_segment: float = 20.0, overlap: float = 2.0) -> None:
        if not 0 <= overlap < max_segment / 2:
            raise ValueError(
                f"overlap ({overlap}s) must be at least 0 and under half of max_segment ({max_segment}s)"
            )
        self.sr = sampling_rate
        self.win = int(max_segment * sampling_rate)
        self.step = self.win - int(overlap * sampling_rate)
        self._buf = np.zeros(0, dtype=np.float32)
        self._offset = 0
        self._emitted_to = 0  # file sample up to which windows already cover the audio

    def feed(self, block: np.ndarray) -> list[Segment]:
        self._buf = np.concatenate([self._buf, block]) if len(self._buf) else block
        out = []
        while len(self._buf) >= self.win:
            out.extend(self._emit(self._buf[: self.win]))
            self._buf = self._buf[self.step :].copy()
            self._offset += self.step
        return out

    def finish(self) -> list[Segment]:
        tail_end = self._offset + len(self._buf)
        if len(self._buf) and tail_end > self._emitted_to + int(0.05 * self.sr):
            return self._emit(self._buf)
        return []

    def _emit(self, y: np.ndarray) -> list[Segment]:
        self._emitted_to = self._offset + len(y)
        if not len(y) or float(np.mean(y.astype(np.float64) ** 2)) <= ABSOLUTE_FLOOR_POWER * 1e-3:
            return []
        return [Segment(self._offset / self.sr, (self._offset + len(y)) / self.sr, y.copy())]


def segment_limit(training_durations: dict | None, requested: float | None = None) -> tuple[float, str]:
    """The longest segment to decode, and where that number came from.

    `requested` (the user's `--max-segment`) wins. Otherwise the model's recorded training range
    (`config.training_durations`, seconds: min/max/median/p95): its max, but no more than 1.5 × p95
    (a few outliers should not double the limit), kept within [2, 30] s. Without a record: 20 s.
    """
    if requested is not None:
        return float(requested), "--max-segment"
    d = training_durations or {}
    longest = d.get("max")
    if not isinstance(longest, int | float) or longest <= 0:
        return DEFAULT_MAX_SEGMENT, "default (the model records no training durations)"
    limit = float(longest)
    p95 = d.get("p95")
    if isinstance(p95, int | float) and p95 > 0:
        limit = min(limit, 1.5 * float(p95))
    limit = round(min(LIMIT_CEILING, max(LIMIT_FLOOR, limit)), 2)
    detail = f"max {float(longest):.1f} s" + (
        f", p95 {float(p95):.1f} s" if isinstance(p95, int | float) else ""
    )
    return limit, f"model's training durations ({detail})"


@dataclass
class SegmentationReport:
    """What segmentation did for one file: `as_dict()` for json output, `summary()` for one log line."""

    requested: str
    method: str
    limit: float
    limit_source: str
    fallback: str | None = None  # why `method` differs from `requested`
    durations: list[float] = field(default_factory=list)
    filled_seconds: float = 0.0  # digital silence filled with a noise floor (see DIGITAL_SILENCE_FILL_DBFS)

    def add(self, segment: Segment) -> None:
        self.durations.append(segment.duration)

    def as_dict(self) -> dict[str, Any]:
        d = self.durations
        return {
            "method": self.method,
            "segments": len(d),
            "min_seconds": round(min(d), 2) if d else None,
            "median_seconds": round(float(np.median(d)), 2) if d else None,
            "max_seconds": round(max(d), 2) if d else None,
            "limit_seconds": self.limit,
            "limit_source": self.limit_source,
            "fallback": self.fallback,
            "digital_silence_filled_seconds": round(self.filled_seconds, 2),
        }

    def summary(self) -> str:
        d = self.as_dict()
        lengths = (
            f", {d['min_seconds']:.1f}/{d['median_seconds']:.1f}/{d['max_seconds']:.1f} s min/median/max"
            if self.durations
            else ""
        )
        note = f" ({self.fallback})" if self.fallback else ""
        filled = (
            f"; {self.filled_seconds:.1f} s of digital silence given a {DIGITAL_SILENCE_FILL_DBFS:g} dBFS floor"
            if self.filled_seconds
            else ""
        )
        return (
            f"segmentation: {self.method}{note}, {d['segments']} segments{lengths}, "
            f"limit {self.limit:g} s from {self.limit_source}{filled}"
        )


def make_segmenter(
    kind: str,
    sampling_rate: int,
    max_segment: float = DEFAULT_MAX_SEGMENT,
    overlap: float = 2.0,
    pack: bool = False,
) -> tuple[_PauseSegmenter | FixedSegmenter, str | None]:
    """(segmenter, why a fallback was used or None). "vad" falls back to "energy" without silero-vad."""
    if kind == "vad":
        if silero_available():
            return VadSegmenter(sampling_rate, max_segment, pack=pack), None
        return (
            SilenceSegmenter(sampling_rate, max_segment, pack=pack),
            "silero-vad is not installed: energy-based fallback",
        )
    if kind in ("energy", "silence"):
        return SilenceSegmenter(sampling_rate, max_segment, pack=pack), None
    if kind == "fixed":
        return FixedSegmenter(sampling_rate, max_segment, overlap), None
    raise ValueError(f"unknown segmentation {kind!r}: expected one of {', '.join(SEGMENTATIONS)}")


def segment_file(
    path: str,
    sampling_rate: int,
    kind: str = "vad",
    max_segment: float = DEFAULT_MAX_SEGMENT,
    overlap: float = 2.0,
    report: SegmentationReport | None = None,
    pack: bool = False,
) -> Iterator[Segment]:
    """Stream `path` and yield its segments in time order; fills `report` (method, lengths) if given."""
    segmenter, fallback = make_segmenter(kind, sampling_rate, max_segment, overlap, pack)
    if report is not None:
        report.method = "fixed" if isinstance(segmenter, FixedSegmenter) else segmenter.method
        report.fallback = fallback

    def emit(seg: Segment) -> Segment:
        audio, filled = fill_digital_silence(seg.audio, sampling_rate, seed=round(seg.start * sampling_rate))
        if report is not None:
            report.add(seg)
            report.filled_seconds += filled / sampling_rate
        return Segment(seg.start, seg.end, audio) if filled else seg

    for block in stream_audio(path, sampling_rate, block_seconds=max(10.0, max_segment)):
        for seg in segmenter.feed(block):
            yield emit(seg)
    for seg in segmenter.finish():
        yield emit(seg)


def fill_digital_silence(audio: np.ndarray, sampling_rate: int, seed: int) -> tuple[np.ndarray, int]:
    """`audio` with its runs of exact zeros (>= MIN_ZERO_RUN_SECONDS) replaced by white noise at
    DIGITAL_SILENCE_FILL_DBFS (seeded: the same file gives the same text), and how many samples were
    filled. Speech is never touched, and a segment that is all digital silence stays as it is: decoding
    skips those."""
    zero = audio == 0
    if not zero.any() or zero.all():
        return audio, 0
    edges = np.diff(np.concatenate(([0], zero.view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    long = ends - starts >= max(1, round(MIN_ZERO_RUN_SECONDS * sampling_rate))
    if not long.any():
        return audio, 0
    out = audio.copy()
    rng = np.random.default_rng(seed)
    level = 10 ** (DIGITAL_SILENCE_FILL_DBFS / 20)
    for s, e in zip(starts[long], ends[long], strict=True):
        out[s:e] = level * rng.standard_normal(e - s)
    return out, int((ends - starts)[long].sum())


def new_report(kind: str, training_durations: dict | None, requested: float | None) -> SegmentationReport:
    """An empty report for one file, with the limit resolved (see `segment_limit`)."""
    limit, source = segment_limit(training_durations, requested)
    return SegmentationReport(requested=kind, method=kind, limit=limit, limit_source=source)
