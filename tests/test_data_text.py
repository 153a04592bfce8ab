"""Target normalisation built from recipe config values."""

from __future__ import annotations

import pytest

from speeched.data.text import TextNormalizer, build_normalizer


def test_named_steps():
    assert build_normalizer("none") is None and build_normalizer(None) is None
    assert TextNormalizer("lowercase")("Hello  World") == "hello world"
    assert TextNormalizer("strip_punctuation")("Well, don't — stop! «Ja»") == "Well don't stop Ja"


def test_regex_rules_in_order():
    norm = build_normalizer(["lowercase", [r"\bmr\b\.?", "mister"], ["[0-9]+", "<num>"]])
    assert norm("Mr. Smith has 42 cats") == "mister smith has <num> cats"


@pytest.mark.parametrize(
    "spec,msg",
    [("upper", "unknown 'upper'"), ([["(", "x"]], "bad regex"), ([["a", "b", "c"]], "neither a name")],
)
def test_bad_specs_are_explained(spec, msg):
    with pytest.raises(ValueError, match=msg):
        TextNormalizer(spec)
