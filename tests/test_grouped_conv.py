"""speeched/modeling/grouped_conv.py: wav2vec2's positional convolution by FFT, against torch's own."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_encoder_config, tiny_encoder_dir, tone_corpus, write_tiny_recipe
from torch import nn
from transformers import Wav2Vec2Model

from speeched.modeling.grouped_conv import FFTGroupedConv1d, fft_grouped_conv
from speeched.training.recipe import load_recipe
from speeched.training.trainer import Trainer


def grads(
    model: nn.Module, x: torch.Tensor, input_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    x = x.clone().requires_grad_(input_grad)
    model.zero_grad(set_to_none=True)
    out = model(x)
    out = out.last_hidden_state if hasattr(out, "last_hidden_state") else out
    out.pow(2).mean().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """Rounding only: within 1e-5 of the reference's scale (the direct sums differ from it by ~3e-7)."""
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize(
    ("channels", "kernel", "padding", "bias", "frames"),
    [(64, 128, 64, True, 90), (48, 33, 16, False, 61), (32, 40, 0, True, 77), (64, 128, 64, True, 1)],
)
def test_output_and_gradients_match_torchs_convolution(channels, kernel, padding, bias, frames) -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(channels, channels, kernel, padding=padding, groups=16, bias=bias)
    x = torch.randn(3, channels, frames)
    ref_y, ref_x, ref = grads(conv, x)
    assert fft_grouped_conv(conv) == [""]
    y, ours_x, ours = grads(conv, x)
    close(y, ref_y)
    close(ours_x, ref_x)
    assert ours.keys() == ref.keys() == ({"weight", "bias"} if bias else {"weight"})
    for name in ref:
        close(ours[name], ref[name])
    with torch.no_grad():  # without gradients the stock path runs, bit for bit
        assert torch.equal(conv(x), nn.Conv1d._conv_forward(conv, x, conv.weight, conv.bias))
    conv.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # train.precision: bf16 on a CPU: the stock path
        out = conv(x)
        assert out.dtype == torch.bfloat16
        out.float().pow(2).mean().backward()
    assert conv.weight.grad is not None and conv.weight.grad.dtype == torch.float32


def test_frozen_weights_or_input_get_only_the_gradients_asked_for() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 32, 50)
    w = torch.randn(32, 2, 64)
    ref = nn.functional.conv1d
    for need_x, need_w in [(True, False), (False, True)]:
        xi, wi = x.clone().requires_grad_(need_x), w.clone().requires_grad_(need_w)
        FFTGroupedConv1d.apply(xi, wi, None, 32, 16).pow(2).sum().backward()
        xr, wr = x.clone().requires_grad_(need_x), w.clone().requires_grad_(need_w)
        ref(xr, wr, None, padding=32, groups=16).pow(2).sum().backward()
        assert (xi.grad is None) is (not need_x) and (wi.grad is None) is (not need_w)
        close(xi.grad if need_x else wi.grad, xr.grad if need_x else wr.grad)


def test_the_routed_convolution_runs_by_fft(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = nn.Conv1d(32, 32, 64, padding=32, groups=16)
    fft_grouped_conv(conv)
    calls = []
    rfft = torch.fft.rfft
    monkeypatch.setattr(torch.fft, "rfft", lambda *a, **k: calls.append(a[0].shape) or rfft(*a, **k))
    conv(torch.randn(2, 32, 50, requires_grad=True)).sum().backward()
    assert len(calls) == 3  # input and weight in the forward, the output gradient in the backward
    assert conv.weight.grad is not None


def test_unroutable_convolutions_are_left_alone() -> None:
    convs = {
        "small kernel": nn.Conv1d(32, 32, 19, padding=9, groups=16),  # data2vec-audio's
        "ungrouped": nn.Conv1d(32, 32, 128, padding=64),
        "strided": nn.Conv1d(32, 32, 128, stride=2, groups=16),
        "dilated": nn.Conv1d(32, 32, 64, dilation=2, groups=16),
        "same padding": nn.Conv1d(32, 32, 64, padding="same", groups=16),
        "reflect": nn.Conv1d(32, 32, 64, padding=32, groups=16, padding_mode="reflect"),
    }
    for name, conv in convs.items():
        assert fft_grouped_conv(conv) == [], name
        assert "_conv_forward" not in vars(conv)


def test_wav2vec2_positional_convolution_only() -> None:
    """Only the weight-normed grouped positional conv is routed; outputs, gradients and state dict as before."""
    torch.manual_seed(0)
    config = tiny_encoder_config("wav2vec2", num_conv_pos_embeddings=32, layerdrop=0.0, hidden_dropout=0.0,
                                 attention_dropout=0.0, activation_dropout=0.0, mask_time_prob=0.0)  # fmt: skip
    model = Wav2Vec2Model(config).train()
    x = torch.randn(2, 4000)
    ref_y, _, ref = grads(model, x, input_grad=False)  # its feature encoder makes its own output require grad
    keys = list(model.state_dict())
    assert fft_grouped_conv(model) == ["encoder.pos_conv_embed.conv"]
    y, _, ours = grads(model, x, input_grad=False)
    close(y, ref_y)
    assert ours.keys() == ref.keys()
    assert any("weight_g" in n or "original0" in n for n in ours)  # weight norm's parameters get gradients
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-6)
    assert list(model.state_dict()) == keys
    twin = copy.deepcopy(model)  # the routing is bound to the copy, not to the original
    assert twin.encoder.pos_conv_embed.conv._conv_forward.__self__ is twin.encoder.pos_conv_embed.conv


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
