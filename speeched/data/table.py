"""Compact utterance tables: per-utterance metadata in Arrow/numpy columns, `Utterance` objects built on access.

A corpus of 281k utterances held as 281k Python objects costs ~3.6 KB each in every process; a `datasets`
corpus copied into `bytes` objects costs its audio size twice per process. Here a source is one Arrow table
(memory-mapped from a `datasets` cache/`save_to_disk` file or from the parsed-manifest cache, so DataLoader
workers and ranks share the page cache) plus numpy columns (durations), and an `UtteranceTable` is a
`Sequence[Utterance]` view over it (optionally a subset of rows). `table[i]` builds one `Utterance` lazily.

Audio bytes embedded in a `datasets` table are never copied up front: `Utterance.audio_bytes()` reads
one blob with `os.pread` at the offset the Arrow buffer has in its file. Reading through the mapping
would make every touched page count in this process's RSS; `pread` goes through the page cache only.

Compatibility: a row's `Utterance` is a `RowUtterance`; assigning a field (`u.lang = "de"`) is written back
to the table (a sparse override), so code that mutates utterances from `load_source` keeps working.
Pickling a row (DataLoader workers send items back) sends the table by reference when it is file-backed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from speeched.data.records import Utterance

FIELDS = ("id", "audio", "text", "translation", "duration", "lang", "tgt_lang", "origin", "extra")


class RowUtterance(Utterance):
    """An `Utterance` built from one table row; field assignments are written back to the table."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        store = self.__dict__.get("_store")
        if store is not None and name in FIELDS:
            store.set_field(self.__dict__["_row"], name, value)

    def audio_bytes(self) -> bytes | None:
        return self._store.blob(self._row) if self._store.has_blob(self._row) else None

    def __reduce__(self) -> Any:
        fields = {k: getattr(self, k) for k in Utterance.__dataclass_fields__}
        if self._store.has_blob(self._row) and self._store.reopen is None:
            fields["extra"] = {**fields["extra"], "audio_bytes": self.audio_bytes()}  # in-memory table
        return (_rebuild_row, (self._store.reopen, self._row, fields))


def _rebuild_row(reopen: Any, row: int, fields: dict[str, Any]) -> Utterance:
    """Unpickle a row: its fields as sent, its audio bytes still read lazily from the re-opened files."""
    if reopen is None:
        return Utterance(**fields)
    u = object.__new__(RowUtterance)
    u.__dict__.update(fields)
    u.__dict__["_store"], u.__dict__["_row"] = open_store(reopen), row
    return u


def _str_column(table: pa.Table, name: str | None) -> pa.ChunkedArray | None:
    if not name or name not in table.column_names:
        return None
    col = table.column(name)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col
    if pa.types.is_null(col.type):
        return None
    return pc.cast(col, pa.string())  # ids stored as ints: small copy of one column


class _Blobs:
    """Audio bytes of a binary Arrow column, read with `pread` from the file that holds them."""

    def __init__(self, chunks: list[pa.Array], bases: list[tuple[int, int, int] | None]) -> None:
        # bases[k] = (fd, base address of the mapping that holds chunk k, file size) or None (in memory)
        self.chunks = chunks
        self.starts = np.cumsum([0] + [len(c) for c in chunks])
        self.valid = np.concatenate(
            [np.asarray(c.is_valid().to_numpy(zero_copy_only=False), dtype=bool) for c in chunks]
            or [np.zeros(0, bool)]
        )
        self.where: list[tuple[int, int, np.ndarray] | None] = []
        for c, b in zip(chunks, bases, strict=True):
            bufs = c.buffers()
            if b is None or bufs[2] is None:
                self.where.append(None)
                continue
            fd, base, size = b
            dtype = np.int64 if pa.types.is_large_binary(c.type) else np.int32
            offs = np.frombuffer(bufs[1], dtype=dtype)[c.offset : c.offset + len(c) + 1]
            rel = bufs[2].address - base
            inside = rel >= 0 and (len(offs) == 0 or rel + int(offs[-1]) <= size)
            self.where.append((fd, rel, offs) if inside else None)

    def read(self, row: int) -> bytes:
        k = int(np.searchsorted(self.starts, row, side="right")) - 1
        j = row - int(self.starts[k])
        w = self.where[k]
        if w is None:
            return self.chunks[k][j].as_py()
        fd, rel, offs = w
        start, end = int(offs[j]), int(offs[j + 1])
        return os.pread(fd, end - start, rel + start)


