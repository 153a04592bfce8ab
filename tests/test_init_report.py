"""The init report: which parameters were randomly initialised at composition, and what the optimizer does with it."""

from __future__ import annotations

import json

import torch
from helpers import minilm_path, tiny_encoder_dir

from speeched.modeling.compose import ComposeSpec, init_model
from speeched.modeling.model_dir import load_model_dir
from speeched.training.optim import build_param_groups, parameter_group


def test_init_report_lists_random_parts_and_reloads(tmp_path):
    enc = tiny_encoder_dir(tmp_path, "speech2text")
    init_model(
        ComposeSpec(encoder=str(enc), decoder=minilm_path(), decoder_options={"num_hidden_layers": 1}),
        tmp_path / "m",
    )
    report = json.loads((tmp_path / "m" / "init_report.json").read_text())
    names = set(report["random_init_parameters"])
    # A config-only encoder is random; MiniLM's cross-attention and LM-head transform are not in its checkpoint.
    assert report["parts"]["encoder"]["random_init"] == report["parts"]["encoder"]["parameters"] > 0
    assert "decoder.cls.predictions.transform.dense.weight" in names
    assert any("crossattention" in n for n in names)
    # Pretrained weights are not listed.
    assert "decoder.bert.encoder.layer.0.attention.self.query.weight" not in names
    assert "decoder.bert.embeddings.word_embeddings.weight" not in names
    loaded = load_model_dir(tmp_path / "m")
    assert set(loaded.model.init_report["random_init_parameters"]) == names


def test_random_init_parameters_get_the_new_parts_learning_rate(tmp_path):
    enc = tiny_encoder_dir(tmp_path, "speech2text")
    out = init_model(
        ComposeSpec(encoder=str(enc), decoder=minilm_path(), decoder_options={"num_hidden_layers": 1}),
        tmp_path / "m",
    )
    random_init = set(out.model.init_report["random_init_parameters"])
    assert parameter_group("decoder.cls.predictions.transform.dense.weight", random_init) == "new"
    assert (
        parameter_group("decoder.bert.encoder.layer.0.attention.self.query.weight", random_init) == "decoder"
    )
    groups = build_param_groups(out.model, {"new": 1e-3, "encoder": 5e-5, "decoder": 1e-4}, 0.01, random_init)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    model = out.model
    assert lr_of[id(model.decoder.cls.predictions.transform.dense.weight)] == 1e-3
    assert lr_of[id(model.decoder.bert.encoder.layer[0].attention.self.query.weight)] == 1e-4
    assert lr_of[id(model.encoder.layers[0].fc1.weight)] == 1e-3  # random-init encoder learns as a new part
    assert all(isinstance(p, torch.nn.Parameter) for g in groups for p in g["params"])


def test_mostly_unloaded_pretrained_decoder_stops_with_a_clear_error(tmp_path):
    """A checkpoint whose weight names do not match (here: every key renamed) must not train from scratch silently."""
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "renamed-minilm"
    shutil.copytree(minilm_path(), bad)
    weights = load_file(str(bad / "model.safetensors"))
    save_file({f"prefix_mismatch.{k}": v for k, v in weights.items()}, str(bad / "model.safetensors"))
    enc = tiny_encoder_dir(tmp_path, "speech2text")
    import pytest

    with pytest.raises(ValueError, match="randomly initialised.*do not match"):
        init_model(
            ComposeSpec(encoder=str(enc), decoder=str(bad), decoder_options={"num_hidden_layers": 1}),
            tmp_path / "m",
        )


def test_init_prints_the_load_report(tmp_path):
    from typer.testing import CliRunner

    from speeched.cli import app

    enc = tiny_encoder_dir(tmp_path, "speech2text")
    res = CliRunner().invoke(
        app,
        [
            "init",
            "--encoder",
            str(enc),
            "--decoder",
            minilm_path(),
            "--out",
            str(tmp_path / "m"),
            "--decoder-option",
            "num_hidden_layers=1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "load report" in res.output and "decoder" in res.output and "random" in res.output
