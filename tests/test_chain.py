"""The whole user journey on the exported model: init → train (tiny) → eval → transcribe, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from helpers import minilm_path, tiny_encoder_dir, tone_corpus, write_tiny_recipe
from typer.testing import CliRunner

from speeched.cli import app


def _ok(result, what: str) -> None:
    assert result.exit_code == 0, f"{what} exited {result.exit_code}:\n{result.output}"
    assert "Traceback" not in result.output, what


def test_init_train_eval_transcribe_on_the_exported_best(tmp_path: Path) -> None:
    runner = CliRunner()
    corpus = tone_corpus(tmp_path / "corpus", num=16, dev=4)
    enc = tiny_encoder_dir(
        tmp_path, "speech2text", dropout=0.0, activation_dropout=0.0, attention_dropout=0.0
    )
    init = tmp_path / "init"
    _ok(
        runner.invoke(
            app,
            ["init", "--encoder", str(enc), "--decoder", minilm_path(), "--out", str(init),
             "--decoder-option", "num_hidden_layers=1", "--model-option", "ctc_units=word",
             "--model-option", "ctc_weight=0.3", "--ctc-vocab-from", str(corpus / "train.jsonl")],
        ),
        "init",
    )  # fmt: skip
    recipe = write_tiny_recipe(tmp_path, corpus, train={"max_steps": 4}, eval={"every_steps": 2})
    spec = yaml.safe_load(recipe.read_text())
    spec["model"] = {"path": str(init), "ctc_weight": 0.3}
    recipe.write_text(yaml.safe_dump(spec))
    run = tmp_path / "run"
    _ok(runner.invoke(app, ["train", str(recipe), "--output-dir", str(run)]), "train")

    best = run / "best"
    for name in (
        "config.json",
        "model.safetensors",
        "README.md",
        "tokenizer.json",
        "preprocessor_config.json",
    ):
        assert (best / name).exists(), name
    config = json.loads((best / "config.json").read_text())
    assert set(config["training_durations"]) >= {"min", "max", "median", "p95"}
    assert config["decoding"]["ctc_weight"] is not None

    out = tmp_path / "eval"
    _ok(
        runner.invoke(app, ["eval", str(best), "--data", str(corpus / "dev.jsonl"), "--out", str(out)]),
        "eval",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_utterances"] == 4 and summary["wer"] is not None
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 4

    wav = corpus / json.loads((corpus / "dev.jsonl").read_text().splitlines()[0])["audio"]
    result = runner.invoke(
        app, ["transcribe", str(wav), "--model", str(best), "-f", "json", "--segment", "energy"]
    )
    _ok(result, "transcribe")
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 1 and "text" in lines[0]