class ColumnStore:
    """One source's rows: an Arrow table with role columns (id, audio path, text, ...) and numpy durations.

    `maps` are the (fd, address, size) of the files the table is memory-mapped from (empty = in memory);
    `reopen` = (opener, *args) re-opens them: then pickling (spawned workers, items sent back by workers)
    sends that recipe instead of the data.
    """

    def __init__(
        self,
        table: pa.Table,
        roles: dict[str, str | None],
        *,
        name: str,
        base_dir: str = "",
        id_prefix: str = "",
        durations: np.ndarray | None = None,
        blob_column: str | None = None,
        extra_columns: Sequence[str] = (),
        maps: Sequence[tuple[int, int, int]] = (),
        keepalive: Any = None,
        fingerprint: str | None = None,
        reopen: tuple | None = None,
    ) -> None:
        self.table, self.roles, self.name = table, dict(roles), name
        self.base_dir, self.id_prefix = base_dir, id_prefix
        self.maps, self.keepalive, self.fingerprint, self.reopen = list(maps), keepalive, fingerprint, reopen
        self.extra_columns = list(extra_columns)
        self.blob_column = blob_column
        self.overrides: dict[int, dict[str, Any]] = {}
        self.trust_durations = True
        n = table.num_rows
        self.durations = np.full(n, np.nan) if durations is None else np.asarray(durations, np.float64)
        self._derive()

    _DERIVED = ("_cols", "lines", "_blobs", "_blob_paths")

    def _derive(self) -> None:
        """Views on `table` (no copies), rebuilt after unpickling."""
        self._cols = {r: _str_column(self.table, c) for r, c in self.roles.items() if r != "line"}
        line = self.roles.get("line")
        self.lines = self.table.column(line).to_numpy() if line else None
        self._blobs: _Blobs | None = None
        self._blob_paths: pa.ChunkedArray | None = None
        if self.blob_column:
            self._init_blobs()

    # ---- audio blobs ----------------------------------------------------------------------------
    def _init_blobs(self) -> None:
        col = self.table.column(self.blob_column)
        if pa.types.is_struct(col.type):
            bytes_chunks = [c.field("bytes") for c in col.chunks]
            self._blob_paths = pc.struct_field(col, "path") if col.type.get_field_index("path") >= 0 else None
        else:
            bytes_chunks = list(col.chunks)
        maps = self.maps
        bases: list[tuple[int, int, int] | None] = []
        for c in bytes_chunks:
            bufs = c.buffers()
            hit = None
            if len(bufs) > 2 and bufs[2] is not None:
                for fd, base, size in maps:
                    if base <= bufs[2].address < base + size:
                        hit = (fd, base, size)
                        break
            bases.append(hit)
        self._blobs = _Blobs(bytes_chunks, bases)

    def has_blob(self, row: int) -> bool:
        return self._blobs is not None and bool(self._blobs.valid[row])

    def blob(self, row: int) -> bytes:
        assert self._blobs is not None
        return self._blobs.read(row)

    # ---- rows -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.table.num_rows

    def value(self, role: str, row: int) -> str | None:
        col = self._cols.get(role)
        return None if col is None else col[row].as_py()

    def column(self, role: str) -> pa.ChunkedArray | None:
        """The Arrow column for a role (id, audio, text, translation, lang, tgt_lang), or None."""
        return self._cols.get(role)

    def origin(self, row: int) -> str:
        return f"{self.name}:{int(self.lines[row]) if self.lines is not None else row}"

    def audio_path(self, row: int) -> str | None:
        p = self.value("audio", row)
        if p is None and self._blob_paths is not None and not self.has_blob(row):
            p = self._blob_paths[row].as_py()
        if p and self.base_dir and not os.path.isabs(p):
            p = os.path.normpath(os.path.join(self.base_dir, p))
        return p

    def utterance(self, row: int) -> RowUtterance:
        extra: dict[str, Any] = {}
        raw = self.value("extra", row)
        if raw:
            extra.update(json.loads(raw))
        err = self.value("text_error", row)
        if err:
            extra["text_error"] = err
        for c in self.extra_columns:
            extra[c] = self.table.column(c)[row].as_py()
        blob = self.has_blob(row)
        audio = None if blob else self.audio_path(row)
        if blob and self._blob_paths is not None:
            extra["audio_name"] = self._blob_paths[row].as_py()
        d = self.durations[row]
        uid = self.value("id", row)
        text = self.value("text", row)
        fields = {
            "id": uid if uid not in (None, "") else f"{self.id_prefix}{row}",
            "audio": audio,
            "text": "" if text is None else text,
            "translation": self.value("translation", row) or None,
            "duration": None if np.isnan(d) else float(d),
            "lang": self.value("lang", row) or None,
            "tgt_lang": self.value("tgt_lang", row) or None,
            "origin": self.origin(row),
            "array": None,
            "sampling_rate": None,
            "extra": extra,
        }
        fields.update(self.overrides.get(row, {}))
        u = object.__new__(RowUtterance)
        u.__dict__.update(fields)
        u.__dict__["_store"], u.__dict__["_row"] = self, row
        return u

    def set_field(self, row: int, name: str, value: Any) -> None:
        if name == "duration":
            self.durations[row] = np.nan if value is None else float(value)
        else:
            self.overrides.setdefault(row, {})[name] = value

    # ---- pickling: by reference when file-backed ------------------------------------------------
    def __reduce__(self) -> Any:
        if self.reopen is None:  # in memory: the table itself travels (copied)
            state = {k: v for k, v in self.__dict__.items() if k not in self._DERIVED}
            state["maps"], state["keepalive"] = [], None
            return (_empty_store, (), state)
        return (_reopen_store, (self.reopen, self.durations, self.overrides, self.trust_durations))

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._derive()


