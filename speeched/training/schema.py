"""The recipe schema: every key, its type, default and description, in one place.

Pydantic models only (no file reading, no error rendering, no torch): `speeched.training.recipe` loads
and validates a YAML file against `Recipe`, `speeched.training.recipe_errors` turns pydantic's errors
into one line per problem, and `scripts/gen_recipe_reference.py` renders docs/recipe-reference.md from
these classes. Longer than ~500 lines on purpose: splitting the sections would scatter the defaults a
reader looks up together.
"""

from __future__ import annotations

import difflib
import logging
import re
import string
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from speeched.data.augment import AugmentConfig
from speeched.data.config import Batching, DataSource, StrictModel
from speeched.modeling.prompting import TEMPLATE_FIELDS
from speeched.training.overrides import format_path

TASK_METRICS: dict[str, tuple[str, ...]] = {"asr": ("wer", "cer"), "st": ("bleu", "chrf")}
LOWER_IS_BETTER = {"wer": True, "cer": True, "loss": True, "bleu": False, "chrf": False}
DEFAULT_NORMALIZER = {"asr": "basic", "st": "none"}
# Staged unfreezing presets: group -> start, in percent of the total optimizer steps (groups not named
# start at step 0). Percentages, not fractions, so the start step is exact integer arithmetic.
UNFREEZE_PRESETS: dict[str, dict[str, int]] = {
    "none": {},
    "new-first": {"encoder": 10, "decoder": 10},
    "gradual": {"decoder": 10, "encoder": 30},
}
UNFREEZE_GROUPS = ("encoder", "decoder")  # the new parts always train from step 0


def _rules(problems: list[tuple[tuple[str | int, ...], str]]) -> None:
    """Raise several cross-field problems as one pydantic error; `RecipeError` splits them per key again."""
    if problems:
        detail = "; ".join(f"{format_path(p)}: {m}" for p, m in problems)
        raise PydanticCustomError("recipe_rules", "{detail}", {"detail": detail, "problems": problems})


# --------------------------------------------------------------------------------------------- schema


class ModelConfig(StrictModel):
    """Which model to train: a directory made by `speeched init`, or an encoder + decoder composed now.

    Architecture keys left null keep the model directory's setting (or, when composing, the
    reference architecture: cross-attention, no adaptor, projector only when widths differ).
    """

    path: str | None = Field(
        None, description="model directory made by `speeched init` (relative to the recipe)"
    )
    encoder: str | None = Field(
        None, description="pretrained speech encoder to compose with `decoder`: hub ID or dir"
    )
    decoder: str | None = Field(
        None, description="pretrained text decoder to compose with `encoder`: hub ID or dir"
    )
    encoder_options: dict[str, Any] = Field(
        default_factory=dict,
        description="encoder config overrides when composing, e.g. {mask_time_prob: 0.05}",
    )
    decoder_options: dict[str, Any] = Field(
        default_factory=dict, description="decoder config overrides when composing"
    )
    tokenizer: str | None = Field(
        None, description="tokenizer to use instead of the decoder's (when composing)"
    )
    feature_extractor: str | None = Field(
        None, description="feature extractor to use instead of the encoder's (when composing)"
    )
    coupling: Literal["cross_attention", "prefix"] | None = Field(
        None,
        description="cross_attention: decoder attends to speech; prefix: speech frames prepended to an LLM",
    )
    adaptor_layers: int | None = Field(
        None, ge=0, description="strided conv layers shrinking the encoder output"
    )
    adaptor_stride: int | None = Field(
        None, ge=1, description="stride of each adaptor layer (model default 2)"
    )
    projector: Literal["linear", "mlp"] | None = Field(None, description="encoder-to-decoder width projector")
    layer_weighting: bool | None = Field(None, description="learned softmax weights over all encoder layers")
    ctc_weight: float = Field(0.0, ge=0, lt=1, description="λ in loss = (1-λ)·CE + λ·CTC; 0 = no CTC head")
    decoder_layers: int | None = Field(
        None, ge=1, description="keep only the first N decoder layers; null = all"
    )
    trust_remote_code: bool = Field(False, description="allow hub models that ship their own Python code")
    prompt: str | None = Field(None, description="text prompt after the speech prefix (prefix coupling)")

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        composing = self.encoder is not None or self.decoder is not None
        if self.path is not None and composing:
            problems.append((("path",), "give either `path` or `encoder` + `decoder`, not both"))
        elif self.path is None and not composing:
            problems.append(
                (("path",), "missing: give `path` (a `speeched init` dir) or `encoder` + `decoder`")
            )
        elif composing:
            for key in ("encoder", "decoder"):
                if getattr(self, key) is None:
                    problems.append(((key,), "missing: `encoder` and `decoder` are composed together"))
        if self.path is not None:
            for key in ("encoder_options", "decoder_options", "tokenizer", "feature_extractor"):
                if key in self.model_fields_set and getattr(self, key):
                    problems.append(((key,), "only applies when composing from `encoder` + `decoder`"))
        _rules(problems)
        return self


