"""Crash-safe checkpoints and exports: the on-disk layout of a run lives here and nowhere else.

Layout of a run directory: `checkpoints/step-0000000N/` each holding `model/` (a model directory:
config.json + model.safetensors), `optimizer.pt`, `scheduler.pt`, `rng.pt` (one RNG state per rank),
`trainer_state.json` (step, epoch, sampler position, best score, world size), `recipe.yaml`,
`meta.json` and `COMPLETE`; `best/` and `averaged/` are model directories written by `atomic_export`.
`checkpoint_model_dir` is what averaging reads.

A checkpoint is either complete and visible, or invisible.

Files are written into `checkpoints/.tmp-step-N`, described by `meta.json` (step, file sizes),
marked `COMPLETE`, fsynced and only then renamed to `checkpoints/step-0000000N` (an atomic rename).
So a crash or a full disk mid-save never costs the previous checkpoint, and `latest()` never
resumes from half a checkpoint. Also: RNG state capture/restore in a `torch.load(weights_only=True)`
friendly form (plain lists and tensors, no numpy objects).
"""

from __future__ import annotations

import copy
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

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from speeched.errors import SpeechedError
from speeched.modeling.finetune import merge_lora
from speeched.modeling.model_dir import match_umask, save_model_dir

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
META = "meta.json"
BEST = "best.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


MODEL_DIR = "model"
WEIGHTS = "model.safetensors"
STATE = "trainer_state.json"


class CheckpointError(SpeechedError, RuntimeError):
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
            match_umask(tmp)  # safetensors writes 0600: the umask's mode like every other file
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
    torch.save(capture_rng_state(), path)


def load_rng_state(path: str | os.PathLike[str]) -> None:
    """Restore RNG state written by `save_rng_state`, loading with weights_only=True (no arbitrary pickles)."""
    restore_rng_state(torch.load(path, weights_only=True))


# ----------------------------------------------------------------------------------- layout + export


def checkpoint_model_dir(path: str | os.PathLike[str]) -> Path:
    """The model directory inside a training checkpoint."""
    return Path(path) / MODEL_DIR


def atomic_export(out: Path, write: Callable[[Path], Any]) -> Path:
    """Write a model directory next to `out`, then swap it in: a crash never leaves a half-written model."""
    out = Path(out)
    tmp = out.with_name(f".tmp-{out.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    match_umask(tmp)  # safetensors writes 0600; everything we export gets the umask's mode (0644)
    old = out.with_name(f".old-{out.name}")
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)
    return out


def write_training_checkpoint(
    model: Any,
    optimizer: Any,
    scheduler: Any,
    rng_states: list[dict[str, Any]],
    state: dict[str, Any],
    recipe_yaml: str,
    tmp: Path,
) -> None:
    """The files of one checkpoint (the `write_fn` of `CheckpointManager.save`)."""
    model.save_pretrained(checkpoint_model_dir(tmp), safe_serialization=True)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save({"ranks": rng_states}, tmp / "rng.pt")
    (tmp / STATE).write_text(json.dumps(state, indent=2))
    (tmp / "recipe.yaml").write_text(recipe_yaml)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


ARCH_KEYS = (
    "model_type",
    "hidden_size",
    "d_model",
    "num_hidden_layers",
    "encoder_layers",
    "vocab_size",
    "num_attention_heads",
    "intermediate_size",
    "coupling",
    "num_mel_bins",
)


