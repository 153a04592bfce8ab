"""`metrics.jsonl`: one JSON object per logged point, the run's own record independent of any tracker.

Each line is `{"step": int, "split": str, "time": float, "values": {name: number | null}}`. Splits are
"train" (loss, lr, lr_<group>, grad_norm, ...) and "dev/<name>" for each dev set (wer, cer, bleu,
chrf, loss). Non-finite values are written as null so the file stays strict JSON. A crash can leave
a truncated last line: readers skip it, and a resumed run rewrites the file without it and without
the points logged after the checkpoint it resumes from (they would be logged again).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILENAME = "metrics.jsonl"


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All well-formed records of a metrics.jsonl (unparsable lines, e.g. a truncated last one, skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                log.warning("%s:%d: skipping an unreadable line (truncated by a crash?)", path, lineno)
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and "split" in record:
                records.append(record)
    return records


class MetricsLogger:
    """Append metric points to `output_dir/metrics.jsonl`.

    `resume_step=None` starts a new file; an integer keeps the existing points up to that step
    (dropping later ones and any truncated line) and appends after them.
    """

    def __init__(self, output_dir: str | os.PathLike[str], resume_step: int | None = None) -> None:
        self.path = Path(output_dir) / FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = (
            [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            if resume_step is not None
            else []
        )
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for record in kept:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the whole run

    def log(self, step: int, split: str, values: dict[str, Any]) -> dict[str, Any]:
        """Append one point; flushed at once so a crash loses at most the line being written."""
        record = {
            "step": int(step),
            "split": split,
            "time": round(time.time(), 3),
            "values": {k: _finite_or_none(float(v) if hasattr(v, "item") else v) for k, v in values.items()},
        }
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        return record

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
