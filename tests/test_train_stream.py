"""Training on streamed shards (`streaming: true`): the run trains, and a resumed run ends with weights
bit-identical to an uninterrupted one (the checkpoint holds every rank's stream state: shard order, each
worker's position, the shuffle buffers and RNG). A mix of streamed and non-streamed sources is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import tone_corpus, write_tiny_recipe
from safetensors.torch import load_file
from typer.testing import CliRunner

from speeched.cli import app
from speeched.data.config import DataSource
from speeched.data.shards import write_shards
from speeched.data.sources import load_source


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("stream")
    corpus = tone_corpus(root / "corpus", num=24, dev=3)
    utts = list(load_source(DataSource(path=str(corpus / "train.jsonl"))))
    write_shards(utts, str(root / "shards"), shard_size=60_000)
    assert len(list((root / "shards").glob("*.parquet"))) >= 3
    return corpus, root / "shards"


def _recipe(tmp: Path, shards: tuple[Path, Path], workers: int, **sections) -> Path:
    corpus, folder = shards
    data = {
        "train": [{"path": str(folder), "streaming": True, "stream_buffer": 8}],
        "dev": [],
        "batching": {"max_duration": 6.0, "max_batch_size": 6, "num_workers": workers},
    }
    return write_tiny_recipe(
        tmp, corpus, data=data, train={"max_steps": 6, "seed": 0, "log_every": 1},
        checkpoint={"every_steps": 1, "keep_last": 10}, **sections,
    )  # fmt: skip


def _train(recipe: Path, out: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["train", str(recipe), "--output-dir", str(out), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(out / "checkpoints" / f"step-{step:08d}" / "model" / "model.safetensors")


def _resume_is_exact(tmp: Path, shards: tuple[Path, Path], workers: int, **sections) -> None:
    recipe = _recipe(tmp, shards, workers, **sections)
    full = _train(recipe, tmp / "full")
    assert "streamed" in full and "step 6/6" in full
    _train(recipe, tmp / "cut", "--set", "train.max_steps=3")
    resumed = _train(recipe, tmp / "cut", "--resume", "auto")
    assert "resumed from" in resumed and "step 6/6" in resumed
    a, b = _weights(tmp / "full", 6), _weights(tmp / "cut", 6)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    before = _weights(tmp / "full", 3)
    assert any(not torch.equal(a[k], before[k]) for k in a)  # the steps after the cut did change them
    assert (tmp / "full" / "best" / "README.md").is_file()


def test_streamed_run_resumes_exactly_single_worker(tmp_path, shards):
    _resume_is_exact(tmp_path, shards, workers=0)


@pytest.mark.slow
def test_streamed_run_resumes_exactly_two_workers(tmp_path, shards):
    _resume_is_exact(tmp_path, shards, workers=2)


def test_a_mix_of_streamed_and_loaded_sources_is_refused(tmp_path, shards):
    corpus, folder = shards
    recipe = write_tiny_recipe(
        tmp_path, corpus,
        data={"train": [{"path": str(folder), "streaming": True}, {"path": str(corpus / "train.jsonl")}]},
    )  # fmt: skip
    result = CliRunner().invoke(app, ["train", str(recipe), "--output-dir", str(tmp_path / "o"), "--dry-run"])
    assert result.exit_code == 2, result.output
    line = [x for x in result.output.splitlines() if x.startswith("speeched train:")]
    assert (
        len(line) == 1 and "mixes streamed and non-streamed" in line[0] and "speeched data shard" in line[0]
    )


@pytest.mark.slow
def test_streamed_run_two_processes_two_workers_resumes_exactly(tmp_path, shards):
    """2 processes (torchrun, gloo) × 2 workers: every rank's stream state is in the checkpoint, and the
    resumed run ends with the uninterrupted run's weights."""
    from test_training import torchrun_train

    recipe = _recipe(tmp_path, shards, workers=2)
    torchrun_train(recipe, tmp_path / "full")
    torchrun_train(recipe, tmp_path / "cut", "--set", "train.max_steps=3")
    state = (tmp_path / "cut" / "checkpoints" / "step-00000003" / "trainer_state.json").read_text()
    assert [s["rank"] for s in json.loads(state)["stream"]] == [0, 1]
    torchrun_train(recipe, tmp_path / "cut", "--resume", "auto")
    a, b = _weights(tmp_path / "full", 6), _weights(tmp_path / "cut", 6)
    for k in a:
        assert torch.equal(a[k], b[k]), k
