"""The one record every data source resolves to, so the rest of speeched never cares where data came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Utterance:
    """One spoken example.

    `audio` is an absolute file path, or None when the samples are in memory (`array` +
    `sampling_rate`) or encoded bytes (`audio_bytes()`, e.g. a `datasets` column that holds bytes; rows of
    an `UtteranceTable` read them lazily from the memory-mapped table). `text` is the transcript;
    `translation` the target text for speech translation. `origin` says where the record came
    from ("train.jsonl:12") so every error message can point at the exact line.
    """

    id: str
    audio: str | None
    text: str
    translation: str | None = None
    duration: float | None = None
    lang: str | None = None
    tgt_lang: str | None = None
    origin: str = ""
    array: np.ndarray | None = None
    sampling_rate: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def audio_bytes(self) -> bytes | None:
        """Encoded audio held for this utterance (a `datasets` blob), read only when asked for."""
        return self.extra.get("audio_bytes")

    def target(self, task: str) -> str | None:
        """The text the decoder learns: the transcript for `asr`, the translation for `st`."""
        if task == "asr":
            return self.text
        if task == "st":
            return self.translation
        raise ValueError(f"unknown task {task!r}: expected 'asr' or 'st'")
