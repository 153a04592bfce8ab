"""The English normaliser is whisper-normalizer's, with its spelling map; number-word detection."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

from speeched.evaluation.normalize import (
    get_normalizer,
    number_word_fraction,
    number_words_warning,
)

SAMPLES = [
    "Mr. Smith won't pay the colour-coded £20 bill!",
    "The theatre's organisation analysed the behaviour.",
    "one five seven",
    "I'd like twenty-one apples, uh, please.",
    "It's 3.5% of the GDP (roughly).",
    "  Hello,   WORLD  ",
]


def test_english_matches_the_package_output_and_names_it() -> None:
    ours, reference = get_normalizer("english"), EnglishTextNormalizer()
    for text in SAMPLES:
        assert ours(text) == " ".join(reference(text).split())
    assert ours("colour behaviour organisation") == "color behavior organization"  # the spelling map
    assert ours("one five seven") == "157"
    assert ours.name == "english"
    assert f"whisper-normalizer {version('whisper-normalizer')}" in ours.description
    assert "spelling map" in ours.description


def test_basic_matches_the_package_output() -> None:
    ours, reference = get_normalizer("basic"), BasicTextNormalizer()
    for text in SAMPLES:
        assert ours(text) == " ".join(reference(text).split())
    assert "whisper-normalizer" in ours.description


def test_a_spelling_map_next_to_the_model_wins(tmp_path: Path) -> None:
    (tmp_path / "normalizer.json").write_text(json.dumps({"colour": "kolor"}), encoding="utf-8")
    ours = get_normalizer("english", [tmp_path])
    assert ours("colour behaviour") == "kolor behaviour"
    assert str(tmp_path / "normalizer.json") in ours.description
    assert get_normalizer("english", [tmp_path / "absent"])("colour") == "color"


def test_number_word_fraction_and_warning() -> None:
    digits = ["one five seven", "two two oh nine", "zero eight"]
    assert number_word_fraction(digits) == 1.0
    assert number_word_fraction(["the cat sat", "three cats"]) == pytest.approx(1 / 5)
    assert number_word_fraction(["Twenty-One, hundred!"]) == 1.0
    assert number_word_fraction([]) == 0.0
    warning = number_words_warning(digits, "english")
    assert (
        warning is not None and "100% of the reference words" in warning and "--normalizer basic" in warning
    )
    assert number_words_warning(digits, "basic") is None
    assert number_words_warning(["the cat sat on three mats"], "english") is None
    # every word the package turns into digits counts as a number word
    reference = EnglishTextNormalizer()
    assert reference("one five") == "15"  # a lone "one" stays a word ("one of them"), in a run it joins
    for word in ("nineteen", "forty", "thousand", "zero", "third"):
        assert any(ch.isdigit() for ch in reference(f"{word} apples")), word
        assert number_word_fraction([word]) == 1.0
