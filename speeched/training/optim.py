"""Optimizer with per-group learning rates (new parts / pretrained encoder / pretrained decoder) and schedule.

Warm-started models need different step sizes: parts that start from scratch (projector, adaptor,
cross-attention, CTC head) learn fast at ~1e-3 while pretrained layers only need nudging (~1e-4).
They also benefit from staged unfreezing (`optim.unfreeze`): the new parts train alone first so the
cross-attention aligns before the random gradients reach the pretrained halves. Each param group
gets its own LambdaLR multiplier = base schedule(step) x gate(group, step); the gate is a pure
function of the step, so a resumed run restores it from the scheduler's step count alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
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


IMPLEMENTATIONS = (
    "auto",
    "fused",
    "foreach",
    "for-loop",
)  # = OptimConfig.implementation (schema imports no torch)
try:  # torch's own list of device types with fused optimizer kernels (private, so guarded)
    from torch.optim.optimizer import _get_fused_kernels_supported_devices as _fused_devices
except ImportError:  # a torch without the helper: the two device types every fused kernel has
    _fused_devices = None


def fused_unsupported(params: Iterable[torch.Tensor]) -> str | None:
    """None when torch has a fused optimizer kernel for every parameter (a dense floating-point tensor on a
    device type torch lists for fused kernels: cpu, cuda, mps, xpu, ...); else what the first one lacks."""
    devices = set(_fused_devices()) if _fused_devices is not None else {"cpu", "cuda"}
    params = list(params)
    if not params:
        return "no parameters"
    for p in params:
        if type(p) not in (torch.Tensor, nn.Parameter) or p.is_sparse:
            return f"a {type(p).__name__} parameter (fused kernels take plain dense tensors)"
        if not p.is_floating_point():
            return f"a {p.dtype} parameter (fused kernels take floating-point tensors)"
        if p.device.type not in devices:
            return f"a parameter on {p.device.type} (fused kernels: {', '.join(sorted(devices))})"
    return None


def implementation_options(params: Iterable[torch.Tensor], implementation: str = "auto") -> dict[str, bool]:
    """The `fused`/`foreach` arguments of a torch optimizer for `implementation`.

    auto: the fused kernel (one kernel for all parameters; the CPU step is ~6x faster than the for-loop,
    bench/bench_optimizer.py; transformers' Trainer default `adamw_torch_fused` on torch >= 2.8) wherever
    torch has it for these parameters, else torch's own default (foreach on CUDA, the for-loop elsewhere);
    fused: the fused kernel or an error saying why not; foreach / for-loop: those, never fused."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown optimizer implementation {implementation!r}; one of {', '.join(IMPLEMENTATIONS)}"
        )
    if implementation == "foreach":
        return {"foreach": True}
    if implementation == "for-loop":
        return {"foreach": False}
    problem = fused_unsupported(params)
    if problem is None:
        return {"fused": True}
    if implementation == "fused":
        raise ValueError(
            f"fused optimizer kernel not available for {problem}; use implementation auto or foreach"
        )
    return {}


def build_optimizer(
    groups: list[dict[str, Any]],
    kind: str,
    betas: tuple[float, float],
    eps: float,
    implementation: str = "auto",
) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD (momentum 0.9) over `groups`, with torch's fused kernel where it has one for the
    parameters (`implementation`, see implementation_options)."""
    classes = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    if kind not in classes:
        raise ValueError(f"unknown optimizer {kind!r}")
    options = implementation_options((p for g in groups for p in g["params"]), implementation)
    if kind == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, **options)
    return classes[kind](groups, betas=betas, eps=eps, **options)


def base_schedule(kind: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The lr multiplier of transformers' get_scheduler "cosine" / "linear" / "constant_with_warmup",
    written out (same float operations, so the same numbers) because gating needs it per group."""
    total = max(1, total_steps)

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return float(step) / float(max(1, warmup_steps))
        if kind == "constant":
            return 1.0
        if kind == "linear":
            return max(0.0, float(total - step) / float(max(1, total - warmup_steps)))
        if kind == "cosine":
            progress = float(step - warmup_steps) / float(max(1, total - warmup_steps))
            num_cycles = 0.5  # transformers' default: half a cosine, from 1 down to 0
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
        raise ValueError(f"unknown scheduler {kind!r}")

    return multiplier


