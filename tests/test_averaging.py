"""`speeched average` and `average_last_checkpoints`: the mean of the tensors, a loadable model, clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_model_dir
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from speeched.cli import app
from speeched.training.averaging import AveragingError, average_checkpoints, average_last_checkpoints


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("avg"), decoder_layers=1)


def _fake_run(root: Path, model_dir: Path, scales: dict[int, float]) -> Path:
    """A run dir with checkpoints/step-N (weights = base × scale, plus an int buffer = step) and best/."""
    run = root / "run"
    base = load_file(str(model_dir / "model.safetensors"))
    for step, scale in scales.items():
        ckpt = run / "checkpoints" / f"step-{step:08d}"
        (ckpt / "model").mkdir(parents=True)
        weights = {k: (v * scale if v.is_floating_point() else v) for k, v in base.items()}
        weights["counter"] = torch.tensor([step], dtype=torch.int64)
        save_file(weights, str(ckpt / "model" / "model.safetensors"), metadata={"format": "pt"})
        cfg = json.loads((model_dir / "config.json").read_text())
        cfg["_test_step"] = step
        (ckpt / "model" / "config.json").write_text(json.dumps(cfg))
        (ckpt / "meta.json").write_text(json.dumps({"step": step}))
    shutil.copytree(model_dir, run / "best")
    return run


def test_average_of_two_is_the_mean_and_loads(tmp_path, model_dir):
    run = _fake_run(tmp_path, model_dir, {10: 1.0, 20: 3.0})
    ckpts = sorted((run / "checkpoints").iterdir())
    out = average_checkpoints(ckpts, tmp_path / "avg")
    avg = load_file(str(out / "model.safetensors"))
    a = load_file(str(ckpts[0] / "model" / "model.safetensors"))
    b = load_file(str(ckpts[1] / "model" / "model.safetensors"))
    for k, v in avg.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (a[k] + b[k]) / 2)
    assert int(avg["counter"]) == 20  # integer buffers come from the newest checkpoint
    assert json.loads((out / "config.json").read_text())["_test_step"] == 20
    assert (out / "preprocessor_config.json").is_file() and (out / "tokenizer_config.json").is_file()
    assert not list(out.glob("*.bin"))


def test_averaged_model_dir_loads(tmp_path, model_dir):
    """Averaging a model dir with itself gives it back, and the result is a usable model directory."""
    from speeched.modeling.model_dir import load_model_dir

    out = average_checkpoints([model_dir, model_dir], tmp_path / "avg")
    loaded = load_model_dir(out)
    ref = load_file(str(model_dir / "model.safetensors"))
    got = loaded.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in ref.items() if k in got)
    assert loaded.tokenizer is not None and loaded.feature_extractor is not None


def test_average_last_takes_newest_k(tmp_path, model_dir):
    from speeched.training.checkpoint import CheckpointManager

    run = _fake_run(tmp_path, model_dir, {1: 1.0, 2: 2.0, 3: 4.0})
    manager = CheckpointManager(run, keep_last=5)
    for step in (1, 2, 3):  # make them complete checkpoints (COMPLETE marker + meta sizes)
        src = run / "checkpoints" / f"step-{step:08d}"
        tmp = tmp_path / f"stash-{step}"
        shutil.move(src, tmp)
        manager.save(step, lambda d, tmp=tmp: [shutil.copytree(tmp / "model", d / "model")])
    out = average_last_checkpoints(run, 2)
    assert out == run / "averaged"
    avg = load_file(str(out / "model.safetensors"))
    base = load_file(str(model_dir / "model.safetensors"))
    key = next(k for k, v in base.items() if v.is_floating_point() and v.abs().sum() > 0)
    torch.testing.assert_close(avg[key], base[key] * 3.0)  # mean of ×2 and ×4


def test_mismatched_keys_and_shapes_are_refused(tmp_path, model_dir):
    run = _fake_run(tmp_path, model_dir, {1: 1.0, 2: 1.0})
    odd = run / "checkpoints" / "step-00000002" / "model" / "model.safetensors"
    weights = load_file(str(odd))
    name = next(iter(weights))
    weights.pop(name)
    save_file(weights, str(odd), metadata={"format": "pt"})
    ckpts = sorted((run / "checkpoints").iterdir())
    with pytest.raises(AveragingError, match=r"step-00000002 does not match .*missing"):
        average_checkpoints(ckpts, tmp_path / "avg")
    weights[name] = torch.zeros(3, 3)
    save_file(weights, str(odd), metadata={"format": "pt"})
    with pytest.raises(AveragingError, match=rf"step-00000002: {name} has shape \[3, 3\]"):
        average_checkpoints(ckpts, tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


def test_cli_exit_codes(tmp_path, model_dir):
    run = _fake_run(tmp_path, model_dir, {1: 1.0, 2: 2.0})
    ckpts = [str(p) for p in sorted((run / "checkpoints").iterdir())]
    runner = CliRunner()
    res = runner.invoke(app, ["average", *ckpts, "--out", str(tmp_path / "ok")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "ok" / "model.safetensors").is_file()
    res = runner.invoke(app, ["average", ckpts[0], str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "nope does not exist" in res.output
    res = runner.invoke(app, ["average", ckpts[0], "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "at least two" in res.output
    res = runner.invoke(
        app, ["average", *ckpts, "--out", str(tmp_path / "x"), "--assets-from", str(tmp_path)]
    )
    assert res.exit_code == 2 and "preprocessor_config.json" in res.output
    assert not (tmp_path / "x").exists()


def test_averaged_config_keeps_the_exported_facts_and_weights_get_the_umask_mode(tmp_path, model_dir):
    """Checkpoint configs lack training_durations/decoding (written at export): taken from the run's best/.
    safetensors writes 0600; the averaged weights get the umask's mode like every other file."""
    import os

    run = _fake_run(tmp_path, model_dir, {10: 1.0, 20: 3.0})
    best_cfg = json.loads((run / "best" / "config.json").read_text())
    facts = {"training_durations": {"min": 0.5, "max": 9.5, "median": 2.0, "p95": 7.0},
             "decoding": {"num_beams": 4, "ctc_weight": 0.0}}  # fmt: skip
    (run / "best" / "config.json").write_text(json.dumps({**best_cfg, **facts}))
    old = os.umask(0o022)
    try:
        out = average_checkpoints(sorted((run / "checkpoints").iterdir()), tmp_path / "avg")
    finally:
        os.umask(old)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training_durations"] == facts["training_durations"]
    newest = json.loads((run / "checkpoints" / "step-00000020" / "model" / "config.json").read_text())
    assert cfg["decoding"] == newest.get("decoding", facts["decoding"])  # a key the checkpoint has stays
    assert cfg["_test_step"] == 20  # the rest still from the newest checkpoint
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o644
