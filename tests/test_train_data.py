"""The training data path beyond the scan: augmentation is exactly resumable (weights equal to an uninterrupted
run), the feature cache is turned off (with a line) when augmentation changes audio every epoch, and a file
that became unreadable after the scan is reported and skipped, or stops the run with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import tone_corpus, write_tiny_recipe
from safetensors.torch import load_file
from typer.testing import CliRunner

from speeched.cli import app
from speeched.training.recipe import load_recipe
from speeched.training.trainer import Trainer, TrainingError

AUGMENT = {
    "speed": {"p": 0.5},
    "noise": {"p": 0.5, "snr_db": [5, 20]},
    "gain": {"p": 0.5},
    "concat": {"p": 0.3, "max_items": 2, "max_duration": 4.0},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tone_corpus(tmp_path_factory.mktemp("corpus"), num=12, dev=2)


def _train(recipe: Path, out: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["train", str(recipe), "--output-dir", str(out), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _recipe(tmp: Path, corpus: Path, **data) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    return write_tiny_recipe(
        tmp, corpus,
        data={"train": [{"path": str(corpus / "train.jsonl")}], "dev": [],
              "batching": {"max_duration": 4.0, "max_batch_size": 4, "shuffle": True}, **data},
        train={"max_steps": 4, "seed": 0, "log_every": 1},
        checkpoint={"every_steps": 1, "keep_last": 10},
    )  # fmt: skip


def _weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(out / "checkpoints" / f"step-{step:08d}" / "model" / "model.safetensors")


def test_augmented_run_resumes_exactly_and_augmentation_changes_the_run(tmp_path, corpus):
    recipe = _recipe(tmp_path, corpus, augment=AUGMENT)
    _train(recipe, tmp_path / "full")
    _train(recipe, tmp_path / "cut", "--set", "train.max_steps=2")
    _train(recipe, tmp_path / "cut", "--resume", "auto")
    a, b = _weights(tmp_path / "full", 4), _weights(tmp_path / "cut", 4)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    plain = _recipe(tmp_path / "plain", corpus)
    _train(plain, tmp_path / "plain-run", "--set", "train.max_steps=1")
    c, d = _weights(tmp_path / "full", 1), _weights(tmp_path / "plain-run", 1)
    assert any(not torch.equal(c[k], d[k]) for k in c)  # the augmentation reached the training batches
    saved = json.loads(
        (tmp_path / "cut" / "checkpoints" / "step-00000002" / "trainer_state.json").read_text()
    )
    assert saved["sampler"]["augment"]["speed"]["p"] == 0.5


def test_feature_cache_is_off_with_fresh_augmentation(tmp_path, corpus):
    recipe = _recipe(tmp_path, corpus, augment={"gain": {"p": 1.0}}, feature_cache=True)
    out = _train(recipe, tmp_path / "run", "--set", "train.max_steps=1")
    assert "feature cache off: data.augment changes the audio every epoch" in out
    assert not list((tmp_path / "run").rglob("*.npy"))
    copies = _recipe(tmp_path / "k", corpus, augment={"gain": {"p": 1.0}, "copies": 2}, feature_cache=True)
    _train(copies, tmp_path / "run2", "--set", "train.max_steps=1")
    assert list((tmp_path / "run2" / "feature_cache").rglob("*.npy"))


def _break_after_setup(tmp: Path, corpus: Path, on_bad_audio: str) -> tuple[Trainer, str, Path, bytes]:
    """A trainer set up (scan done), then one training file overwritten with garbage."""
    recipe = _recipe(tmp, corpus, on_bad_audio=on_bad_audio)
    r = load_recipe(recipe, overrides=["train.max_steps=5"], output_dir=tmp / "run")
    trainer = Trainer(r)
    trainer.setup()
    victim = json.loads((corpus / "train.jsonl").read_text().splitlines()[0])
    path = corpus / victim["audio"]
    original = path.read_bytes()
    path.write_bytes(b"RIFF garbage, not audio")
    return trainer, victim["id"], path, original


def test_audio_broken_after_the_scan_is_reported_and_skipped(tmp_path, corpus):
    trainer, victim, path, original = _break_after_setup(tmp_path, corpus, "skip")
    try:
        result = trainer.fit()
    finally:
        path.write_bytes(original)
    assert result.step == 5
    rows = [json.loads(x) for x in (tmp_path / "run" / "bad_audio.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [victim]


def test_audio_broken_after_the_scan_with_on_bad_audio_error_is_one_line(tmp_path, corpus):
    trainer, victim, path, original = _break_after_setup(tmp_path, corpus, "error")
    try:
        with pytest.raises(TrainingError) as info:
            trainer.fit()
    finally:
        path.write_bytes(original)
    message = str(info.value)
    assert "\n" not in message and info.value.exit_code == 2
    assert path.name in message and "on_bad_audio" in message and "--resume auto" in message


def test_language_check_sees_one_utterance_per_language_pair(tmp_path, corpus):
    """The decoder-prompt check builds one Utterance per distinct (lang, tgt_lang) of a table, not per row."""
    from speeched.data.config import DataSource
    from speeched.data.sources import load_source
    from speeched.data.table import concat
    from speeched.training.data_setup import language_examples

    rows = [json.loads(x) for x in (corpus / "train.jsonl").read_text().splitlines()]
    langs = ["en", "de", "en", None, "de", "fr"]
    manifest = tmp_path / "langs.jsonl"
    manifest.write_text("".join(
        json.dumps({**r, "audio": str(corpus / r["audio"]), "lang": lang}) + "\n" for r, lang in zip(rows[:6], langs, strict=True)
    ))  # fmt: skip
    table = load_source(DataSource(path=str(manifest)))
    got = language_examples(concat([table, table]))
    assert [u.lang for u in got] == ["en", "de", None, "fr", "en", "de", None, "fr"]
    assert [u.id for u in got[:4]] == [rows[0]["id"], rows[1]["id"], rows[3]["id"], rows[5]["id"]]
