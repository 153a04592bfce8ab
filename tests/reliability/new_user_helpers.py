"""Pieces of the issue-18 table (test_new_user.py): one way to run a command (real process or typer's
CliRunner) with one result shape, and the tiny models, runs and audio the table's cases share."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import soundfile as sf
from helpers import minilm_path, tiny_encoder_dir, tone_corpus, write_tiny_recipe
from rel_helpers import subprocess_env

SR = 16000
# `python -c`: the same entry point as the console script, whatever the venv's bin/ holds.
CLI = [sys.executable, "-c", "from speeched.cli import main; main()"]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def first_err(self) -> str:
        """The first non-empty line of stderr ("" when there is none)."""
        return next((line for line in self.stderr.splitlines() if line.strip()), "")


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def run_process(
    argv: list[str],
    cache: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
    interrupt_when: Callable[[], bool] | None = None,
) -> Result:
    """`speeched ARGV` as a real process (umask 022, stdout and stderr apart, neither a terminal). With
    `interrupt_when`, SIGINT is sent once it returns true (Ctrl-C)."""
    full_env = {**subprocess_env(cache), **(env or {})}
    start = time.monotonic()
    proc = subprocess.Popen(
        [*CLI, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=full_env,
        cwd=cwd,
        preexec_fn=child_setup,  # noqa: PLW1509 (no threads started yet in the child)
    )
    if interrupt_when is not None:
        while not interrupt_when():
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"the command ended before it could be interrupted:\n{out}\n{err}")
            if time.monotonic() - start > timeout:
                proc.kill()
                proc.communicate()
                raise AssertionError(f"the command did not get far enough in {timeout} s to interrupt it")
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"`speeched {' '.join(argv)}` did not finish in {timeout} s (a hang)\n{out[-2000:]}\n{err[-2000:]}"
        ) from None
    return Result(proc.returncode, out, err, time.monotonic() - start)


def run_in_process(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """typer's CliRunner (stderr kept apart), umask 022; a crash that is not SystemExit is re-raised as
    its traceback text so the table reports it like a process would."""
    import traceback

    from typer.testing import CliRunner

    from speeched.cli import app

    start = time.monotonic()
    old_cwd = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with umask(0o022):
            res = CliRunner().invoke(app, argv, env=env)
    finally:
        os.chdir(old_cwd)
    stderr = res.stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        stderr += "".join(traceback.format_exception(res.exception))
    return Result(res.exit_code, res.stdout, stderr, time.monotonic() - start)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of every file and folder under `root` (root included), by relative path."""
    out = {".": root.stat().st_mode & 0o777}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = p.stat().st_mode & 0o777
    return out


def assert_shared_modes(root: Path) -> None:
    """Under umask 022 others may read everything: files 0644, folders 0755."""
    assert root.is_dir(), f"{root} was not written"
    wrong = {
        name: oct(mode)
        for name, mode in modes(root).items()
        if mode != (0o755 if (root / name).is_dir() else 0o644)
    }
    assert not wrong, f"modes under {root} that others cannot read as expected: {wrong}"


def write_tone(path: Path, seconds: float, freq: float = 220.0) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), SR)
    return path


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class World:
    """What the cases need, built lazily once per module (a `-k` run builds only its part)."""

    def __init__(self, root: Path, cache: Path) -> None:
        self.root = root
        self.cache = cache

    @cached_property
    def halves(self) -> dict[str, Path]:
        """Config-only halves: a speech encoder, a HuBERT, a BERT, a DistilBERT, a T5 (random init, instant)."""
        from transformers import BertConfig, DistilBertConfig, T5Config

        root = self.root / "halves"
        small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
        out = {"encoder": tiny_encoder_dir(root, "speech2text"), "hubert": tiny_encoder_dir(root, "hubert")}
        for name, config in (
            ("bert", BertConfig(**small)),
            ("distilbert", DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64)),
            ("t5", T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16)),
        ):
            config.save_pretrained(root / name)
            out[name] = root / name
        return out

    def init_args(self, out: Path | str) -> list[str]:
        return [
            "init", "--encoder", str(self.halves["encoder"]), "--decoder", minilm_path(),
            "--decoder-option", "num_hidden_layers=1", "--out", str(out),
        ]  # fmt: skip

    @cached_property
    def model(self) -> Path:
        """A tiny wav2vec2 at 50 frames/s + 1-layer MiniLM (test_eval_cli's fast model)."""
        from test_eval_cli import make_fast_model_dir

        root = self.root / "fast"
        root.mkdir()
        return make_fast_model_dir(root)

    @cached_property
    def corpus(self) -> Path:
        return tone_corpus(self.root / "corpus", num=12, dev=3)

    @cached_property
    def wavs(self) -> dict[str, Path]:
        d = self.root / "wavs"
        zeros = {"zeros5": 5, "zeros600": 600, "zeros30": 30}
        out = {"a": write_tone(d / "a.wav", 2.0, 220), "b": write_tone(d / "b.wav", 1.5, 330)}
        for name, seconds in zeros.items():
            sf.write(d / f"{name}.wav", np.zeros(SR * seconds, np.int16), SR, subtype="PCM_16")
            out[name] = d / f"{name}.wav"
        return out

    def recipe(self, where: Path, **sections) -> Path:
        return write_tiny_recipe(where, self.corpus, **sections)

    @cached_property
    def run(self) -> dict:
        """A 2-step training run in a real process (stdout/stderr pipes, not a terminal; umask 022)."""
        tmp = self.root / "trained"
        recipe = self.recipe(tmp, eval={"every_steps": 2, "max_new_tokens": 3})
        res = run_process(["train", str(recipe), "--output-dir", str(tmp / "run")], self.cache, timeout=300)
        assert res.code == 0, res.output
        return {"recipe": recipe, "dir": tmp / "run", "result": res}

    def copy_run(self, dest: Path) -> Path:
        shutil.copytree(self.run["dir"], dest)
        return dest

    @cached_property
    def synth_corpus(self) -> Path:
        out = self.root / "synth"
        res = run_in_process(["data", "synth", "--out", str(out), "--num", "20", "--no-progress"])
        assert res.code == 0, res.output
        return out


def child_setup() -> None:
    """Run in the child before exec: a usual umask, and SIGINT at its default disposition, as from a terminal.

    A process started with SIGINT ignored (inherited from the test worker) keeps ignoring it: Python installs
    its KeyboardInterrupt handler only when SIGINT is not ignored at start, and Ctrl-C tests then hang."""
    os.umask(0o022)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
