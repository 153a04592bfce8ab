"""Where a streamed source's shards are, how to open one of them, and how a row becomes an utterance.

A streamed source is a list of shards read through `datasets`' `IterableDataset`
(`load_dataset("parquet" | "webdataset", data_files=[url], streaming=True)`, or one shard of a hub
dataset via `IterableDataset.shard`), so local paths, `hf://` and fsspec URLs (`s3://`, `gs://`, ... when
the user has credentials and the fsspec backend installed) all work. `datasets` never decodes audio
here (that would need torchcodec): `Audio` features are cast to `decode=False` (parquet, hub) or replaced
by plain binary (webdataset), and speeched decodes the bytes with soundfile + soxr.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Any

import datasets
import fsspec
import soundfile as sf

from speeched.data.audio import EMPTY_FILE, NOT_AUDIO, AudioError
from speeched.data.config import Columns, DataSource
from speeched.data.records import Utterance
from speeched.data.shards import read_index

AUDIO_EXTS = ("flac", "wav", "mp3", "ogg", "opus", "m4a", "sph", "aiff", "bin")
#: Reason strings of stream-level problems (bad_audio.jsonl); record-level ones come from audio.py.
UNREADABLE_SHARD = "unreadable shard"
TRUNCATED_SHARD = "truncated shard"


class StreamSourceError(ValueError):
    """A streamed source that cannot be used as configured; the message says what to change."""


@dataclass
class ShardSet:
    """The shards of one streamed source. Picklable: DataLoader workers open shards themselves."""

    name: str
    fmt: str  # "parquet" | "webdataset" | "hub"
    shards: list[str]  # URLs/paths (empty for a hub dataset: see n_shards)
    n_shards: int
    columns: Columns
    rows: int | None = None
    seconds: float | None = None
    hub: tuple[str, str | None, str] | None = None  # (path, config, split)
    features: Any = None  # webdataset: `datasets.Features` with audio columns as binary

    def shard_name(self, i: int) -> str:
        return self.shards[i] if self.shards else f"{self.name}[shard {i}/{self.n_shards}]"

    def open(self, i: int) -> Any:
        """Shard `i` as a `datasets.IterableDataset` (nothing is read until it is iterated)."""
        if self.hub is not None:
            return _hub_base(self.hub, self.columns.audio).shard(num_shards=self.n_shards, index=i)
        builder = "parquet" if self.fmt == "parquet" else "webdataset"
        ds = datasets.load_dataset(
            builder,
            data_files={"train": [self.shards[i]]},
            split="train",
            streaming=True,
            features=self.features,
        )
        return _no_audio_decoding(ds, self.columns.audio)


_HUB_CACHE: dict[tuple[Any, ...], Any] = {}


def _hub_base(hub: tuple[str, str | None, str], audio_col: str) -> Any:
    key = (*hub, audio_col)
    if key not in _HUB_CACHE:  # one resolution of the hub's file list per process
        path, config, split = hub
        ds = datasets.load_dataset(path, config, split=split, streaming=True)
        _HUB_CACHE[key] = _no_audio_decoding(ds, audio_col)
    return _HUB_CACHE[key]


def _no_audio_decoding(ds: Any, audio_col: str) -> Any:
    feats = ds.features or {}
    for name, feat in feats.items():
        if isinstance(feat, datasets.Audio) and feat.decode:
            ds = ds.cast_column(name, datasets.Audio(decode=False))
    return ds


def _list_files(path: str) -> tuple[list[str], str]:
    """(shard URLs, format) of a folder, glob or single file, local or fsspec."""
    fs, root = fsspec.core.url_to_fs(path)
    if any(c in root for c in "*?["):
        files = sorted(fs.glob(root))
    elif fs.isdir(root):
        files = sorted(fs.glob(root.rstrip("/") + "/*.parquet")) or sorted(
            fs.glob(root.rstrip("/") + "/*.tar")
        )
    else:
        files = [root] if fs.exists(root) else []
    urls = [f if "://" not in path else fs.unstrip_protocol(f) for f in files]
    fmts = {"webdataset" if u.endswith(".tar") else "parquet" for u in urls}
    if not urls:
        raise StreamSourceError(
            f"{path}: no shards found (expected index.json, *.parquet or *.tar); write them with "
            "`speeched data shard SOURCE --out DIR`"
        )
    if len(fmts) > 1:
        raise StreamSourceError(f"{path}: mixes .parquet and .tar shards; use one format per source")
    return urls, fmts.pop()


def _webdataset_features(url: str) -> Any:
    """The features `datasets` infers from the first tar, with audio columns as plain bytes."""
    ds = datasets.load_dataset("webdataset", data_files={"train": [url]}, split="train", streaming=True)
    feats = ds.features
    return datasets.Features(
        {k: datasets.Value("binary") if isinstance(v, datasets.Audio) else v for k, v in feats.items()}
    )


def resolve_stream_source(src: DataSource, base_dir: str | None = None) -> ShardSet:
    """Find a streamed source's shards: a `speeched data shard` folder (index.json), a folder/glob of
    parquet or tar files (local or fsspec URL), or a hub dataset (`format: datasets`)."""
    path = src.path
    if "://" not in path and base_dir and not os.path.isabs(path) and not os.path.exists(path):
        path = os.path.join(base_dir, path)
    name = src.name or os.path.basename(path.rstrip("/")) or path
    is_local = "://" not in path
    if src.format == "datasets" and not (is_local and os.path.exists(path)):
        split = src.split or "train"
        try:
            ds = datasets.load_dataset(path, src.config, split=split, streaming=True)
        except Exception as err:  # noqa: BLE001 - hub/network/auth errors of many types
            raise StreamSourceError(f"{path}: cannot open as a streamed `datasets` source: {err}") from err
        return ShardSet(name, "hub", [], int(ds.n_shards), src.columns, hub=(path, src.config, split))
    index = read_index(path) if (not is_local or os.path.isdir(path)) else None
    if index is not None:
        base = path.rstrip("/")
        shards = [f"{base}/{s['file']}" for s in index["shards"]]
        fmt = index["format"]
        rows, seconds = int(index["rows"]), float(index["seconds"])
    else:
        shards, fmt = _list_files(path)
        rows = seconds = None
    features = _webdataset_features(shards[0]) if fmt == "webdataset" else None
    return ShardSet(name, fmt, shards, len(shards), src.columns, rows, seconds, features=features)


def _opt(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def row_to_item(row: dict[str, Any], cols: Columns, where: str) -> dict[str, Any]:
    """A streamed row → {"id", "bytes", "duration", "text", "translation", "lang", "tgt_lang", "where"}.

    Raises AudioError for a row without usable audio bytes; the duration is the row's (or, when it has
    none, read from the audio header: cheap, no decoding)."""
    meta = dict(row)
    if isinstance(row.get("json"), dict):  # webdataset: metadata in KEY.json, audio in KEY.<ext>
        meta.update(row["json"])
    data: Any = None
    if cols.audio in row:
        data = row[cols.audio]
    else:
        data = next((row[e] for e in AUDIO_EXTS if row.get(e) is not None), None)
    if isinstance(data, dict):
        blob, path = data.get("bytes"), data.get("path")
        if not blob and path and os.path.isfile(path):  # a hub dataset whose audio lies in local files
            with open(path, "rb") as f:
                blob = f.read()
        data = blob
    if not data:
        raise AudioError(EMPTY_FILE, where, f"no audio bytes in column {cols.audio!r}")
    duration = meta.get(cols.duration)
    if duration in (None, ""):
        try:
            info = sf.info(io.BytesIO(data))
        except Exception as err:  # noqa: BLE001 - libsndfile raises several types
            raise AudioError(NOT_AUDIO, where, str(err)) from err
        duration = info.frames / info.samplerate
    return {
        "id": str(meta.get(cols.id) or meta.get("__key__") or where),
        "bytes": bytes(data),
        "duration": float(duration),
        "text": "" if meta.get(cols.text) is None else str(meta.get(cols.text)),
        "translation": _opt(meta.get(cols.translation)),
        "lang": _opt(meta.get(cols.lang)),
        "tgt_lang": _opt(meta.get(cols.tgt_lang)),
        "where": where,
    }


def report_bad(
    report_dir: str | None, shard: str, offset: int, reason: str, detail: str, uid: str = ""
) -> None:
    """Append one line to `report_dir/bad_audio.jsonl` (the keys of scan.BadEntry plus shard and offset).

    One `write` of one line in append mode: lines from several workers and ranks do not interleave."""
    if not report_dir:
        return
    os.makedirs(report_dir, exist_ok=True)
    entry = {
        "id": uid,
        "origin": f"{shard}:{offset}",
        "audio": None,
        "reason": reason,
        "detail": detail,
        "shard": shard,
        "offset": offset,
    }
    with open(os.path.join(report_dir, "bad_audio.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def sample_utterances(shards: ShardSet, limit: int = 10_000) -> list[Any]:
    """Metadata of the first `limit` readable rows (shard 0 onwards) as `Utterance`s without audio: what
    the trainer needs before step 1 from a corpus it never materialises (CTC vocabulary, language
    checks). Unreadable shards and rows are skipped here; the stream reports them when it meets them."""
    out: list[Any] = []
    for i in range(shards.n_shards):
        try:
            for k, batch in enumerate(shards.open(i).iter(batch_size=1)):
                row = {c: v[0] for c, v in batch.items()}
                try:
                    it = row_to_item(row, shards.columns, f"{shards.shard_name(i)}:{k}")
                except AudioError:
                    continue
                out.append(
                    Utterance(
                        it["id"],
                        None,
                        it["text"],
                        it["translation"],
                        it["duration"],
                        it["lang"],
                        it["tgt_lang"],
                        origin=it["where"],
                    )  # fmt: skip
                )
                if len(out) >= limit:
                    return out
        except Exception:  # noqa: BLE001, S112 - a broken shard: the stream reports it when training
            continue
    return out
