"""One definition of the decoder prompt (task/language tokens), stored in the model, used by train, eval and transcribe.

Multilingual decoders must be told which language to produce, and every family spells it differently:

  lang_token  one language token right after the start token: mBART-50's forced BOS ("de_DE"),
              M2M-100 ("__de__"), NLLB ("deu_Latn").
  whisper     Whisper-style `<|en|><|transcribe|><|notimestamps|>` (the language of the *speech*;
              `<|translate|>` for st) after `<|startoftranscript|>`.
  template    a text prompt rendered from a template: "{tgt_lang}:" for a BERT/GPT-2 decoder that has no
              language tokens, or the instruction of a prefix-coupled LLM ("Translate the speech into
              {tgt_lang}:").
  none        no prompt (transformers' reference behaviour).

Where it goes: for cross-attention models the prompt ids are forced decoder inputs after the start token.
They are given, not predicted, so the collator masks them out of the loss (-100) and `generate` starts
from `[start] + prompt`. For prefix-coupled LLMs the rendered template is the prompt after the speech.

Why one module: a prompt built one way in training and another way at inference (a missing language token,
a template with a different space) is a silent accuracy loss. `PromptSpec` is saved in the model config
(`config.decoder_prompt`), and `DecoderPrompt.for_utterance` / `.ids` are the only code that turns languages
into ids — the collator, `eval` and `transcribe` all call them. Language codes are checked against the
tokenizer's own language tokens, so a wrong mBART language token cannot be used.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from speeched.errors import SpeechedError

PROMPT_STYLES = ("auto", "none", "lang_token", "whisper", "template")
TEMPLATE_FIELDS = ("task", "src_lang", "tgt_lang", "lang")
WHISPER_START = "<|startoftranscript|>"
WHISPER_TASK_TOKENS = {"asr": "<|transcribe|>", "st": "<|translate|>"}
WHISPER_NO_TIMESTAMPS = "<|notimestamps|>"

# Language-token families recognised from the tokenizer's vocabulary: (name, token regex, token format,
# English token). The English token must be present too, so that code-like tokens of an LLM vocabulary
# ("__eq__", "__ne__") never make it look like M2M-100.
LANG_TOKEN_FAMILIES = (
    ("mBART-50", re.compile(r"^[a-z]{2}_[A-Z]{2}$"), "{lang}", "en_XX"),
    ("NLLB", re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$"), "{lang}", "eng_Latn"),
    ("M2M-100", re.compile(r"^__([a-z]{2,3})__$"), "__{lang}__", "__en__"),
)
WHISPER_LANG = re.compile(r"^<\|([a-z]{2,3})\|>$")
MIN_FAMILY_LANGUAGES = 2  # a vocabulary needs several such tokens to count as a multilingual family


class PromptError(SpeechedError, ValueError):
    """A language or prompt that the model's tokenizer cannot express; the message says what to use."""


@dataclass(frozen=True)
class PromptSpec:
    """What the decoder is told before the text: saved as `config.decoder_prompt` (a plain dict).

    `languages` lists the valid codes (from the tokenizer's language tokens); empty = any code.
    `src_lang` / `tgt_lang` are defaults for examples (and transcribe calls) that name no language.
    """

    style: str = "none"
    task: str = "asr"
    src_lang: str | None = None
    tgt_lang: str | None = None
    lang_token: str = "{lang}"
    template: str | None = None
    family: str | None = None
    languages: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["languages"] = list(self.languages)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PromptSpec:
        data = dict(data or {})
        data["languages"] = tuple(data.get("languages") or ())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    # ---- languages -------------------------------------------------------------------------------
    def canonical(self, code: str, what: str = "language") -> str:
        """`code` as the tokenizer spells it ("de" → "de_DE" for mBART-50), or a PromptError with the options."""
        if not self.languages:
            return code
        if code in self.languages:
            return code
        lower = {lang.lower(): lang for lang in self.languages}
        if code.lower() in lower:
            return lower[code.lower()]
        # A bare language ("de") picks its only variant ("de_DE"); a code with a region/script must match
        # exactly: zh_TW must not silently become zh_CN.
        base = code.lower().replace("-", "_").split("_")[0]
        starts = [lang for lang in self.languages if lang.lower().split("_")[0] == base]
        if len(starts) == 1 and base == code.lower():
            return starts[0]
        close = starts or difflib.get_close_matches(code, self.languages, n=5, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(close)}?"
            if close
            else f"valid codes include {', '.join(self.languages[:12])}"
        )
        raise PromptError(
            f"{what} {code!r} has no language token in the {self.family or 'model'} tokenizer: {hint} "
            f"({len(self.languages)} languages; the full list is in the model's config.json under decoder_prompt)"
        )

    def output_language(self, src_lang: str | None, tgt_lang: str | None) -> str | None:
        """The language the decoder writes: the translation's for st, the speech's for asr."""
        return (tgt_lang or self.tgt_lang) if self.task == "st" else (src_lang or self.src_lang)


