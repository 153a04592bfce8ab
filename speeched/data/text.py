"""Target-text normalisation for recipes: `none`, `lowercase`, `strip_punctuation`, or regex rules.

Applied identically at training (collator), filtering (scan) and scoring, so the model learns exactly the
text form it is scored against.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Union

NormalizerSpec = Union[None, str, Sequence[Union[str, Sequence[str]]]]
NAMED = ("none", "lowercase", "strip_punctuation")


def _strip_punctuation(text: str) -> str:
    # Unicode punctuation (category P*) goes, except an apostrophe inside a word ("don't" stays a word).
    out = []
    for i, ch in enumerate(text):
        if unicodedata.category(ch).startswith("P"):
            inner = ch in "'’" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            out.append(ch if inner else " ")
        else:
            out.append(ch)
    return "".join(out)


class TextNormalizer:
    """A chain of steps built from a config value; calling it also collapses whitespace.

    spec: None / "none", "lowercase", "strip_punctuation", or a list mixing those names with
    [pattern, replacement] pairs applied with `re.sub` in order.
    """

    def __init__(self, spec: NormalizerSpec = None) -> None:
        self.spec = spec
        items: list = [] if spec is None else [spec] if isinstance(spec, str) else list(spec)
        self.steps: list[Callable[[str], str]] = []
        for n, item in enumerate(items):
            if isinstance(item, str):
                if item == "none":
                    continue
                if item == "lowercase":
                    self.steps.append(str.lower)
                elif item == "strip_punctuation":
                    self.steps.append(_strip_punctuation)
                else:
                    raise ValueError(
                        f"text normalisation step {n}: unknown {item!r}; use one of {', '.join(NAMED)} "
                        "or a [pattern, replacement] pair"
                    )
            elif isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(x, str) for x in item):
                try:
                    rx = re.compile(item[0])
                except re.error as err:
                    raise ValueError(f"text normalisation step {n}: bad regex {item[0]!r}: {err}") from None
                self.steps.append(lambda s, rx=rx, rep=item[1]: rx.sub(rep, s))
            else:
                raise ValueError(
                    f"text normalisation step {n}: {item!r} is neither a name ({', '.join(NAMED)}) "
                    "nor a [pattern, replacement] pair"
                )

    def __call__(self, text: str) -> str:
        for step in self.steps:
            text = step(text)
        return " ".join(text.split())

    def __repr__(self) -> str:
        return f"TextNormalizer({self.spec!r})"


def build_normalizer(spec: NormalizerSpec) -> Callable[[str], str] | None:
    """None when there is nothing to do (so callers can skip the call), else a TextNormalizer."""
    norm = TextNormalizer(spec)
    return norm if norm.steps else None
