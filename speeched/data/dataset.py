"""A map-style Dataset that decodes audio in `__getitem__` and survives files that break mid-epoch.

Decoding happens per item, so it runs inside DataLoader workers (`num_workers` > 0) in parallel with
training. A file that fails to load (deleted, truncated, NaN...) is reported once, with the reason, to
the log and to `report_dir/bad_audio.jsonl`, and the item is replaced by the next loadable utterance so
the epoch never crashes (with `on_bad_audio="error"` it raises instead).

`utterances` may be any `Sequence[Utterance]`; with an `UtteranceTable` (what `load_source`/`scan` give)
each item's `Utterance` is built on access and its audio bytes are read from the memory-mapped table in
the worker, so workers share the page cache instead of holding copies.

Augmentation (training only): `SpeechDataset(..., augment=AugmentConfig, seed=...)` together with
`DurationBucketSampler(..., augment=<the same config>)`. The sampler then yields `SampleKey`s
(index, epoch, partners, copy) and `dataset[key]` loads the utterance, joins the partners the sampler
chose (concatenation: audio with random pauses, transcripts and translations with a space), and applies
speed -> reverb -> noise -> gain with `augment.key_rng(seed, key, copies)`: a pure function of (seed,
epoch, key), so the result is the same in any worker, with any `num_workers`, and after a resume.
An int index always gives the utterance as stored; an augmenting dataset refuses one (its epoch would
be unknown). Dev/test data never goes through here with `augment` (evaluation decodes through
speeched.inference.decode).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from speeched.data.audio import AudioError, load_audio
from speeched.data.augment import AugmentConfig, Augmenter, SampleKey, concatenate, key_rng
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
        augment: AugmentConfig | None = None,
        seed: int = 0,
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
        self.augment = augment if augment is not None and augment.enabled else None
        self.augmenter = Augmenter(self.augment, sampling_rate) if self.augment is not None else None
        self.seed = int(seed)

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

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        if not isinstance(key, SampleKey):
            if self.augmenter is not None:
                raise TypeError(
                    f"an augmenting SpeechDataset needs SampleKeys, got {type(key).__name__}: build the "
                    "DurationBucketSampler with the same augment= so the epoch reaches the item"
                )
            return self._get(int(key))
        item = self._get(key.index)
        if self.augmenter is None:
            if key.partners:
                raise ValueError("a SampleKey with concatenation partners needs SpeechDataset(augment=...)")
            return item
        rng = key_rng(self.seed, key, self.augment.copies)
        audio = item["array"]
        if key.partners:
            parts = [(item["utterance"], audio)]
            for j in key.partners:
                x = self._try_load(j)
                if x is not None:
                    parts.append((self.utterances[j], x))
            if len(parts) > 1:
                # The sampler already bounded the unit by its metadata durations (pauses at their
                # longest), so nothing is dropped here: texts always match the audio.
                audio, text = concatenate(
                    [(x, u.text) for u, x in parts], rng, self.augment.concat.pause, self.sampling_rate
                )
                item["utterance"] = _joined(parts, text, len(audio) / self.sampling_rate)
                item["id"] = item["utterance"].id  # "a+b": the same on a feature-cache hit
                item["concat_ids"] = [u.id for u, _ in parts]
        item["array"] = self.augmenter(audio, rng)
        return item

    def cache_variant(self, key: int | SampleKey) -> str | None:
        """How a feature cache must key item `key` beside the utterance's identity: "" = the utterance as
        stored (no augmentation), None = do not cache (augmented afresh every epoch: `augment.copies`
        unset), else a string naming the augmented version (epoch % copies, partners, copy number)."""
        if self.augment is None or not isinstance(key, SampleKey):
            return ""
        copies = self.augment.copies
        if copies is None:
            return None
        partners = "+".join(str(j) for j in key.partners)
        return f"aug{key.epoch % copies}.{key.copy}.{partners}"

    def item_utterance(self, key: int | SampleKey) -> Utterance:
        """The Utterance `dataset[key]` carries (joined texts for a concatenation), without loading audio:
        what a feature-cache hit needs. Partners known to be bad in this process are left out, as in
        `__getitem__`."""
        i = self.index_of(key)
        partners = key.partners if isinstance(key, SampleKey) and self.augment is not None else ()
        parts = [(self.utterances[i], None)] + [
            (self.utterances[j], None) for j in partners if j not in self.bad
        ]
        if len(parts) == 1:
            return parts[0][0]
        text = " ".join(t for t in (u.text.strip() for u, _ in parts) if t)
        return _joined(parts, text, None)

    def index_of(self, key: int | SampleKey) -> int:
        """The utterance an item is built around (its first utterance for a concatenation)."""
        return key.index if isinstance(key, SampleKey) else int(key)

    def _try_load(self, j: int) -> np.ndarray | None:
        """A concatenation partner's audio, or None (reported once) when it cannot be loaded."""
        if j in self.bad:
            return None
        try:
            return self._load(j)
        except AudioError as err:
            if self.on_bad_audio == "error":
                raise
            self._report(j, err)
            return None

    def _get(self, i: int) -> dict[str, Any]:
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


def _joined(parts: list[tuple[Utterance, Any]], text: str, seconds: float | None) -> Utterance:
    """The Utterance of a concatenation: the first one's metadata, joined transcript and translation."""
    first = parts[0][0]
    translations = [u.translation for u, _ in parts]
    translation = None if any(t is None for t in translations) else " ".join(t.strip() for t in translations)
    return dataclasses.replace(
        first,
        id="+".join(u.id for u, _ in parts),
        text=text,
        translation=translation,
        duration=seconds,
        audio=None,
        array=None,
        extra={},
    )
