"""Grouped large-kernel 1-D convolutions on the CPU by FFT, forward and backward.

wav2vec2, HuBERT and WavLM add positions with a grouped convolution (kernel 128, 16 groups, weight norm)
before their transformer layers (data2vec-audio's are kernel 19, not measured, and left alone). On the CPU
torch computes it directly on oneDNN: 2·K multiply-adds per input channel and output sample, and a slow
backward for this shape. By the convolution theorem the same sums are a pointwise product of spectra: per
frequency, a [batch, C/groups] x [C/groups, C/groups] complex product per group, plus real FFTs of length
≥ T + 2·padding; K drops out of the cost. cuDNN picks FFT algorithms for convolutions the same way.

Measured on this project's AMD EPYC, 2 threads (docs/benchmark-notes.md, eleventh session), Conv1d(256,
256, 128, groups=16) on 8 x 220 frames: forward 34–54 ms on oneDNN, 7 ms here; backward 90 ms on torch's
native kernel (the previous route: oneDNN's own took longer), 13 ms here. At wav2vec2-base's width (768)
on 8 x 400 frames: forward 440 → 61–84 ms, backward 1290–1540 → 124–155 ms. The results differ from the
direct sums by rounding only (~3e-7 of the output's scale, forward and both gradients; tested).

`fft_grouped_conv(model)` routes every such convolution (nn.Conv1d with groups > 1, a kernel of at least
MIN_KERNEL, stride and dilation 1, zero padding) through `FFTGroupedConv1d` while gradients are being
computed (training steps). Without gradients (evaluation, generation), off the CPU, under autocast (only
fp32 was measured) or for other dtypes the stock convolution runs, bit for bit; the weights and state
dict stay as they are.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from scipy.fft import next_fast_len
from torch import nn

MIN_KERNEL = 32


def _spectra(x: torch.Tensor, w: torch.Tensor, padding: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Spectra of the zero-padded input [B, C, F] and of the weight [C_out, C_in/groups, F], and n."""
    n = next_fast_len(x.shape[-1] + 2 * padding, real=True)  # >= padded length: no circular wrap-around
    return torch.fft.rfft(F.pad(x, (padding, padding)), n), torch.fft.rfft(w, n), n


def _by_group(spec: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, C, F] -> [groups, F, B, C/groups]: one batched matrix per group and frequency."""
    b, c, f = spec.shape
    return spec.view(b, groups, c // groups, f).permute(1, 3, 0, 2)


def _weight_by_group(ws: torch.Tensor, groups: int) -> torch.Tensor:
    """[C_out, C_in/groups, F] -> [groups, F, C_out/groups, C_in/groups]."""
    c_out, c_in, f = ws.shape
    return ws.view(groups, c_out // groups, c_in, f).permute(0, 3, 1, 2)


def _from_groups(spec: torch.Tensor) -> torch.Tensor:
    """[groups, F, B, C/groups] -> [B, C, F]."""
    g, f, b, c = spec.shape
    return spec.permute(2, 0, 3, 1).reshape(b, g * c, f)


class FFTGroupedConv1d(torch.autograd.Function):
    """`F.conv1d(x, w, b, padding=padding, groups=groups)` (stride 1, dilation 1) and its gradients by FFT.

    Forward: y = irfft(Σ_i X_i · conj(W_oi)) (a correlation); input gradient: irfft(Σ_o G_o · W_oi) (a
    convolution); weight gradient: irfft(Σ_b conj(G_bo) · X_bi), its first K lags.
    """

    @staticmethod
    def forward(ctx: Any, x, w, b, padding, groups):  # noqa: ANN001, ANN205
        xs, ws, n = _spectra(x, w, padding)
        out_len = x.shape[-1] + 2 * padding - w.shape[-1] + 1
        wg = _weight_by_group(ws, groups).conj().transpose(-1, -2)  # [G, F, C_in/G, C_out/G]
        y = torch.fft.irfft(_from_groups(torch.matmul(_by_group(xs, groups), wg)), n)[..., :out_len]
        ctx.save_for_backward(xs, ws)
        ctx.conv = (padding, groups, n, x.shape[-1], w.shape[-1], b is not None)
        return y + b[:, None] if b is not None else y.contiguous()

    @staticmethod
    def backward(ctx: Any, grad):  # noqa: ANN001, ANN205
        xs, ws = ctx.saved_tensors
        padding, groups, n, length, kernel, has_bias = ctx.conv
        c_out, c_in = ws.shape[:2]
        gs = _by_group(torch.fft.rfft(grad, n), groups)  # [G, F, B, C_out/G]
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.fft.irfft(_from_groups(torch.matmul(gs, _weight_by_group(ws, groups))), n)
            gx = gx[..., padding : padding + length]
        if ctx.needs_input_grad[1]:
            gwf = torch.matmul(gs.conj().transpose(-1, -2), _by_group(xs, groups))  # [G, F, C_out/G, C_in]
            gw = torch.fft.irfft(gwf.permute(0, 2, 3, 1).reshape(c_out, c_in, -1), n)[..., :kernel]
        if has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2))
        return gx, gw, gb, None, None


def _conv_forward(self: nn.Conv1d, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    cpu = input.device.type == "cpu" and weight.device.type == "cpu"
    grads = torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad)
    if (
        not (cpu and grads)
        or input.dtype != torch.float32
        or weight.dtype != torch.float32
        or torch.is_autocast_enabled("cpu")
        or input.dim() != 3
    ):
        return nn.Conv1d._conv_forward(self, input, weight, bias)
    return FFTGroupedConv1d.apply(input, weight, bias, self.padding[0], self.groups)


def routable(module: nn.Module) -> bool:
    """A grouped Conv1d that FFTGroupedConv1d computes: large kernel, stride/dilation 1, int zero padding."""
    return (
        isinstance(module, nn.Conv1d)
        and module.groups > 1
        and module.kernel_size[0] >= MIN_KERNEL
        and module.stride == (1,)
        and module.dilation == (1,)
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def fft_grouped_conv(model: nn.Module) -> list[str]:
    """Route the model's large-kernel grouped Conv1d layers through `FFTGroupedConv1d`; their names."""
    names = []
    for name, module in model.named_modules():
        if routable(module):
            module._conv_forward = types.MethodType(_conv_forward, module)
            names.append(name)
    return names
