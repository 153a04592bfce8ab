"""`speeched data check` on streamed data: a shard folder (`speeched data shard` output, with index.json)
or parquet/tar shards (a folder, a glob, a single file, local or an fsspec URL).

Every record is read through the same stream reader as training (`ShardSet.open`: `datasets` streaming,
audio never decoded by `datasets`) and decoded with soundfile + soxr. A record that cannot be decoded, a
shard that cannot be opened or ends early (fewer rows than its index.json says, or a read error
mid-file), and durations outside the filters are reported with (shard, offset, reason) to the report and
to `bad_audio.jsonl` (the same lines training writes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import fsspec
import numpy as np
from tqdm import tqdm

from speeched.data.audio import TOO_LONG, TOO_SHORT, AudioError, load_audio
from speeched.data.config import DataSource
from speeched.data.records import Utterance
from speeched.data.scan import BadEntry
from speeched.data.shards import read_index
from speeched.data.stream_source import (
    TRUNCATED_SHARD,
    UNREADABLE_SHARD,
    ShardSet,
    report_bad,
    resolve_stream_source,
    row_to_item,
)

STREAM_EXTS = (".parquet", ".tar")


def is_stream_path(path: str) -> bool:
    """Whether `data check` reads `path` as streamed shards: a folder with index.json, a glob, a
    .parquet/.tar file or a URL of one (plain manifests, audiofolders and `datasets` folders are not)."""
    if any(c in path for c in "*?["):
        return True
    if path.rstrip("/").endswith(".tar"):
        return True
    if "://" in path:
        return path.rstrip("/").endswith(STREAM_EXTS) or read_index(path) is not None
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "index.json"))


def _rows(shards: ShardSet, i: int) -> Iterator[tuple[int, dict[str, Any] | None, BaseException | None]]:
    """(offset, row, None) per row of shard i; a final (offset, None, error) when it fails to open/read."""
    offset = 0
    try:
        it = shards.open(i).iter(batch_size=1)
    except Exception as err:  # noqa: BLE001 - fsspec/pyarrow/tar errors of many types
        yield 0, None, err
        return
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001 - a shard cut off mid-file fails here
            yield offset, None, err
            return
        yield offset, {k: v[0] for k, v in batch.items()}, None
        offset += 1


def check_stream(
    source: DataSource,
    sampling_rate: int = 16_000,
    decode: bool = True,
    out_dir: str | None = None,
    progress: bool = False,
) -> tuple[int, np.ndarray, list[BadEntry], str | None]:
    """Read every record of a streamed source: (records seen, usable durations, bad entries, report path).

    `decode=False` reads headers only (durations from the column or the audio header). The source's
    `columns` name the record fields and its `filters` the usable durations."""
    path, filters = source.path, source.filters
    shards = resolve_stream_source(source.model_copy(update={"streaming": True}))
    index = read_index(path) if shards.shards and not any(c in path for c in "*?[") else None
    expected = {s["file"]: int(s["rows"]) for s in index["shards"]} if index else {}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        report = os.path.join(out_dir, "bad_audio.jsonl")
        with open(report, "w", encoding="utf-8"):
            pass  # a fresh report per check; report_bad appends
    bad: list[BadEntry] = []
    durations: list[float] = []
    total = 0

    def flag(shard: str, offset: int, reason: str, detail: str, uid: str = "") -> None:
        bad.append(BadEntry(uid, f"{shard}:{offset}", None, reason, detail))
        report_bad(out_dir, shard, offset, reason, detail, uid)

    bar = tqdm(total=shards.rows, desc="checking records", unit="rec", disable=not progress)
    for i in range(shards.n_shards):
        name = shards.shard_name(i)
        seen, failed = 0, False
        for offset, row, err in _rows(shards, i):
            if err is not None:
                reason = UNREADABLE_SHARD if seen == 0 else TRUNCATED_SHARD
                flag(name, offset, reason, f"{type(err).__name__}: {err}")
                failed = True
                break
            seen += 1
            total += 1
            bar.update(1)
            where = f"{name}:{offset}"
            try:
                item = row_to_item(row, shards.columns, where)
                if decode:
                    utt = Utterance(item["id"], None, item["text"], origin=where)
                    utt.extra["audio_bytes"] = item["bytes"]
                    x = load_audio(utt, sampling_rate)
                    item["duration"] = len(x) / sampling_rate
            except AudioError as err:
                flag(name, offset, err.reason, err.detail, str((row or {}).get(shards.columns.id) or ""))
                continue
            d = item["duration"]
            if d < filters.min_duration:
                flag(name, offset, TOO_SHORT, f"{d:.3f}s < min_duration {filters.min_duration}s", item["id"])
            elif d > filters.max_duration:
                flag(name, offset, TOO_LONG, f"{d:.3f}s > max_duration {filters.max_duration}s", item["id"])
            else:
                durations.append(d)
        want = expected.get(os.path.basename(fsspec.core.strip_protocol(name)))
        if want is not None and seen < want and not failed:  # ended cleanly but early
            flag(name, seen, TRUNCATED_SHARD, f"{seen} rows read, index.json says {want}")
    bar.close()
    return total, np.asarray(durations, dtype=np.float64), bad, (report if out_dir else None)


__all__ = ["check_stream", "is_stream_path"]