class DataConfig(StrictModel):
    """Training and dev data, batching and target text clean-up."""

    train: list[DataSource] = Field(
        min_length=1, description="one or more sources; several are mixed by their `weight`"
    )
    dev: list[DataSource] = Field(
        default_factory=list,
        description="named dev sets, each scored separately (name defaults to file stem)",
    )
    batching: Batching = Field(default_factory=Batching, description="duration-bucketed batching")
    target_normalization: Literal["none", "lowercase", "strip_punctuation"] | list[tuple[str, str]] = Field(
        "none", description="applied to training targets: a preset or a list of [regex, replacement] rules"
    )
    on_bad_audio: Literal["skip", "error"] = Field(
        "skip", description="unreadable audio: count and skip, or stop"
    )
    feature_cache: bool = Field(False, description="cache extracted features on disk between epochs")
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig,
        description="training-time waveform augmentation (train sources only; dev is never augmented). "
        "With feature_cache, set augment.copies so augmented versions can be cached",
    )

    @field_validator("target_normalization")
    @classmethod
    def _regexes_compile(cls, value: Any) -> Any:
        if isinstance(value, list):
            for i, (pattern, _) in enumerate(value):
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(
                        f"rule {i}: {pattern!r} is not a valid regular expression ({err})"
                    ) from err
        return value

    @model_validator(mode="after")
    def _names(self) -> DataConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for split in ("train", "dev"):
            seen: dict[str, int] = {}
            for i, src in enumerate(getattr(self, split)):
                if src.name is None:
                    src.name = Path(src.path.rstrip("/\\")).stem or src.path
                if src.name in seen:
                    problems.append(
                        (
                            (split, i, "name"),
                            f"name {src.name!r} is also used by {split}.{seen[src.name]}: "
                            "give each source a distinct `name`",
                        )
                    )
                seen.setdefault(src.name, i)
        _rules(problems)
        return self