def _empty_store() -> ColumnStore:
    return object.__new__(ColumnStore)


_OPENED: dict[tuple, ColumnStore] = {}


def open_store(reopen: tuple) -> ColumnStore:
    """The store `reopen` = (opener, *args) describes, opened once per process for unpickled rows and
    datasets (`load_source` builds a fresh store each time, over the same shared mapping)."""
    store = _OPENED.get(reopen)
    if store is None:
        store = reopen[0](*reopen[1:])
        _OPENED[reopen] = store
    return store


def _reopen_store(reopen: tuple, durations: np.ndarray, overrides: dict, trust: bool) -> ColumnStore:
    store = open_store(reopen)
    store.durations, store.overrides, store.trust_durations = durations, overrides, trust
    return store


def map_arrow_files(
    files: Sequence[str], stream: bool
) -> tuple[pa.Table, list[tuple[int, int, int]], list[Any]]:
    """Memory-map Arrow IPC files (stream format as `datasets` writes them, or file format) into one table.

    Returns the table, (fd, mapping base address, size) per file (so blobs can be read with `pread`) and
    the mappings to keep alive. Nothing is copied: the buffers point into the mappings.
    """
    st = [os.stat(p) for p in files]
    key = (tuple(files), stream, tuple((s.st_size, s.st_mtime_ns) for s in st))
    if key in _MAPPED:
        return _MAPPED[key]
    tables, maps, keep = [], [], []
    for path in files:
        mm = pa.memory_map(path)
        base = mm.read_buffer(1).address if mm.size() else 0
        mm.seek(0)
        reader = pa.ipc.open_stream(mm) if stream else pa.ipc.open_file(mm)
        tables.append(reader.read_all())
        maps.append((os.open(path, os.O_RDONLY), base, mm.size()))
        keep.append(mm)
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    _MAPPED[key] = (table, maps, keep)
    return table, maps, keep


