"""Which parameters train: full fine-tuning, LNA, LoRA (through peft) or a frozen encoder.

Parameter-efficient methods matter because the two halves are usually large pretrained models while the
parts speeched adds between them (adaptor, projector, layer weighting, CTC head, cross-attention) are
random: those new parts must always train, or the model can never learn to connect the halves.

- "full": everything trains.
- "lna" (Li et al. 2021, "Multilingual speech translation from efficient finetuning of pretrained
  models"): only the encoder's and decoder's LayerNorms and the decoder's encoder-attention
  (cross-attention) train, plus the new parts.
- "lora": low-rank adapters (peft) on the attention projections of the decoder and/or encoder; the base
  weights freeze, the new parts train. `merge_lora` folds the adapters into the base weights before
  `save_pretrained` / export (an unmerged model's state dict has peft's names, which nothing else loads);
  `save_lora_adapters` writes just the adapters.
- "freeze_encoder": the whole encoder is frozen, everything else trains.

`apply_finetune` first makes every parameter trainable, so it is idempotent and methods do not stack.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn

from speeched.modeling.halves import CROSS_ATTENTION_NAMES
from speeched.modeling.model_dir import match_umask

logger = logging.getLogger("speeched")

METHODS = ("full", "lna", "lora", "freeze_encoder")
NEW_PART_PREFIXES = ("length_adaptor", "enc_to_dec_proj", "layer_weighting", "ctc_head")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"

# Attention projections LoRA adapts by default, per model family (query and value, as in the LoRA paper).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "electra": ("query", "value"),
    "gpt2": ("c_attn",),
    "gpt_neo": ("q_proj", "v_proj"),
    "gptj": ("q_proj", "v_proj"),
    "opt": ("q_proj", "v_proj"),
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj"),
    "phi": ("q_proj", "v_proj"),
    "bart": ("q_proj", "v_proj"),
    "mbart": ("q_proj", "v_proj"),
    "marian": ("q_proj", "v_proj"),
    "wav2vec2": ("q_proj", "v_proj"),
    "wav2vec2-conformer": ("linear_q", "linear_v"),
    "hubert": ("q_proj", "v_proj"),
    "wavlm": ("q_proj", "v_proj"),
    "data2vec-audio": ("q_proj", "v_proj"),
    "speech_to_text": ("q_proj", "v_proj"),
    "whisper": ("q_proj", "v_proj"),
}
DEFAULT_LORA: dict[str, Any] = {
    "r": 8,
    "alpha": 16,
    "dropout": 0.05,
    "parts": ("decoder",),
    "target_modules": None,
}


def is_cross_attention(name: str) -> bool:
    return any(k in name.lower() for k in CROSS_ATTENTION_NAMES)


def is_new_part(name: str) -> bool:
    """Parameters speeched adds between the halves (random at composition): always trainable."""
    return name.split(".", 1)[0] in NEW_PART_PREFIXES


def is_layer_norm(module: nn.Module) -> bool:
    cls = type(module).__name__
    return isinstance(module, nn.LayerNorm) or "LayerNorm" in cls or "RMSNorm" in cls


def _set_all(model: nn.Module, trainable: bool) -> None:
    for p in model.parameters():
        p.requires_grad = trainable


def _unfreeze_new_parts(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if is_new_part(name) or (name.startswith("decoder.") and is_cross_attention(name)):
            p.requires_grad = True


def apply_lna(model: nn.Module) -> None:
    _set_all(model, False)
    for half in ("encoder", "decoder"):
        for module in getattr(model, half).modules():
            if is_layer_norm(module):
                for p in module.parameters(recurse=False):
                    p.requires_grad = True
    if not any(is_cross_attention(n) for n, _ in model.decoder.named_parameters()):
        logger.warning(
            "LNA: the decoder has no cross-attention (prefix coupling): only LayerNorms train in it"
        )
    _unfreeze_new_parts(model)


def lora_target_names(module: nn.Module, targets: tuple[str, ...] | list[str]) -> list[str]:
    """Full names of the modules LoRA adapts: those whose last name part is a target, cross-attention excluded
    (it is new and trains fully)."""
    return [
        name
        for name, _ in module.named_modules()
        if name and name.rsplit(".", 1)[-1] in targets and not is_cross_attention(name)
    ]


def apply_lora(model: nn.Module, lora: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Inject LoRA adapters (peft) into the chosen halves; returns the adapted module names per half.

    `lora`: r, alpha, dropout, parts (("decoder",), ("encoder",) or both) and target_modules (a list, or a
    dict per half, default per model family from LORA_TARGETS).
    """
    opts = {**DEFAULT_LORA, **(lora or {})}
    unknown = set(opts) - set(DEFAULT_LORA)
    if unknown:
        raise ValueError(f"unknown LoRA option(s) {sorted(unknown)}; known: {sorted(DEFAULT_LORA)}")
    _set_all(model, False)
    adapted: dict[str, list[str]] = {}
    for half in opts["parts"]:
        module = getattr(model, half)
        targets = opts["target_modules"]
        if isinstance(targets, dict):
            targets = targets.get(half)
        model_type = getattr(module.config, "model_type", "")
        if targets is None:
            if model_type not in LORA_TARGETS:
                raise ValueError(
                    f"no default LoRA target modules for {half} type {model_type!r}: pass "
                    "lora={'target_modules': {'"
                    + half
                    + "': ['q_proj', 'v_proj']}} (the attention layers' names)"
                )
            targets = LORA_TARGETS[model_type]
        names = lora_target_names(module, tuple(targets))
        if not names:
            raise ValueError(
                f"LoRA target modules {list(targets)} match nothing in the {half} ({model_type})"
            )
        config = LoraConfig(
            r=int(opts["r"]),
            lora_alpha=int(opts["alpha"]),
            lora_dropout=float(opts["dropout"]),
            target_modules=names,
            fan_in_fan_out=model_type == "gpt2",  # GPT-2's Conv1D stores weights transposed
        )
        inject_adapter_in_model(config, module)
        adapted[half] = names
    _set_all(model, False)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad = True
    _unfreeze_new_parts(model)
    model.lora_settings = {
        "r": int(opts["r"]),
        "alpha": int(opts["alpha"]),
        "dropout": float(opts["dropout"]),
        "target_modules": adapted,
    }
    return adapted


