"""Write a corpus as self-contained shards (audio embedded) plus an `index.json`, for streaming.

Layout of a shard folder (what `speeched data shard` writes and `streaming: true` reads):

    index.json            {"format", "audio_format", "rows", "bytes", "seconds", "shards": [...]}
    shard-000000.parquet  columns id, audio{bytes, path}, duration, sampling_rate, text, translation,
    shard-000001.parquet  lang, tgt_lang   (or shard-NNNNNN.tar for webdataset: KEY.flac|wav + KEY.json)

Shards are the unit of shuffling and of rank/worker splitting when streaming (as in lhotse's Shar and
webdataset), so a corpus should have many more shards than `processes × num_workers`. The audio column
is a plain struct `{bytes, path}` with no `datasets` `Audio` feature attached: `datasets` then never
tries to decode it (that would need torchcodec); speeched decodes the bytes with soundfile.

Rows are written in a seeded random order by default (`shuffle=True`): a manifest sorted by speaker
would otherwise give streamed batches of one speaker at a time, whatever the shard shuffle does.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from tqdm import tqdm

from speeched.data.audio import AudioError, audio_info
from speeched.data.records import Utterance

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
FORMATS = ("parquet", "webdataset")
SHARD_EXT = {"parquet": ".parquet", "webdataset": ".tar"}
#: Metadata columns written next to the audio (and read back by the streaming reader).
TEXT_COLUMNS = ("text", "translation", "lang", "tgt_lang")
PARQUET_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("duration", pa.float64()),
        ("sampling_rate", pa.int32()),
        *[(c, pa.string()) for c in TEXT_COLUMNS],
    ]
)
ROW_GROUP_BYTES = 64 << 20  # parquet row groups of ~64 MB: small enough to resume/stream in pieces


def parse_size(text: str | int) -> int:
    """'500MB' / '1.5GB' / '200k' / 1000000 → bytes (powers of 1000: MB = 10^6, MiB = 2^20)."""
    if isinstance(text, int):
        return text
    s = text.strip().lower().replace(" ", "")
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}
    units.update({"k": 10**3, "m": 10**6, "g": 10**9, "b": 1})
    for unit in sorted(units, key=len, reverse=True):
        if s.endswith(unit):
            number = s[: -len(unit)]
            break
    else:
        unit, number = "b", s
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"size {text!r}: expected a number with a unit, e.g. 500MB, 2GB, 64MiB") from None
    if value <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return int(value * units[unit])


@dataclass
class ShardRecord:
    """One utterance ready to be written: encoded audio plus its metadata."""

    id: str
    audio: bytes
    ext: str  # "flac", "wav", ... (the container the bytes are in)
    duration: float
    sampling_rate: int
    meta: dict[str, str | None] = field(default_factory=dict)


def _utt_bytes(utt: Utterance) -> bytes | None:
    getter = getattr(utt, "audio_bytes", None)  # lazily read blob of a table-backed utterance
    if callable(getter):
        return getter()
    return utt.extra.get("audio_bytes")


def _ext_of(data: bytes, name: str | None) -> str:
    head = data[:12]
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"OggS":
        return "ogg"
    ext = os.path.splitext(name or "")[1].lstrip(".").lower()
    return ext or "bin"


def encode_flac(x: np.ndarray, sr: int) -> bytes:
    """16-bit FLAC (lossless for 16-bit sources; about half the size of WAV for speech)."""
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def to_record(utt: Utterance, flac: bool = False) -> ShardRecord:
    """Embed `utt`'s audio (the original bytes, or re-encoded to FLAC). Raises AudioError for bad audio."""
    info = audio_info(utt)  # header check (path, bytes or array); raises AudioError with a reason
    where = utt.origin or utt.audio or utt.id
    if utt.audio is not None:
        with open(utt.audio, "rb") as f:
            data: bytes | None = f.read()
        name = utt.audio
    elif utt.array is not None:
        data, name = None, None
    else:
        data, name = _utt_bytes(utt), utt.extra.get("audio_name")
    if flac or data is None:
        if data is not None:
            try:
                x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
            except Exception as err:  # noqa: BLE001 - libsndfile raises several types
                raise AudioError("not audio", where, str(err)) from err
        else:
            x, sr = np.asarray(utt.array, dtype=np.float32), int(utt.sampling_rate or info.sampling_rate)
        if len(x) == 0:
            raise AudioError("truncated", where, "no samples")
        data, ext = encode_flac(np.clip(x, -1.0, 1.0), int(sr)), "flac"
    else:
        ext = _ext_of(data, name)
    duration = float(utt.duration) if utt.duration else info.duration
    meta = {c: getattr(utt, c) for c in TEXT_COLUMNS}
    return ShardRecord(utt.id, data, ext, duration, info.sampling_rate, meta)


