"""Crash-safe checkpoints: a checkpoint is either complete and visible, or invisible.

Files are written into `checkpoints/.tmp-step-N`, described by `meta.json` (step, file sizes),
marked `COMPLETE`, fsynced and only then renamed to `checkpoints/step-0000000N` (an atomic rename).
So a crash or a full disk mid-save never costs the previous checkpoint, and `latest()` never
resumes from half a checkpoint. Also: RNG state capture/restore in a `torch.load(weights_only=True)`
friendly form (plain lists and tensors, no numpy objects).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
META = "meta.json"
BEST = "best.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says what is still intact."""


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk."""

    step: int
    path: Path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync directories
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _write_durable(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The `meta.json` of a checkpoint directory."""
    return json.loads((Path(path) / META).read_text(encoding="utf-8"))


def is_complete(path: str | os.PathLike[str]) -> bool:
    """True when the checkpoint has its COMPLETE marker and every listed file has the recorded size."""
    path = Path(path)
    if not (path / COMPLETE).is_file():
        return False
    try:
        files = read_meta(path)["files"]
        return all((path / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


class CheckpointManager:
    """Writes, lists, prunes and resolves checkpoints under `output_dir/checkpoints`.

    Call it on the main process only: `latest()` deletes stale temporary directories.
    `best_mode` ("min"/"max") enables best-checkpoint tracking through `save(..., score=...)`.
    """

    def __init__(
        self, output_dir: str | os.PathLike[str], keep_last: int, best_mode: str | None = None
    ) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        if best_mode not in (None, "min", "max"):
            raise ValueError(f"best_mode must be 'min', 'max' or None, got {best_mode!r}")
        self.root = Path(output_dir) / "checkpoints"
        self.keep_last = keep_last
        self.best_mode = best_mode

    @staticmethod
    def dirname(step: int) -> str:
        return f"step-{step:08d}"

    def checkpoints(self) -> list[Checkpoint]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            m = _STEP_DIR.match(entry.name)
            if m and entry.is_dir() and is_complete(entry):
                found.append(Checkpoint(int(m.group(1)), entry))
        return sorted(found, key=lambda c: c.step)

    def clean_stale(self) -> list[Path]:
        """Delete temporary directories left by a crash mid-save; return what was removed."""
        removed = []
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.name.startswith((".tmp-", ".old-")) and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
        return removed

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint (incomplete and temporary ones are ignored; stale tmp dirs removed)."""
        self.clean_stale()
        found = self.checkpoints()
        return found[-1] if found else None

    def best(self) -> Checkpoint | None:
        """The best checkpoint recorded by `save(..., score=...)`, if it still exists."""
        record = self._best_record()
        if record is None:
            return None
        path = self.root / self.dirname(record["step"])
        return Checkpoint(record["step"], path) if is_complete(path) else None

    def _best_record(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.root / BEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def save(self, step: int, write_fn: Callable[[Path], None], score: float | None = None) -> Checkpoint:
        """Write checkpoint `step` atomically: `write_fn(tmp_dir)` writes the files, the manager the rest.

        Raises `CheckpointError` on any OSError (ENOSPC included) with the previous checkpoint intact.
        """
        previous = self.latest()
        final = self.root / self.dirname(step)
        tmp = self.root / f".tmp-{self.dirname(step)}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            write_fn(tmp)
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
            meta = {"step": step, "time": time.time(), "files": files, "score": score}
            _write_durable(tmp / META, json.dumps(meta, indent=1))
            _fsync_tree(tmp)
            _write_durable(tmp / COMPLETE, f"{step}\n")
            _fsync_dir(tmp)
            if final.exists():  # re-saving a step (e.g. after resuming from an earlier checkpoint)
                old = self.root / f".old-{self.dirname(step)}"
                shutil.rmtree(old, ignore_errors=True)
                os.rename(final, old)
                os.rename(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, final)
            _fsync_dir(self.root)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            kept = (
                f"the previous checkpoint step {previous.step} is intact"
                if previous
                else "no earlier checkpoint"
            )
            what = "disk full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else f"error ({err})"
            raise CheckpointError(f"{what} while writing checkpoint step {step} to {final}; {kept}") from err
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if score is not None and self.best_mode is not None:
            self._update_best(step, score)
        self.prune(protect=step)
        return Checkpoint(step, final)

    def _update_best(self, step: int, score: float) -> None:
        record = self._best_record()
        current = self.best()
        better = (
            current is None
            or record is None
            or (score < record["score"] if self.best_mode == "min" else score > record["score"])
        )
        if better:
            tmp = self.root / f".{BEST}.tmp"
            _write_durable(tmp, json.dumps({"step": step, "score": score, "mode": self.best_mode}))
            os.replace(tmp, self.root / BEST)

    def prune(self, protect: int | None = None) -> list[Path]:
        """Delete all but the newest `keep_last` checkpoints, never `protect` nor the best one."""
        found = self.checkpoints()
        keep = {c.step for c in found[-self.keep_last :]}
        best = self.best()
        keep |= {s for s in (protect, best.step if best else None) if s is not None}
        removed = []
        for c in found:
            if c.step not in keep:
                shutil.rmtree(c.path, ignore_errors=True)
                removed.append(c.path)
        return removed

    def resolve_resume(self, spec: str | os.PathLike[str] | None) -> Checkpoint | None:
        """`"auto"`: the latest checkpoint or None (fresh start); a checkpoint dir, a run dir, or a step number.

        None / "" / "none" mean a fresh start. A named checkpoint that is missing or incomplete is an error.
        """
        if spec is None or str(spec).lower() in ("", "none", "no", "false"):
            return None
        if str(spec) == "auto":
            return self.latest()
        text = str(spec)
        path = self.root / self.dirname(int(text)) if text.isdigit() else Path(text)
        if path.is_dir() and (path / "checkpoints").is_dir():
            found = CheckpointManager(path, self.keep_last).latest()
            if found is None:
                raise CheckpointError(f"--resume {text}: no complete checkpoint under {path / 'checkpoints'}")
            return found
        if not path.is_dir():
            raise CheckpointError(f"--resume {text}: {path} does not exist")
        if not is_complete(path):
            raise CheckpointError(
                f"--resume {text}: {path} is incomplete (no COMPLETE marker or a file is short)"
            )
        return Checkpoint(int(read_meta(path)["step"]), path)


# --------------------------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU + every CUDA device) RNG states as plain lists/tensors.

    The result loads with `torch.load(..., weights_only=True)`: no numpy arrays or pickled objects.
    """
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state` (CUDA states are restored only when CUDA is available)."""
    import numpy as np
    import torch

    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    keys = np.asarray(
        npst["keys"].tolist() if hasattr(npst["keys"], "tolist") else npst["keys"], dtype=np.uint32
    )
    np.random.set_state((npst["kind"], keys, npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])


def save_rng_state(path: str | os.PathLike[str]) -> None:
    """`capture_rng_state()` to a file with torch.save (one file per process: rng-{rank}.pt)."""
    import torch

    torch.save(capture_rng_state(), path)


def load_rng_state(path: str | os.PathLike[str]) -> None:
    """Restore RNG state written by `save_rng_state`, loading with weights_only=True (no arbitrary pickles)."""
    import torch

    restore_rng_state(torch.load(path, weights_only=True))
