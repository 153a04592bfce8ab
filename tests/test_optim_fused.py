"""torch's fused optimizer kernels: the default wherever torch has one, and exact across a resume."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
import torch
from helpers import tone_corpus, write_tiny_recipe
from pydantic import ValidationError
from safetensors.torch import load_file
from torch import nn

from speeched.training.optim import build_optimizer, build_param_groups, fused_unsupported
from speeched.training.recipe import load_recipe
from speeched.training.schema import OptimConfig
from speeched.training.trainer import train

LRS = {"new": 1e-3, "encoder": 1e-4, "decoder": 1e-4}


def tiny_groups(device: str = "cpu", dtype: torch.dtype = torch.float32) -> list[dict]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3)).to(device=device, dtype=dtype)
    return build_param_groups(model, LRS, weight_decay=0.01)


def run_steps(opt: torch.optim.Optimizer, steps: range) -> None:
    """Deterministic gradients per step number, so two optimizers can be compared step by step."""
    for step in steps:
        gen = torch.Generator().manual_seed(step)
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
        opt.step()
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("kind", ["adamw", "adam", "sgd"])
def test_fused_by_default_on_cpu_fp32(kind):
    opt = build_optimizer(tiny_groups(), kind, (0.9, 0.999), 1e-8)
    assert opt.defaults["fused"] is True
    assert not opt.defaults["foreach"]


@pytest.mark.parametrize(
    ("implementation", "fused", "foreach"),
    [("auto", True, None), ("fused", True, None), ("foreach", None, True), ("for-loop", None, False)],
)
def test_each_implementation_is_what_torch_gets(implementation, fused, foreach):
    opt = build_optimizer(tiny_groups(), "adamw", (0.9, 0.999), 1e-8, implementation=implementation)
    assert opt.defaults["fused"] == fused and opt.defaults["foreach"] == foreach
    run_steps(opt, range(2))  # and torch accepts it


def test_without_a_fused_kernel_auto_falls_back_and_fused_is_refused():
    meta = tiny_groups(device="meta")  # no fused kernel on the meta device
    assert "meta" in fused_unsupported(p for g in meta for p in g["params"])
    assert not build_optimizer(meta, "adamw", (0.9, 0.999), 1e-8).defaults["fused"]
    with pytest.raises(ValueError, match="fused optimizer kernel not available for a parameter on meta"):
        build_optimizer(meta, "adamw", (0.9, 0.999), 1e-8, implementation="fused")
    assert "int64" in fused_unsupported([nn.Parameter(torch.zeros(2, dtype=torch.long), requires_grad=False)])
    with pytest.raises(ValueError, match="unknown optimizer implementation 'fast'"):
        build_optimizer(tiny_groups(), "adamw", (0.9, 0.999), 1e-8, implementation="fast")


@pytest.mark.parametrize("kind", ["adamw", "adam", "sgd"])
def test_fused_state_survives_a_save_and_load_exactly(kind):
    """The checkpoint round trip of trainer/checkpoint.py (torch.save, torch.load weights_only): the `step`
    tensors come back as float32 on the parameters' device (what the fused kernel needs), and the
    continued run equals the uninterrupted one bit for bit."""
    whole = build_optimizer(tiny_groups(), kind, (0.9, 0.999), 1e-8)
    run_steps(whole, range(5))

    first = build_optimizer(tiny_groups(), kind, (0.9, 0.999), 1e-8)
    run_steps(first, range(2))
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    weights = [p.detach().clone() for g in first.param_groups for p in g["params"]]
    resumed = build_optimizer(tiny_groups(), kind, (0.9, 0.999), 1e-8)
    with torch.no_grad():
        for p, w in zip((p for g in resumed.param_groups for p in g["params"]), weights, strict=True):
            p.copy_(w)
    resumed.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert resumed.defaults["fused"] and all(g["fused"] for g in resumed.param_groups)
    for p, state in resumed.state.items():
        if "step" in state:
            assert state["step"].dtype == torch.float32 and state["step"].device == p.device
    run_steps(resumed, range(2, 5))

    a = [p for g in whole.param_groups for p in g["params"]]
    b = [p for g in resumed.param_groups for p in g["params"]]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tone_corpus(tmp_path_factory.mktemp("corpus"), num=40)


def test_resumed_run_with_fused_adamw_is_bit_identical(tmp_path, corpus):
    """tests/test_training.py's resume test, with weight decay, and the checkpoint saying the optimizer was
    the fused kernel."""
    recipe_path = write_tiny_recipe(
        tmp_path,
        corpus,
        data={"batching": {"max_duration": 1000, "max_batch_size": 3, "shuffle": True}},
        optim={"lr": 1e-3, "weight_decay": 0.01, "warmup_steps": 1, "scheduler": "linear"},
        train={"max_steps": 4, "seed": 0},
    )
    out = tmp_path / "run"

    def weights() -> dict[str, torch.Tensor]:
        return load_file(str(out / "checkpoints" / "step-00000004" / "model" / "model.safetensors"))

    train(load_recipe(recipe_path, output_dir=out))
    saved = torch.load(out / "checkpoints" / "step-00000002" / "optimizer.pt", weights_only=True)
    assert saved["param_groups"] and all(g["fused"] for g in saved["param_groups"])
    uninterrupted = weights()
    for step in (3, 4):  # the run died after step 2
        shutil.rmtree(out / "checkpoints" / f"step-{step:08d}")
    train(load_recipe(recipe_path, output_dir=out), resume="auto")
    resumed = weights()
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


@pytest.mark.parametrize(("implementation", "fused"), [("auto", True), ("for-loop", False)])
def test_recipe_key_reaches_the_optimizer(tmp_path, implementation, fused):
    """`optim.implementation` in the recipe is what the saved optimizer state says it ran with."""
    corpus = tone_corpus(tmp_path / "corpus", num=8)
    recipe_path = write_tiny_recipe(
        tmp_path,
        corpus,
        train={"max_steps": 1, "seed": 0},
        optim={"implementation": implementation},
        checkpoint={"every_steps": 1},
    )
    out = tmp_path / "run"
    train(load_recipe(recipe_path, output_dir=out))
    (ckpt,) = sorted((out / "checkpoints").glob("step-*"))
    groups = torch.load(ckpt / "optimizer.pt", weights_only=True)["param_groups"]
    assert all(bool(g.get("fused")) is fused for g in groups)


def test_unknown_implementation_in_a_recipe_is_refused():
    with pytest.raises(ValidationError, match="'auto', 'fused', 'foreach' or 'for-loop'"):
        OptimConfig(implementation="fast")
