"""speeched/modeling/cpu_dropout.py: torch's dropout distribution and SDPA math, with masks drawn faster."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import tone_corpus, write_tiny_recipe
from safetensors.torch import load_file
from transformers import BertConfig, BertLMHeadModel

from speeched.modeling import cpu_dropout as cd
from speeched.training.recipe import load_recipe
from speeched.training.trainer import train


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_and_scale_are_torchs(p: float) -> None:
    x = torch.ones(1000, 1000)
    y = cd.dropout(x, p)
    values = torch.unique(y)
    assert torch.allclose(values, torch.tensor([0.0, 1 / (1 - p)]))
    dropped = float((y == 0).float().mean())
    sigma = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(dropped - p) < 6 * sigma, (dropped, p)


def test_masks_have_no_structure() -> None:
    """Neighbours (the two 32-bit halves of one 64-bit draw included) and successive calls are independent."""
    keep = (cd.dropout(torch.ones(2_000_000), 0.5) > 0).float()
    even, odd = keep[0::2], keep[1::2]
    assert abs(float(torch.corrcoef(torch.stack([even, odd]))[0, 1])) < 0.01
    rows = (cd.dropout(torch.ones(4, 500_000), 0.5) > 0).float()
    assert abs(float(torch.corrcoef(rows)[0, 1])) < 0.01
    again = (cd.dropout(torch.ones(2_000_000), 0.5) > 0).float()
    assert abs(float(torch.corrcoef(torch.stack([keep, again]))[0, 1])) < 0.01


def test_torch_seed_fixes_the_masks() -> None:
    x = torch.randn(64, 1024)
    torch.manual_seed(3)
    a = cd.dropout(x, 0.2)
    torch.manual_seed(3)
    b = cd.dropout(x, 0.2)
    torch.manual_seed(4)
    c = cd.dropout(x, 0.2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_gradient_is_the_noise() -> None:
    x = torch.randn(64, 1024, requires_grad=True)
    torch.manual_seed(0)
    y = cd.dropout(x, 0.3)
    y.backward(torch.ones_like(y))
    torch.manual_seed(0)
    noise = cd.dropout_noise(x.shape, 0.3, x.dtype)
    assert torch.equal(x.grad, noise)
    assert torch.equal(y, x.detach() * noise)


def test_inplace_and_dtypes() -> None:
    x = torch.ones(64, 1024, dtype=torch.bfloat16)
    out = cd.dropout(x, 0.25, inplace=True)
    assert out.data_ptr() == x.data_ptr() and out.dtype == torch.bfloat16
    assert 0 < float((x == 0).float().mean()) < 0.5


def test_falls_back_to_torch() -> None:
    x = torch.randn(64, 1024)
    assert torch.equal(cd.dropout(x, 0.5, training=False), x)
    assert torch.equal(cd.dropout(x, 0.0), x)
    small = torch.randn(10, 10)  # under MIN_ELEMENTS: torch's own function, with torch's own stream
    torch.manual_seed(5)
    ours = cd.dropout(small, 0.5)
    torch.manual_seed(5)
    assert torch.equal(ours, F.dropout(small, 0.5))
    with pytest.raises(ValueError, match="dropout probability"):
        cd.dropout(x, 1.5)


def test_attention_is_torchs_math_backend() -> None:
    """Same output and gradients as aten's math backend given the mask we draw (float and bool masks)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 16, requires_grad=True) for n in (50, 60, 60))
    keep = torch.rand(2, 1, 50, 60) > 0.2
    additive = torch.zeros(2, 1, 50, 60).masked_fill(~keep, float("-inf"))
    for mask, causal, scale in [(keep, False, None), (additive, False, 0.3), (None, True, None)]:
        torch.manual_seed(1)
        ours = cd.attention(q, k, v, attn_mask=mask, dropout_p=0.2, is_causal=causal, scale=scale)
        torch.manual_seed(1)
        noise = cd.dropout_noise(torch.Size([2, 4, 50, 60]), 0.2, torch.float32)
        ref_mask = additive if mask is not None else None
        ref, _ = torch.ops.aten._scaled_dot_product_attention_math(
            q, k, v, ref_mask, 0.2, causal, noise > 0, scale=scale
        )
        torch.testing.assert_close(ours, ref)
        grads = torch.autograd.grad(ours.sum(), (q, k, v))
        ref_grads = torch.autograd.grad(ref.sum(), (q, k, v))
        for g, r in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(g, r)


