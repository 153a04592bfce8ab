"""The token cross-entropy both couplings train with (cross-attention in model.py, prefix in prefix.py)."""

from __future__ import annotations

import torch
from torch import nn


def token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over labels != -100 (in fp32) and their count.

    The mean of this equals the reference's `CrossEntropyLoss()`; keeping sum and count apart lets the
    training loop divide by the token count of the *whole* update across accumulation and processes.
    """
    flat_labels = labels.reshape(-1)
    ce = nn.functional.cross_entropy(
        logits.reshape(-1, vocab_size).float(), flat_labels, ignore_index=-100, reduction="sum"
    )
    return ce, (flat_labels != -100).sum()
