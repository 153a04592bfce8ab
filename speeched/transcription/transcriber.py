"""Transcribe many (long) files: segment while streaming, decode segments of all files in shared batches.

Throughput comes from batching: segments from every input go into one pool (bounded to `pool_seconds`
of audio) that `speeched.inference.decode` sorts by duration and cuts into batches of up to
`max_duration` seconds, so batches have little padding and short files do not each pay for a batch of
their own. Results are re-assembled per file and handed out in input order as soon as a file is
complete, which keeps memory bounded for hour-long inputs: only the pool and one read window are in
memory.

Runaway decoding is bounded twice: max_new_tokens grows with the segment's duration
(`tokens_per_second`), and a hypothesis that loops on an n-gram is cut after the first repetition.
Digital silence is never decoded (empty text).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import soundfile as sf
from tqdm import tqdm

from speeched.inference import DecodeOptions, InferenceModel, decode, truncate_loop
from speeched.transcription.formats import Transcript
from speeched.transcription.inputs import FailedFile, probe
from speeched.transcription.segment import Segment, SegmentationReport, new_report, segment_file
from speeched.transcription.stitching import stitch


def _transcribe_decoding() -> DecodeOptions:
    # Long-form defaults: bigger batches than eval, and a tighter token cap (segments are many and long).
    return DecodeOptions(max_duration=240.0, tokens_per_second=15.0)


@dataclass
class TranscribeOptions:
    """Segmentation and pooling for `transcribe`; decoding itself is `decode` (a `DecodeOptions`).

    `max_segment=None`: the longest segment the model's recorded training durations allow (see
    `speeched.transcription.segment.segment_limit`).
    """

    decode: DecodeOptions = field(default_factory=_transcribe_decoding)
    segment: str = "vad"
    max_segment: float | None = None
    overlap: float = 2.0
    pool_seconds: float = 900.0
    progress: bool = False


@dataclass
class _FileState:
    index: int
    path: str
    duration: float = 0.0
    segments: list[Segment] = field(default_factory=list)
    texts: dict[int, str] = field(default_factory=dict)
    pending: int = 0
    reading: bool = True
    error: str | None = None
    loops_cut: int = 0
    capped: int = 0
    silent: int = 0
    report: SegmentationReport | None = None

    @property
    def complete(self) -> bool:
        return self.error is not None or (not self.reading and self.pending == 0)


class Transcriber:
    """Holds a loaded model; `run(paths)` yields a `Transcript` or `FailedFile` per path, in order."""

    def __init__(self, im: InferenceModel, options: TranscribeOptions | None = None) -> None:
        self.im = im
        self.options = options or TranscribeOptions()
        self.decode = self.options.decode.replace(progress=False)
        self.sr = im.sampling_rate
        self._pool_seconds = 0.0
        # The same prefix builder as the training collator and eval; a bad language fails here, before decoding.
        self.prefix = im.prefix_ids(self.decode.src_lang, self.decode.tgt_lang)
        self.training_durations = getattr(im.model.config, "training_durations", None)

    def run(self, paths: Sequence[str]) -> Iterator[Transcript | FailedFile]:
        states = [_FileState(i, p) for i, p in enumerate(paths)]
        for st in states:
            st.duration, st.error = probe(st.path)
        pool: list[tuple[_FileState, int, Segment]] = []
        emitted = 0
        total = sum(s.duration for s in states if s.error is None)
        bar_format = "{l_bar}{bar}| {n:.0f}/{total:.0f} audio-s [{elapsed}<{remaining}]"
        with tqdm(
            total=total, desc="transcribing", bar_format=bar_format, disable=not self.options.progress
        ) as bar:
            for st in states:
                if st.error is None:
                    self._read(st, pool, bar)
                while emitted < len(states) and states[emitted].complete:
                    yield self._result(states[emitted])
                    emitted += 1
            self._flush(pool, bar)
            for st in states[emitted:]:
                yield self._result(st)

    # ---- internals --------------------------------------------------------------------------------
    def _read(self, st: _FileState, pool: list[tuple[_FileState, int, Segment]], bar: Any) -> None:
        opts = self.options
        st.report = new_report(opts.segment, self.training_durations, opts.max_segment)
        try:
            for seg in segment_file(
                st.path, self.sr, opts.segment, st.report.limit, opts.overlap, report=st.report
            ):
                pool.append((st, len(st.segments), seg))
                st.segments.append(Segment(seg.start, seg.end, seg.audio[:0]))
                st.pending += 1
                self._pool_seconds += seg.duration
                if self._pool_seconds >= opts.pool_seconds:
                    self._flush(pool, bar)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
            st.error = f"decoding the audio failed part-way: {err}"
            pool[:] = [item for item in pool if item[0] is not st]
            self._pool_seconds = sum(seg.duration for _, _, seg in pool)
        st.reading = False
        if st.pending == 0:
            self._credit(bar, st, len(st.segments))

    def _flush(self, pool: list[tuple[_FileState, int, Segment]], bar: Any) -> None:
        if not pool:
            return
        results = decode(self.im, [seg.audio for _, _, seg in pool], self.decode)
        for (st, k, _), decoded in zip(pool, results, strict=True):
            text, cut = truncate_loop(decoded.text)
            st.texts[k] = text
            st.loops_cut += cut
            st.capped += decoded.hit_token_cap
            st.silent += decoded.skipped is not None
            st.pending -= 1
            self._credit(bar, st, k)
            if st.pending == 0 and not st.reading:
                self._credit(bar, st, len(st.segments))
        pool.clear()
        self._pool_seconds = 0.0

    def _credit(self, bar: Any, st: _FileState, k: int) -> None:
        """Advance the progress bar by the part of the file that segment k finishes (silences included)."""
        if k >= len(st.segments):  # file complete: whatever is left after its last segment
            end, begin = st.duration, (st.segments[-1].end if st.segments else 0.0)
        else:
            end, begin = st.segments[k].end, (st.segments[k - 1].end if k > 0 else 0.0)
        bar.update(max(0.0, min(end - begin, bar.total - bar.n)))

    def _result(self, st: _FileState) -> Transcript | FailedFile:
        if st.error is not None:
            return FailedFile(st.path, st.error)
        raw = [(s.start, s.end, st.texts.get(k, "")) for k, s in enumerate(st.segments)]
        info: dict[str, Any] = {
            "segments_decoded": len(raw) - st.silent,
            "segments_silent": st.silent,
            "segmentation": st.report.as_dict() if st.report else self.options.segment,
            "loops_truncated": st.loops_cut,
            "hit_token_cap": st.capped,
        }
        return Transcript(st.path, st.duration, stitch(raw), info)
