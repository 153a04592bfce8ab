"""Text normalisers for scoring, each with a name that goes into every report.

WER on raw text mostly measures casing and punctuation; WER on normalised text measures words. Both are
reported, and the normaliser is always named, because a WER without its normaliser cannot be compared.

`english` is transformers' port of Whisper's `EnglishTextNormalizer` (numbers, contractions, titles,
fillers). Whisper's version also unifies British/American spellings with a mapping that ships with the
Whisper tokenizer (`normalizer.json`), which is not on this machine: we look for it next to the model,
in `$SPEECHED_ENGLISH_SPELLING`, in an installed `openai-whisper` package and in the HF cache, and when
it is not found we run the same normaliser with an empty mapping and say so in its name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

NORMALIZERS = ("english", "basic", "none")


@dataclass(frozen=True)
class Normalizer:
    """A named text normaliser; `description` says exactly what it does (and what it could not do)."""

    name: str
    description: str
    fn: Callable[[str], str]

    def __call__(self, text: str) -> str:
        # Collapse whitespace so jiwer never sees leading/trailing blanks as empty words.
        return " ".join(self.fn(text).split())


def find_english_spelling_mapping(search_dirs: Iterable[str | Path] = ()) -> Path | None:
    """Locate Whisper's British->American spelling mapping offline, or None."""
    candidates: list[Path] = [Path(d) / "normalizer.json" for d in search_dirs]
    env = os.environ.get("SPEECHED_ENGLISH_SPELLING")
    if env:
        candidates.insert(0, Path(env))
    try:  # openai-whisper ships it as whisper/normalizers/english.json
        import whisper.normalizers  # type: ignore[import-not-found]

        candidates.append(Path(whisper.normalizers.__file__).parent / "english.json")
    except Exception:  # noqa: BLE001 - absent or broken install: just not a candidate
        pass
    try:
        from huggingface_hub import try_to_load_from_cache

        for repo in (
            "openai/whisper-tiny",
            "openai/whisper-base",
            "openai/whisper-small",
            "openai/whisper-large-v3",
        ):
            hit = try_to_load_from_cache(repo, "normalizer.json")
            if isinstance(hit, str):
                candidates.append(Path(hit))
    except Exception:  # noqa: BLE001
        pass
    for path in candidates:
        if path.is_file():
            return path
    return None


def get_normalizer(name: str, search_dirs: Iterable[str | Path] = ()) -> Normalizer:
    """Build the normaliser `name` (english | basic | none); `search_dirs` may hold Whisper's normalizer.json."""
    if name == "none":
        return Normalizer("none", "no normalisation: scores equal the raw scores", lambda s: s)
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    if name == "basic":
        return Normalizer(
            "basic",
            "transformers BasicTextNormalizer: lowercase, drop punctuation/symbols and bracketed text",
            BasicTextNormalizer(),
        )
    if name == "english":
        mapping_path = find_english_spelling_mapping(search_dirs)
        if mapping_path is not None:
            mapping = json.loads(mapping_path.read_text(encoding="utf-8"))
            return Normalizer(
                "english",
                f"Whisper EnglishTextNormalizer with spelling mapping {mapping_path}",
                EnglishTextNormalizer(mapping),
            )
        return Normalizer(
            "english-nospelling",
            "Whisper EnglishTextNormalizer WITHOUT its British->American spelling mapping (normalizer.json "
            "not available offline; set SPEECHED_ENGLISH_SPELLING=path/to/normalizer.json to add it): "
            "numbers, contractions, titles and fillers are normalised, 'colour' vs 'color' still differ",
            EnglishTextNormalizer({}),
        )
    raise ValueError(f"unknown normalizer {name!r}: choose one of {', '.join(NORMALIZERS)}")


def default_normalizer_name(task: str, lang: str | None) -> str:
    """English targets get the Whisper English normaliser, others the language-neutral one.

    An unknown language counts as English for ASR (the common case) but not for translation.
    """
    if lang is None:
        return "english" if task == "asr" else "basic"
    return "english" if lang.lower().split("-")[0].split("_")[0] in ("en", "eng", "english") else "basic"
