"""What to transcribe: files, directories (recursive) and globs expanded here (not by a shell), checked
by their headers before any model is loaded."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass

import soundfile as sf

from speeched.data.audio import MISSING, AudioError, audio_info

EXTRA_AUDIO_EXTENSIONS = {"mp3", "opus", "aif", "oga", "wave"}


@dataclass
class FailedFile:
    """An input that could not be transcribed, and why (shown on stderr)."""

    path: str
    message: str


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


def probe(path: str) -> tuple[float, str | None]:
    """(duration in seconds, None) for a readable audio header, else (0, what is wrong)."""
    try:
        return audio_info(path).duration, None
    except AudioError as err:
        return 0.0, ("no such file" if err.reason == MISSING else f"{err.reason}: {err.detail}".rstrip(": "))
    except OSError as err:
        return 0.0, f"cannot read: {err}"
