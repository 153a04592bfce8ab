"""Compose a model from two pretrained halves: the library function behind `speeched init`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from speeched.modeling.model_dir import LoadedModel, load_feature_extractor, save_model_dir

logger = logging.getLogger("speeched")

EXTENSION_KEYS = (
    "coupling",
    "adaptor_layers",
    "adaptor_stride",
    "adaptor_kernel_size",
    "projector",
    "layer_weighting",
    "ctc_weight",
    "ctc_vocab",
    "ctc_units",
    "spec_augment",
    "prompt",
)


def parse_options(pairs: list[str] | None, what: str) -> dict[str, Any]:
    """`k=v` strings → dict; values parsed as YAML scalars (2 → int, true → bool, [1,2] → list)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"{what} {pair!r} is not key=value (e.g. {what} num_hidden_layers=2)")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


@dataclass
class ComposeSpec:
    """Everything `init` (or a recipe's `model` section) says about how to build a model."""

    encoder: str
    decoder: str
    tokenizer: str | None = None
    feature_extractor: str | None = None
    encoder_options: dict[str, Any] = field(default_factory=dict)
    decoder_options: dict[str, Any] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    trust_remote_code: bool = False
    # speeched.modeling.prompting.resolve_prompt arguments: task, style, src_lang, tgt_lang, template
    prompt: dict[str, Any] = field(default_factory=dict)


def compose(spec: ComposeSpec) -> LoadedModel:
    """Build model + tokenizer + feature extractor from two pretrained halves."""
    from transformers import AutoTokenizer

    from speeched.modeling.model import SpeechEncoderDecoderModel

    unknown = set(spec.extensions) - set(EXTENSION_KEYS)
    if unknown:
        raise ValueError(f"unknown model option(s) {sorted(unknown)}; known: {list(EXTENSION_KEYS)}")
    tokenizer_source = spec.tokenizer or spec.decoder
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"cannot load a tokenizer from {tokenizer_source!r}: pass --tokenizer DIR (a folder with tokenizer "
            f"files). Original error: {err}"
        ) from err
    kwargs: dict[str, Any] = {f"encoder_{k}": v for k, v in spec.encoder_options.items()}
    kwargs.update({f"decoder_{k}": v for k, v in spec.decoder_options.items()})
    kwargs.update(spec.extensions)
    kwargs.update(spec.generation)
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        spec.encoder, spec.decoder, tokenizer=tokenizer, trust_remote_code=spec.trust_remote_code, **kwargs
    )
    if model.config.coupling == "prefix" and model.config.prompt:
        from speeched.modeling.prefix import set_prompt

        set_prompt(model, tokenizer, model.config.prompt)  # the prompt's token ids travel with the config
    from speeched.modeling.prompting import apply_prompt, resolve_prompt

    # The language prefix is checked against the tokenizer now: a wrong mBART code fails at init.
    apply_prompt(model, tokenizer, resolve_prompt(tokenizer, **spec.prompt))
    feature_extractor = load_feature_extractor(spec.feature_extractor or spec.encoder, model.config.encoder)
    model.init_report = build_init_report(model)
    return LoadedModel(model=model, tokenizer=tokenizer, feature_extractor=feature_extractor, path=Path("."))


EXTENSION_MODULES = ("enc_to_dec_proj", "length_adaptor", "layer_weighting", "ctc_head")


def build_init_report(model: Any) -> dict[str, Any]:
    """Which parameters came from a checkpoint and which were randomly initialised, per part.

    The training loop gives randomly initialised parameters the learning rate of new parts (a random
    LM-head transform trained at the pretrained decoder's 1e-4 learns ~10x too slowly).
    """
    info = getattr(model, "load_info", {}) or {}
    random_names: set[str] = set()
    halves: dict[str, Any] = {}
    for half in ("encoder", "decoder"):
        module = getattr(model, half)
        names = [f"{half}.{n}" for n, _ in module.named_parameters()]
        hi = info.get(half)
        if hi is None:
            halves[half] = {"source": "given as a module", "parameters": len(names), "random_init": 0}
            continue
        if hi.random_init:
            new = set(names)
        else:
            missing = {f"{half}.{k}" for k in hi.missing_keys}
            new = {n for n in names if n in missing}
        random_names |= new
        halves[half] = {
            "source": hi.source,
            "parameters": sum(p.numel() for n, p in model.named_parameters() if n in names),
            "random_init": sum(p.numel() for n, p in model.named_parameters() if n in new),
        }
    for n, _ in model.named_parameters():
        if n.split(".")[0] in EXTENSION_MODULES:
            random_names.add(n)
    check_pretrained_loaded(model, info, random_names)
    return {"parts": halves, "random_init_parameters": sorted(random_names)}


MOSTLY_NOT_LOADED = 0.5


def check_pretrained_loaded(model: Any, info: dict[str, Any], random_names: set[str]) -> None:
    """Stop when a *pretrained* half came mostly from random init: almost always a key-prefix mismatch
    (a checkpoint saved under another class), which would otherwise train from scratch in silence.
    Cross-attention is excluded: it is new by design."""
    from speeched.modeling.halves import CROSS_ATTENTION_NAMES

    for half in ("encoder", "decoder"):
        hi = info.get(half)
        if hi is None or hi.random_init:
            continue
        params = {
            n: p.numel()
            for n, p in model.named_parameters()
            if n.startswith(half + ".") and not any(k in n.lower() for k in CROSS_ATTENTION_NAMES)
        }
        total = sum(params.values())
        missing = sum(v for n, v in params.items() if n in random_names)
        if total and missing / total > MOSTLY_NOT_LOADED:
            examples = [n for n in params if n in random_names][:3]
            raise ValueError(
                f"the {half} checkpoint {hi.source!r} left {100 * missing / total:.0f}% of the {half}'s parameters "
                f"randomly initialised (e.g. {examples}): its weight names do not match "
                f"{type(getattr(model, half)).__name__}. Check that it is a checkpoint of this architecture; to "
                "train from scratch on purpose, pass a directory holding only its config.json."
            )


def format_init_report(report: dict[str, Any]) -> str:
    """The load report as the preflight prints it."""
    lines = ["load report (parameters from the checkpoint / randomly initialised):"]
    for half, part in report.get("parts", {}).items():
        total, rand = part.get("parameters", 0), part.get("random_init", 0)
        lines.append(
            f"  {half:8s} {total - rand:>12,d} loaded / {rand:>11,d} random   from {part.get('source', '?')}"
        )
    new = [n for n in report.get("random_init_parameters", []) if n.split(".")[0] in EXTENSION_MODULES]
    if new:
        modules = sorted({n.split(".")[0] for n in new})
        lines.append(f"  new parts (random init, lr_new): {', '.join(modules)}")
    return "\n".join(lines)


def init_model(spec: ComposeSpec, out: str | Path) -> LoadedModel:
    """Compose and write a self-describing model directory to `out`."""
    loaded = compose(spec)
    composed_from = {
        "encoder": spec.encoder,
        "decoder": spec.decoder,
        "encoder_options": spec.encoder_options,
        "decoder_options": spec.decoder_options,
        "extensions": {k: v for k, v in spec.extensions.items() if k != "ctc_vocab"},
    }
    loaded.path = save_model_dir(out, loaded.model, loaded.tokenizer, loaded.feature_extractor, composed_from)
    return loaded
