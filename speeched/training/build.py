"""From a recipe's `model` and `data` sections to a model, its processors and the data loaders' pieces."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from speeched.data.records import Utterance
from speeched.modeling.model_dir import LoadedModel

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
    from speeched.modeling.compose import ComposeSpec, compose
    from speeched.modeling.model_dir import load_model_dir

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
            from speeched.modeling.ctc import build_ctc_vocab

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
    from speeched.modeling.prompting import apply_prompt, prompt_spec, resolve_prompt

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
    from speeched.data.collator import SpeechCollator
    from speeched.modeling.prompting import decoder_prompt

    prompt = decoder_prompt(model, tokenizer)
    cfg = model.config
    return SpeechCollator(
        feature_extractor,
        tokenizer,
        task=task,
        eos_token_id=cfg.eos_token_id,
        normalize_target=normalize,
        decoder_prefix=prompt.for_utterance if prompt.active else None,
        decoder_start_token_id=cfg.decoder_start_token_id,
        pad_token_id=cfg.pad_token_id,
        prefix_coupling=cfg.coupling == "prefix",
    )


@dataclass
class FeatureCache:
    """Per-utterance features computed once (log-mel extraction costs as much as a small model's step on CPU)."""

    features: dict[str, torch.Tensor]


class CachedFeatureCollator:
    """Pads cached per-utterance features; labels and targets come from the wrapped `SpeechCollator`.

    Per-utterance extraction then padding equals batch extraction for wav2vec2 (per-utterance
    normalisation) and Speech2Text (per-utterance CMVN over valid frames) feature extractors.
    """

    def __init__(self, base: Any, cache: dict[str, torch.Tensor]) -> None:
        self.base = base
        self.cache = cache

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        feats = [self.cache[it["id"]] for it in items]
        lengths = [f.shape[0] for f in feats]
        width = max(lengths)
        shape = (len(feats), width, *feats[0].shape[1:])
        x = torch.zeros(shape, dtype=feats[0].dtype)
        mask = torch.zeros(len(feats), width, dtype=torch.long)
        for i, f in enumerate(feats):
            x[i, : f.shape[0]] = f
            mask[i, : f.shape[0]] = 1
        utts: list[Utterance] = [it["utterance"] for it in items]
        batch: dict[str, Any] = {self.base.input_name: x}
        if self.base.return_attention_mask:
            batch["attention_mask"] = mask
        batch.update(self.base.label_inputs(utts))
        batch["targets"] = self.base.targets(utts)
        norm = self.base.normalize_target
        batch["transcripts"] = [norm(u.text) if norm else u.text for u in utts]
        batch["ids"] = [it["id"] for it in items]
        batch["audio_seconds"] = float(sum(u.duration or 0.0 for u in utts))
        return batch


class CachedItems(torch.utils.data.Dataset):
    """Items without audio (features are cached): keeps DataLoader semantics and the sampler's indices."""

    def __init__(self, utterances: list[Utterance]) -> None:
        self.utterances = utterances

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> dict[str, Any]:
        u = self.utterances[i]
        return {"id": u.id, "utterance": u}


def extract_features(
    dataset: Any, feature_extractor: Any, input_name: str, progress: bool
) -> dict[str, torch.Tensor]:
    from tqdm.auto import tqdm

    cache: dict[str, torch.Tensor] = {}
    for i in tqdm(range(len(dataset)), desc="extracting features", disable=not progress, leave=False):
        item = dataset[i]
        out = feature_extractor(
            [item["array"]],
            sampling_rate=feature_extractor.sampling_rate,
            return_tensors="pt",
            padding="longest",
        )
        cache[item["id"]] = out[input_name][0]
    return cache


def target_texts(utterances: list[Utterance], task: str) -> list[str]:
    return [t for u in utterances if (t := u.target(task))]


def ensure_dir(path: str | Path) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p
