"""Read every supported data source into a compact `UtteranceTable`, with errors that point at file:line.

`load_source` returns a `Sequence[Utterance]` whose metadata lives in Arrow/numpy columns
(`speeched.data.table`): a `datasets` source stays the memory-mapped Arrow table it is on disk (audio
bytes read per item, never copied up front); a JSONL/CSV manifest is parsed once into Arrow columns and
cached as an Arrow file keyed by the manifest's path, size and mtime, so the next start maps it instead of
parsing it again (`SPEECHED_CACHE_DIR`, default ~/.cache/speeched/manifests).

Structural problems (bad JSON, a missing column, a non-numeric duration) raise `ManifestError`: the
manifest itself must be fixed. Bytes that are not UTF-8 do not raise: the line is kept with
`extra["text_error"]` set, so `scan` reports it as "unreadable text encoding" with everything else
that is wrong instead of stopping at the first bad line. An empty source is a usage error.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

from speeched.data.config import Columns, DataSource
from speeched.data.table import ColumnStore, UtteranceTable, map_arrow_files
from speeched.errors import UsageError

log = logging.getLogger(__name__)

AUDIOFOLDER_METADATA = ("metadata.jsonl", "metadata.csv")
#: Manifests with at least this many rows are cached as Arrow files (smaller ones parse in milliseconds).
CACHE_MIN_ROWS = 1000
_CACHE_VERSION = 1
_ROLES = ("id", "audio", "text", "translation", "lang", "tgt_lang", "text_error", "extra")


class ManifestError(UsageError, ValueError):
    """A manifest that cannot be read as written; the message names file:line and the fix (exit 2)."""


class SourceNotFound(UsageError, FileNotFoundError):
    """A data source path that does not exist (exit 2)."""


def _decode_lines(path: str) -> Iterator[tuple[int, str, str | None]]:
    """Yield (line number, text, encoding error or None) for each line, never failing on bad bytes."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8"), None
            except UnicodeDecodeError as err:
                msg = f"byte {raw[err.start : err.start + 1]!r} at column {err.start + 1} is not UTF-8"
                yield lineno, raw.decode("utf-8", errors="replace"), msg


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


class _Rows:
    """Column lists filled row by row while parsing a manifest (no Python object per utterance kept)."""

    def __init__(self, cols: Columns, base_dir: str, audio_key: str) -> None:
        self.cols, self.base, self.audio_key = cols, base_dir, audio_key
        self.known = {
            cols.id,
            audio_key,
            cols.text,
            cols.translation,
            cols.duration,
            cols.lang,
            cols.tgt_lang,
        }
        self.data: dict[str, list[Any]] = {k: [] for k in (*_ROLES, "duration", "line")}

    def __len__(self) -> int:
        return len(self.data["line"])

    def add(self, row: dict[str, Any], where: str, lineno: int, text_error: str | None) -> None:
        cols, audio_key = self.cols, self.audio_key
        keys = ", ".join(sorted(row)) or "(none)"
        if audio_key not in row or row[audio_key] in (None, ""):
            raise ManifestError(
                f"{where}: missing column {audio_key!r} (available: {keys}); add it or set columns.audio in the recipe"
            )
        if cols.text not in row and cols.translation not in row:
            raise ManifestError(
                f"{where}: missing column {cols.text!r} (or {cols.translation!r} for translation) "
                f"(available: {keys}); add it or set columns.text in the recipe"
            )
        raw_audio = str(row[audio_key])
        audio = (
            raw_audio if os.path.isabs(raw_audio) else os.path.normpath(os.path.join(self.base, raw_audio))
        )
        duration = row.get(cols.duration)
        if duration in (None, ""):
            duration = None
        else:
            try:
                duration = float(duration)
            except (TypeError, ValueError):
                raise ManifestError(
                    f"{where}: column {cols.duration!r} is {duration!r}, expected seconds as a number (or leave it out)"
                ) from None
        extra = {k: v for k, v in row.items() if k not in self.known}
        d = self.data
        d["id"].append(str(row.get(cols.id) or os.path.splitext(raw_audio)[0]))
        d["audio"].append(audio)
        d["text"].append("" if row.get(cols.text) is None else str(row.get(cols.text)))
        d["translation"].append(_opt_str(row.get(cols.translation)))
        d["duration"].append(duration)
        d["lang"].append(_opt_str(row.get(cols.lang)))
        d["tgt_lang"].append(_opt_str(row.get(cols.tgt_lang)))
        d["text_error"].append(text_error)
        d["extra"].append(json.dumps(extra, ensure_ascii=False) if extra else None)
        d["line"].append(lineno)

    def table(self) -> pa.Table:
        d = self.data
        arrays = {k: pa.array(d[k], type=pa.string()) for k in _ROLES}
        arrays["duration"] = pa.array(d["duration"], type=pa.float64())
        arrays["line"] = pa.array(d["line"], type=pa.int64())
        return pa.table(arrays)


