"""Read every supported data source into `Utterance` records, with errors that point at file:line.

Structural problems (bad JSON, a missing column, a non-numeric duration) raise `ManifestError`: the
manifest itself must be fixed. Bytes that are not UTF-8 do not raise: the line is kept with
`extra["text_error"]` set, so `scan` reports it as "unreadable text encoding" with everything else
that is wrong instead of stopping at the first bad line.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from typing import Any

from speeched.data.config import Columns, DataSource
from speeched.data.records import Utterance

AUDIOFOLDER_METADATA = ("metadata.jsonl", "metadata.csv")


class ManifestError(ValueError):
    """A manifest that cannot be read as written; the message names file:line and the fix."""


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


def _make_utterance(
    row: dict[str, Any], cols: Columns, where: str, base_dir: str, audio_key: str, text_error: str | None
) -> Utterance:
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
    audio = str(row[audio_key])
    if not os.path.isabs(audio):
        audio = os.path.normpath(os.path.join(base_dir, audio))
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
    known = {cols.id, audio_key, cols.text, cols.translation, cols.duration, cols.lang, cols.tgt_lang}
    extra = {k: v for k, v in row.items() if k not in known}
    if text_error:
        extra["text_error"] = text_error
    rel = os.path.splitext(str(row[audio_key]))[0]
    return Utterance(
        id=str(row.get(cols.id) or rel),
        audio=audio,
        text="" if row.get(cols.text) is None else str(row.get(cols.text)),
        translation=_opt_str(row.get(cols.translation)),
        duration=duration,
        lang=_opt_str(row.get(cols.lang)),
        tgt_lang=_opt_str(row.get(cols.tgt_lang)),
        origin=where,
        extra=extra,
    )


def read_jsonl(
    path: str, columns: Columns | None = None, limit: int | None = None, audio_key: str | None = None
) -> list[Utterance]:
    """One JSON object per line; `audio` paths are relative to the manifest's folder. Blank lines are skipped."""
    cols = columns or Columns()
    base = os.path.dirname(os.path.abspath(path))
    out: list[Utterance] = []
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
        out.append(_make_utterance(row, cols, where, base, audio_key or cols.audio, enc_err))
        if limit and len(out) >= limit:
            break
    return out


def read_csv(
    path: str,
    columns: Columns | None = None,
    delimiter: str | None = None,
    limit: int | None = None,
    audio_key: str | None = None,
) -> list[Utterance]:
    """CSV/TSV with a header row; the delimiter follows the extension (.tsv → tab) unless given."""
    cols = columns or Columns()
    delim = delimiter or ("\t" if path.lower().endswith(".tsv") else ",")
    base = os.path.dirname(os.path.abspath(path))
    lines = list(_decode_lines(path))
    errors = {n: e for n, _, e in lines if e}
    reader = csv.reader((text for _, text, _ in lines), delimiter=delim)
    header: list[str] | None = None
    out: list[Utterance] = []
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
        row = dict(zip(header, fields, strict=True))
        out.append(_make_utterance(row, cols, where, base, audio_key or cols.audio, errors.get(lineno)))
        if limit and len(out) >= limit:
            break
    if header is None:
        raise ManifestError(f"{path}:1: empty file; expected a header row naming the columns")
    return out


def read_audiofolder(
    directory: str, columns: Columns | None = None, limit: int | None = None
) -> list[Utterance]:
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
) -> list[Utterance]:
    """`datasets.load_dataset(path, config, split=split)` (or `load_from_disk` for a `save_to_disk` folder).

    The audio column is cast to `Audio(decode=False)` so datasets never touches torchcodec/ffmpeg; the
    raw bytes go into `extra["audio_bytes"]` (decoded lazily by `load_audio`), paths into `audio`.
    """
    import datasets

    cols = columns or Columns()
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "state.json")):
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if split is None:
                raise ManifestError(f"{path}: has splits {list(ds)}; pass split= (the recipe's `split:`)")
            ds = ds[split]
    else:
        ds = datasets.load_dataset(path, config, split=split or "train")
    if cols.audio not in ds.column_names:
        raise ManifestError(
            f"{path}: no audio column {cols.audio!r} (columns: {', '.join(ds.column_names)}); set columns.audio"
        )
    if isinstance(ds.features[cols.audio], datasets.Audio):
        ds = ds.cast_column(cols.audio, datasets.Audio(decode=False))
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    out: list[Utterance] = []
    for i, row in enumerate(ds):
        where = f"{path}:{i}"
        audio = row[cols.audio]
        data, apath = (audio.get("bytes"), audio.get("path")) if isinstance(audio, dict) else (None, audio)
        fake = dict(row)
        fake[cols.audio] = apath or f"{where}.audio"
        utt = _make_utterance(fake, cols, where, os.path.dirname(os.path.abspath(path)), cols.audio, None)
        if data:
            utt.audio = None
            utt.extra["audio_bytes"] = data
            utt.extra["audio_name"] = apath
        if cols.id not in row:
            utt.id = f"{os.path.basename(os.path.normpath(path))}-{i}"
        out.append(utt)
    return out


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


def load_source(source: DataSource | str, base_dir: str | None = None) -> list[Utterance]:
    """Read one `DataSource` (or a bare path) into utterances; relative paths resolve against `base_dir`."""
    src = DataSource(path=source) if isinstance(source, str) else source
    path = src.path
    if base_dir and not os.path.isabs(path) and not os.path.exists(path):
        path = os.path.join(base_dir, path)
    fmt = src.format
    if fmt != "datasets" and not os.path.exists(path):
        raise FileNotFoundError(f"data source {path!r} does not exist; check `path:` in the recipe")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "jsonl":
        return read_jsonl(path, src.columns, src.limit)
    if fmt in ("csv", "tsv"):
        return read_csv(path, src.columns, "\t" if fmt == "tsv" else ",", src.limit)
    if fmt == "audiofolder":
        return read_audiofolder(path, src.columns, src.limit)
    return read_datasets(path, src.config, src.split, src.columns, src.limit)
