"""Optimizer with per-group learning rates (new parts / pretrained encoder / pretrained decoder) and schedule.

Warm-started models need different step sizes: parts that start from scratch (projector, adaptor,
cross-attention, CTC head) learn fast at ~1e-3 while pretrained layers only need nudging (~1e-4).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

NEW_PART_MARKERS = (
    "enc_to_dec_proj",
    "length_adaptor",
    "layer_weighting",
    "ctc_head",
    "crossattention",
    "cross_attn",
    "encoder_attn",
    "lora_",
)
NO_DECAY_MARKERS = ("bias", "LayerNorm", "layer_norm", "layernorm", "norm.weight", "logits")


def parameter_group(name: str, random_init: set[str] | frozenset[str] = frozenset()) -> str:
    """'new', 'encoder' or 'decoder' for a parameter name of SpeechEncoderDecoderModel.

    New = added by the composition (cross-attention, projector, adaptor, CTC head, LoRA) or randomly
    initialised when composed (listed in the model's init report, e.g. a random-init encoder or an LM-head
    transform the checkpoint did not have).
    """
    if name in random_init or any(m in name for m in NEW_PART_MARKERS):
        return "new"
    if name.startswith("encoder."):
        return "encoder"
    return "decoder"


def build_param_groups(
    model: nn.Module,
    lrs: dict[str, float],
    weight_decay: float,
    random_init: set[str] | frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = parameter_group(name, random_init)
        decay = not any(m in name for m in NO_DECAY_MARKERS) and param.dim() > 1
        buckets.setdefault((group, decay), []).append(param)
    groups = []
    for (group, decay), params in sorted(buckets.items()):
        groups.append(
            {
                "params": params,
                "lr": lrs[group],
                "weight_decay": weight_decay if decay else 0.0,
                "name": group,
            }
        )
    return groups


def build_optimizer(groups: list[dict[str, Any]], kind: str, betas: tuple[float, float], eps: float):
    if kind == "adamw":
        return torch.optim.AdamW(groups, betas=betas, eps=eps)
    if kind == "adam":
        return torch.optim.Adam(groups, betas=betas, eps=eps)
    if kind == "sgd":
        return torch.optim.SGD(groups, momentum=0.9)
    raise ValueError(f"unknown optimizer {kind!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup_steps: int, total_steps: int):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[kind]
    return get_scheduler(
        name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=max(1, total_steps)
    )
