"""Checkpoints are atomic (complete or invisible), pruned, resumable; RNG state round-trips."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from speeched.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    capture_rng_state,
    is_complete,
    load_rng_state,
    read_meta,
    restore_rng_state,
    save_rng_state,
)


def writer(payload: str = "weights"):
    def write(tmp: Path) -> None:
        (tmp / "model.safetensors").write_text(payload)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "optimizer.pt").write_bytes(b"\0" * 10)

    return write


def test_save_writes_meta_marker_and_final_name(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, keep_last=2)
    ck = mgr.save(200, writer())
    assert ck.path == tmp_path / "checkpoints" / "step-00000200"
    assert is_complete(ck.path)
    meta = read_meta(ck.path)
    assert meta["step"] == 200
    assert meta["files"] == {"model.safetensors": 7, "sub/optimizer.pt": 10}
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_crash_inside_write_fn_leaves_nothing_visible(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, keep_last=2)
    mgr.save(100, writer())

    def crash(tmp: Path) -> None:
        (tmp / "model.safetensors").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mgr.save(200, crash)
    assert mgr.latest().step == 100
    assert not (tmp_path / "checkpoints" / "step-00000200").exists()


def test_killed_process_stale_tmp_and_incomplete_dirs_are_ignored(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.save(100, writer())
    root = tmp_path / "checkpoints"
    (root / ".tmp-step-00000200").mkdir()  # as a SIGKILL mid-save leaves it
    (root / ".tmp-step-00000200" / "model.safetensors").write_text("partial")
    (root / "step-00000300").mkdir()  # no COMPLETE marker: e.g. copied by hand
    short = mgr.save(400, writer())
    (short.path / "model.safetensors").write_text("w")  # truncated after the fact: size mismatch
    assert mgr.latest().step == 100
    assert not (root / ".tmp-step-00000200").exists()


def test_keep_last_prunes_but_keeps_best_and_newest(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, keep_last=2, best_mode="min")
    for step, wer in [(100, 0.5), (200, 0.2), (300, 0.4), (400, 0.3), (500, 0.6)]:
        mgr.save(step, writer(), score=wer)
    assert [c.step for c in mgr.checkpoints()] == [200, 400, 500]
    assert mgr.best().step == 200
    mgr.save(600, writer(), score=0.1)
    assert [c.step for c in mgr.checkpoints()] == [500, 600]
    assert mgr.best().step == 600


def test_enospc_gives_clear_error_and_previous_intact(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, keep_last=1)
    mgr.save(100, writer())

    def full(tmp: Path) -> None:
        (tmp / "model.safetensors").write_text("par")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointError) as info:
        mgr.save(200, full)
    msg = str(info.value)
    assert "disk full while writing checkpoint step 200" in msg
    assert str(tmp_path / "checkpoints") in msg
    assert "the previous checkpoint step 100 is intact" in msg
    assert mgr.latest().step == 100 and is_complete(mgr.latest().path)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_resave_same_step_replaces_it(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, keep_last=2)
    mgr.save(100, writer("a"))
    mgr.save(100, writer("bbb"))
    assert (mgr.latest().path / "model.safetensors").read_text() == "bbb"


def test_resolve_resume(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, keep_last=3)
    assert mgr.resolve_resume("auto") is None
    mgr.save(100, writer())
    mgr.save(200, writer())
    assert mgr.resolve_resume("auto").step == 200
    assert mgr.resolve_resume(None) is None
    assert mgr.resolve_resume("100").step == 100
    assert mgr.resolve_resume(str(tmp_path / "checkpoints" / "step-00000100")).step == 100
    assert mgr.resolve_resume(str(tmp_path)).step == 200  # a run directory
    with pytest.raises(CheckpointError, match="does not exist"):
        mgr.resolve_resume(str(tmp_path / "nope"))
    (tmp_path / "checkpoints" / "step-00000300").mkdir()
    with pytest.raises(CheckpointError, match="incomplete"):
        mgr.resolve_resume("300")


def _draw() -> tuple:
    return random.random(), float(np.random.rand()), np.random.randn(), torch.rand(3).tolist()


def test_rng_round_trip_through_weights_only_load(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = capture_rng_state()
    save_rng_state(tmp_path / "rng.pt")
    expected = _draw()
    _draw()
    load_rng_state(tmp_path / "rng.pt")
    assert _draw() == expected
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    restore_rng_state(loaded)
    assert _draw() == expected
    restore_rng_state(state)
    assert _draw() == expected
