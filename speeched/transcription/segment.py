"""Cut long recordings into decodable segments while streaming them, with bounded memory.

An hour of 16 kHz float32 is 230 MB, and an encoder-decoder trained on ~20 s utterances cannot decode
it in one go anyway. So a file is read in blocks (`SoundFile.read(frames)`), mixed to mono and
resampled block by block with soxr's streaming resampler, and a segmenter turns the stream into
segments with sample-exact start/end times. Only a window of a few segments is held at once.

Two segmenters:
- `SilenceSegmenter`: voiced regions from `librosa.effects.split`, small gaps bridged, voiced regions
  longer than `max_segment` cut at their quietest frame, neighbours packed into segments up to
  `max_segment` seconds. Segments never overlap, so their text is simply concatenated.
- `FixedSegmenter`: fixed windows with `overlap` seconds shared by neighbours; the duplicated words are
  removed when stitching (see `runner.stitch`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

# Frames for the energy analysis (64 ms / 16 ms at 16 kHz).
FRAME_SECONDS = 0.064
HOP_SECONDS = 0.016
# A recording whose loudest frame is this quiet (power, ~ -50 dBFS) is all silence.
ABSOLUTE_FLOOR_POWER = 1e-5


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
    import soxr

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


class SilenceSegmenter:
    """Segments between silences, each at most `max_segment` seconds; feed blocks, then `finish()`."""

    def __init__(
        self,
        sampling_rate: int,
        max_segment: float = 20.0,
        top_db: float = 35.0,
        min_gap: float = 0.3,
        pad: float = 0.15,
        window: float | None = None,
    ) -> None:
        if max_segment <= 1.0:
            raise ValueError(f"max_segment must be more than 1 second, got {max_segment}")
        self.sr = sampling_rate
        self.max_len = int(max_segment * sampling_rate)
        self.top_db = top_db
        self.min_gap = int(min_gap * sampling_rate)
        self.pad = int(pad * sampling_rate)
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
    def _regions(self, y: np.ndarray) -> list[tuple[int, int]]:
        import librosa

        if len(y) < self.frame:
            return [(0, len(y))] if len(y) and float(np.abs(y).max()) ** 2 > ABSOLUTE_FLOOR_POWER else []
        iv = librosa.effects.split(
            y,
            top_db=self.top_db,
            ref=lambda power: max(float(np.max(power)), ABSOLUTE_FLOOR_POWER),
            frame_length=self.frame,
            hop_length=self.hop,
        )
        regions: list[list[int]] = []
        for s, e in iv.tolist():
            if regions and s - regions[-1][1] < self.min_gap:
                regions[-1][1] = e  # bridge short pauses (within words, between close words)
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
        """Cut a voiced region longer than max_segment at its quietest frame in the second half of the limit."""
        out = []
        while e - s > self.max_len:
            lo, hi = s + self.max_len // 2, s + self.max_len - self.frame
            seg = y[lo:hi]
            n = max(1, (len(seg) - self.frame) // self.hop + 1)
            energy = np.array([np.mean(seg[i * self.hop : i * self.hop + self.frame] ** 2) for i in range(n)])
            cut = lo + int(np.argmin(energy)) * self.hop + self.frame // 2
            out.append((s, cut))
            s = cut
        out.append((s, e))
        return out

    def _pack(self, regions: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Join neighbouring regions while the joined span fits in max_segment (more context, fewer calls)."""
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


def make_segmenter(
    kind: str, sampling_rate: int, max_segment: float = 20.0, overlap: float = 2.0
) -> SilenceSegmenter | FixedSegmenter:
    if kind == "silence":
        return SilenceSegmenter(sampling_rate, max_segment)
    if kind == "fixed":
        return FixedSegmenter(sampling_rate, max_segment, overlap)
    raise ValueError(f"unknown segmentation {kind!r}: expected 'silence' or 'fixed'")


def segment_file(
    path: str, sampling_rate: int, kind: str = "silence", max_segment: float = 20.0, overlap: float = 2.0
) -> Iterator[Segment]:
    """Stream `path` and yield its segments in time order."""
    segmenter = make_segmenter(kind, sampling_rate, max_segment, overlap)
    for block in stream_audio(path, sampling_rate, block_seconds=max(10.0, max_segment)):
        yield from segmenter.feed(block)
    yield from segmenter.finish()
