"""Check every utterance up front: header probe (cached), optional full decode, filters, bad-audio report.

Nothing is dropped silently: every removed utterance becomes a `BadEntry` with a reason string from
`speeched.data.audio`, is counted in the summary, and is written to `bad_audio.jsonl`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from speeched.data import audio as A
from speeched.data.config import Filters
from speeched.data.records import Utterance
from speeched.data.sources import ManifestError
from speeched.data.table import UtteranceTable, durations_of
from speeched.errors import UsageError

log = logging.getLogger(__name__)

OnBadAudio = Literal["skip", "error"]
REPORT_NAME = "bad_audio.jsonl"


class BadAudioError(UsageError, RuntimeError):
    """Raised with `on_bad_audio="error"`; lists the first offenders and where the full report is (exit 2:
    nothing was trained)."""


@dataclass
class BadEntry:
    """One unusable or filtered-out utterance and why."""

    id: str
    origin: str
    audio: str | None
    reason: str
    detail: str = ""

    def describe(self) -> str:
        where = self.origin or self.audio or self.id
        return f"{where}: {self.reason}" + (f" — {self.detail}" if self.detail else "") + f" [{self.audio}]"


Probe = tuple[float | None, int | None, str | None, str]


def _default_cache_path() -> str:
    root = os.environ.get("SPEECHED_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "speeched")
    return os.path.join(root, "audio_info.sqlite")


class DurationCache:
    """SQLite cache of header probes (and full-decode verdicts) keyed by absolute path + mtime + size.

    A 100k-utterance manifest is probed once; a re-encoded or re-copied file changes mtime/size and is
    probed again. Safe to share between processes (SQLite locking); failures to open it only disable it.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path or _default_cache_path()
        self._lock = threading.Lock()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, timeout=30, check_same_thread=False
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS info (path TEXT, mtime INTEGER, size INTEGER, decoded INTEGER,"
                " duration REAL, sr INTEGER, reason TEXT, detail TEXT, PRIMARY KEY (path, mtime, size, decoded))"
            )
            self._db.commit()
        except (OSError, sqlite3.Error) as err:
            log.warning("duration cache %s unavailable (%s); probing without a cache", self.path, err)
            self._db = None

    @staticmethod
    def key(path: str) -> tuple[str, int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return os.path.abspath(path), st.st_mtime_ns, st.st_size

    def get(self, path: str, decoded: bool) -> tuple[float | None, int | None, str | None, str] | None:
        k = self.key(path)
        if self._db is None or k is None:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT duration, sr, reason, detail FROM info WHERE path=? AND mtime=? AND size=? AND decoded=?",
                (*k, int(decoded)),
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3] or "")

    def get_many(self, paths: Sequence[str | None], decoded: bool) -> list[Probe | None]:
        """`get` for many files in a few queries (one per 500 paths) instead of one query per file."""
        out: list[Probe | None] = [None] * len(paths)
        if self._db is None:
            return out
        keys = [self.key(p) if p else None for p in paths]
        want = sorted({k[0] for k in keys if k is not None})
        found: dict[tuple[str, int, int], Probe] = {}
        with self._lock:
            for start in range(0, len(want), 500):
                part = want[start : start + 500]
                q = (
                    "SELECT path, mtime, size, duration, sr, reason, detail FROM info WHERE decoded=? AND path IN "
                    f"({','.join('?' * len(part))})"
                )
                for p, m, sz, d, sr, reason, detail in self._db.execute(q, (int(decoded), *part)):
                    found[(p, m, sz)] = (d, sr, reason, detail or "")
        for j, k in enumerate(keys):
            if k is not None:
                out[j] = found.get(k)
        return out

    def put_many(self, rows: Iterable[tuple[str, bool, float | None, int | None, str | None, str]]) -> None:
        if self._db is None:
            return
        vals = []
        for path, decoded, dur, sr, reason, detail in rows:
            k = self.key(path)
            if k is not None:
                vals.append((*k, int(decoded), dur, sr, reason, detail))
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO info VALUES (?,?,?,?,?,?,?,?)", vals)
            self._db.commit()


