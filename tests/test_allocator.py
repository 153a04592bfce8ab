"""`speeched train` re-executes itself with mimalloc preloaded on a CPU machine (speeched/training/allocator.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tone_corpus, write_tiny_recipe

from speeched.cli import subcommand
from speeched.training.allocator import (
    ENV,
    PRELOADED,
    AllocatorChoiceError,
    mimalloc_library,
    preload_environment,
)

LIB = Path("/opt/lib/libmimalloc.so.3.4")


def env_for(environ: dict[str, str], gpu: bool = False, lib: Path | None = LIB) -> dict[str, str] | None:
    return preload_environment(environ, library=lambda: lib, gpu=lambda: gpu)


def test_auto_preloads_on_a_cpu_machine_and_keeps_an_existing_preload():
    env = env_for({"PATH": "/bin"})
    assert env is not None and env["LD_PRELOAD"] == str(LIB) and env[PRELOADED] == str(LIB)
    assert env["PATH"] == "/bin" and env["MIMALLOC_PURGE_DELAY"] == "-1"
    assert env_for({"MIMALLOC_PURGE_DELAY": "50"})["MIMALLOC_PURGE_DELAY"] == "50"  # the user's own setting
    env = env_for({"LD_PRELOAD": "/x/libfoo.so"})
    assert env is not None and env["LD_PRELOAD"] == f"{LIB}:/x/libfoo.so"


@pytest.mark.parametrize(
    "environ, gpu, lib",
    [
        ({}, True, LIB),  # auto with a GPU driver installed: not measured there, glibc kept
        ({ENV: "system"}, False, LIB),
        ({PRELOADED: str(LIB)}, False, LIB),  # the re-executed process: never twice
        ({"LD_PRELOAD": str(LIB)}, False, LIB),  # already preloaded by the user
        ({}, False, None),  # cmeel-mimalloc not installed (or not Linux)
    ],
)
def test_no_reexec(environ, gpu, lib):
    assert env_for(environ, gpu=gpu, lib=lib) is None


def test_mimalloc_forced_with_a_gpu_and_a_bad_choice_named():
    assert env_for({ENV: "MiMalloc"}, gpu=True) is not None
    with pytest.raises(AllocatorChoiceError, match=f"{ENV}='tcmalloc' is not one of auto, mimalloc, system"):
        env_for({ENV: "tcmalloc"})


def test_subcommand_skips_global_options():
    assert subcommand(["--debug", "train", "r.yaml"]) == "train"
    assert subcommand(["eval", "m"]) == "eval" and subcommand(["--help"]) is None


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ENV, PRELOADED, "LD_PRELOAD")}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


@pytest.mark.skipif(mimalloc_library() is None, reason="needs Linux (cmeel-mimalloc is a dependency there)")
def test_train_runs_on_mimalloc_and_system_keeps_glibc(tmp_path):
    """The real thing: `python -m speeched.cli train` re-executes with mimalloc in its memory map (the dry run
    prints what the run would say); SPEECHED_ALLOCATOR=system keeps glibc's; a bad value exits 2 in one line."""
    recipe = write_tiny_recipe(tmp_path, tone_corpus(tmp_path / "corpus", num=12))
    cmd = [
        sys.executable,
        "-m",
        "speeched.cli",
        "train",
        str(recipe),
        "--dry-run",
        "--output-dir",
        str(tmp_path / "r"),
    ]
    # forced: a CI machine with a GPU driver would keep glibc under auto
    out = subprocess.run(cmd, env=child_env(**{ENV: "mimalloc"}), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "memory allocator: mimalloc" in out.stdout, out.stdout

    probe = "from speeched.training.allocator import *; reexec_with_mimalloc(); print(active_allocator())"
    for choice, expect in (("mimalloc", "mimalloc"), ("system", "the system's malloc")):
        out = subprocess.run([sys.executable, "-c", probe], env=child_env(**{ENV: choice}), capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert out.stdout.strip() == expect, (choice, out.stdout, out.stderr)

    out = subprocess.run(cmd, env=child_env(**{ENV: "jemalloc"}), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"speeched train: {ENV}='jemalloc' is not one of auto, mimalloc, system" in out.stderr