class _ParquetShard:
    def __init__(self, path: str) -> None:
        self.path = path
        self.writer = pq.ParquetWriter(path, PARQUET_SCHEMA, compression="none")  # audio is compressed
        self.rows: list[dict[str, Any]] = []
        self.pending = 0

    def add(self, r: ShardRecord) -> None:
        row = {"id": r.id, "audio": {"bytes": r.audio, "path": f"{r.id}.{r.ext}"}, "duration": r.duration}
        row.update(sampling_rate=r.sampling_rate, **r.meta)
        self.rows.append(row)
        self.pending += len(r.audio)
        if self.pending >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=PARQUET_SCHEMA))
            self.rows, self.pending = [], 0

    def close(self) -> None:
        self._flush()
        self.writer.close()


class _TarShard:
    """webdataset layout: members KEY.<audio ext> and KEY.json, grouped by KEY (the row number)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tar = tarfile.open(path, "w")  # noqa: SIM115 - closed by close()
        self.n = 0

    def _put(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(data), 0
        self.tar.addfile(info, io.BytesIO(data))

    def add(self, r: ShardRecord) -> None:
        key = f"{self.n:08d}"  # keys must not contain dots (webdataset splits KEY.EXT at the first dot)
        meta = {"id": r.id, "duration": r.duration, "sampling_rate": r.sampling_rate, **r.meta}
        self._put(f"{key}.{r.ext}", r.audio)
        self._put(f"{key}.json", json.dumps(meta, ensure_ascii=False).encode())
        self.n += 1

    def close(self) -> None:
        self.tar.close()


def write_shards(
    utterances: Sequence[Utterance],
    out_dir: str,
    shard_size: int = 500 * 10**6,
    fmt: str = "parquet",
    flac: bool = False,
    shuffle: bool = True,
    seed: int = 0,
    on_bad: Callable[[Utterance, AudioError], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    source: str = "",
) -> dict[str, Any]:
    """Write `utterances` into shards of about `shard_size` bytes of audio each; return the index.

    A bad utterance (missing/truncated/not audio) is passed to `on_bad` and left out. The index is
    written last, so a folder without `index.json` is an interrupted run.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):  # an earlier run's shards would otherwise linger next to the new index
        if name == INDEX_NAME or (name.startswith("shard-") and name.endswith(tuple(SHARD_EXT.values()))):
            os.remove(os.path.join(out_dir, name))
    n = len(utterances)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    shards: list[dict[str, Any]] = []
    cur: _ParquetShard | _TarShard | None = None
    stats = {"rows": 0, "bytes": 0, "seconds": 0.0}
    durations: list[float] = []

    def close_current() -> None:
        nonlocal cur
        if cur is not None:
            cur.close()
            shards.append(
                {"file": os.path.basename(cur.path), **stats, "seconds": round(stats["seconds"], 3)}
            )
            cur = None

    for done, i in enumerate(order.tolist(), start=1):
        utt = utterances[i]
        try:
            rec = to_record(utt, flac=flac)
        except AudioError as err:
            if on_bad is not None:
                on_bad(utt, err)
            continue
        if cur is None:
            path = os.path.join(out_dir, f"shard-{len(shards):06d}{SHARD_EXT[fmt]}")
            cur = _ParquetShard(path) if fmt == "parquet" else _TarShard(path)
            stats = {"rows": 0, "bytes": 0, "seconds": 0.0}
        cur.add(rec)
        stats["rows"] += 1
        stats["bytes"] += len(rec.audio)
        stats["seconds"] += rec.duration
        durations.append(rec.duration)
        if stats["bytes"] >= shard_size:
            close_current()
        if progress is not None:
            progress(done, n)
    close_current()
    index = {
        "format": fmt,
        "audio_format": "flac" if flac else "original",
        "rows": sum(s["rows"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "seconds": round(float(sum(durations)), 3),
        "duration_quantiles": (
            [round(float(q), 3) for q in np.quantile(durations, np.linspace(0, 1, 11))] if durations else []
        ),
        "source": source,
        "created_by": "speeched data shard",
        "shards": shards,
    }
    tmp = os.path.join(out_dir, f".{INDEX_NAME}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, INDEX_NAME))
    return index


def read_index(path: str) -> dict[str, Any] | None:
    """The `index.json` of a shard folder (local or any fsspec URL), or None when there is none."""
    url = path.rstrip("/") + "/" + INDEX_NAME
    try:
        with fsspec.open(url, "rt", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def stderr_progress(total_label: str = "utterances") -> Callable[[int, int], None]:
    """A tqdm bar on a terminal; plain lines (every 10%) otherwise, e.g. in a log file."""
    if sys.stderr.isatty():
        bar: list[Any] = []

        def tick(done: int, total: int) -> None:
            if not bar:
                bar.append(tqdm(total=total, unit=" utt", desc="sharding"))
            bar[0].update(done - bar[0].n)
            if done == total:
                bar[0].close()

        return tick
    last = [-1]

    def line(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth != last[0]:
            last[0] = tenth
            print(f"sharding: {done}/{total} {total_label} ({done * 100 // max(total, 1)}%)", file=sys.stderr)

    return line