def _manifest_params(path: str) -> dict[str, Any]:
    return {
        "roles": {**{r: r for r in _ROLES}, "line": "line"},
        "name": path,
        "base_dir": "",
        "duration_column": "duration",
    }


def _store_from_table(
    table: pa.Table, params: dict[str, Any], maps: Any = (), keep: Any = None, reopen: tuple | None = None
) -> ColumnStore:
    dcol = params.get("duration_column")
    durations = None
    if dcol and dcol in table.column_names:
        col = table.column(dcol)
        try:
            durations = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise ManifestError(
                f"{params['name']}: column {dcol!r} has type {col.type}, expected seconds as numbers; "
                "fix it or set columns.duration to another column"
            ) from None
        durations = np.array(durations, dtype=np.float64)  # writable: scan fills probed values in
    return ColumnStore(
        table,
        params["roles"],
        name=params["name"],
        base_dir=params.get("base_dir", ""),
        id_prefix=params.get("id_prefix", ""),
        durations=durations,
        blob_column=params.get("blob_column"),
        extra_columns=params.get("extra_columns", ()),
        maps=maps,
        keepalive=keep,
        fingerprint=params.get("fingerprint"),
        reopen=reopen,
    )


def _open_mapped(files: tuple[str, ...], stream: bool, params_json: str) -> ColumnStore:
    """Map Arrow files and wrap them as a store; also the `reopen` recipe used when a store is pickled."""
    table, maps, keep = map_arrow_files(files, stream)
    return _store_from_table(
        table, json.loads(params_json), maps, keep, (_open_mapped, files, stream, params_json)
    )


def cache_dir() -> str:
    root = os.environ.get("SPEECHED_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "speeched")
    return os.path.join(root, "manifests")


def _cache_file(path: str, key: dict[str, Any]) -> str:
    st = os.stat(path)
    ident = json.dumps(
        [_CACHE_VERSION, os.path.abspath(path), st.st_size, st.st_mtime_ns, key], sort_keys=True
    )
    return os.path.join(cache_dir(), hashlib.sha1(ident.encode()).hexdigest()[:24] + ".arrow")


def _cached_manifest(path: str, key: dict[str, Any], parse: Any, limit: int | None) -> UtteranceTable:
    """The parsed manifest from the Arrow cache when its path/size/mtime (and column mapping) match, else
    `parse()` it and write the cache (atomically: concurrent ranks may race; the last rename wins)."""
    params = _manifest_params(path)
    pj = json.dumps(params, sort_keys=True)
    cfile = None if limit else _cache_file(path, key)
    if cfile and os.path.isfile(cfile):
        try:
            return UtteranceTable(_open_mapped((cfile,), False, pj))
        except (OSError, pa.ArrowInvalid) as err:
            log.warning("manifest cache %s unreadable (%s); parsing %s again", cfile, err, path)
    rows: _Rows = parse()
    table = rows.table()
    if cfile and len(rows) >= CACHE_MIN_ROWS:
        tmp = f"{cfile}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(cfile), exist_ok=True)
            with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table, max_chunksize=65536)
            os.replace(tmp, cfile)
            del table
            return UtteranceTable(_open_mapped((cfile,), False, pj))
        except OSError as err:
            log.warning("cannot cache the parsed manifest at %s (%s); keeping it in memory", cfile, err)
            table = rows.table()
    return UtteranceTable(_store_from_table(table, params))