@dataclass
class ScanResult:
    """What `scan` kept, what it removed and why."""

    kept: Sequence[Utterance]
    bad: list[BadEntry] = field(default_factory=list)
    total: int = 0
    report_path: str | None = None

    @property
    def reasons(self) -> Counter[str]:
        return Counter(b.reason for b in self.bad)

    @property
    def defects(self) -> list[BadEntry]:
        """Entries whose file or text is broken (as opposed to removed by a filter choice)."""
        return [b for b in self.bad if b.reason in A.DEFECT_REASONS]

    def summary(self) -> str:
        hours = float(np.nansum(durations_of(self.kept))) / 3600
        parts = [f"kept {len(self.kept)}/{self.total} utterances ({hours:.2f} h)"]
        if self.bad:
            parts.append("dropped: " + ", ".join(f"{n} {r}" for r, n in self.reasons.most_common()))
        if self.report_path:
            parts.append(f"report: {self.report_path}")
        return "; ".join(parts)


def write_report(entries: Iterable[BadEntry], out_dir: str, append: bool = False) -> str:
    """Write (or append to) `out_dir/bad_audio.jsonl`: one JSON object per unusable utterance."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, REPORT_NAME)
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(asdict(e), ensure_ascii=False) + "\n")
    return path


def _probe(utt: Utterance, decode: bool) -> tuple[float | None, int | None, str | None, str]:
    try:
        info = A.audio_info(utt)
        if decode:
            A.load_audio(utt, info.sampling_rate, check=True)
        return info.duration, info.sampling_rate, None, ""
    except A.AudioError as err:
        return None, None, err.reason, err.detail


def _count_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


class _FingerprintCache:
    """Probe results of a `datasets` table (audio bytes, no file paths), keyed by its fingerprint: one
    .npz of durations per (fingerprint, decoded) in the cache folder, bad rows' reasons beside them."""

    def __init__(self, fingerprint: str, n: int, decoded: bool) -> None:
        root = os.path.dirname(_default_cache_path())
        self.path = os.path.join(root, "datasets", f"{fingerprint}-{n}-{int(decoded)}.npz")
        self.n = n

    def load(self) -> tuple[np.ndarray, dict[int, tuple[str, str]]]:
        try:
            with np.load(self.path) as z:
                d = z["durations"]
                bad = {int(k): tuple(v) for k, v in json.loads(str(z["bad"])).items()}
            if d.shape == (self.n,):
                return d.copy(), bad  # type: ignore[return-value]
        except (OSError, ValueError, KeyError):
            pass
        return np.full(self.n, np.nan), {}

    def save(self, durations: np.ndarray, bad: dict[int, tuple[str, str]]) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}.tmp.npz"
            np.savez(tmp, durations=durations, bad=json.dumps({str(k): v for k, v in bad.items()}))
            os.replace(tmp, self.path)
        except OSError as err:
            log.warning("cannot write the duration cache %s (%s)", self.path, err)


def _probe_rows(
    utterances: Sequence[Utterance],
    todo: list[int],
    decode: bool,
    db: DurationCache | None,
    num_threads: int,
    progress: bool,
) -> dict[int, Probe]:
    """Probe rows `todo` (header, or full decode), through the per-file SQLite cache or, for a `datasets`
    table of embedded bytes, the fingerprint cache."""
    results: dict[int, Probe] = {}
    store = utterances.store if isinstance(utterances, UtteranceTable) else None
    fp = None
    if db is not None and store is not None and store.fingerprint and store.blob_column:
        fp = _FingerprintCache(store.fingerprint, len(store), decode)
        cached, cached_bad = fp.load()
        rows = utterances.rows
        left = []
        for i in todo:
            r = int(rows[i])
            if r in cached_bad:
                results[i] = (None, None, *cached_bad[r])
            elif not np.isnan(cached[r]):
                results[i] = (float(cached[r]), None, None, "")
            else:
                left.append(i)
        todo = left
    elif db is not None:
        hits = db.get_many([utterances[i].audio for i in todo], decode)
        left = []
        for i, hit in zip(todo, hits, strict=True):
            if hit is not None:
                results[i] = hit
            else:
                left.append(i)
        todo = left
    if todo:
        it = (utterances[i] for i in todo)
        with ThreadPoolExecutor(max(1, num_threads)) as pool:
            mapped = pool.map(lambda u: (u.audio, _probe(u, decode)), it)
            if progress:
                mapped = tqdm(mapped, total=len(todo), desc="scanning audio", unit="file")
            paths = {}
            for i, (path, res) in zip(todo, mapped, strict=True):
                results[i] = res
                paths[i] = path
        if fp is not None:
            rows = utterances.rows
            for i in todo:
                r, (dur, _, reason, detail) = int(rows[i]), results[i]
                if reason is None:
                    cached[r] = dur
                else:
                    cached_bad[r] = (reason, detail)
            fp.save(cached, cached_bad)
        elif db is not None:
            db.put_many((paths[i], decode, *results[i]) for i in todo if paths[i])
    return results


