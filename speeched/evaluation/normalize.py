"""Text normalisers for scoring, each with a name that goes into every report.

WER on raw text mostly measures casing and punctuation; WER on normalised text measures words. Both are
reported, and the normaliser is always named (with its package and version), because a WER without its
normaliser cannot be compared.

`english` is Whisper's `EnglishTextNormalizer` from the `whisper-normalizer` package, which ships
Whisper's British->American spelling map (`english.json`, ~1.7k entries): numbers, contractions,
titles, fillers and spellings are unified. If a `normalizer.json` sits next to the model (a Whisper
tokenizer folder ships one), that map is used instead and the description names it.

Number words: the English normaliser turns "one five seven" into "157", so on digit strings WER
becomes an error rate over *numbers*, not words (one wrong digit makes the whole number one error, a
dropped digit a substitution). `number_word_fraction` measures how much of a reference set is number
words, and `NUMBER_WORDS_WARNING` is the advice eval shows when that fraction is high.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishNumberNormalizer, EnglishTextNormalizer

NORMALIZERS = ("english", "basic", "none")
NUMBER_WORDS_THRESHOLD = 0.5
NUMBER_WORDS_WARNING = (
    "{percent:.0f}% of the reference words are number words: the english normaliser joins spoken "
    "numbers into digits ('one five seven' -> '157'), so this WER counts errors per number, not per "
    "word; pass --normalizer basic to score word by word"
)


@dataclass(frozen=True)
class Normalizer:
    """A named text normaliser; `description` says exactly what it does (and which package did it)."""

    name: str
    description: str
    fn: Callable[[str], str]

    def __call__(self, text: str) -> str:
        # Collapse whitespace so jiwer never sees leading/trailing blanks as empty words.
        return " ".join(self.fn(text).split())


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover - a declared dependency
        return "unknown"


def _find_model_spelling_map(search_dirs: Iterable[str | Path]) -> Path | None:
    for folder in search_dirs:
        path = Path(folder) / "normalizer.json"
        if path.is_file():
            return path
    return None


def get_normalizer(name: str, search_dirs: Iterable[str | Path] = ()) -> Normalizer:
    """Build the normaliser `name` (english | basic | none).

    `search_dirs` (e.g. the model folder) may hold a Whisper `normalizer.json` spelling map that then
    replaces the package's.
    """
    if name == "none":
        return Normalizer("none", "no normalisation: scores equal the raw scores", lambda s: s)
    if name == "basic":
        return Normalizer(
            "basic",
            f"Whisper BasicTextNormalizer (whisper-normalizer {_package_version('whisper-normalizer')}): "
            "lowercase, drop punctuation/symbols and bracketed text",
            BasicTextNormalizer(),
        )
    if name == "english":
        normalizer = EnglishTextNormalizer()
        source = f"whisper-normalizer {_package_version('whisper-normalizer')}"
        mapping_path = _find_model_spelling_map(search_dirs)
        if mapping_path is not None:
            normalizer.standardize_spellings.mapping = json.loads(mapping_path.read_text(encoding="utf-8"))
            spelling = f"the spelling map {mapping_path}"
        else:
            spelling = f"its British->American spelling map ({len(normalizer.standardize_spellings.mapping)} entries)"
        return Normalizer(
            "english",
            f"Whisper EnglishTextNormalizer ({source}) with {spelling}: numbers to digits, contractions, "
            "titles, fillers",
            normalizer,
        )
    raise ValueError(f"unknown normalizer {name!r}: choose one of {', '.join(NORMALIZERS)}")


@lru_cache(maxsize=1)
def english_number_words() -> frozenset[str]:
    """The words Whisper's English normaliser turns into digits (from its own tables), plus 'oh'."""
    n = EnglishNumberNormalizer()
    tables = (n.zeros, n.ones, n.ones_plural, n.ones_ordinal, n.tens, n.tens_plural, n.tens_ordinal)
    tables += (n.multipliers, n.multipliers_plural, n.multipliers_ordinal)
    return frozenset(word for table in tables for word in table) | {"oh"}


def number_word_fraction(texts: Iterable[str]) -> float:
    """Share of words (lowercased, punctuation stripped) in `texts` that are English number words."""
    numbers = english_number_words()
    words = [w for text in texts for w in re.findall(r"[a-z]+", text.lower())]
    if not words:
        return 0.0
    return sum(w in numbers for w in words) / len(words)


def number_words_warning(references: Iterable[str], normalizer_name: str) -> str | None:
    """The warning eval shows when most reference words are number words under `english`, else None."""
    if normalizer_name != "english":
        return None
    fraction = number_word_fraction(references)
    if fraction <= NUMBER_WORDS_THRESHOLD:
        return None
    return NUMBER_WORDS_WARNING.format(percent=100 * fraction)


def default_normalizer_name(task: str, lang: str | None) -> str:
    """English targets get the Whisper English normaliser, others the language-neutral one.

    An unknown language counts as English for ASR (the common case) but not for translation.
    """
    if lang is None:
        return "english" if task == "asr" else "basic"
    return "english" if lang.lower().split("-")[0].split("_")[0] in ("en", "eng", "english") else "basic"