def read_jsonl(
    path: str, columns: Columns | None = None, limit: int | None = None, audio_key: str | None = None
) -> UtteranceTable:
    """One JSON object per line; `audio` paths are relative to the manifest's folder. Blank lines are skipped."""
    cols = columns or Columns()
    akey = audio_key or cols.audio

    def parse() -> _Rows:
        rows = _Rows(cols, os.path.dirname(os.path.abspath(path)), akey)
        for lineno, line, enc_err in _decode_lines(path):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(
                    f"{where}: invalid JSON ({err.msg} at column {err.colno}); fix or delete the line"
                ) from None
            if not isinstance(row, dict):
                raise ManifestError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
            rows.add(row, where, lineno, enc_err)
            if limit and len(rows) >= limit:
                break
        return rows

    return _cached_manifest(path, {"fmt": "jsonl", "cols": cols.model_dump(), "audio": akey}, parse, limit)


def read_csv(
    path: str,
    columns: Columns | None = None,
    delimiter: str | None = None,
    limit: int | None = None,
    audio_key: str | None = None,
) -> UtteranceTable:
    """CSV/TSV with a header row; the delimiter follows the extension (.tsv → tab) unless given."""
    cols = columns or Columns()
    akey = audio_key or cols.audio
    delim = delimiter or ("\t" if path.lower().endswith(".tsv") else ",")

    def parse() -> _Rows:
        rows = _Rows(cols, os.path.dirname(os.path.abspath(path)), akey)
        lines = list(_decode_lines(path))
        errors = {n: e for n, _, e in lines if e}
        reader = csv.reader((text for _, text, _ in lines), delimiter=delim)
        header: list[str] | None = None
        for fields in reader:
            lineno = reader.line_num
            if header is None:
                header = [h.strip() for h in fields]
                continue
            if not any(f.strip() for f in fields):
                continue
            where = f"{path}:{lineno}"
            if len(fields) != len(header):
                raise ManifestError(
                    f"{where}: {len(fields)} fields but the header has {len(header)} ({', '.join(header)}); "
                    f"quote fields that contain {delim!r}"
                )
            rows.add(dict(zip(header, fields, strict=True)), where, lineno, errors.get(lineno))
            if limit and len(rows) >= limit:
                break
        if header is None:
            raise ManifestError(f"{path}:1: empty file; expected a header row naming the columns")
        return rows

    key = {"fmt": "csv", "cols": cols.model_dump(), "audio": akey, "delim": delim}
    return _cached_manifest(path, key, parse, limit)


def read_audiofolder(
    directory: str, columns: Columns | None = None, limit: int | None = None
) -> UtteranceTable:
    """Hugging Face audiofolder layout: metadata.jsonl or metadata.csv with a `file_name` column."""
    for name in AUDIOFOLDER_METADATA:
        meta = os.path.join(directory, name)
        if os.path.isfile(meta):
            if name.endswith(".jsonl"):
                return read_jsonl(meta, columns, limit, audio_key="file_name")
            return read_csv(meta, columns, limit=limit, audio_key="file_name")
    raise ManifestError(
        f"{directory}: no {' or '.join(AUDIOFOLDER_METADATA)}; an audiofolder needs one with a 'file_name' column"
    )