def _lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA adapter into its base weight and put the plain layer back; returns how many merged.

    Afterwards the model has the original parameter names again, so `save_pretrained` writes a normal
    checkpoint that speeched (and, without other extensions, transformers) loads.
    """
    layers = _lora_layers(model)
    for name, layer in layers:
        layer.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    if hasattr(model, "lora_settings"):
        del model.lora_settings
    return len(layers)


def save_lora_adapters(model: nn.Module, out: str | Path) -> Path:
    """Write only the adapters (and the trainable new parts they need) as safetensors + their settings."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    tensors = {
        n: p.detach().contiguous().cpu()
        for n, p in model.named_parameters()
        if "lora_" in n or (p.requires_grad and "base_layer" not in n)
    }
    if not any("lora_" in n for n in tensors):
        raise ValueError("the model has no LoRA adapters: call apply_finetune(model, 'lora') first")
    save_file(tensors, str(root / ADAPTER_WEIGHTS))
    match_umask(root / ADAPTER_WEIGHTS)  # safetensors writes 0600
    settings = getattr(model, "lora_settings", {})
    (root / ADAPTER_CONFIG).write_text(json.dumps(settings, indent=2) + "\n")
    return root / ADAPTER_WEIGHTS


def load_lora_adapters(model: nn.Module, path: str | Path) -> None:
    """Inject adapters with the saved settings and load their weights (and the saved new parts)."""
    root = Path(path)
    settings = json.loads((root / ADAPTER_CONFIG).read_text())
    targets = settings["target_modules"]
    apply_lora(
        model,
        {
            "r": settings["r"],
            "alpha": settings["alpha"],
            "dropout": settings["dropout"],
            "parts": tuple(targets),
            "target_modules": {
                half: sorted({n.rsplit(".", 1)[-1] for n in names}) for half, names in targets.items()
            },
        },
    )
    missing = model.load_state_dict(load_file(str(root / ADAPTER_WEIGHTS)), strict=False)
    if missing.unexpected_keys:
        raise ValueError(f"adapter file has parameters this model lacks: {missing.unexpected_keys[:5]}")


def part_of(name: str) -> str:
    """Coarse part a parameter belongs to, for the counts."""
    if "lora_" in name:
        return "lora"
    head = name.split(".", 1)[0]
    if head in NEW_PART_PREFIXES:
        return head
    if head == "decoder" and is_cross_attention(name):
        return "cross_attention"
    return head


def parameter_counts(model: nn.Module) -> dict[str, Any]:
    """{"trainable": n, "frozen": m, "by_part": {part: {"trainable": .., "frozen": ..}}}."""
    counts: dict[str, Any] = {"trainable": 0, "frozen": 0, "by_part": {}}
    for name, p in model.named_parameters():
        key = "trainable" if p.requires_grad else "frozen"
        counts[key] += p.numel()
        part = counts["by_part"].setdefault(part_of(name), {"trainable": 0, "frozen": 0})
        part[key] += p.numel()
    return counts


def counts_summary(counts: dict[str, Any]) -> str:
    """One line for the log: trainable vs frozen, and which parts train."""
    total = counts["trainable"] + counts["frozen"]
    share = 100.0 * counts["trainable"] / max(total, 1)
    parts = ", ".join(
        f"{k} {v['trainable'] / 1e6:.2f}M" for k, v in counts["by_part"].items() if v["trainable"]
    )
    return (
        f"trainable {counts['trainable'] / 1e6:.2f}M / {total / 1e6:.2f}M parameters ({share:.1f}%), "
        f"frozen {counts['frozen'] / 1e6:.2f}M; training: {parts or 'nothing'}"
    )


def apply_finetune(
    model: nn.Module, method: str = "full", lora: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Set `requires_grad` for `method` (see the module docstring) and return `parameter_counts`."""
    if method not in METHODS:
        raise ValueError(f"unknown fine-tuning method {method!r}: choose one of {METHODS}")
    if lora is not None and method != "lora":
        raise ValueError(f"lora options were given but method={method!r}; use method='lora'")
    if _lora_layers(model) and method != "lora":
        raise ValueError("the model already has LoRA adapters: merge_lora(model) first")
    _set_all(model, True)
    if method == "lna":
        apply_lna(model)
    elif method == "lora":
        if _lora_layers(model):
            raise ValueError("the model already has LoRA adapters; apply LoRA once")
        apply_lora(model, lora)
    elif method == "freeze_encoder":
        _set_all(model.encoder, False)
    counts = parameter_counts(model)
    logger.info("fine-tuning %s: %s", method, counts_summary(counts))
    return counts


__all__ = [
    "LORA_TARGETS",
    "METHODS",
    "apply_finetune",
    "counts_summary",
    "load_lora_adapters",
    "merge_lora",
    "parameter_counts",
    "save_lora_adapters",
]