def _template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def detect_family(tokenizer: Any) -> tuple[str, str, str, tuple[str, ...]] | None:
    """(style, family, token format, languages) when the tokenizer has a known set of language tokens."""
    vocab = tokenizer.get_vocab()
    if WHISPER_START in vocab and "<|en|>" in vocab:
        langs = sorted(m.group(1) for t in vocab if (m := WHISPER_LANG.match(t)))
        if len(langs) >= MIN_FAMILY_LANGUAGES:
            return "whisper", "Whisper", "<|{lang}|>", tuple(langs)
    for family, pattern, fmt, english in LANG_TOKEN_FAMILIES:
        if english not in vocab:
            continue
        found = sorted((m.group(1) if m.groups() else t) for t in vocab if (m := pattern.match(t)))
        if len(found) >= MIN_FAMILY_LANGUAGES:
            return "lang_token", family, fmt, tuple(found)
    return None


def resolve_prompt(
    tokenizer: Any,
    task: str = "asr",
    style: str = "auto",
    src_lang: str | None = None,
    tgt_lang: str | None = None,
    template: str | None = None,
) -> PromptSpec:
    """Pick the prompt for this tokenizer and check every given language against it.

    auto: the tokenizer's own language tokens when it has a family of them (mBART-50, NLLB, M2M-100,
    Whisper); else a `template` when one is given; else none.
    """
    if style not in PROMPT_STYLES:
        raise PromptError(f"prompt style {style!r} is not one of {PROMPT_STYLES}")
    if task not in ("asr", "st"):
        raise PromptError(f"task must be 'asr' or 'st', got {task!r}")
    family = detect_family(tokenizer)
    if style == "auto":
        style = family[0] if family else ("template" if template else "none")
    if style == "template":
        if not template:
            raise PromptError("prompt style 'template' needs a template, e.g. '{tgt_lang}:'")
        unknown = sorted(set(_template_fields(template)) - set(TEMPLATE_FIELDS))
        if unknown:
            raise PromptError(
                f"prompt template {template!r} uses {unknown}: the fields are {{{'}, {'.join(TEMPLATE_FIELDS)}}}"
            )
        spec = PromptSpec(style="template", task=task, template=template)
    elif style in ("lang_token", "whisper"):
        if family is None or family[0] != style:
            found = f"it has {family[1]} tokens (style {family[0]})" if family else "it has none"
            raise PromptError(
                f"prompt style {style!r} needs a tokenizer with {style} language tokens; {found}. "
                "Use style auto, or a template such as '{tgt_lang}:' for decoders without language tokens."
            )
        spec = PromptSpec(style=style, task=task, lang_token=family[2], family=family[1], languages=family[3])
    else:
        spec = PromptSpec(style="none", task=task)
    # Check the defaults now (a typo fails at init/recipe time, not mid-training).
    src = spec.canonical(src_lang, "src_lang") if src_lang else None
    tgt = spec.canonical(tgt_lang, "tgt_lang") if tgt_lang else None
    if style == "whisper" and task == "st" and tgt not in (None, "en"):
        raise PromptError(f"Whisper-style <|translate|> always means 'into English'; tgt_lang {tgt!r} is not")
    return replace(spec, src_lang=src, tgt_lang=tgt)