def unfreeze_gate(step: int, start: int, rewarmup: int) -> float:
    """0 before `start`; then a linear ramp reaching 1 on the `rewarmup`-th step (never 0 once unfrozen,
    so the first unfrozen step already moves the group). Groups starting at 0 use the base warmup only."""
    if start <= 0:
        return 1.0
    if step < start:
        return 0.0
    if rewarmup <= 0:
        return 1.0
    return min(1.0, float(step - start + 1) / float(rewarmup))


def frozen_groups(starts: Mapping[str, int], step: int) -> set[str]:
    """Groups that must not move at optimizer step `step` (0-based: the step about to be taken)."""
    return {group for group, start in starts.items() if step < start}


def format_lr(lr: float) -> str:
    """1e-4, 5e-5, 2.5e-4: short enough for a log line."""
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def unfreeze_stages(
    starts: Mapping[str, int],
    lrs: Mapping[str, float],
    rewarmup: int,
    present: Iterable[str] | None = None,
    percent: bool = False,
) -> list[str]:
    """One line per group in start order ("decoder from step 500 (lr 1e-4, re-warmup 200 steps)"), for the
    run's log and the dry-run plan. `present`: the groups that have trainable parameters; `percent`: starts
    are percentages of the total steps (a preset before the total is known)."""
    keep = set(starts) if present is None else set(present)
    lines = []
    for group in sorted((g for g in starts if g in keep), key=lambda g: (starts[g], g)):
        start = starts[group]
        where = f"{start}% of the steps" if percent and start else f"step {start}"
        warm = f", re-warmup {rewarmup} steps" if start and rewarmup else ""
        lines.append(f"{group} from {where} (lr {format_lr(lrs[group])}{warm})")
    return lines


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str,
    warmup_steps: int,
    total_steps: int,
    starts: Mapping[str, int] | None = None,
    rewarmup: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """One LambdaLR multiplier per param group: base schedule x the group's unfreeze gate. Closures (not
    callable objects) so the scheduler's state_dict holds only its step count, as before."""
    base = base_schedule(kind, warmup_steps, total_steps)
    starts = starts or {}

    def gated(start: int) -> Callable[[int], float]:
        if start <= 0:
            return base  # exactly the ungated schedule: `none` stays bit-identical

        def multiplier(step: int) -> float:
            return base(step) * unfreeze_gate(step, start, rewarmup)

        return multiplier

    lambdas = [gated(starts.get(g.get("name", ""), 0)) for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def drop_frozen_gradients(optimizer: Any, starts: Mapping[str, int], step: int) -> None:
    """Staged unfreezing (optim.unfreeze): a group before its start step gets no update at all. Its
    gradients were computed (DDP's all-reduce stays identical on every rank) and are dropped here, before
    clipping, so they neither shrink the clipped update of the others nor reach AdamW, which skips a None
    grad (no weight decay, no moment update). The lr gate is 0 for these steps as well."""
    frozen = frozen_groups(starts, step)
    for group in optimizer.param_groups if frozen else ():
        if group.get("name") in frozen:
            for p in group["params"]:
                p.grad = None


def unfreezing_lines(
    optimizer: Any, starts: Mapping[str, int], step: int, lrs: Mapping[str, float], warmup: int
) -> list[str]:
    """One line per group taking its first step now, e.g. `step 500: decoder unfreezes (lr 1e-4, ...)`."""
    if not step or step not in starts.values():
        return []
    present = {g.get("name") for g in optimizer.param_groups}
    rewarm = f", re-warmup {warmup} steps" if warmup else ""
    return [
        f"step {start}: {name} unfreezes (lr {format_lr(lrs[name])}{rewarm})"
        for name, start in starts.items()
        if start == step and name in present
    ]


def parameters_without_gradient(model: nn.Module) -> list[str]:
    """Trainable parameters that got no gradient (after a backward): they would never train."""
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
