"""Which scaled-dot-product-attention kernels speech batches run on.

On CUDA, PyTorch may pick cuDNN's attention (it is preferred on Hopper). cuDNN builds an execution graph
for every new (batch, heads, length) shape and caches it by shape. Speech batches change length at
every step, and generation changes the key length at every token. So nearly every call pays the build.
Measured on an H200 (bench/bench_train.py worker, wav2vec2-base-sized encoder + MiniLM, bf16, batches
of ~70 s): 25 ms of host time per attention call, 82% of the step. Training ran at 138 audio-s/s with
cuDNN attention and 481 without. Flash and memory-efficient attention have no per-shape setup, so we
leave cuDNN out and let PyTorch choose among the others. On CPU nothing changes.
(The cuDNN frontend's dynamic-shape graphs would remove the cost, but PyTorch does not use them for
SDPA.)
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

SPEECH_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def speech_attention(device: torch.device | str) -> AbstractContextManager:
    """A context in which SDPA avoids cuDNN on CUDA (see the module doc); a no-op elsewhere."""
    if torch.device(device).type != "cuda":
        return nullcontext()
    return sdpa_kernel(SPEECH_BACKENDS)