def test_attention_without_dropout_is_torchs_function() -> None:
    q, k, v = (torch.randn(2, 4, 50, 16) for _ in range(3))
    assert torch.equal(cd.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    kv_heads = torch.randn(2, 2, 50, 16)
    torch.manual_seed(2)
    gqa = cd.attention(q, kv_heads, kv_heads, dropout_p=0.1, enable_gqa=True)
    torch.manual_seed(2)
    rep = kv_heads.repeat_interleave(2, 1)
    assert torch.equal(gqa, cd.attention(q, rep, rep, dropout_p=0.1))


def test_context_swaps_and_restores() -> None:
    before = F.dropout, F.scaled_dot_product_attention
    with cd.cpu_dropout():
        assert F.dropout is cd.dropout and F.scaled_dot_product_attention is cd.attention
        torch.manual_seed(0)
        y = torch.nn.Dropout(0.5)(torch.ones(64, 1024))  # nn.Dropout looks F.dropout up at call time
        torch.manual_seed(0)
        assert torch.equal(y, cd.dropout_noise(y.shape, 0.5, y.dtype))
        with cd.cpu_dropout():  # nested: still ours, and the outer block restores torch's
            assert F.dropout is cd.dropout
        assert F.dropout is cd.dropout
    assert (F.dropout, F.scaled_dot_product_attention) == before
    with cd.cpu_dropout(enabled=False):
        assert F.dropout is before[0]
    with pytest.raises(RuntimeError), cd.cpu_dropout():
        raise RuntimeError
    assert (F.dropout, F.scaled_dot_product_attention) == before


def test_a_transformers_decoder_trains_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A BERT decoder with hidden and attention dropout (SDPA): deterministic under a seed, ours is called."""
    monkeypatch.setattr(cd, "MIN_ELEMENTS", 1)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, is_decoder=True, attn_implementation="sdpa")  # fmt: skip
    model = BertLMHeadModel(config).train()
    ids = torch.randint(0, 100, (4, 12))
    calls = {"dropout": 0, "attention": 0}
    for name in calls:
        original = getattr(cd, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(cd, name, spy)
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        with cd.cpu_dropout():
            losses.append(model(input_ids=ids, labels=ids).loss)
    assert calls["dropout"] > 0 and calls["attention"] > 0
    assert torch.equal(losses[0], losses[1])
    losses[0].backward()
    assert all(p.grad is not None for p in model.bert.encoder.parameters())
    model.eval()
    with cd.cpu_dropout():
        evaluated = model(input_ids=ids, labels=ids).loss
    assert not torch.equal(evaluated, losses[0])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tone_corpus(tmp_path_factory.mktemp("corpus"), num=24)


def dropout_recipe(tmp_path: Path, corpus: Path, kernel: str) -> Path:
    """The tiny recipe with dropout everywhere (hidden, activation, attention) and `train.cpu_kernels`."""
    return write_tiny_recipe(
        tmp_path,
        corpus,
        model={
            "encoder_options": {"dropout": 0.2, "activation_dropout": 0.2, "attention_dropout": 0.2},
            "decoder_options": {
                "num_hidden_layers": 1,
                "hidden_dropout_prob": 0.2,
                "attention_probs_dropout_prob": 0.2,
            },
        },  # fmt: skip
        data={"batching": {"max_duration": 1000, "max_batch_size": 3, "shuffle": True}},
        train={"max_steps": 4, "seed": 0, "cpu_kernels": kernel},
    )


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "step-00000004" / "model" / "model.safetensors"))


def test_training_uses_it_and_a_resumed_run_is_bit_identical(tmp_path, corpus, monkeypatch):
    """Every dropout of the tiny model goes through ours (MIN_ELEMENTS lowered), and the masks come back
    exactly after a resume: their seeds are drawn from torch's RNG, which the checkpoint saves."""
    monkeypatch.setattr(cd, "MIN_ELEMENTS", 1)
    calls = []
    original = cd.dropout_noise
    monkeypatch.setattr(cd, "dropout_noise", lambda *a: calls.append(a) or original(*a))
    out = tmp_path / "run"
    recipe = dropout_recipe(tmp_path, corpus, "speeched")
    train(load_recipe(recipe, output_dir=out))
    assert len(calls) > 4 * 6  # per step: hidden, activation and attention dropout of both halves
    uninterrupted = final_weights(out)
    for step in (3, 4):  # the run died after step 2
        shutil.rmtree(out / "checkpoints" / f"step-{step:08d}")
    train(load_recipe(recipe, output_dir=out), resume="auto")
    resumed = final_weights(out)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)

    calls.clear()
    torch_out = tmp_path / "run-torch"
    train(load_recipe(dropout_recipe(tmp_path, corpus, "torch"), output_dir=torch_out))
    assert not calls  # train.cpu_kernels: torch leaves torch's dropout in place
    other = final_weights(torch_out)
    assert any(not torch.equal(other[k], uninterrupted[k]) for k in other)  # other masks, other weights
