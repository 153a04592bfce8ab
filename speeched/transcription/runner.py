"""Transcribe many (long) files: segment while streaming, decode segments of all files in shared batches.

Throughput comes from batching: segments from every input go into one pool (bounded to `pool_seconds`
of audio), the pool is sorted by duration and cut into batches of up to `max_duration` seconds, so
batches have little padding and short files do not each pay for a batch of their own. Results are
re-assembled per file and handed out in input order as soon as a file is complete, which keeps memory
bounded for hour-long inputs: only the pool and one read window are in memory.

Runaway decoding is bounded twice: max_new_tokens grows with the segment's duration
(`tokens_per_second`), and a hypothesis that loops on an n-gram is cut after the first repetition.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import soundfile as sf

from speeched.data.audio import MISSING, AudioError, audio_info
from speeched.evaluation.metrics import truncate_loop
from speeched.evaluation.runner import DecodeOptions, duration_batches, generate_batch
from speeched.transcription.formats import TimedText, Transcript
from speeched.transcription.segment import Segment, segment_file

EXTRA_AUDIO_EXTENSIONS = {"mp3", "opus", "aif", "oga", "wave"}
STITCH_WINDOW_WORDS = 24


@dataclass
class TranscribeOptions:
    """Segmentation, batching and decoding settings for `transcribe`."""

    num_beams: int = 1
    ctc_weight: float = 0.0
    segment: str = "silence"
    max_segment: float = 20.0
    overlap: float = 2.0
    max_duration: float = 240.0
    max_batch_size: int | None = None
    pool_seconds: float = 900.0
    tokens_per_second: float = 15.0
    max_new_tokens: int | None = None
    device: str = "auto"
    progress: bool = False
    src_lang: str | None = None  # language prefix (speeched.modeling.prompting); None = the model's default
    tgt_lang: str | None = None

    def decode_options(self) -> DecodeOptions:
        return DecodeOptions(
            num_beams=self.num_beams,
            ctc_weight=self.ctc_weight,
            max_duration=self.max_duration,
            max_batch_size=self.max_batch_size,
            tokens_per_second=self.tokens_per_second,
            max_new_tokens=self.max_new_tokens,
            device=self.device,
        )


@dataclass
class FailedFile:
    """An input that could not be transcribed, and why (shown on stderr)."""

    path: str
    message: str


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

    @property
    def complete(self) -> bool:
        return self.error is not None or (not self.reading and self.pending == 0)


def audio_extensions() -> set[str]:
    """File extensions a directory scan picks up: whatever libsndfile reads, plus common aliases."""
    return {ext.lower() for ext in sf.available_formats()} | EXTRA_AUDIO_EXTENSIONS


def expand_inputs(inputs: Sequence[str]) -> tuple[list[str], list[FailedFile]]:
    """Files, directories (recursive, audio extensions only) and globs (expanded here, not by a shell)."""
    exts = audio_extensions()
    paths: list[str] = []
    failed: list[FailedFile] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(item)
                for name in names
                if os.path.splitext(name)[1].lstrip(".").lower() in exts
            )
            if not found:
                failed.append(FailedFile(item, f"directory has no audio files ({', '.join(sorted(exts))})"))
            paths.extend(found)
        elif glob.has_magic(item) and not os.path.exists(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                failed.append(FailedFile(item, "no file matches this pattern"))
            paths.extend(found)
        else:
            paths.append(item)
    seen: set[str] = set()
    unique = [p for p in paths if not (os.path.abspath(p) in seen or seen.add(os.path.abspath(p)))]
    return unique, failed


def _words_key(word: str) -> str:
    return "".join(ch for ch in word.lower() if ch.isalnum())


def _longest_common_run(a: list[str], b: list[str]) -> tuple[int, int, int]:
    """(end in a, end in b, length) of the longest common contiguous run of words."""
    best = (0, 0, 0)
    prev = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        cur = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] and a[i - 1] == b[j - 1]:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best[2]:
                    best = (i, j, cur[j])
        prev = cur
    return best


def stitch(segments: Sequence[tuple[float, float, str]]) -> list[TimedText]:
    """Join decoded segments in time order; where neighbours overlap in time, drop the words both decoded.

    The duplicated words are found as the longest common run between the end of one segment's text and
    the start of the next (2+ words); display times meet in the middle of the overlap, so cues never
    overlap.
    """
    words = [text.split() for _, _, text in segments]
    starts = [s for s, _, _ in segments]
    ends = [e for _, e, _ in segments]
    for k in range(1, len(segments)):
        if segments[k][0] >= segments[k - 1][1]:
            continue  # no time overlap: nothing can be duplicated
        mid = (segments[k][0] + segments[k - 1][1]) / 2
        ends[k - 1], starts[k] = mid, mid
        a, b = words[k - 1], words[k]
        tail, head = a[-STITCH_WINDOW_WORDS:], b[:STITCH_WINDOW_WORDS]
        end_a, end_b, length = _longest_common_run(
            [_words_key(w) for w in tail], [_words_key(w) for w in head]
        )
        if length >= 2 or (length == 1 and len(head) == 1):
            words[k - 1] = a[: len(a) - len(tail) + end_a]
            words[k] = b[end_b:]
    return [TimedText(starts[k], max(starts[k], ends[k]), " ".join(words[k])) for k in range(len(segments))]


class Transcriber:
    """Holds a loaded model; `run(paths)` yields a `Transcript` or `FailedFile` per path, in order."""

    def __init__(
        self, model: Any, tokenizer: Any, feature_extractor: Any, options: TranscribeOptions
    ) -> None:
        self.model, self.tokenizer, self.fe = model, tokenizer, feature_extractor
        self.options = options
        self.sr = int(feature_extractor.sampling_rate)
        self.decode = options.decode_options()
        self._pool_seconds = 0.0
        from speeched.modeling.prompting import decoder_prompt

        # The same prefix builder as the training collator and eval; a bad language fails here, before decoding.
        self.prefix = decoder_prompt(model, tokenizer).ids(options.src_lang, options.tgt_lang)

    def run(self, paths: Sequence[str]) -> Iterator[Transcript | FailedFile]:
        from tqdm import tqdm

        states = [_FileState(i, p) for i, p in enumerate(paths)]
        for st in states:
            try:
                st.duration = audio_info(st.path).duration
            except AudioError as err:
                st.error = (
                    "no such file" if err.reason == MISSING else f"{err.reason}: {err.detail}".rstrip(": ")
                )
            except OSError as err:
                st.error = f"cannot read: {err}"
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
        try:
            for seg in segment_file(st.path, self.sr, opts.segment, opts.max_segment, opts.overlap):
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
        for batch in duration_batches([seg.duration for _, _, seg in pool], self.decode):
            items = [pool[i] for i in batch]
            results = generate_batch(
                self.model, self.tokenizer, self.fe, [s.audio for _, _, s in items], self.decode, self.prefix
            )
            for (st, k, _), decoded in zip(items, results, strict=True):
                text, cut = truncate_loop(decoded.text)
                st.texts[k] = text
                st.loops_cut += cut
                st.capped += decoded.hit_cap
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
        info = {
            "segments_decoded": len(raw),
            "segmentation": self.options.segment,
            "loops_truncated": st.loops_cut,
            "hit_token_cap": st.capped,
        }
        return Transcript(st.path, st.duration, stitch(raw), info)


def transcribe_files(
    model: Any,
    tokenizer: Any,
    feature_extractor: Any,
    paths: Sequence[str],
    options: TranscribeOptions | None = None,
) -> list[Transcript | FailedFile]:
    """Transcribe `paths` (already expanded) with a loaded model; one result per path, in order."""
    return list(Transcriber(model, tokenizer, feature_extractor, options or TranscribeOptions()).run(paths))
