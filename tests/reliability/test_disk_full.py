"""A full disk in the middle of a checkpoint save: a clear "disk full" error, the previous checkpoint intact,
and `--resume auto` continuing from it to the same weights as a run that never hit the full disk.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from rel_helpers import assert_identical, checkpoint_weights, tiny_recipe
from typer.testing import CliRunner

from speeched.cli import app
from speeched.training import checkpoint as ckpt_mod
from speeched.training.checkpoint import CheckpointError, CheckpointManager, is_complete
from speeched.training.recipe import load_recipe
from speeched.training.trainer import train

STEPS = 3
FULL_AT = 2  # the save of this step hits the full disk


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def _full_disk_in_torch_save(monkeypatch) -> None:
    """optimizer.pt of step FULL_AT: half the bytes land, then ENOSPC (what a real full disk does)."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if f"step-{FULL_AT:08d}" in str(f):
            with open(f, "wb") as fh:
                fh.write(b"\0" * 1024)
            raise _enospc()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def _full_disk_at_complete_marker(monkeypatch) -> None:
    """Everything of step FULL_AT is written except the COMPLETE marker: the checkpoint must stay invisible."""
    real = ckpt_mod._write_durable

    def write(path: Path, text: str) -> None:
        if path.name == ckpt_mod.COMPLETE and f"step-{FULL_AT:08d}" in str(path):
            raise _enospc()
        real(path, text)

    monkeypatch.setattr(ckpt_mod, "_write_durable", write)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, corpus) -> dict:
    tmp = tmp_path_factory.mktemp("full")
    recipe = tiny_recipe(tmp, corpus, train={"max_steps": STEPS, "seed": 0, "log_every": 1})
    train(load_recipe(recipe, output_dir=tmp / "run"))
    return checkpoint_weights(tmp / "run", STEPS)


@pytest.mark.parametrize("where", [_full_disk_in_torch_save, _full_disk_at_complete_marker])
def test_disk_full_keeps_previous_checkpoint_and_resumes(tmp_path, corpus, monkeypatch, uninterrupted, where):
    recipe = tiny_recipe(tmp_path, corpus, train={"max_steps": STEPS, "seed": 0, "log_every": 1})
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        where(m)
        with pytest.raises(CheckpointError) as info:
            train(load_recipe(recipe, output_dir=run))
    msg = str(info.value)
    assert msg.startswith(f"disk full while writing checkpoint step {FULL_AT}"), msg
    assert f"the previous checkpoint step {FULL_AT - 1} is intact" in msg
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC

    manager = CheckpointManager(run, keep_last=3)
    assert [c.step for c in manager.checkpoints()] == [FULL_AT - 1]
    assert not list((run / "checkpoints").glob(".tmp-*"))  # the partial save was removed
    previous = manager.latest()
    assert previous is not None and is_complete(previous.path)
    assert checkpoint_weights(run, FULL_AT - 1)  # loadable safetensors
    assert torch.load(previous.path / "optimizer.pt", weights_only=True)["state"]

    # Space is back: --resume auto continues from the intact checkpoint to the same result.
    result = train(load_recipe(recipe, output_dir=run), resume="auto")
    assert result.step == STEPS
    assert_identical(checkpoint_weights(run, STEPS), uninterrupted)


def test_cli_reports_disk_full_with_exit_2(tmp_path, corpus, monkeypatch):
    recipe = tiny_recipe(tmp_path, corpus, train={"max_steps": STEPS, "seed": 0, "log_every": 1})
    _full_disk_in_torch_save(monkeypatch)
    res = CliRunner().invoke(app, ["train", str(recipe), "--output-dir", str(tmp_path / "run")])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == 2
    assert "disk full while writing checkpoint step 2" in res.output
