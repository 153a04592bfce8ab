"""Staged unfreezing (optim.unfreeze): presets, recipe errors, per-group lr gates, and a tiny run where a group
really does not move before its start step and resumes exactly mid-stage."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import tiny_encoder_dir, write_tiny_recipe
from safetensors.torch import load_file
from typer.testing import CliRunner

from speeched.training.optim import build_scheduler, parameter_group
from speeched.training.recipe import OptimConfig, load_recipe


def test_presets_resolve_to_fractions_of_the_total_steps() -> None:
    assert OptimConfig().unfreeze_starts(1000) == {"new": 0, "encoder": 0, "decoder": 0}
    assert OptimConfig(unfreeze="new-first").unfreeze_starts(1000) == {
        "new": 0,
        "encoder": 100,
        "decoder": 100,
    }
    assert OptimConfig(unfreeze="gradual").unfreeze_starts(1000) == {"new": 0, "encoder": 300, "decoder": 100}
    assert OptimConfig(unfreeze="gradual").unfreeze_starts(25) == {"new": 0, "encoder": 7, "decoder": 2}
    mapping = OptimConfig(unfreeze={"decoder": 500, "encoder": 2000})
    assert mapping.unfreeze_starts(10) == {"new": 0, "encoder": 2000, "decoder": 500}


# ---------------------------------------------------------------------------------------- schedule


def _optimizer() -> torch.optim.Optimizer:
    names, lrs = ("new", "encoder", "decoder"), (1e-3, 1e-4, 2e-4)
    groups = [
        {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr, "name": n}
        for n, lr in zip(names, lrs, strict=True)
    ]
    return torch.optim.AdamW(groups)


def _lrs(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[list[float]]:
    out = []
    for _ in range(steps):
        out.append(list(scheduler.get_last_lr()))
        scheduler.optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize(
    "kind,name", [("cosine", "cosine"), ("linear", "linear"), ("constant", "constant_with_warmup")]
)
@pytest.mark.parametrize("warmup,total", [(0, 10), (4, 17), (17, 17)])
def test_none_is_exactly_transformers_schedule(kind: str, name: str, warmup: int, total: int) -> None:
    from transformers import get_scheduler

    ref = get_scheduler(name, _optimizer(), num_warmup_steps=warmup, num_training_steps=total)
    ours = build_scheduler(
        _optimizer(), kind, warmup, total, OptimConfig().unfreeze_starts(total), rewarmup=5
    )
    assert _lrs(ours, total + 2) == _lrs(ref, total + 2)  # ==: bit-identical, not approximately


def test_gated_groups_are_zero_before_start_then_rewarm_on_the_base_schedule() -> None:
    from transformers import get_scheduler

    total = 20
    starts = {"new": 0, "decoder": 4, "encoder": 10}
    ours = _lrs(build_scheduler(_optimizer(), "cosine", 2, total, starts, rewarmup=4), total)
    base = _lrs(get_scheduler("cosine", _optimizer(), num_warmup_steps=2, num_training_steps=total), total)
    for step, (lr, ref) in enumerate(zip(ours, base, strict=True)):
        assert lr[0] == ref[0]  # new parts: the base schedule throughout
        for i, start in ((1, starts["encoder"]), (2, starts["decoder"])):
            gate = 0.0 if step < start else min(1.0, (step - start + 1) / 4)
            assert lr[i] == pytest.approx(ref[i] * gate, rel=1e-12, abs=0.0), (step, i)
    assert ours[3][2] == 0.0 and ours[4][2] > 0.0  # decoder: first nonzero lr at its start step
    assert ours[9][1] == 0.0 and ours[10][1] == pytest.approx(base[10][1] / 4)


# ---------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from speeched.data.synth import synthesize_corpus

    out = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(out, kind="digits", num=16, seed=3, progress=False)
    return out


def _recipe(tmp: Path, corpus: Path, **sections) -> Path:
    """The tiny recipe with a *pretrained* (saved) encoder (a random-init one would count as a new part), no
    dev set."""
    tmp.mkdir(parents=True, exist_ok=True)
    enc = tiny_encoder_dir(
        tmp, "speech2text", with_weights=True, dropout=0.0, activation_dropout=0.0, attention_dropout=0.0
    )
    data = {"train": [{"path": str(corpus / "train.jsonl"), "limit": 8}], "dev": []}  # no eval: faster
    return write_tiny_recipe(tmp, corpus, model={"encoder": str(enc)}, data=data, **sections)


def _weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"step-{step:08d}" / "model" / "model.safetensors"))


def _moved(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], group: str) -> bool:
    keys = [k for k in a if parameter_group(k) == group]
    assert keys, group
    return any(not torch.equal(a[k], b[k]) for k in keys)


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory, corpus) -> dict:
    """5 steps, encoder unfreezing at step 3 with a 2-step re-warmup; a checkpoint after every step."""
    from accelerate.utils import set_seed

    from speeched.training.build import build_model
    from speeched.training.trainer import train

    tmp = tmp_path_factory.mktemp("staged")
    path = _recipe(
        tmp,
        corpus,
        optim={"lr": 1e-3, "lr_new": 2e-3, "unfreeze": {"encoder": 3}, "unfreeze_warmup": 2},
        train={"max_steps": 5, "seed": 0, "log_every": 1},
    )
    set_seed(0)  # the trainer seeds before composing, so this rebuilds the same initial weights
    init = {k: v.detach().clone() for k, v in build_model(load_recipe(path)).model.state_dict().items()}
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        train(load_recipe(path, output_dir=tmp / "run"))
    return {"path": path, "out": tmp / "run", "init": init, "log": log.getvalue()}


def test_encoder_does_not_move_before_its_start_step(staged_run) -> None:
    out, init = staged_run["out"], staged_run["init"]
    init = {k: init[k] for k in _weights(out, 1)}
    for step in (1, 2, 3):
        assert not _moved(init, _weights(out, step), "encoder"), step  # bit-identical: no update, no decay
    assert _moved(init, _weights(out, 1), "new") and _moved(init, _weights(out, 1), "decoder")
    assert _moved(_weights(out, 3), _weights(out, 4), "encoder")
    # Its gradients were dropped, not just multiplied by lr 0: AdamW kept no moments for it until step 4.
    for step, expected in ((3, False), (4, True)):
        opt = torch.load(out / "checkpoints" / f"step-{step:08d}" / "optimizer.pt", weights_only=True)
        ids = [i for g in opt["param_groups"] if g["name"] == "encoder" for i in g["params"]]
        assert ids and all((i in opt["state"]) == expected for i in ids), step
    assert "staged unfreezing: decoder from step 0" in staged_run["log"]
    assert "step 3: encoder unfreezes (lr 1e-3, re-warmup 2 steps)" in staged_run["log"]


def test_each_groups_lr_is_logged(staged_run) -> None:
    records = [json.loads(line) for line in (staged_run["out"] / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r["values"] for r in records if r["split"] == "train"}
    # Logged after step k: the lr of the next step (k, 0-based); encoder 0, 0, then half, then full.
    assert [train[k]["lr_encoder"] for k in (1, 2, 3, 4)] == [0.0, 0.0, 5e-4, 1e-3]
    assert train[1]["lr_new"] == 2e-3 and train[1]["lr_decoder"] == 1e-3


def test_resume_mid_stage_gives_the_uninterrupted_weights(staged_run, tmp_path) -> None:
    from speeched.training.trainer import train

    out = tmp_path / "run"
    shutil.copytree(staged_run["out"], out)
    for step in (3, 4, 5):  # the run "died" after step 2: encoder still frozen, unfreezes after the resume
        shutil.rmtree(out / "checkpoints" / f"step-{step:08d}")
    train(load_recipe(staged_run["path"], output_dir=out), resume="auto")
    resumed, uninterrupted = _weights(out, 5), _weights(staged_run["out"], 5)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_freeze_encoder_steps_alias_still_freezes_the_encoder(tmp_path, corpus) -> None:
    from accelerate.utils import set_seed

    from speeched.training.build import build_model
    from speeched.training.trainer import train

    path = _recipe(tmp_path, corpus, train={"max_steps": 2, "seed": 0, "freeze_encoder_steps": 1})
    set_seed(0)
    init = build_model(load_recipe(path)).model.state_dict()
    out = tmp_path / "run"
    train(load_recipe(path, output_dir=out))
    first, second = _weights(out, 1), _weights(out, 2)
    assert not _moved({k: init[k] for k in first}, first, "encoder")  # step 1: frozen ...
    assert _moved(first, second, "encoder")  # ... step 2: trains


def test_dry_run_prints_the_resolved_stages(tmp_path, corpus) -> None:
    from speeched.cli import app

    path = _recipe(tmp_path, corpus, optim={"unfreeze": "gradual"}, train={"max_steps": 100})
    res = CliRunner().invoke(app, ["train", str(path), "--dry-run", "--output-dir", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "unfreeze (gradual): new from step 0 (lr 1e-3); decoder from step 10 (lr 1e-3); " in res.output
    assert "encoder from step 30 (lr 1e-3)" in res.output
