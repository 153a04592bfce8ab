"""A map-style Dataset that decodes audio in `__getitem__` and survives files that break mid-epoch.

Decoding happens per item, so it runs inside DataLoader workers (`num_workers` > 0) in parallel with
training. A file that fails to load (deleted, truncated, NaN...) is reported once, with the reason, to
the log and to `report_dir/bad_audio.jsonl`, and the item is replaced by the next loadable utterance so
the epoch never crashes (with `on_bad_audio="error"` it raises instead).

`utterances` may be any `Sequence[Utterance]`; with an `UtteranceTable` (what `load_source`/`scan` give)
each item's `Utterance` is built on access and its audio bytes are read from the memory-mapped table in
the worker, so workers share the page cache instead of holding copies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from speeched.data.audio import AudioError, load_audio
from speeched.data.records import Utterance
from speeched.data.scan import BadEntry, OnBadAudio, write_report
from speeched.data.table import durations_of

log = logging.getLogger(__name__)

MAX_REPLACEMENTS = 50


class SpeechDataset(Dataset):
    """`dataset[i]` → {"id", "array" (float32 mono at `sampling_rate`), "sampling_rate", "utterance"}.

    `cache_audio=True` keeps decoded waveforms in memory (small corpora, several epochs); call
    `preload()` before creating the DataLoader so forked workers share the cache instead of each
    filling its own copy.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        sampling_rate: int,
        *,
        on_bad_audio: OnBadAudio = "skip",
        report_dir: str | None = None,
        check_samples: bool = True,
        cache_audio: bool = False,
    ) -> None:
        if on_bad_audio not in ("skip", "error"):
            raise ValueError(f"on_bad_audio must be 'skip' or 'error', got {on_bad_audio!r}")
        if not utterances:
            raise ValueError(
                "SpeechDataset got no utterances (did every one get filtered? see the scan summary)"
            )
        self.utterances = utterances
        self.sampling_rate = sampling_rate
        self.on_bad_audio = on_bad_audio
        self.report_dir = report_dir
        self.check_samples = check_samples
        self.cache: dict[int, np.ndarray] | None = {} if cache_audio else None
        self.bad: dict[int, str] = {}  # index -> reason, in this process

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def durations(self) -> np.ndarray:
        """Per-utterance seconds for the sampler (0.0 where unknown: run `scan` first), from the table's
        column when `utterances` is an `UtteranceTable`/`ConcatUtterances` (no Utterance is built)."""
        return np.nan_to_num(durations_of(self.utterances), nan=0.0)

    @property
    def source_ids(self) -> np.ndarray:
        """Which source each item came from (a `ConcatUtterances`), zeros otherwise."""
        ids = getattr(self.utterances, "source_ids", None)
        return np.zeros(len(self), dtype=np.int64) if ids is None else np.asarray(ids)

    def _load(self, i: int) -> np.ndarray:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        x = load_audio(self.utterances[i], self.sampling_rate, check=self.check_samples)
        if self.cache is not None:
            self.cache[i] = x
        return x

    def _report(self, i: int, err: AudioError) -> None:
        u = self.utterances[i]
        self.bad[i] = err.reason
        entry = BadEntry(u.id, u.origin, u.audio, err.reason, err.detail)
        log.warning("bad audio during loading, replaced by another utterance: %s", entry.describe())
        if self.report_dir:
            write_report([entry], self.report_dir, append=True)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = i
        for _ in range(min(MAX_REPLACEMENTS, len(self))):
            if j not in self.bad:
                try:
                    x = self._load(j)
                except AudioError as err:
                    if self.on_bad_audio == "error":
                        raise
                    self._report(j, err)
                else:
                    item = {"id": self.utterances[j].id, "array": x, "sampling_rate": self.sampling_rate}
                    item["utterance"] = self.utterances[j]
                    if j != i:
                        item["replaces"] = self.utterances[i].id
                    return item
            j = (j + 1) % len(self)
        raise RuntimeError(
            f"{MAX_REPLACEMENTS} consecutive utterances from {self.utterances[i].origin} failed to load; "
            "run `speeched data check` on this data"
        )

    def preload(self) -> None:
        """Decode everything now (cache_audio=True); bad files are reported here instead of mid-epoch."""
        if self.cache is None:
            raise ValueError("preload() needs SpeechDataset(..., cache_audio=True)")
        for i in range(len(self)):
            if i not in self.bad:
                try:
                    self._load(i)
                except AudioError as err:
                    if self.on_bad_audio == "error":
                        raise
                    self._report(i, err)
