"""Decoding loops: find a hypothesis stuck repeating an n-gram, and cut it after the first occurrence.

`eval` counts loops as a diagnostic; `transcribe` cuts them so one stuck segment does not fill a file.
"""

from __future__ import annotations

from dataclasses import dataclass

# A consecutive n-gram repeated this many times (and covering this many tokens) is a decoding loop, not
# speech: "no no no" is language, "the cat the cat the cat the cat" is a stuck decoder.
LOOP_MIN_REPEATS = 3
LOOP_MIN_TOKENS = 8
LOOP_MAX_NGRAM = 10


@dataclass(frozen=True)
class Loop:
    """A consecutive repetition of `ngram` `repeats` times starting at token `start`."""

    ngram: tuple[str, ...]
    start: int
    repeats: int


def split_units(text: str) -> list[str]:
    """Words, or characters for text written without spaces (Chinese, Japanese, Thai)."""
    words = text.split()
    if len(words) <= 1 and len(text) > LOOP_MIN_TOKENS:
        return list(text.replace(" ", ""))
    return words


def find_loop(units: list[str]) -> Loop | None:
    """The first consecutive n-gram repetition long enough to be a decoding loop, else None."""
    n_units = len(units)
    for start in range(n_units):
        for n in range(1, LOOP_MAX_NGRAM + 1):
            if start + n * LOOP_MIN_REPEATS > n_units:
                break
            gram = units[start : start + n]
            repeats = 1
            while units[start + repeats * n : start + (repeats + 1) * n] == gram:
                repeats += 1
            if repeats >= LOOP_MIN_REPEATS and repeats * n >= LOOP_MIN_TOKENS:
                return Loop(tuple(gram), start, repeats)
    return None


def truncate_loop(text: str) -> tuple[str, bool]:
    """Cut a looping hypothesis after the first occurrence of its loop; returns (text, was_cut)."""
    units = split_units(text)
    loop = find_loop(units)
    if loop is None:
        return text, False
    kept = units[: loop.start + len(loop.ngram)]
    sep = "" if len(text.split()) <= 1 else " "
    return sep.join(kept), True
