"""Shared pieces of the reliability suite: a tiny deterministic recipe and the `speeched` CLI as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import write_tiny_recipe


def speeched_cmd() -> list[str]:
    """The console script next to this interpreter (speeched.cli has no `__main__` block)."""
    exe = Path(sys.executable).with_name("speeched")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("speeched")
    if found:
        return [found]
    return [sys.executable, "-c", "from speeched.cli import main; main()"]


def subprocess_env(cache_dir: Path) -> dict[str, str]:
    """Offline, one thread (same float results as the in-process runs), a private duration cache."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        SPEECHED_CACHE_DIR=str(cache_dir),
    )
    return env


def run_cli(args: list[str], cache_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*speeched_cmd(), *args],
        env=subprocess_env(cache_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


RELIABILITY_DEFAULTS: dict[str, Any] = {
    "data": {
        "train": [],  # filled in with the corpus below
        "dev": [],
        "batching": {"max_duration": 1000, "max_batch_size": 3, "shuffle": True},
    },
    "train": {"max_steps": 4, "seed": 0, "log_every": 1},
    "eval": {"every_steps": None},
    "checkpoint": {"every_steps": 1, "keep_last": 3},
}


def tiny_recipe(tmp: Path, corpus: Path, **sections: Any) -> Path:
    """tests/helpers.write_tiny_recipe with this suite's defaults: no dev set, 12 utterances, 4 steps."""
    tmp.mkdir(parents=True, exist_ok=True)
    merged: dict[str, Any] = {k: dict(v) for k, v in RELIABILITY_DEFAULTS.items()}
    merged["data"]["train"] = [{"path": str(corpus / "train.jsonl"), "limit": 12}]
    for key, value in sections.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return write_tiny_recipe(tmp, corpus, **merged)


def checkpoint_weights(run: Path, step: int) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / f"step-{step:08d}" / "model" / "model.safetensors"))


def assert_identical(a: dict[str, Any], b: dict[str, Any]) -> None:
    import torch

    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