def describe_model_difference(path: Path, model: Any, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """None when tensors of these `shapes` (name -> shape) fit `model`; else one line saying what differs (architecture keys of the
    configs, then tensor names/shapes)."""
    own = model.state_dict()
    wrong = [k for k, v in shapes.items() if k in own and tuple(v) != tuple(own[k].shape)]
    unexpected = [k for k in shapes if k not in own]
    # Tied tensors (output layer = input embeddings) are stored once: missing only if no stored key shares them.
    stored = {own[k].data_ptr() for k in shapes if k in own}
    missing = [k for k, v in own.items() if k not in shapes and v.data_ptr() not in stored]
    if not wrong and not unexpected and not missing:
        return None
    diffs = []
    try:
        theirs = _flat(json.loads((checkpoint_model_dir(path) / "config.json").read_text()))
        mine = _flat(model.config.to_dict())
        diffs = [
            f"{k} {theirs[k]} vs {mine[k]}"
            for k in sorted(set(theirs) & set(mine))
            if k.rsplit(".", 1)[-1] in ARCH_KEYS and theirs[k] != mine[k]
        ]
    except (OSError, ValueError):
        pass
    if not diffs:
        diffs = [f"{k}: {list(shapes[k])} vs {list(own[k].shape)}" for k in wrong[:3]]
        if unexpected:
            diffs.append(f"{len(unexpected)} tensors this model does not have (e.g. {unexpected[0]})")
        if missing:
            diffs.append(f"{len(missing)} tensors of this model missing (e.g. {missing[0]})")
    return (
        f"checkpoint {path} belongs to a different model ({'; '.join(diffs[:4])}; "
        f"checkpoint vs this recipe): resume it with the recipe that wrote it (its recipe.yaml), "
        "or start fresh without --resume in another --output-dir"
    )


def check_checkpoint_fits(path: Path, model: Any) -> None:
    """Refuse, in one line, a checkpoint of another model (reads tensor shapes only, not the weights)."""
    with safe_open(str(checkpoint_model_dir(path) / WEIGHTS), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict
    problem = describe_model_difference(path, model, shapes)
    if problem:
        raise CheckpointError(problem)


def read_training_checkpoint(
    path: Path, model: Any, optimizer: Any, scheduler: Any, world_size: int, rank: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load weights, optimizer and scheduler state in place; return (trainer state, this rank's RNG state).

    Refuses, in one line, a checkpoint of another number of processes or of another model."""
    state = json.loads((path / STATE).read_text())
    if state["world_size"] != world_size:
        raise CheckpointError(
            f"checkpoint {path} was written by {state['world_size']} processes, this run has "
            f"{world_size}: resume with the same number of processes"
        )
    check_checkpoint_fits(path, model)
    weights = load_file(str(checkpoint_model_dir(path) / WEIGHTS))
    # Tied weights (e.g. the decoder's output layer = its input embeddings) are stored once: not strict.
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)["ranks"]
    return state, rng[rank]


def export_model(
    out: Path,
    model: Any,
    tokenizer: Any,
    feature_extractor: Any,
    recipe: Any,
    training_durations: dict[str, float] | None,
) -> Path:
    """`best/` (or any export): a model directory recording the decoding its dev scores were measured with
    (`config.decoding`, the default of `eval`/`transcribe`) and the train set's duration range in seconds
    (`config.training_durations`: min, max, median, p95; long-form transcription reads it)."""
    r = recipe
    model.config.decoding = {"num_beams": r.eval.num_beams, "ctc_weight": r.eval.ctc_weight}
    if training_durations is not None:
        model.config.training_durations = dict(training_durations)
    if r.finetune.method == "lora" and r.finetune.lora.merge_on_export:
        model = copy.deepcopy(model)
        merge_lora(model)  # in place (returns the number of merged layers)
    composed = {"recipe": r.model.model_dump()}
    return atomic_export(out, lambda tmp: save_model_dir(tmp, model, tokenizer, feature_extractor, composed))


def duration_summary(durations: list[float]) -> dict[str, float]:
    """min / max / median / p95 of the train set's durations, in seconds."""
    x = np.asarray([d for d in durations if d], dtype=np.float64)
    if not len(x):
        return {}
    return {
        "min": round(float(x.min()), 3),
        "max": round(float(x.max()), 3),
        "median": round(float(np.median(x)), 3),
        "p95": round(float(np.percentile(x, 95)), 3),
    }
