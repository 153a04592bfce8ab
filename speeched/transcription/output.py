"""Where transcripts go: planned (and created) before anything is decoded, written one file at a time.

A file target is written atomically (a temporary file renamed over it), as soon as its transcript is
complete: an interrupted run keeps every file finished so far and never leaves half a file. On stdout,
JSON transcripts are JSON Lines (one object per input); other formats get a `==> path <==` header per
input when there are several.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TextIO

from speeched.errors import UsageError
from speeched.transcription.formats import FORMATS, Transcript, render, to_json_line


def plan_outputs(paths: list[str], output: Path | None, fmt: str) -> dict[str, Path] | None:
    """One output file per input (None: stdout), with every folder created and writable now.

    `output` is the file itself for a single input (unless it is a directory or ends with a slash),
    else a directory that gets `<stem>.<fmt>` per input. Raises UsageError when a location cannot be
    written (a parent is a file, no permission), before any decoding.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if output is None:
        return None
    single = len(paths) == 1 and not (output.is_dir() or str(output).endswith(("/", os.sep)))
    folder = output.parent if single else output
    if single and output.exists() and not output.is_file():
        raise UsageError(f"--output {output} exists and is not a file")
    _make_folder(folder, output)
    if single:
        return {paths[0]: output}
    taken: set[str] = set()
    out: dict[str, Path] = {}
    for p in paths:
        stem = Path(p).stem or "audio"
        name, n = f"{stem}.{fmt}", 1
        while name in taken:  # same file name in two input folders
            n += 1
            name = f"{stem}-{n}.{fmt}"
        taken.add(name)
        out[p] = output / name
    return out


def _make_folder(folder: Path, output: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise UsageError(
            f"--output {output}: {folder} (or a folder above it) is a file, not a directory"
        ) from err
    except PermissionError as err:
        raise UsageError(f"--output {output}: no permission to create {folder}") from err
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--output {output}: {folder} is not writable")


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file next to `path`, then rename it over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_stdout(t: Transcript, fmt: str, stream: TextIO, several: bool, words: bool = False) -> None:
    if fmt == "json":
        stream.write(to_json_line(t))
    else:
        if several:
            stream.write(f"==> {t.path} <==\n")
        stream.write(render(t, fmt, words))
    stream.flush()
