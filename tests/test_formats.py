"""Output formats round-trip, and stitching of overlapping windows drops the words decoded twice."""

from __future__ import annotations

import json

import pytest

from speeched.transcription.formats import (
    FORMATS,
    TimedText,
    Transcript,
    format_timestamp,
    parse_subtitles,
    render,
)
from speeched.transcription.stitching import stitch


def _transcript() -> Transcript:
    segs = [
        TimedText(0.25, 3.5, "hello there"),
        TimedText(3.5, 3661.0049, "a cue that is long enough to need wrapping " * 3),
        TimedText(3700.0, 3701.0, ""),  # silence decoded to nothing: no cue
        TimedText(3702.0, 3703.5, "bye"),
    ]
    return Transcript("a.wav", 3710.0, segs, {"segments_decoded": 4})


def test_timestamps() -> None:
    assert format_timestamp(0) == "00:00:00,000"
    assert format_timestamp(3661.0049) == "01:01:01,005"
    assert format_timestamp(59.9996, ".") == "00:01:00.000"
    assert format_timestamp(-1) == "00:00:00,000"


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_parse_back_with_the_same_times_and_text(fmt: str) -> None:
    t = _transcript()
    content = render(t, fmt)
    assert content.startswith("WEBVTT\n\n") == (fmt == "vtt")
    cues = parse_subtitles(content)
    expected = [s for s in t.segments if s.text]
    assert len(cues) == 3
    for cue, seg in zip(cues, expected, strict=True):
        assert cue.start == pytest.approx(seg.start, abs=1e-3) and cue.end == pytest.approx(seg.end, abs=1e-3)
        assert cue.text == " ".join(seg.text.split())
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:], strict=False))
    assert max(len(line) for line in content.splitlines()) <= 84


def test_json_and_txt() -> None:
    t = _transcript()
    data = json.loads(render(t, "json"))
    assert data["text"] == t.text and data["path"] == "a.wav" and data["segments_decoded"] == 4
    assert [s["text"] for s in data["segments"]] == [s.text for s in t.segments if s.text]
    assert render(t, "txt") == t.text + "\n" and "  " not in t.text
    assert set(FORMATS) == {"txt", "json", "srt", "vtt"}
    with pytest.raises(ValueError, match="txt, json, srt, vtt"):
        render(t, "docx")


def test_malformed_cue_is_an_error() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_subtitles("1\n00:00:01,000 --> soon\nhi\n")


def test_stitch_removes_words_decoded_in_both_overlapping_windows() -> None:
    out = stitch(
        [
            (0.0, 20.0, "the quick brown fox jumps over the"),
            (18.0, 38.0, "jumps over the lazy dog and"),
            (36.0, 50.0, "dog and the end"),
        ]
    )
    assert " ".join(s.text for s in out) == "the quick brown fox jumps over the lazy dog and the end"
    assert [(s.start, s.end) for s in out] == [(0.0, 19.0), (19.0, 37.0), (37.0, 50.0)]


def test_stitch_keeps_everything_without_overlap_or_common_words() -> None:
    disjoint = stitch([(0.0, 5.0, "a b"), (6.0, 9.0, "a b")])
    assert [s.text for s in disjoint] == ["a b", "a b"] and disjoint[0].end == 5.0
    unrelated = stitch([(0.0, 20.0, "one two three"), (18.0, 30.0, "four five")])
    assert " ".join(s.text for s in unrelated) == "one two three four five"


def test_word_timings_go_to_json_and_word_level_subtitles() -> None:
    from speeched.transcription.formats import Word, to_json_line

    words = [Word("hello", 0.3, 0.7), Word("there", 0.8, 1.2)]
    t = Transcript("a.wav", 5.0, [TimedText(0.25, 1.5, "hello there", words), TimedText(2.0, 3.0, "bye")])
    data = json.loads(render(t, "json"))
    assert data["segments"][0]["words"] == [
        {"word": "hello", "start": 0.3, "end": 0.7},
        {"word": "there", "start": 0.8, "end": 1.2},
    ]
    assert "words" not in data["segments"][1]  # no timings: no key, rather than a wrong one
    assert json.loads(to_json_line(t)) == data and to_json_line(t).count("\n") == 1
    for fmt in ("srt", "vtt"):
        cues = parse_subtitles(render(t, fmt, words=True))
        assert [(c.text, c.start, c.end) for c in cues] == [
            ("hello", 0.3, 0.7),
            ("there", 0.8, 1.2),
            ("bye", 2.0, 3.0),
        ]
        assert len(parse_subtitles(render(t, fmt))) == 2  # segment cues by default


def test_stitch_cuts_word_timings_with_the_text() -> None:
    from speeched.transcription.formats import Word

    def timed(text: str, start: float) -> list[Word]:
        return [Word(w, start + i, start + i + 0.5) for i, w in enumerate(text.split())]

    a, b = "one two three four", "three four five"
    out = stitch([(0.0, 10.0, a), (8.0, 18.0, b)], [timed(a, 0.0), timed(b, 8.0)])
    assert [w.word for s in out for w in s.words] == ["one", "two", "three", "four", "five"]
    assert out[1].words[0].start == 10.0
