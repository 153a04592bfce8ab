"""From a recipe's `model` and `data` sections to a model, its processors and the data loaders' pieces."""

from __future__ import annotations

import logging
from typing import Any

from speeched.data.collator import SpeechCollator
from speeched.data.records import Utterance
from speeched.modeling.compose import ComposeSpec, compose
from speeched.modeling.ctc import build_ctc_vocab
from speeched.modeling.finetune import apply_finetune
from speeched.modeling.model_dir import LoadedModel, load_model_dir
from speeched.modeling.prompting import apply_prompt, decoder_prompt, prompt_spec, resolve_prompt

logger = logging.getLogger("speeched")

COMPOSE_EXTENSIONS = (
    "coupling",
    "adaptor_layers",
    "adaptor_stride",
    "projector",
    "layer_weighting",
    "prompt",
)


def build_model(recipe: Any, train_texts: list[str] | None = None) -> LoadedModel:
    """Load a model directory (`model.path`) or compose one from `model.encoder` + `model.decoder`.

    A CTC head asked for by the recipe (`ctc_weight > 0`) but missing from the model is added here, its
    vocabulary built from the training transcripts.
    """
    m = recipe.model
    if m.path:
        loaded = load_model_dir(m.path)
        cfg = loaded.model.config
        for key in COMPOSE_EXTENSIONS:
            wanted = getattr(m, key)
            if wanted is not None and getattr(cfg, key) != wanted:
                raise ValueError(
                    f"model.{key}: the recipe asks for {wanted!r} but the model at {m.path} was built with "
                    f"{getattr(cfg, key)!r}; architecture options are fixed at `speeched init` (remove the key, "
                    "or compose from model.encoder + model.decoder)"
                )
    else:
        extensions = {k: getattr(m, k) for k in COMPOSE_EXTENSIONS if getattr(m, k) is not None}
        decoder_options = dict(m.decoder_options)
        if m.decoder_layers is not None:
            decoder_options["num_hidden_layers"] = m.decoder_layers
        loaded = compose(
            ComposeSpec(
                encoder=m.encoder,
                decoder=m.decoder,
                tokenizer=m.tokenizer,
                feature_extractor=m.feature_extractor,
                encoder_options=dict(m.encoder_options),
                decoder_options=decoder_options,
                extensions=extensions,
                trust_remote_code=m.trust_remote_code,
            )
        )
    if m.ctc_weight > 0:
        model = loaded.model
        if not model.config.ctc_vocab:
            if not train_texts:
                raise ValueError(
                    "model.ctc_weight > 0 needs training transcripts to build the CTC vocabulary"
                )
            model.add_ctc_head(build_ctc_vocab(train_texts, model.config.ctc_units))
        model.config.ctc_weight = float(m.ctc_weight)
    apply_recipe_prompt(recipe, loaded)
    return loaded


def apply_recipe_prompt(recipe: Any, loaded: LoadedModel) -> None:
    """Resolve the recipe's `languages` against the tokenizer and store the prompt in the model config.

    The recipe's values override what the model directory was initialised with (`speeched init --tgt-lang`),
    so a model keeps its defaults unless the recipe says otherwise.
    """
    lang = recipe.languages
    have = prompt_spec(loaded.model)
    explicit = "prompt_style" in lang.model_fields_set
    spec = resolve_prompt(
        loaded.tokenizer,
        task=recipe.task,
        style=lang.prompt_style if explicit or have.style == "none" else have.style,
        src_lang=lang.src_lang or have.src_lang,
        tgt_lang=lang.tgt_lang or have.tgt_lang,
        template=lang.prompt_template or have.template,
    )
    apply_prompt(loaded.model, loaded.tokenizer, spec)


def training_collator(
    model: Any, tokenizer: Any, feature_extractor: Any, task: str, normalize: Any = None
) -> Any:
    """The training collator, with the model's own decoder prompt (the same builder eval/transcribe use)."""
    prompt = decoder_prompt(model, tokenizer)
    cfg = model.config
    return SpeechCollator(
        feature_extractor,
        tokenizer,
        task=task,
        eos_token_id=cfg.eos_token_id,
        normalize_target=normalize,
        decoder_prompt=prompt.for_utterance if prompt.active else None,
        decoder_start_token_id=cfg.decoder_start_token_id,
        pad_token_id=cfg.pad_token_id,
        prefix_coupling=cfg.coupling == "prefix",
    )


def apply_finetune_recipe(model: Any, recipe: Any, world_size: int) -> None:
    """The recipe's `finetune` (LoRA, LNA, frozen parts), frozen embeddings and feature encoder, DDP-safe
    layerdrop and gradient checkpointing, applied to a freshly built model."""
    r = recipe
    if r.finetune.method != "full":
        # First: apply_finetune sets requires_grad on every parameter.
        lo = r.finetune.lora
        parts = {"decoder": ("decoder",), "encoder": ("encoder",), "both": ("encoder", "decoder")}[
            lo.apply_to
        ]
        lora = None
        if r.finetune.method == "lora":
            lora = {"r": lo.r, "alpha": lo.alpha, "dropout": lo.dropout, "parts": parts}
            if lo.target_modules:
                lora["target_modules"] = lo.target_modules
        apply_finetune(model, r.finetune.method, lora)
    if r.train.freeze_feature_encoder == "always":
        model.freeze_feature_encoder()
    if r.finetune.freeze_embeddings:
        for emb in (model.decoder.get_input_embeddings(), model.decoder.get_output_embeddings()):
            for p in emb.parameters() if emb is not None else ():
                p.requires_grad = False
    ddp_safe_defaults(model, world_size)
    if r.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def ddp_safe_defaults(model: Any, world_size: int) -> list[str]:
    """Under DDP, layers skipped at random (encoder/decoder layerdrop) leave parameters without gradients on
    some ranks and hang or break the all-reduce: switch layerdrop off and say so. Returns what was changed."""
    changed: list[str] = []
    if world_size <= 1:
        return changed
    for half in ("encoder", "decoder"):
        cfg = getattr(model.config, half)
        for key in ("layerdrop", "encoder_layerdrop", "decoder_layerdrop"):
            if getattr(cfg, key, 0.0):
                setattr(cfg, key, 0.0)
                changed.append(f"{half}.{key}")
    if changed:
        logger.warning(
            "multi-process training: %s set to 0 (layerdrop breaks DDP's gradient sync)", ", ".join(changed)
        )
    return changed


def target_texts(utterances: list[Utterance], task: str) -> list[str]:
    return [t for u in utterances if (t := u.target(task))]
