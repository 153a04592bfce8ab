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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from speeched.data import audio as A
from speeched.data.config import Filters
from speeched.data.records import Utterance

log = logging.getLogger(__name__)

OnBadAudio = Literal["skip", "error"]
REPORT_NAME = "bad_audio.jsonl"


class BadAudioError(RuntimeError):
    """Raised with `on_bad_audio="error"`; lists the first offenders and where the full report is."""


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

    kept: list[Utterance]
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
        hours = sum(u.duration or 0.0 for u in self.kept) / 3600
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


def scan(
    utterances: list[Utterance],
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
) -> ScanResult:
    """Probe, filter and report every utterance; sets `utt.duration` from the header on the kept ones.

    `decode=True` also decodes each file to catch NaN/inf and all-silence (slower; verdicts are cached).
    `filters` applies min/max duration, empty targets and (with `tokenizer`) max target tokens; these are
    reported but never count as errors. With `on_bad_audio="error"`, defective files raise
    `BadAudioError` after the whole scan (so you see all of them at once); with "skip" each is logged.
    """
    if on_bad_audio not in ("skip", "error"):
        raise ValueError(f"on_bad_audio must be 'skip' or 'error', got {on_bad_audio!r}")
    db = None if cache is False else (cache or DurationCache())
    results: dict[int, tuple[float | None, int | None, str | None, str]] = {}
    todo: list[int] = []
    for i, u in enumerate(utterances):
        hit = db.get(u.audio, decode) if (db is not None and u.audio) else None
        if hit is not None:
            results[i] = hit
        else:
            todo.append(i)
    if todo:
        it = (utterances[i] for i in todo)
        with ThreadPoolExecutor(max(1, num_threads)) as pool:
            mapped = pool.map(lambda u: _probe(u, decode), it)
            if progress:
                from tqdm import tqdm

                mapped = tqdm(mapped, total=len(todo), desc="scanning audio", unit="file")
            for i, res in zip(todo, mapped, strict=True):
                results[i] = res
        if db is not None:
            db.put_many((utterances[i].audio, decode, *results[i]) for i in todo if utterances[i].audio)

    f = filters or Filters(min_duration=0.0, max_duration=float("inf"), drop_empty=True)
    bad: list[BadEntry] = []
    candidates: list[tuple[Utterance, str]] = []
    for i, u in enumerate(utterances):
        dur, _, reason, detail = results[i]
        name = u.audio or u.extra.get("audio_name")

        def drop(r: str, d: str, u: Utterance = u, name: Any = name) -> None:
            bad.append(BadEntry(u.id, u.origin, name, r, d))

        if u.extra.get("text_error"):
            drop(A.BAD_ENCODING, f"{u.extra['text_error']}; re-save the manifest as UTF-8")
            continue
        if reason is not None:
            drop(reason, detail)
            continue
        assert dur is not None
        u.duration = dur
        if dur < f.min_duration:
            drop(A.TOO_SHORT, f"{dur:.3f}s < min_duration {f.min_duration}s")
            continue
        if dur > f.max_duration:
            drop(A.TOO_LONG, f"{dur:.3f}s > max_duration {f.max_duration}s")
            continue
        target = u.target(task) or ""
        if normalize_target:
            target = normalize_target(target)
        if f.drop_empty and not target.strip():
            drop(A.EMPTY_TEXT, f"no {'translation' if task == 'st' else 'transcript'} text")
            continue
        candidates.append((u, target))

    kept = [u for u, _ in candidates]
    if tokenizer is not None and f.max_target_tokens:
        lengths = _count_tokens(tokenizer, [t for _, t in candidates])
        kept = []
        for (u, _), n in zip(candidates, lengths, strict=True):
            if n > f.max_target_tokens:
                bad.append(
                    BadEntry(
                        u.id,
                        u.origin,
                        u.audio,
                        A.TOO_MANY_TOKENS,
                        f"{n} > max_target_tokens {f.max_target_tokens}",
                    )
                )
            else:
                kept.append(u)

    result = ScanResult(kept=kept, bad=bad, total=len(utterances))
    if report_dir is not None:
        result.report_path = write_report(bad, report_dir)
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
    if bad:
        log.info("%s", result.summary())
    return result
