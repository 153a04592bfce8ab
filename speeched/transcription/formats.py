"""Render a transcript as plain text, JSON, SubRip (.srt) or WebVTT (.vtt), and read subtitles back.

Subtitle cues are the decoded segments: their times come from the segmenter, so they are monotonic and
never overlap. Segments may carry per-word timings (`TimedText.words`, e.g. from a CTC forced
alignment): JSON then lists them, and `render(..., words=True)` makes one srt/vtt cue per word. On
stdout, several JSON transcripts are written as JSON Lines (`to_json_line`, one object per file).
The parsers exist so tests (and users) can check a written file round-trips.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("txt", "json", "srt", "vtt")
LINE_WIDTH = 84


@dataclass
class Word:
    """One word and the seconds of the recording it was spoken in."""

    word: str
    start: float
    end: float


@dataclass
class TimedText:
    """A piece of the transcript and the seconds of the recording it covers; `words` when aligned."""

    start: float
    end: float
    text: str
    words: list[Word] | None = None


@dataclass
class Transcript:
    """The result for one input file."""

    path: str
    duration: float
    segments: list[TimedText] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(" ".join(s.text for s in self.segments).split())


def format_timestamp(seconds: float, decimal: str = ",") -> str:
    """HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (VTT)."""
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def _cues(t: Transcript) -> list[TimedText]:
    return [s for s in t.segments if s.text.strip()]


def _wrap(text: str) -> str:
    return "\n".join(textwrap.wrap(text, LINE_WIDTH)) or text


def to_txt(t: Transcript) -> str:
    return t.text + "\n"


def _word_cues(t: Transcript) -> list[TimedText]:
    """One cue per aligned word; segments without word timings stay whole cues."""
    out: list[TimedText] = []
    for c in _cues(t):
        if c.words:
            out.extend(TimedText(w.start, w.end, w.word) for w in c.words)
        else:
            out.append(c)
    return out


def _segment_dict(s: TimedText) -> dict[str, Any]:
    d: dict[str, Any] = {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text}
    if s.words is not None:
        d["words"] = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in s.words]
    return d


def transcript_dict(t: Transcript) -> dict[str, Any]:
    return {
        "path": t.path,
        "duration": round(t.duration, 3),
        "text": t.text,
        "segments": [_segment_dict(s) for s in _cues(t)],
        **t.info,
    }


def to_json(t: Transcript) -> str:
    return json.dumps(transcript_dict(t), ensure_ascii=False, indent=2) + "\n"


def to_json_line(t: Transcript) -> str:
    """The transcript as one line of JSON (JSON Lines: one object per file, for `jq` and friends)."""
    return json.dumps(transcript_dict(t), ensure_ascii=False) + "\n"


def to_srt(t: Transcript, words: bool = False) -> str:
    blocks = [
        f"{i}\n{format_timestamp(c.start)} --> {format_timestamp(c.end)}\n{_wrap(c.text)}\n"
        for i, c in enumerate(_word_cues(t) if words else _cues(t), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(t: Transcript, words: bool = False) -> str:
    blocks = [
        f"{format_timestamp(c.start, '.')} --> {format_timestamp(c.end, '.')}\n{_wrap(c.text)}\n"
        for c in (_word_cues(t) if words else _cues(t))
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


RENDERERS = {"txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt}


def render(t: Transcript, fmt: str, words: bool = False) -> str:
    """`t` in `fmt`; `words=True` makes srt/vtt cues per aligned word (segments without timings stay whole)."""
    if fmt not in RENDERERS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt in ("srt", "vtt"):
        return RENDERERS[fmt](t, words)
    return RENDERERS[fmt](t)


_TIME = r"(\d{2,}):(\d{2}):(\d{2})[,.](\d{3})"
_CUE = re.compile(rf"^{_TIME}\s+-->\s+{_TIME}")


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def parse_subtitles(content: str) -> list[TimedText]:
    """Cues of an SRT or WebVTT document (numbering, headers and notes ignored); raises on a malformed cue."""
    cues: list[TimedText] = []
    lines = content.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        match = _CUE.match(lines[i].strip())
        if "-->" in lines[i] and not match:
            raise ValueError(f"line {i + 1}: malformed cue timing {lines[i]!r}")
        if match:
            g = match.groups()
            text_lines = []
            i += 1
            while i < len(lines) and lines[i].strip():
                text_lines.append(lines[i].strip())
                i += 1
            cues.append(TimedText(_seconds(*g[:4]), _seconds(*g[4:]), " ".join(text_lines)))
        i += 1
    return cues
