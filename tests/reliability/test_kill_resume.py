"""SIGKILL a real `speeched train` process (mid-step and mid-checkpoint-write), resume with `--resume auto`,
and end with exactly the weights of an uninterrupted run.

A killed process gets no chance to clean up, so this checks what atomic checkpoints promise: a
half-written `.tmp-step-N` is never resumed from, the previous checkpoint is intact, and the resumed
run replays the same batches and RNG draws (bit-identical weights on CPU).
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rel_helpers import assert_identical, checkpoint_weights, speeched_cmd, subprocess_env, tiny_recipe

from speeched.training.checkpoint import CheckpointManager
from speeched.training.recipe import load_recipe
from speeched.training.trainer import train

POLL_S = 0.002


def _tmp_dirs(run: Path) -> list[Path]:
    root = run / "checkpoints"
    try:
        return [p for p in root.iterdir() if p.name.startswith(".tmp-step-")]
    except FileNotFoundError:
        return []


def _latest_step(run: Path) -> int:
    found = CheckpointManager(run, keep_last=100).checkpoints()
    return found[-1].step if found else 0


def _start(recipe: Path, run: Path, cache: Path) -> subprocess.Popen[str]:
    args = [*speeched_cmd(), "train", str(recipe), "--output-dir", str(run), "--resume", "auto"]
    return subprocess.Popen(
        args, env=subprocess_env(cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _kill_when(proc: subprocess.Popen[str], trigger: Callable[[], bool], timeout: float = 240) -> bool:
    """SIGKILL `proc` as soon as `trigger()` holds; False when the process ended first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if trigger():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("training neither reached the kill point nor finished in time")
        time.sleep(POLL_S)
    return False


def _kill_mid_write(recipe: Path, run: Path, cache: Path, attempts: int = 4) -> int:
    """Kill while a checkpoint is being written (retrying if the rename won the race); return its step."""
    for _ in range(attempts):
        proc = _start(recipe, run, cache)
        killed = _kill_when(proc, lambda: bool(_tmp_dirs(run)))
        assert killed, (
            f"the run finished before a checkpoint write could be interrupted:\n{proc.stdout.read()}"
        )
        assert proc.returncode == -signal.SIGKILL
        partial = _tmp_dirs(run)
        if partial:
            return int(partial[0].name.rsplit("-", 1)[1])
    raise AssertionError(f"no kill landed inside a checkpoint write in {attempts} attempts")


def _kill_after(recipe: Path, run: Path, cache: Path, rng: random.Random) -> None:
    """Kill at a random moment after at least one more checkpoint than we resumed from (so the run progresses)."""
    target = _latest_step(run) + rng.randint(1, 2)
    proc = _start(recipe, run, cache)
    reached: list[float] = []

    def trigger() -> bool:
        if not reached and _latest_step(run) >= target:
            reached.append(time.monotonic() + rng.uniform(0.0, 1.0))
        return bool(reached) and time.monotonic() >= reached[0]

    assert _kill_when(proc, trigger), f"the run finished before the kill point:\n{proc.stdout.read()}"
    assert proc.returncode == -signal.SIGKILL


def _finish(recipe: Path, run: Path, cache: Path) -> str:
    proc = _start(recipe, run, cache)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def _uninterrupted(recipe: Path, tmp: Path, steps: int) -> dict:
    run = tmp / "uninterrupted"
    train(load_recipe(recipe, output_dir=run))
    return checkpoint_weights(run, steps)


def test_kill_during_checkpoint_write_then_resume(tmp_path, corpus, _private_cache):
    steps = 4
    recipe = tiny_recipe(tmp_path, corpus, train={"max_steps": steps, "seed": 0, "log_every": 1})
    run = tmp_path / "run"
    interrupted_step = _kill_mid_write(recipe, run, _private_cache)
    assert _latest_step(run) == interrupted_step - 1  # the half-written checkpoint is not a checkpoint
    out = _finish(recipe, run, _private_cache)
    if interrupted_step > 1:
        assert f"at step {interrupted_step - 1}" in out, out
    assert not _tmp_dirs(run)  # the stale temporary directory was cleaned up
    assert_identical(checkpoint_weights(run, steps), _uninterrupted(recipe, tmp_path, steps))


@pytest.mark.slow
def test_five_kills_at_random_points_give_identical_weights(tmp_path, corpus, _private_cache):
    steps = 10
    recipe = tiny_recipe(tmp_path, corpus, train={"max_steps": steps, "seed": 0, "log_every": 1})
    run = tmp_path / "run"
    rng = random.Random(20240611)
    plan = ["write", "random", "write", "random", "random"]
    rng.shuffle(plan)
    mid_write = 0
    for kind in plan:
        if kind == "write":
            step = _kill_mid_write(recipe, run, _private_cache)
            assert _latest_step(run) == step - 1
            mid_write += 1
        else:
            _kill_after(recipe, run, _private_cache, rng)
        assert _latest_step(run) < steps, "a kill came too late to interrupt anything"
    assert mid_write == 2
    out = _finish(recipe, run, _private_cache)
    assert "resumed from" in out
    assert_identical(checkpoint_weights(run, steps), _uninterrupted(recipe, tmp_path, steps))