def read_datasets(
    path: str,
    config: str | None = None,
    split: str | None = None,
    columns: Columns | None = None,
    limit: int | None = None,
) -> UtteranceTable:
    """`datasets.load_dataset(path, config, split=split)` (or `load_from_disk` for a `save_to_disk` folder),
    kept as the memory-mapped Arrow table datasets stored it in.

    Nothing is decoded or copied here: the audio column's Arrow storage ({"bytes", "path"} struct, or a
    path string) is read per item, bytes with `pread` (decoded by soundfile, never torchcodec/ffmpeg).
    """
    cols = columns or Columns()
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "state.json")):
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if split is None:
                raise ManifestError(f"{path}: has splits {list(ds)}; pass split= (the recipe's `split:`)")
            ds = ds[split]
    else:
        ds = datasets.load_dataset(path, config, split=split or "train")
    names = ds.column_names
    if cols.audio not in names:
        raise ManifestError(
            f"{path}: no audio column {cols.audio!r} (columns: {', '.join(names)}); set columns.audio"
        )
    if ds._indices is not None:  # a select()/shuffle() view: write it out once so rows map to the files
        ds = ds.flatten_indices()
    atype = ds.data.table.schema.field(cols.audio).type
    is_blob = pa.types.is_struct(atype) or pa.types.is_binary(atype) or pa.types.is_large_binary(atype)
    known = {cols.id, cols.audio, cols.text, cols.translation, cols.duration, cols.lang, cols.tgt_lang}
    roles: dict[str, str | None] = {
        "id": cols.id if cols.id in names else None,
        "audio": None if is_blob else cols.audio,
        "text": cols.text if cols.text in names else None,
        "translation": cols.translation if cols.translation in names else None,
        "lang": cols.lang if cols.lang in names else None,
        "tgt_lang": cols.tgt_lang if cols.tgt_lang in names else None,
    }
    if roles["text"] is None and roles["translation"] is None:
        raise ManifestError(
            f"{path}: no column {cols.text!r} (or {cols.translation!r}) (columns: {', '.join(names)}); "
            "set columns.text"
        )
    params = {
        "roles": roles,
        "name": path,
        "base_dir": os.path.dirname(os.path.abspath(path)),
        "id_prefix": f"{os.path.basename(os.path.normpath(path))}-",
        "duration_column": cols.duration,
        "blob_column": cols.audio if is_blob else None,
        "extra_columns": [c for c in names if c not in known],
        "fingerprint": getattr(ds, "_fingerprint", None),
    }
    files = tuple(c["filename"] for c in ds.cache_files)
    store = None
    if files:
        store = _open_mapped(files, True, json.dumps(params, sort_keys=True))
        if len(store) != len(ds):  # not the layout we expect: use datasets' own table
            store = None
    if store is None:
        store = _store_from_table(ds.data.table, params)
    return UtteranceTable(store, np.arange(min(limit, len(store))) if limit else None)


def detect_format(path: str) -> str:
    """Pick the reader from the extension or folder layout."""
    if os.path.isdir(path):
        if any(os.path.isfile(os.path.join(path, n)) for n in AUDIOFOLDER_METADATA):
            return "audiofolder"
        return "datasets"
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if ext in (".csv", ".tsv"):
        return ext[1:]
    raise ManifestError(
        f"{path}: cannot tell the format from the extension {ext!r}; use .jsonl/.csv/.tsv, an audiofolder "
        "directory, or set format: in the recipe"
    )


def load_source(source: DataSource | str, base_dir: str | None = None) -> UtteranceTable:
    """Read one `DataSource` (or a bare path) into a lazy `Sequence[Utterance]`; relative paths resolve
    against `base_dir`. An empty source raises `ManifestError` (a usage error, exit 2)."""
    src = DataSource(path=source) if isinstance(source, str) else source
    path = src.path
    if base_dir and not os.path.isabs(path) and not os.path.exists(path):
        path = os.path.join(base_dir, path)
    fmt = src.format
    if fmt != "datasets" and not os.path.exists(path):
        raise SourceNotFound(f"data source {path!r} does not exist; check `path:` in the recipe")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "jsonl":
        table = read_jsonl(path, src.columns, src.limit)
    elif fmt in ("csv", "tsv"):
        table = read_csv(path, src.columns, "\t" if fmt == "tsv" else ",", src.limit)
    elif fmt == "audiofolder":
        table = read_audiofolder(path, src.columns, src.limit)
    else:
        table = read_datasets(path, src.config, src.split, src.columns, src.limit)
    if len(table) == 0:
        raise ManifestError(
            f"{path}: the data source is empty (no utterances); point `path:` at a non-empty one"
        )
    table.store.trust_durations = src.durations == "auto"
    if src.durations == "probe":
        table.store.durations = np.full(len(table.store), np.nan)
    return table
