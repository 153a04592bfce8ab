"""The training run's data, read once: scanned tables or streamed shards, dev sets, what the card records.

Scale: a source stays a compact table (`speeched.data.table`): the training set is `concat(parts)` of the
scans' kept tables, the sampler reads its `durations`/`source_ids` arrays, the CTC vocabulary its text
column, and the language check builds one `Utterance` per distinct (lang, tgt_lang) pair, never one per
row.

Streaming: when every train source has `streaming: true` nothing is scanned or loaded; the first
10,000 rows (`sample_utterances`) stand in for the corpus in the CTC vocabulary and the language check.
A mix of streamed and non-streamed train sources is refused (shard the others).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speeched.data.records import Utterance
from speeched.data.scan import BadAudioError, scan
from speeched.data.sources import load_source
from speeched.data.stream_source import StreamSourceError, resolve_stream_source, sample_utterances
from speeched.data.table import concat, durations_of
from speeched.errors import SpeechedError
from speeched.training.card import data_entry, is_synthetic

STREAM_SAMPLE = 10_000


class DataSetupError(SpeechedError, RuntimeError):
    """The training data cannot be used as configured (exit 2); the message says what to do."""


@dataclass
class TrainData:
    """`utts`: the training set (None when streamed); `examples`: one utterance per language pair."""

    utts: Sequence[Utterance] | None
    dev_sets: list[tuple[str, Sequence[Utterance]]]
    bad: list[Any]
    texts: list[str]
    examples: list[Utterance]
    durations: np.ndarray  # seconds of the training utterances (a sample of them when streamed)
    card_data: list[dict[str, Any]] = field(default_factory=list)
    synthetic: bool = False

    @property
    def streamed(self) -> bool:
        return self.utts is None


def language_examples(utts: Sequence[Utterance]) -> list[Utterance]:
    """One utterance per distinct (lang, tgt_lang): what the decoder-prompt check needs to see."""
    parts = getattr(utts, "parts", None) or [utts]
    out: list[Utterance] = []
    for part in parts:
        col = getattr(part, "column", None)
        if callable(col):
            cols = [col("lang"), col("tgt_lang")]
            values = [c.to_pylist() if c is not None else [None] * len(part) for c in cols]
            first: dict[tuple[Any, Any], int] = {}
            for i, pair in enumerate(zip(*values, strict=True)):
                first.setdefault(pair, i)
            out += [part[i] for i in first.values()]
        else:
            seen: set[tuple[Any, Any]] = set()
            for u in part:
                if (u.lang, u.tgt_lang) not in seen:
                    seen.add((u.lang, u.tgt_lang))
                    out.append(u)
    return out


def _texts(part: Sequence[Utterance], task: str) -> list[str]:
    texts = getattr(part, "texts", None)
    if callable(texts):
        return [t for t in texts(task) if t]
    return [t for u in part if (t := u.target(task))]


def _scan_train(r: Any, normalize: Any, say: Any) -> tuple[list[Any], list[Any], list[dict[str, Any]]]:
    parts, bad, card = [], [], []
    for k, src in enumerate(r.data.train):
        try:
            res = scan(
                load_source(src),
                src.filters,
                task=r.task,
                on_bad_audio=r.data.on_bad_audio,
                normalize_target=normalize,
            )
        except BadAudioError as err:  # one line: the scan's own message names the files
            text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
            raise DataSetupError(f"data.train[{k}] {src.path}: {text}") from None
        bad.extend(res.bad)
        say(f"train {src.name or src.path}: {res.summary()}")
        parts.append(res.kept)
        card.append(data_entry(src, "train", float(np.nansum(durations_of(res.kept))), len(res.kept)))
    return parts, bad, card


def _stream_train(r: Any, say: Any) -> tuple[list[Utterance], list[dict[str, Any]]]:
    sample, card = [], []
    for k, src in enumerate(r.data.train):
        try:
            shards = resolve_stream_source(src)
            rows = sample_utterances(shards, STREAM_SAMPLE)
        except StreamSourceError as err:
            raise DataSetupError(f"data.train[{k}] {src.path}: {err}") from None
        say(
            f"train {src.name or src.path}: streamed, {shards.n_shards} shards"
            + (f", {shards.rows} utterances" if shards.rows else "")
            + (f" ({shards.seconds / 3600:.2f} h)" if shards.seconds else "")
            + f"; vocabulary and languages from its first {len(rows)} rows"
        )
        sample += rows
        card.append(data_entry(src, "train", shards.seconds, shards.rows))
    return sample, card


def load_train_data(r: Any, normalize: Any, say: Any) -> TrainData:
    """Scan (or open as streams) every train source and scan every dev source."""
    streamed = [bool(getattr(s, "streaming", False)) for s in r.data.train]
    if any(streamed) and not all(streamed):
        names = [s.name or s.path for s, st in zip(r.data.train, streamed, strict=True) if not st]
        raise DataSetupError(
            f"data.train mixes streamed and non-streamed sources ({', '.join(names)} not streamed): stream all "
            "of them (shard the others with `speeched data shard SOURCE --out DIR` and set streaming: true) "
            "or none"
        )
    for k, src in enumerate(r.data.dev):
        if getattr(src, "streaming", False):
            raise DataSetupError(
                f"data.dev[{k}] {src.path}: dev sets are not streamed (they are decoded whole at every "
                "evaluation): set streaming: false on it, or use a smaller dev set"
            )
    bad: list[Any] = []
    if all(streamed):
        sample, card = _stream_train(r, say)
        utts, texts, examples, durations = None, _texts(sample, "asr"), language_examples(sample), None
        durations = durations_of(sample)
    else:
        parts, bad, card = _scan_train(r, normalize, say)
        utts = concat(parts)
        texts = [t for p in parts for t in _texts(p, "asr")]
        examples = language_examples(utts)
        durations = utts.durations
    dev_sets = []
    for src in r.data.dev:
        res = scan(load_source(src), src.filters, task=r.task, on_bad_audio="skip")
        bad.extend(res.bad)
        say(f"dev {src.name or src.path}: {res.summary()}")
        kept = res.kept[: r.eval.limit] if r.eval.limit else res.kept
        dev_sets.append((src.name or Path(src.path).stem, kept))
        card.append(data_entry(src, "dev", float(np.nansum(durations_of(kept))), len(kept)))
        examples += language_examples(kept)
    return TrainData(
        utts, dev_sets, bad, texts, examples, np.nan_to_num(durations, nan=0.0), card,
        is_synthetic(r.data.train),
    )  # fmt: skip
