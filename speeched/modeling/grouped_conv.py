"""The backward pass of grouped 1-D convolutions on the CPU through torch's native kernel instead of oneDNN's.

wav2vec2, HuBERT and WavLM add positions with a grouped convolution (kernel 128, 16 groups, weight norm)
before their transformer layers (data2vec-audio's are kernel 19, not measured, and left alone). On the CPU torch runs it, forward and backward, on oneDNN
(mkldnn). oneDNN's forward is the faster one, but its backward for this shape is slow: measured on this
project's AMD EPYC, 2 threads (docs/benchmark-notes.md), forward + backward of Conv1d(256, 256, 128,
groups=16) on 8 x 220 frames took 181 ms with oneDNN and 106 ms with oneDNN's forward and the native
backward (im2col + BLAS); at wav2vec2-base's width (768) 900 against 750 ms. The input gradient is the same
to the bit; the weight gradient differs in summation order only (~3e-7 relative).

`native_grouped_conv_backward(model)` routes every such convolution (nn.Conv1d with groups > 1 and a
kernel of at least MIN_KERNEL) through `GroupedConv1d`: the same forward (`F.conv1d`), and a backward that
calls `aten.convolution_backward` with oneDNN switched off. It changes nothing off the CPU, without
gradients, under autocast (only fp32 was measured), or for other convolutions; the weights and state dict
stay as they are.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MIN_KERNEL = 32


class GroupedConv1d(torch.autograd.Function):
    """`F.conv1d(x, w, b, stride, padding, dilation, groups)`, its backward on torch's native CPU kernel."""

    @staticmethod
    def forward(ctx: Any, x, w, b, stride, padding, dilation, groups):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, w)
        ctx.conv = (stride, padding, dilation, groups, b is not None)
        return F.conv1d(x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad):  # noqa: ANN001, ANN205
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conv
        need = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]]
        # Not `torch.backends.mkldnn.flags(...)`: it also resets oneDNN's TF32 setting, with a warning.
        enabled, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, False
        try:
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad.contiguous(), x, w, [w.shape[0]] if has_bias else None,
                list(stride), list(padding), list(dilation), False, [0], groups, need,
            )  # fmt: skip
        finally:
            torch.backends.mkldnn.enabled = enabled
        return gx, gw, gb, None, None, None, None


def _conv_forward(self: nn.Conv1d, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    cpu = input.device.type == "cpu" and weight.device.type == "cpu"
    grads = torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad)
    if (
        not (cpu and grads)
        or torch.is_autocast_enabled("cpu")
        or self.padding_mode != "zeros"
        or isinstance(self.padding, str)
    ):
        return nn.Conv1d._conv_forward(self, input, weight, bias)
    return GroupedConv1d.apply(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def native_grouped_conv_backward(model: nn.Module) -> list[str]:
    """Route the model's large-kernel grouped Conv1d layers through `GroupedConv1d`; their names."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv1d) and module.groups > 1 and module.kernel_size[0] >= MIN_KERNEL:
            module._conv_forward = types.MethodType(_conv_forward, module)
            names.append(name)
    return names