#: Mapped files per process: every store over the same files shares one mapping and one set of fds.
_MAPPED: dict[tuple, tuple[pa.Table, list[tuple[int, int, int]], list[Any]]] = {}


class UtteranceTable(Sequence[Utterance]):
    """A `Sequence[Utterance]` over a `ColumnStore`, optionally a subset of its rows (`rows`).

    Fast paths for code that wants them: `durations` (float64 seconds, NaN = unknown), `source_ids`,
    `target_chars(task)`, `texts(task)`, `rows`; `subset(indices)` is a view.
    """

    def __init__(self, store: ColumnStore, rows: np.ndarray | None = None, source_id: int = 0) -> None:
        self.store = store
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.source_id = source_id

    @property
    def rows(self) -> np.ndarray:
        return np.arange(len(self.store)) if self._rows is None else self._rows

    def __len__(self) -> int:
        return len(self.store) if self._rows is None else len(self._rows)

    def _row(self, i: int) -> int:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"utterance index {i} out of range for {n} utterances")
        return i if self._rows is None else int(self._rows[i])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.subset(np.arange(len(self))[i])
        return self.store.utterance(self._row(int(i)))

    def __iter__(self) -> Iterator[Utterance]:
        for r in self.rows.tolist():
            yield self.store.utterance(r)

    def subset(self, indices: Sequence[int] | np.ndarray) -> UtteranceTable:
        """A view of the given positions (of this view), sharing the store."""
        idx = np.asarray(indices, dtype=np.int64)
        return UtteranceTable(self.store, self.rows[idx], self.source_id)

    @property
    def durations(self) -> np.ndarray:
        return self.store.durations if self._rows is None else self.store.durations[self._rows]

    def set_durations(self, values: np.ndarray) -> None:
        self.store.durations[self.rows] = values

    @property
    def source_ids(self) -> np.ndarray:
        return np.full(len(self), self.source_id, dtype=np.int64)

    def column(self, role: str) -> pa.ChunkedArray | None:
        col = self.store.column(role)
        if col is None or self._rows is None:
            return col
        return col.take(pa.array(self._rows))

    def texts(self, task: str) -> list[str]:
        """Target texts in order ("" where missing), honouring overrides."""
        role = {"asr": "text", "st": "translation"}[task]
        col = self.column(role)
        out = [""] * len(self) if col is None else [t or "" for t in col.to_pylist()]
        if self.store.overrides:
            for k, r in enumerate(self.rows.tolist()):
                o = self.store.overrides.get(r)
                if o and role in o:
                    out[k] = o[role] or ""
        return out

    def target_chars(self, task: str) -> np.ndarray:
        """Characters per target text (0 where missing): a cheap stand-in for target lengths."""
        col = self.column({"asr": "text", "st": "translation"}[task])
        if col is None:
            return np.zeros(len(self), dtype=np.int64)
        return pc.fill_null(pc.utf8_length(col), 0).to_numpy().astype(np.int64)

    def __repr__(self) -> str:
        return f"UtteranceTable({self.store.name!r}, {len(self)} utterances)"


class ConcatUtterances(Sequence[Utterance]):
    """Several sources back to back (the training set): `source_ids[i]` says which part row i is from."""

    def __init__(self, parts: Sequence[Sequence[Utterance]]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"utterance index {i} out of range for {len(self)} utterances")
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[k][i - int(self.offsets[k])]

    @property
    def durations(self) -> np.ndarray:
        return np.concatenate([durations_of(p) for p in self.parts]) if self.parts else np.zeros(0)

    @property
    def source_ids(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.parts)), np.diff(self.offsets))


def durations_of(utts: Sequence[Utterance]) -> np.ndarray:
    """Seconds per utterance as float64 (NaN where unknown), from columns when the sequence has them."""
    d = getattr(utts, "durations", None)
    if isinstance(d, np.ndarray):
        return d
    return np.array([np.nan if u.duration is None else u.duration for u in utts], dtype=np.float64)


def concat(parts: Sequence[Sequence[Utterance]]) -> ConcatUtterances:
    """The training set of several sources without materialising them; see `ConcatUtterances`."""
    return ConcatUtterances(parts)
