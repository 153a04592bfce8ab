"""Everything a run logs, in one place: `metrics.jsonl`, `metrics.csv`, accelerate trackers, the console.

`metrics.jsonl`: one JSON object per logged point, the run's own record independent of any tracker.

Each line is `{"step": int, "split": str, "time": float, "values": {name: number | null}}`. Splits are
"train" (loss, lr, lr_<group>, grad_norm, ...) and "dev/<name>" for each dev set (wer_percent,
cer_percent, bleu, chrf, ...). Error rates are logged in percent, with the unit in their name, as
`speeched eval` prints them ("WER %"); the console shows `wer%=4.44`. Non-finite values are written as null so the file stays strict JSON. A crash can leave
a truncated last line: readers skip it, and a resumed run rewrites the file without it and without
the points logged after the checkpoint it resumes from (they would be logged again).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

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


#: Error rates (fractions from the scorer) written as percent, under a name that says so.
PERCENT_METRICS = ("wer", "cer", "raw_wer", "raw_cer")
SHOWN = ("wer_percent", "cer_percent", "bleu", "chrf")


def labelled(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics with error rates converted to percent and renamed `<name>_percent`."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if k in PERCENT_METRICS:
                out[f"{k}_percent"] = 100.0 * float(v)
            else:
                out[k] = v
    return out


def console_name(key: str) -> str:
    return key[: -len("_percent")] + "%" if key.endswith("_percent") else key


def append_csv(path: Path, step: int, split: str, values: dict[str, Any]) -> None:
    """One row per (step, split, metric): a long format that never needs its header rewritten."""
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write("step,split,metric,value\n")
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                f.write(f"{step},{split},{k},{v}\n")


def available_trackers(requested: list[str]) -> list[str]:
    """accelerate trackers that are installed ("csv" is speeched's own metrics.csv). A requested tracker that
    is not installed is reported, not silently dropped."""
    module = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
    out = []
    for name in requested:
        if name == "csv":
            continue
        if find_spec(module[name]) is None:
            log.warning(
                "log.trackers: %s is not installed (pip install %s); metrics.jsonl/csv still written",
                name,
                name,
            )
            continue
        out.append(name)
    return out


class RunLog:
    """The run's logging: metrics.jsonl (+ metrics.csv with the "csv" tracker) and accelerate trackers on the
    main process, and progress: a bar on a terminal (or with `progress=True`), otherwise one plain line
    every `log_every` steps, so a log file never fills with carriage returns."""

    def __init__(
        self,
        accelerator: Any,
        out: Path,
        requested: list[str],
        trackers: list[str],
        total_steps: int,
        start_step: int,
        resume_step: int | None,
        progress: bool | None = None,
    ) -> None:
        self.acc = accelerator
        self.out = Path(out)
        self.csv = "csv" in requested
        self.trackers = trackers
        self.total = total_steps
        self.main = accelerator.is_main_process
        self.jsonl = MetricsLogger(self.out, resume_step=resume_step) if self.main else None
        tty = progress if progress is not None else sys.stderr.isatty()
        self.bar = (
            tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)
            if (tty and self.main)
            else None
        )
        self.t0 = time.perf_counter()
        self.steps = 0
        self.audio = 0.0

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        if self.trackers:
            self.acc.log({f"{split}/{k}": v for k, v in values.items()}, step=step)
        if self.jsonl is not None:
            self.jsonl.log(step, split, values)
            if self.csv:
                append_csv(self.out / "metrics.csv", step, split, values)

    def step(self, step: int, stats: dict[str, Any], due: bool) -> None:
        """After each optimizer step: throughput into `stats`, progress, and the metrics when `due`."""
        self.steps += 1
        self.audio += stats.get("audio_seconds", 0.0)
        elapsed = time.perf_counter() - self.t0
        stats["audio_s_per_s"] = self.audio / max(elapsed, 1e-9)
        stats["elapsed_s"] = elapsed
        rate = self.steps / max(elapsed, 1e-9)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                loss=f"{stats['loss']:.3f}",
                lr=f"{stats['lr']:.1e}",
                steps_s=f"{rate:.2f}",
                audio_s=f"{stats['audio_s_per_s']:.0f}",
            )
        elif due:
            self.acc.print(
                f"step {step}/{self.total}: loss {stats['loss']:.4f}, lr {stats['lr']:.2e}, {rate:.2f} steps/s, "
                f"{stats['audio_s_per_s']:.0f} audio-s/s"
            )
        if due:
            self.write(step, "train", {k: v for k, v in stats.items() if k != "audio_seconds"})

    def dev(self, step: int, name: str, metrics: dict[str, Any]) -> None:
        """One dev set's scores: error rates in percent, labelled, in the files and on the console."""
        values = labelled(metrics)
        values["elapsed_s"] = time.perf_counter() - self.t0
        self.write(step, f"dev/{name}", values)
        shown = ", ".join(f"{console_name(k)}={values[k]:.4g}" for k in SHOWN if k in values)
        self.acc.print(f"step {step} dev/{name}: {shown}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.jsonl is not None:
            self.jsonl.close()
