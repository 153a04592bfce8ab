"""Join decoded segments into a transcript; where fixed windows overlap, drop the words decoded twice."""

from __future__ import annotations

from collections.abc import Sequence

from speeched.transcription.formats import TimedText, Word

STITCH_WINDOW_WORDS = 24


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


def stitch(
    segments: Sequence[tuple[float, float, str]], words: Sequence[list[Word] | None] | None = None
) -> list[TimedText]:
    """Join decoded segments in time order; where neighbours overlap in time, drop the words both decoded.

    The duplicated words are found as the longest common run between the end of one segment's text and
    the start of the next (2+ words); display times meet in the middle of the overlap, so cues never
    overlap. `words`: per segment, its word timings (one per whitespace-separated word) or None; they are
    cut the same way as the text.
    """
    texts = [text.split() for _, _, text in segments]
    timed = list(words) if words is not None else [None] * len(segments)
    timed = [w if w is not None and len(w) == len(t) else None for w, t in zip(timed, texts, strict=True)]
    starts = [s for s, _, _ in segments]
    ends = [e for _, e, _ in segments]
    for k in range(1, len(segments)):
        if segments[k][0] >= segments[k - 1][1]:
            continue  # no time overlap: nothing can be duplicated
        mid = (segments[k][0] + segments[k - 1][1]) / 2
        ends[k - 1], starts[k] = mid, mid
        a, b = texts[k - 1], texts[k]
        tail, head = a[-STITCH_WINDOW_WORDS:], b[:STITCH_WINDOW_WORDS]
        end_a, end_b, length = _longest_common_run(
            [_words_key(w) for w in tail], [_words_key(w) for w in head]
        )
        if length >= 2 or (length == 1 and len(head) == 1):
            cut = len(a) - len(tail) + end_a
            texts[k - 1], texts[k] = a[:cut], b[end_b:]
            if timed[k - 1] is not None:
                timed[k - 1] = timed[k - 1][:cut]  # type: ignore[index]
            if timed[k] is not None:
                timed[k] = timed[k][end_b:]  # type: ignore[index]
    return [
        TimedText(starts[k], max(starts[k], ends[k]), " ".join(texts[k]), timed[k])
        for k in range(len(segments))
    ]
