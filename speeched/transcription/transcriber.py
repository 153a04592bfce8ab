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

Backends: a torch `InferenceModel` (every search `decode` offers) or an `OnnxSpeechModel` from
`speeched export --to onnx` (greedy only, `decode_onnx`); segmentation, pooling, stitching and output
are the same for both.

Word timestamps (`TranscribeOptions.words`, models with a CTC head, torch backend): once a segment's
final text is known (after loop truncation) and while its audio is still in the pool, the CTC head
force-aligns that text (`speeched.inference.alignment.word_timestamps`); segments where the alignment
cannot work get proportional times, and the per-file info counts them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import soundfile as sf
from tqdm import tqdm

from speeched.errors import UsageError
from speeched.inference import Decoded, DecodeOptions, InferenceModel, decode, truncate_loop
from speeched.inference.alignment import word_timestamps
from speeched.inference.onnx_backend import OnnxSpeechModel
from speeched.inference.onnx_decode import check_onnx_options, decode_onnx, onnx_model_config
from speeched.transcription.formats import TimedText, Transcript, Word
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
    `speeched.transcription.segment.segment_limit`). `words`: word start/end times from the CTC head.
    `backend`: "torch" (a model directory) or "onnx" (an export; greedy only).
    """

    decode: DecodeOptions = field(default_factory=_transcribe_decoding)
    segment: str = "vad"
    max_segment: float | None = None
    overlap: float = 2.0
    pool_seconds: float = 900.0
    progress: bool = False
    words: bool = False
    backend: str = "torch"


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
    words: dict[int, list[Word]] = field(default_factory=dict)
    align_fallbacks: int = 0
    align_reasons: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.error is not None or (not self.reading and self.pending == 0)


def has_ctc_head(config: Any) -> bool:
    return bool(getattr(config, "ctc_vocab", None))


class Transcriber:
    """Holds a loaded model; `run(paths)` yields a `Transcript` or `FailedFile` per path, in order."""

    def __init__(
        self, im: InferenceModel | OnnxSpeechModel, options: TranscribeOptions | None = None
    ) -> None:
        self.im = im
        self.options = options or TranscribeOptions()
        self.decode = self.options.decode.replace(progress=False)
        self._pool_seconds = 0.0
        if isinstance(im, OnnxSpeechModel):
            check_onnx_options(self.decode)
            if self.options.words:
                raise UsageError("--words needs the CTC head, which ONNX exports drop: use --backend torch")
            self.sr = int(im.feature_extractor.sampling_rate)
            self.prefix = im.head()[1:]
            self.training_durations = onnx_model_config(im).get("training_durations")
            return
        if self.options.words and not has_ctc_head(im.model.config):
            raise UsageError("--words needs a model with a CTC head (compose it with ctc_weight / ctc_vocab)")
        self.sr = im.sampling_rate
        # The same prefix builder as the training collator and eval; a bad language fails here, before decoding.
        self.prefix = im.prefix_ids(self.decode.src_lang, self.decode.tgt_lang)
        self.training_durations = getattr(im.model.config, "training_durations", None)

    def _decode(self, arrays: list) -> list[Decoded]:
        if isinstance(self.im, OnnxSpeechModel):
            return decode_onnx(self.im, arrays, self.decode)
        return decode(self.im, arrays, self.decode)

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
        results = self._decode([seg.audio for _, _, seg in pool])
        for (st, k, seg), decoded in zip(pool, results, strict=True):
            text, cut = truncate_loop(decoded.text)
            st.texts[k] = text
            if self.options.words and text.strip():
                self._align(st, k, seg, text)
            st.loops_cut += cut
            st.capped += decoded.hit_token_cap
            st.silent += decoded.skipped is not None
            st.pending -= 1
            self._credit(bar, st, k)
            if st.pending == 0 and not st.reading:
                self._credit(bar, st, len(st.segments))
        pool.clear()
        self._pool_seconds = 0.0

    def _align(self, st: _FileState, k: int, seg: Segment, text: str) -> None:
        """Word times of segment k's final text, from the CTC head, while its audio is still held."""
        im = self.im
        assert isinstance(im, InferenceModel)
        result = word_timestamps(im.model, im.feature_extractor, seg.audio, text, offset=seg.start)
        st.words[k] = [
            Word(w["word"], max(seg.start, w["start"]), min(seg.end, max(w["start"], w["end"])))
            for w in result.words
        ]
        if result.method != "ctc":
            st.align_fallbacks += 1
            if result.reason and result.reason not in st.align_reasons:
                st.align_reasons.append(result.reason)

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
        words = [st.words.get(k, [] if self.options.words else None) for k in range(len(raw))]
        info: dict[str, Any] = {
            "segments_decoded": len(raw) - st.silent,
            "segments_silent": st.silent,
            "segmentation": st.report.as_dict() if st.report else self.options.segment,
            "loops_truncated": st.loops_cut,
            "hit_token_cap": st.capped,
        }
        if self.options.words:
            info["word_alignment"] = {
                "method": "ctc forced alignment",
                "segments_aligned": len(st.words) - st.align_fallbacks,
                "segments_proportional": st.align_fallbacks,
                "fallback_reasons": st.align_reasons,
            }
        return Transcript(st.path, st.duration, _clip_words(stitch(raw, words)), info)


def _clip_words(pieces: list[TimedText]) -> list[TimedText]:
    """Keep each piece's word times inside its displayed span.

    Stitching cuts a piece's words together with its text (so words and text always agree) and moves
    the edges of overlapping fixed windows to the middle of the overlap; a word aligned in that overlap
    is clipped to the edge rather than dropped, which would leave the text and its words out of step.
    """
    for p in pieces:
        if p.words:
            p.words = [
                Word(w.word, min(max(w.start, p.start), p.end), min(max(w.end, p.start), p.end))
                for w in p.words
            ]
    return pieces
