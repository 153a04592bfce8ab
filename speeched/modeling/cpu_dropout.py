"""Dropout on the CPU with masks drawn about four times faster than torch's, from the same distribution.

torch's CPU dropout (`F.dropout` -> `at::dropout`) fills a tensor with `bernoulli_(1 - p)` (MKL's VSL
stream: ~8 ns per element on this project's AMD EPYC), divides it by 1 - p in a second pass and multiplies
in a third. On the bench's log-mel composition with dropout 0.1 that was ~12% of a training step, and
attention dropout alone ~5% of the wav2vec2 one's (torch.profiler, docs/benchmark-notes.md); the demo
recipe had turned dropout off for it. No library offers a faster CPU dropout, hence this module. Here the mask comes from numpy's SFC64
generator (~1 ns per element, 32 random bits per element) and is compared and scaled in torch (in
parallel); the output is `input * noise` exactly as in torch, so autograd saves and multiplies the same
kind of noise tensor. An element is kept with probability 1 - round(p * 2**32) / 2**32 (p to within 2**-33)
and kept values are scaled by 1 / (1 - p), as torch scales them.

Each call draws its SFC64 seed from torch's default generator, so `torch.manual_seed` fixes the masks, and
a checkpoint's saved torch RNG state resumes them exactly. Only floating CPU tensors of MIN_ELEMENTS or more
take this path; the rest (small tensors, where the setup would cost more than it saves, and GPU tensors,
whose dropout is already a fused Philox kernel) go to torch's own function.

Scope: `cpu_dropout()` swaps two attributes of `torch.nn.functional` for the duration of a `with` block,
the ones `nn.Dropout`, the transformers models' functional calls and their SDPA integration look up at call
time:
- `dropout`: as above;
- `scaled_dot_product_attention` with `dropout_p > 0`: on the CPU torch runs that case on its math backend
  (the flash kernel takes no dropout), which draws the dropout inside C++. `attention` below is that math
  backend op for op (sqrt-scaled q and k, additive mask, causal mask, `_safe_softmax`, dropout, matmul) with
  the mask drawn here. With `dropout_p == 0` (evaluation, or no attention dropout) torch's own function runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

MIN_ELEMENTS = 16384
_torch_dropout = F.dropout
_torch_sdpa = F.scaled_dot_product_attention


def dropout_noise(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """The scaled keep mask of torch's dropout: 1 / (1 - p) with probability 1 - p, else 0."""
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    n = shape.numel()
    raw = np.random.SFC64(seed).random_raw((n + 1) // 2).view(np.int32)[:n]
    bits = torch.from_numpy(raw).view(shape)
    # Drop the round(p * 2**32) smallest int32 values: P(drop) = round(p * 2**32) / 2**32 for uniform bits.
    keep = bits >= round(p * 2**32) - 2**31
    return keep.to(dtype).mul_(1.0 / (1.0 - p))


def dropout(
    input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
) -> torch.Tensor:
    """`torch.nn.functional.dropout`, same arguments and distribution; faster masks on large CPU tensors."""
    fast = (
        training
        and 0.0 < p < 1.0
        and input.device.type == "cpu"
        and input.is_floating_point()
        and input.numel() >= MIN_ELEMENTS
        and type(input) is torch.Tensor  # subclasses (e.g. DTensor) keep torch's dispatch
    )
    if not fast:
        return _torch_dropout(input, p, training, inplace)
    noise = dropout_noise(input.shape, p, input.dtype)
    return input.mul_(noise) if inplace else input * noise


def _takes_over(query: torch.Tensor, key: torch.Tensor, dropout_p: float) -> bool:
    scores = query.shape[:-1].numel() * key.shape[-2]
    plain = type(query) is torch.Tensor and not query.is_nested
    cpu = query.device.type == "cpu" and query.is_floating_point()
    return 0.0 < dropout_p < 1.0 and plain and cpu and scores >= MIN_ELEMENTS


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """`F.scaled_dot_product_attention`; with dropout on a CPU tensor, torch's math backend with our masks."""
    if not _takes_over(query, key, dropout_p):
        return _torch_sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                           scale=scale, enable_gqa=enable_gqa)  # fmt: skip
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    root = math.sqrt(scale if scale is not None else 1.0 / math.sqrt(query.shape[-1]))
    scores = (query * root) @ (key.transpose(-2, -1) * root)
    if is_causal:
        causal = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=scores.dtype).masked_fill_(
                ~attn_mask, float("-inf")
            )
        scores = scores + attn_mask
    probs = torch._safe_softmax(scores, -1)  # rows with every key masked give zeros, as torch's math backend
    return (probs * dropout_noise(probs.shape, dropout_p, probs.dtype)) @ value


@contextmanager
def cpu_dropout(enabled: bool = True) -> Iterator[None]:
    """Inside the block, `F.dropout` and `F.scaled_dot_product_attention` are the functions above (a no-op
    when not enabled, or inside another such block)."""
    if not enabled or F.dropout is dropout:
        yield
        return
    previous = F.dropout, F.scaled_dot_product_attention
    F.dropout, F.scaled_dot_product_attention = dropout, attention
    try:
        yield
    finally:
        F.dropout, F.scaled_dot_product_attention = previous
