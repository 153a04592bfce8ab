"""Transcripts for building a CTC vocabulary, read from JSONL manifests without the full data pipeline."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def transcripts_from_manifests(paths: Iterable[Path], column: str = "text") -> list[str]:
    texts: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    texts.append(str(json.loads(line)[column]))
                except (json.JSONDecodeError, KeyError) as err:
                    raise ValueError(f"{path}:{lineno}: cannot read column {column!r}: {err}") from err
    return texts
