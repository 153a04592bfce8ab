"""speeched/modeling/grouped_conv.py: wav2vec2's positional convolution, its backward on torch's native kernel."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_encoder_config, tiny_encoder_dir, tone_corpus, write_tiny_recipe
from torch import nn
from transformers import Wav2Vec2Model

from speeched.modeling.grouped_conv import GroupedConv1d, native_grouped_conv_backward
from speeched.training.recipe import load_recipe
from speeched.training.trainer import Trainer


def grads(model: nn.Module, x: torch.Tensor, input_grad: bool = True) -> tuple[torch.Tensor, dict]:
    x = x.clone().requires_grad_(input_grad)
    model.zero_grad(set_to_none=True)
    out = model(x)
    out = out.last_hidden_state if hasattr(out, "last_hidden_state") else out
    out.pow(2).mean().backward()
    return x.grad, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("channels", "kernel", "padding"), [(64, 128, 64), (48, 33, 16)])
def test_gradients_match_torchs_convolution(channels: int, kernel: int, padding: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(channels, channels, kernel, padding=padding, groups=16)
    x = torch.randn(3, channels, 90)
    ref_x, ref = grads(conv, x)
    assert native_grouped_conv_backward(conv) == [""]
    ours_x, ours = grads(conv, x)
    torch.testing.assert_close(ours_x, ref_x)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # without gradients the stock path runs, bit for bit
        assert torch.equal(conv(x), nn.Conv1d._conv_forward(conv, x, conv.weight, conv.bias))
    conv.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # train.precision: bf16 on a CPU: the stock path
        out = conv(x)
        assert out.dtype == torch.bfloat16
        out.float().pow(2).mean().backward()
    assert conv.weight.grad is not None and conv.weight.grad.dtype == torch.float32


def test_wav2vec2_positional_convolution_only() -> None:
    """Only the weight-normed grouped positional conv is routed; gradients and state dict as before."""
    torch.manual_seed(0)
    config = tiny_encoder_config("wav2vec2", num_conv_pos_embeddings=32, layerdrop=0.0, hidden_dropout=0.0,
                                 attention_dropout=0.0, activation_dropout=0.0, mask_time_prob=0.0)  # fmt: skip
    model = Wav2Vec2Model(config).train()
    x = torch.randn(2, 4000)
    _, ref = grads(model, x, input_grad=False)  # its feature encoder makes its own output require grad
    keys = list(model.state_dict())
    assert native_grouped_conv_backward(model) == ["encoder.pos_conv_embed.conv"]
    _, ours = grads(model, x, input_grad=False)
    assert ours.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-6)
    assert list(model.state_dict()) == keys
    twin = copy.deepcopy(model)  # the routing is bound to the copy, not to the original
    assert twin.encoder.pos_conv_embed.conv._conv_forward.__self__ is twin.encoder.pos_conv_embed.conv


def test_backward_runs_the_native_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    original = torch.ops.aten.convolution_backward

    class Spy:
        def __call__(self, *args):
            seen.append(torch.backends.mkldnn.enabled)
            return original(*args)

    monkeypatch.setattr(torch.ops.aten, "convolution_backward", Spy())
    x = torch.randn(2, 32, 50, requires_grad=True)
    w = torch.randn(32, 2, 64, requires_grad=True)
    GroupedConv1d.apply(x, w, None, (1,), (32,), (1,), 16).sum().backward()
    assert seen == [False] and x.grad is not None and w.grad is not None


@pytest.mark.parametrize(("kernels", "routed"), [("speeched", True), ("torch", False)])
def test_the_recipe_key_routes_it(tmp_path, kernels: str, routed: bool) -> None:
    corpus = tone_corpus(tmp_path / "corpus", num=8)
    recipe = write_tiny_recipe(
        tmp_path,
        corpus,
        model={"encoder": str(tiny_encoder_dir(tmp_path, "wav2vec2", num_conv_pos_embeddings=32))},
        train={"max_steps": 1, "seed": 0, "cpu_kernels": kernels},
    )
    t = Trainer(load_recipe(recipe, output_dir=tmp_path / "run"), progress=False)
    t.setup()
    conv = t.accelerator.unwrap_model(t.model).encoder.encoder.pos_conv_embed.conv
    assert ("_conv_forward" in vars(conv)) is routed
    t.fit()
    t.end_training()