#: Rows whose given duration is compared against the file (per source), and the allowed difference.
SPOT_CHECK_ROWS = 16
DURATION_TOLERANCE = 0.1


def _spot_check(
    utterances: Sequence[Utterance], given: np.ndarray, results: dict[int, Probe], rows: list[int]
) -> None:
    for i in rows:
        dur, _, reason, _ = results[i]
        if reason is None and dur is not None and abs(dur - given[i]) > DURATION_TOLERANCE:
            u = utterances[i]
            raise ManifestError(
                f"{u.origin}: the duration column says {given[i]:.3f} s but {u.audio or u.extra.get('audio_name') or u.id} "
                f"is {dur:.3f} s long (spot check of {len(rows)} random rows, tolerance {DURATION_TOLERANCE} s); "
                "fix the column, or set `durations: probe` on this source to measure every file"
            )


def scan(
    utterances: Sequence[Utterance],
    filters: Filters | None = None,
    *,
    task: str = "asr",
    tokenizer: Any = None,
    normalize_target: Callable[[str], str] | None = None,
    decode: bool = False,
    on_bad_audio: OnBadAudio = "skip",
    report_dir: str | None = None,
    cache: DurationCache | None | Literal[False] = None,
    num_threads: int = 8,
    progress: bool = False,
    spot_check: int = SPOT_CHECK_ROWS,
    seed: int = 0,
) -> ScanResult:
    """Probe, filter and report every utterance; fills in durations (`utt.duration`, or the table's column).

    On an `UtteranceTable` from `load_source` (durations: auto), durations the source gives are used as
    given: only `spot_check` random rows are probed and a mismatch over `DURATION_TOLERANCE` raises
    `ManifestError` naming the row; rows without a duration are probed (cached). A plain list, `decode=True`
    or `durations: probe` probes every file. `kept` is a view of the table (or a list for a list).

    `decode=True` also decodes each file to catch NaN/inf and all-silence (slower; verdicts are cached).
    `filters` applies min/max duration, empty targets and (with `tokenizer`) max target tokens; these are
    reported but never count as errors. With `on_bad_audio="error"`, defective files raise
    `BadAudioError` after the whole scan (so you see all of them at once); with "skip" each is logged.
    """
    if on_bad_audio not in ("skip", "error"):
        raise ValueError(f"on_bad_audio must be 'skip' or 'error', got {on_bad_audio!r}")
    db = None if cache is False else (cache or DurationCache())
    is_table = isinstance(utterances, UtteranceTable)
    n = len(utterances)
    given = durations_of(utterances).copy() if is_table else np.full(n, np.nan)
    trust = is_table and utterances.store.trust_durations and not decode
    spot: list[int] = []
    if trust:
        known = np.flatnonzero(~np.isnan(given))
        todo = np.flatnonzero(np.isnan(given)).tolist()
        if len(known) and spot_check > 0:
            rng = np.random.default_rng(seed)
            spot = sorted(rng.choice(known, size=min(spot_check, len(known)), replace=False).tolist())
        todo = sorted(todo + spot)
    else:
        todo = list(range(n))
    results = _probe_rows(utterances, todo, decode, db, num_threads, progress)
    _spot_check(utterances, given, results, spot)

    durs = given
    for i, (dur, _, reason, _) in results.items():
        durs[i] = np.nan if reason is not None else dur
    if is_table:
        utterances.set_durations(durs)
        col = utterances.column("text_error")
        text_err = np.zeros(n, bool) if col is None else col.is_valid().to_numpy(zero_copy_only=False)
        targets = utterances.texts(task)
    else:
        for i, (dur, _, reason, _) in results.items():
            if reason is None:
                utterances[i].duration = dur
        text_err = np.array([bool(u.extra.get("text_error")) for u in utterances], dtype=bool)
        targets = [u.target(task) or "" for u in utterances]

    f = filters or Filters(min_duration=0.0, max_duration=float("inf"), drop_empty=True)
    # Vectorised over the columns: Python work only for dropped rows and (normalised) target texts.
    bad: list[tuple[int, str, str]] = []
    dropped = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(text_err).tolist():
        err = utterances[i].extra["text_error"]
        bad.append((i, A.BAD_ENCODING, f"{err}; re-save the manifest as UTF-8"))
        dropped[i] = True
    for i, (_, _, reason, detail) in results.items():
        if reason is not None and not dropped[i]:
            bad.append((i, reason, detail))
            dropped[i] = True
    with np.errstate(invalid="ignore"):
        short = ~dropped & (durs < f.min_duration)
        dropped |= short
        long = ~dropped & (durs > f.max_duration)
        dropped |= long
    for i in np.flatnonzero(short).tolist():
        bad.append((i, A.TOO_SHORT, f"{durs[i]:.3f}s < min_duration {f.min_duration}s"))
    for i in np.flatnonzero(long).tolist():
        bad.append((i, A.TOO_LONG, f"{durs[i]:.3f}s > max_duration {f.max_duration}s"))
    candidates: list[int] = []
    cand_targets: list[str] = []
    what = "translation" if task == "st" else "transcript"
    for i in np.flatnonzero(~dropped).tolist():
        target = normalize_target(targets[i]) if normalize_target else targets[i]
        if f.drop_empty and not target.strip():
            bad.append((i, A.EMPTY_TEXT, f"no {what} text"))
        else:
            candidates.append(i)
            cand_targets.append(target)
    del targets

    kept_idx = candidates
    if tokenizer is not None and f.max_target_tokens:
        kept_idx = []
        chunk = 4096  # tokenize in chunks: bounded memory on large corpora
        for start in range(0, len(candidates), chunk):
            lengths = _count_tokens(tokenizer, cand_targets[start : start + chunk])
            for i, k in zip(candidates[start : start + chunk], lengths, strict=True):
                if k > f.max_target_tokens:
                    bad.append((i, A.TOO_MANY_TOKENS, f"{k} > max_target_tokens {f.max_target_tokens}"))
                else:
                    kept_idx.append(i)
    bad.sort(key=lambda b: b[0])
    entries = []
    for i, reason, detail in bad:
        u = utterances[i]
        entries.append(BadEntry(u.id, u.origin, u.audio or u.extra.get("audio_name"), reason, detail))
    kept: Sequence[Utterance] = utterances.subset(kept_idx) if is_table else [utterances[i] for i in kept_idx]

    result = ScanResult(kept=kept, bad=entries, total=n)
    if report_dir is not None:
        result.report_path = write_report(entries, report_dir)
    defects = result.defects
    if on_bad_audio == "error" and defects:
        first = "\n  ".join(b.describe() for b in defects[:10])
        more = f"\n  ... and {len(defects) - 10} more" if len(defects) > 10 else ""
        where = f" Full list: {result.report_path}." if result.report_path else ""
        raise BadAudioError(
            f"{len(defects)} unusable audio/text entries:\n  {first}{more}\n{where} Fix or remove them, or set "
            "on_bad_audio: skip to train without them."
        )
    for b in defects:
        log.warning("skipping %s", b.describe())
    if entries:
        log.info("%s", result.summary())
    return result
