"""Render a transcript as plain text, JSON, SubRip (.srt) or WebVTT (.vtt), and read subtitles back.

Subtitle cues are the decoded segments: their times come from the segmenter, so they are monotonic and
never overlap. The parsers exist so tests (and users) can check a written file round-trips.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any

FORMATS = ("txt", "json", "srt", "vtt")
LINE_WIDTH = 84


@dataclass
class TimedText:
    """A piece of the transcript and the seconds of the recording it covers."""

    start: float
    end: float
    text: str


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


def to_json(t: Transcript) -> str:
    data = {
        "path": t.path,
        "duration": round(t.duration, 3),
        "text": t.text,
        "segments": [{**asdict(s), "start": round(s.start, 3), "end": round(s.end, 3)} for s in _cues(t)],
        **t.info,
    }
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def to_srt(t: Transcript) -> str:
    blocks = [
        f"{i}\n{format_timestamp(c.start)} --> {format_timestamp(c.end)}\n{_wrap(c.text)}\n"
        for i, c in enumerate(_cues(t), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    blocks = [
        f"{format_timestamp(c.start, '.')} --> {format_timestamp(c.end, '.')}\n{_wrap(c.text)}\n"
        for c in _cues(t)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


RENDERERS = {"txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt}


def render(t: Transcript, fmt: str) -> str:
    if fmt not in RENDERERS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
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