class DecoderPrompt:
    """A PromptSpec bound to a tokenizer: languages → prompt token ids (cached; identical everywhere)."""

    def __init__(self, spec: PromptSpec, tokenizer: Any) -> None:
        self.spec = spec
        self.tokenizer = tokenizer
        self._cache: dict[tuple[str | None, str | None], list[int]] = {}

    @property
    def active(self) -> bool:
        return self.spec.style != "none"

    def ids(self, src_lang: str | None = None, tgt_lang: str | None = None, where: str = "") -> list[int]:
        """Prompt token ids for an example in `src_lang` (speech) → `tgt_lang` (text); defaults from the spec."""
        key = (src_lang, tgt_lang)
        if key not in self._cache:
            self._cache[key] = self._build(src_lang, tgt_lang, where)
        return list(self._cache[key])

    def for_utterance(self, utt: Any) -> list[int]:
        return self.ids(utt.lang, utt.tgt_lang, where=utt.origin or utt.id)

    def check(self, utterances: Iterable[Any]) -> None:
        """Build every distinct prompt once: a bad or missing language fails before training/decoding."""
        for u in utterances:
            self.for_utterance(u)

    def _build(self, src_lang: str | None, tgt_lang: str | None, where: str) -> list[int]:
        s = self.spec
        if s.style == "none":
            return []
        at = f"{where}: " if where else ""
        try:
            src = s.canonical(src_lang, "lang") if src_lang else s.src_lang
            tgt = s.canonical(tgt_lang, "tgt_lang") if tgt_lang else s.tgt_lang
        except PromptError as err:
            raise PromptError(f"{at}{err}") from err
        if s.style == "template":
            assert s.template is not None
            values = {"task": s.task, "src_lang": src, "tgt_lang": tgt, "lang": s.output_language(src, tgt)}
            missing = [f for f in _template_fields(s.template) if values.get(f) is None]
            if missing:
                field = missing[0]
                column = "tgt_lang" if field == "tgt_lang" or (field == "lang" and s.task == "st") else "lang"
                raise PromptError(
                    f"{at}the prompt template {s.template!r} needs {field}, but the example has none and "
                    f"the model has no default: {_how_to_set(column)}"
                )
            text = s.template.format(**values)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        lang = src if s.style == "whisper" else s.output_language(src, tgt)
        if lang is None:
            which = "lang" if s.style == "whisper" or s.task == "asr" else "tgt_lang"
            raise PromptError(
                f"{at}the {s.family} decoder needs a language token but neither the example nor the model "
                f"names a {which}: {_how_to_set(which)}; valid codes include {', '.join(s.languages[:8])}"
            )
        tokens = [s.lang_token.format(lang=lang)]
        if s.style == "whisper":
            tokens.append(WHISPER_TASK_TOKENS[s.task])
            if WHISPER_NO_TIMESTAMPS in self.tokenizer.get_vocab():
                tokens.append(WHISPER_NO_TIMESTAMPS)
        return [self._token_id(t) for t in tokens]

    def _token_id(self, token: str) -> int:
        vocab = self.tokenizer.get_vocab()
        if token not in vocab:
            raise PromptError(f"token {token!r} is not in the tokenizer's vocabulary")
        return int(vocab[token])


def _how_to_set(column: str) -> str:
    """Where a missing language can be given: the manifest column, the recipe key, the CLI flag."""
    key, flag = ("tgt_lang", "tgt-lang") if column == "tgt_lang" else ("src_lang", "src-lang")
    return f"add a `{column}` column to the manifest or set languages.{key} in the recipe (--{flag})"


def prompt_spec(model: Any) -> PromptSpec:
    """The model's saved prompt definition (style none when it has none)."""
    return PromptSpec.from_dict(getattr(model.config, "decoder_prompt", None))


def decoder_prompt(model: Any, tokenizer: Any) -> DecoderPrompt:
    """The one way train, eval and transcribe get a model's decoder prompt builder."""
    return DecoderPrompt(prompt_spec(model), tokenizer)


def apply_prompt(model: Any, tokenizer: Any, spec: PromptSpec) -> None:
    """Store `spec` in the model config (saved with it); Whisper-style prompts also fix the start token."""
    model.config.decoder_prompt = spec.to_dict()
    if spec.style == "whisper":
        start = int(tokenizer.get_vocab()[WHISPER_START])
        model.config.decoder_start_token_id = start
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.decoder_start_token_id = start


def describe(spec: PromptSpec, tokenizer: Any) -> str:
    """One line for the preflight: style and an example prompt."""
    if spec.style == "none":
        return "decoder prompt: none"
    try:
        ids = DecoderPrompt(spec, tokenizer).ids()
        example = " ".join(tokenizer.convert_ids_to_tokens(ids))
    except PromptError:
        example = "(per example: from the manifest's lang/tgt_lang)"
    family = f" ({spec.family})" if spec.family else ""
    return (
        f"decoder prompt: {spec.style}{family}, task {spec.task}, src_lang {spec.src_lang}, "
        f"tgt_lang {spec.tgt_lang}; default prompt: {example}"
    )


__all__ = [
    "PROMPT_STYLES",
    "DecoderPrompt",
    "PromptError",
    "PromptSpec",
    "apply_prompt",
    "decoder_prompt",
    "describe",
    "detect_family",
    "prompt_spec",
    "resolve_prompt",
]