class OptimConfig(StrictModel):
    """Optimizer and learning-rate schedule, with separate rates for new and pretrained parts."""

    optimizer: Literal["adamw", "adam", "sgd"] = Field("adamw", description="torch optimizer")
    lr: float = Field(1e-4, gt=0, description="peak learning rate (after warmup)")
    weight_decay: float = Field(0.0, ge=0, description="decoupled for adamw, L2 for adam/sgd")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas, each in [0, 1)")
    eps: float = Field(1e-8, gt=0, description="Adam epsilon")
    implementation: Literal["auto", "fused", "foreach", "for-loop"] = Field(
        "auto",
        description="torch kernel: auto = fused where torch has one for every parameter (as transformers' "
        "Trainer defaults to), else torch's default; fused refuses parameters it cannot handle",
    )
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="decay after warmup")
    warmup_steps: int = Field(0, ge=0, description="linear warmup from 0 (optimizer steps)")
    lr_new: float | None = Field(
        None, gt=0, description="new parts (projector, adaptor, cross-attention, CTC head); null = lr"
    )
    lr_encoder: float | None = Field(None, gt=0, description="pretrained encoder; null = lr")
    lr_decoder: float | None = Field(None, gt=0, description="pretrained decoder; null = lr")
    unfreeze: Literal["none", "new-first", "gradual"] | dict[str, int] = Field(
        "none",
        description="staged unfreezing, when each group starts training (train the new parts first so "
        "cross-attention aligns before pretrained weights move). none: every group from step 0; new-first: "
        "the new parts alone for the first 10% of the optimizer steps, then encoder + decoder; gradual: new "
        "parts, the decoder from 10%, the encoder from 30%; or a mapping of start steps such as "
        "{decoder: 500, encoder: 2000} (new parts always start at 0). A group gets no update at all "
        "(no weight decay, no Adam moments) before its start",
    )
    unfreeze_warmup: int = Field(
        0,
        ge=0,
        description="steps of linear lr re-warmup for a group after it unfreezes, so Adam's first updates "
        "do not jolt pretrained weights (0 = full lr at once)",
    )

    @field_validator("unfreeze", mode="before")
    @classmethod
    def _unfreeze_groups(cls, value: Any) -> Any:
        """Name the bad key of a mapping (the union would otherwise only say "expected a preset")."""
        if not isinstance(value, dict):
            return value
        problems: list[tuple[tuple[str | int, ...], str]] = []
        valid = ", ".join(UNFREEZE_GROUPS)
        for key, start in value.items():
            if key == "new":
                problems.append(((key,), f"the new parts always train from step 0; groups here: {valid}"))
            elif key not in UNFREEZE_GROUPS:
                close = difflib.get_close_matches(str(key), UNFREEZE_GROUPS, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                problems.append(((key,), f"unknown group {key!r}; {hint}groups here: {valid}"))
            elif isinstance(start, bool) or not isinstance(start, int) or start < 0:
                problems.append(((key,), f"expected a start step ≥ 0, got {start!r}"))
        _rules(problems)
        return value

    @field_validator("betas")
    @classmethod
    def _betas_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise ValueError(f"each beta must be in [0, 1), got {list(value)}")
        return value

    def group_lrs(self) -> dict[str, float]:
        """Learning rate per parameter group ("new", "encoder", "decoder"), nulls resolved to `lr`."""
        return {
            "new": self.lr_new if self.lr_new is not None else self.lr,
            "encoder": self.lr_encoder if self.lr_encoder is not None else self.lr,
            "decoder": self.lr_decoder if self.lr_decoder is not None else self.lr,
        }

    def unfreeze_starts(self, total_steps: int) -> dict[str, int]:
        """Start step per group ("new", "encoder", "decoder"): presets resolved against `total_steps`, which
        is only known once the data is scanned (epochs), hence not at load time."""
        starts = dict.fromkeys(("new", *UNFREEZE_GROUPS), 0)
        if isinstance(self.unfreeze, str):
            starts.update({g: total_steps * pct // 100 for g, pct in UNFREEZE_PRESETS[self.unfreeze].items()})
        else:
            starts.update(self.unfreeze)
        return starts


class TrainConfig(StrictModel):
    """How long and how to train. Set exactly one of `max_steps` and `epochs`."""

    max_steps: int | None = Field(None, ge=1, description="optimizer steps to train for")
    epochs: float | None = Field(None, gt=0, description="passes over the training data (fractions allowed)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping; null = off")
    precision: Literal["no", "fp16", "bf16", "auto"] = Field(
        "auto", description="mixed precision; auto = bf16 where supported, else fp16 on GPU, else no"
    )
    seed: int = Field(42, description="seeds python, numpy and torch; also fixes the data order")
    gradient_checkpointing: bool = Field(False, description="trade compute for activation memory")
    freeze_feature_encoder: Literal["always", "never"] = Field(
        "always", description="the CNN feature encoder of wav2vec2-style encoders"
    )
    freeze_encoder_steps: int = Field(
        0,
        ge=0,
        description="deprecated: read as optim.unfreeze {encoder: N} (the encoder starts training at step N)",
    )
    max_consecutive_nonfinite: int = Field(
        10, ge=1, description="stop after this many consecutive steps with NaN/inf loss (each one is skipped)"
    )
    log_every: int = Field(10, ge=1, description="log train loss and lr every N optimizer steps")
    cpu_kernels: Literal["speeched", "torch"] = Field(
        "speeched",
        description="CPU training kernels: speeched = dropout masks from numpy's SFC64 (same distribution, "
        "~4x faster than torch's bernoulli_; speeched/modeling/cpu_dropout.py) and wav2vec2-style grouped "
        "positional convolutions by FFT, forward and backward (same sums up to rounding, ~5x faster; "
        "speeched/modeling/grouped_conv.py); torch = torch's own",
    )

    @model_validator(mode="after")
    def _one_length(self) -> TrainConfig:
        if (self.max_steps is None) == (self.epochs is None):
            which = "both are set" if self.max_steps is not None else "neither is set"
            _rules([(("max_steps",), f"set exactly one of `max_steps` and `epochs` ({which})")])
        return self


class LoraConfig(StrictModel):
    """LoRA adapters (used when `finetune.method: lora`)."""

    r: int = Field(16, ge=1, description="rank")
    alpha: float = Field(32.0, gt=0, description="scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] | None = Field(
        None, description="module name patterns; null = the attention projections of the chosen part"
    )
    apply_to: Literal["decoder", "encoder", "both"] = Field("decoder", description="which pretrained part")
    merge_on_export: bool = Field(True, description="merge adapters into the weights of the exported model")


class FinetuneConfig(StrictModel):
    """Which parameters train."""

    method: Literal["full", "lna", "lora", "freeze_encoder"] = Field(
        "full",
        description="lna = only LayerNorm + attention (+ new parts) train; freeze_encoder = encoder fixed",
    )
    freeze_embeddings: bool = Field(
        False,
        description="freeze the decoder's token embeddings (tied to its output layer): with a 30k+ vocabulary "
        "they are the largest gradient and optimizer state, and pretrained ones rarely need to move",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings")

    @model_validator(mode="after")
    def _lora_needs_method(self) -> FinetuneConfig:
        if self.method != "lora" and self.lora != LoraConfig():
            _rules(
                [(("lora",), f"LoRA settings are given but `method` is {self.method!r}; set method: lora")]
            )
        return self


class LanguagesConfig(StrictModel):
    """Languages and the decoder prompt (task/language tokens; one definition, saved in the model, used by train,
    eval and transcribe). Per-example `lang` / `tgt_lang` manifest columns override the defaults here."""

    src_lang: str | None = Field(None, description="language of the speech where an example has no `lang`")
    tgt_lang: str | None = Field(
        None, description="output language of st where an example has no `tgt_lang` (e.g. de, de_DE)"
    )
    prompt_style: Literal["auto", "none", "lang_token", "whisper", "template"] = Field(
        "auto",
        description="auto = the tokenizer's language tokens (mBART-50/NLLB/M2M-100 forced BOS, Whisper "
        "<|lang|><|task|>) when it has them, else `prompt_template` when given, else none",
    )
    prompt_template: str | None = Field(
        None,
        description="text prompt for decoders without language tokens (e.g. '{tgt_lang}:') or the LLM "
        "prompt in prefix coupling; fields {task} {src_lang} {tgt_lang} {lang}",
    )

    @field_validator("prompt_template")
    @classmethod
    def _template_fields(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                names = {n for _, n, _, _ in string.Formatter().parse(value) if n is not None}
            except ValueError as err:
                raise ValueError(f"{value!r} is not a valid template ({err})") from err
            unknown = sorted(names - set(TEMPLATE_FIELDS))
            if unknown:
                raise ValueError(f"{value!r} uses {unknown}; the fields are {list(TEMPLATE_FIELDS)}")
        return value

    @model_validator(mode="after")
    def _template_given(self) -> LanguagesConfig:
        if self.prompt_style == "template" and not self.prompt_template:
            _rules(
                [(("prompt_template",), "prompt_style template needs a prompt_template, e.g. '{tgt_lang}:'")]
            )
        return self


class EvalConfig(StrictModel):
    """Dev-set evaluation with generate() during training."""

    every_steps: int | None = Field(
        500, ge=1, description="evaluate every N optimizer steps; null = only at the end"
    )
    metrics: list[Literal["wer", "cer", "bleu", "chrf"]] | None = Field(
        None, min_length=1, description="null = task default: asr [wer, cer], st [bleu, chrf]"
    )
    num_beams: int = Field(1, ge=1, description="beam size (1 = greedy, fastest)")
    ctc_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="joint CTC/attention decoding: rescore beam hypotheses by (1-λ)·attention + λ·CTC "
        "(needs a CTC head; 0 = plain generate; 1 = the CTC head's best path alone, no decoder)",
    )
    max_new_tokens: int = Field(128, ge=1, description="generation length limit")
    max_duration: float = Field(120.0, gt=0, description="seconds of audio per evaluation batch")
    normalizer: Literal["english", "basic", "none"] | None = Field(
        None, description="text normalization before scoring; null = asr basic, st none"
    )
    limit: int | None = Field(None, ge=1, description="score only the first N utterances of each dev set")


class CheckpointConfig(StrictModel):
    """When checkpoints are written and which are kept."""

    every_steps: int = Field(500, ge=1, description="save every N optimizer steps (and at the end)")
    keep_last: int = Field(3, ge=1, description="keep the newest N checkpoints (the best one is always kept)")
    best_metric: str | None = Field(
        None, description="dev metric picking the best checkpoint; null = first metric"
    )
    best_mode: Literal["min", "max"] | None = Field(
        None, description="null = min for wer/cer/loss, max for bleu/chrf"
    )
    average_last: int = Field(0, ge=0, description="at the end, average the last N checkpoints (0 = off)")


class LogConfig(StrictModel):
    """Experiment tracking. `metrics.jsonl` in the output dir is always written."""

    trackers: list[Literal["tensorboard", "csv", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["csv"], description="extra trackers (accelerate's, plus csv)"
    )
    plots: bool = Field(True, description="write loss/lr/metric PNGs to <output_dir>/plots")


class Recipe(StrictModel):
    """A complete training recipe (YAML). Unknown keys are errors."""

    task: Literal["asr", "st"] = Field(description="asr: speech -> transcript; st: speech -> translation")
    model: ModelConfig = Field(description="what to train")
    data: DataConfig = Field(description="what to train on")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="optimizer and schedule")
    train: TrainConfig = Field(description="training length and mechanics")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="which parameters train")
    languages: LanguagesConfig = Field(
        default_factory=LanguagesConfig, description="languages and the decoder prompt (task/language tokens)"
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation during training")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="checkpointing")
    log: LogConfig = Field(default_factory=LogConfig, description="logging and plots")
    output_dir: str | None = Field(
        None,
        description="run directory, relative to the current directory; null = runs/RECIPE_STEM (the file name without .yaml)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        allowed = TASK_METRICS[self.task]
        if self.eval.metrics is None:
            self.eval.metrics = list(allowed)
        if self.eval.normalizer is None:
            self.eval.normalizer = DEFAULT_NORMALIZER[self.task]
        problems: list[tuple[tuple[str | int, ...], str]] = []
        wrong = [m for m in self.eval.metrics if m not in allowed]
        if wrong:
            problems.append(
                (("eval", "metrics"), f"{wrong} do not score task {self.task!r}; use some of {list(allowed)}")
            )
        ck = self.checkpoint
        if ck.best_metric is None:
            ck.best_metric = self.eval.metrics[0]
        if ck.best_metric not in [*self.eval.metrics, "loss"]:
            problems.append(
                (
                    ("checkpoint", "best_metric"),
                    f"{ck.best_metric!r} is not computed: choose one of {[*self.eval.metrics, 'loss']}",
                )
            )
        elif ck.best_mode is None:
            ck.best_mode = "min" if LOWER_IS_BETTER[ck.best_metric] else "max"
        elif ck.best_mode != ("min" if LOWER_IS_BETTER[ck.best_metric] else "max"):
            problems.append(
                (("checkpoint", "best_mode"), f"{ck.best_mode!r} picks the worst {ck.best_metric} checkpoint")
            )
        if ck.average_last > ck.keep_last:
            problems.append(
                (
                    ("checkpoint", "average_last"),
                    f"{ck.average_last} > keep_last={ck.keep_last}: older checkpoints are deleted before averaging",
                )
            )
        if self.task == "st":
            for split in ("train", "dev"):
                for i, src in enumerate(getattr(self.data, split)):
                    if src.columns.translation == src.columns.text:
                        problems.append(
                            (
                                ("data", split, i, "columns", "translation"),
                                "speech translation needs a target column distinct from the transcript (columns.text)",
                            )
                        )
        if self.finetune.method == "freeze_encoder":
            if self.train.freeze_encoder_steps:
                problems.append(
                    (
                        ("train", "freeze_encoder_steps"),
                        "the encoder is always frozen with finetune.method "
                        "freeze_encoder: remove this or use method full",
                    )
                )
            if self.optim.lr_encoder is not None:
                problems.append((("optim", "lr_encoder"), "has no effect: finetune.method freeze_encoder"))
            if isinstance(self.optim.unfreeze, dict) and "encoder" in self.optim.unfreeze:
                problems.append(
                    (("optim", "unfreeze", "encoder"), "has no effect: finetune.method freeze_encoder")
                )
        problems += self._unfreeze_alias()
        _rules(problems)
        return self

    def _unfreeze_alias(self) -> list[tuple[tuple[str | int, ...], str]]:
        """`train.freeze_encoder_steps: K` (deprecated) becomes `optim.unfreeze: {encoder: K}` and is reset
        to 0, so the saved recipe (checkpoints' recipe.yaml) holds the new key only and loads again."""
        k = self.train.freeze_encoder_steps
        if k and self.finetune.method != "freeze_encoder":
            if "unfreeze" in self.optim.model_fields_set:
                return [
                    (
                        ("train", "freeze_encoder_steps"),
                        f"deprecated alias of optim.unfreeze; give only optim.unfreeze (with encoder: {k} "
                        "in its mapping)",
                    )
                ]
            logging.getLogger("speeched").warning(
                "train.freeze_encoder_steps is deprecated: read as optim.unfreeze: {encoder: %d}", k
            )
            self.optim.unfreeze = {"encoder": k}
            self.train.freeze_encoder_steps = 0
        staged = any(self.optim.unfreeze_starts(total_steps=100).values())  # presets start > 0 at 100
        if self.optim.unfreeze_warmup and not staged:
            return [
                (("optim", "unfreeze_warmup"), "has no effect: optim.unfreeze starts every group at step 0")
            ]
        return []

    def to_yaml(self) -> str:
        """The fully resolved recipe (absolute paths, defaults filled), e.g. to copy into a checkpoint."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def inner_model(annotation: Any) -> Any:
    """The schema class inside an annotation (`list[DataSource]`, `Batching | None`), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = inner_model(arg)
        if found is not None:
            return found
    return None
