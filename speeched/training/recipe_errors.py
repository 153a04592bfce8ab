"""Recipe problems as the user reads them: every problem at once, each naming key, line, value and fix.

Pydantic's errors are translated here (unknown keys get a "did you mean", literals list their choices,
cross-field rules raised by `schema._rules` are split back per key) and rendered one per line in file
order, with the YAML line of the nearest key or the `--set` item that put the value there.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from speeched.errors import SpeechedError
from speeched.training.overrides import KeyPath, Problem, format_path
from speeched.training.schema import Recipe, inner_model


class RecipeError(SpeechedError, ValueError):
    """Everything wrong with a recipe, one problem per line (key path, line, value, expectation). Exit 2."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        n = len(problems)
        head = f"{source}: {n} problem{'s' if n != 1 else ''} in the recipe:"
        super().__init__("\n".join([head, *(f"  - {p}" for p in problems)]))


def _model_at(path: Sequence[str | int]) -> type[BaseModel] | None:
    """The schema class that describes the mapping at `path` (for "did you mean" suggestions)."""
    cls: Any = Recipe
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None
        cls = inner_model(cls.model_fields[part].annotation)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _show(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _data_path(loc: Sequence[Any], data: Any) -> KeyPath:
    """Turn a pydantic error location into a key path of the data, dropping union-member tags."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if (
            isinstance(node, dict)
            and part in node
            or isinstance(node, list)
            and isinstance(part, int)
            and 0 <= part < len(node)
        ):
            node = node[part]
            out.append(part)
        elif i == len(loc) - 1 and isinstance(part, str) and isinstance(node, dict):
            out.append(part)  # a missing key
    return tuple(out)


def problems_from_validation(err: ValidationError, data: Any) -> list[Problem]:
    grouped: dict[KeyPath, Problem] = {}
    for e in err.errors(include_url=False):
        path = _data_path(e["loc"], data)
        kind, ctx = e["type"], e.get("ctx") or {}
        if kind == "recipe_rules":
            for sub, msg in ctx["problems"]:
                full = (*path, *sub)
                grouped[full] = Problem(full, msg)
            continue
        if kind == "extra_forbidden":
            key = str(path[-1]) if path else "?"
            cls = _model_at(path[:-1])
            allowed = list(cls.model_fields) if cls else []
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed keys here: {', '.join(allowed)}"
            msg = f"unknown key {key!r}; {hint}"
            grouped[path] = Problem(path, msg)
            continue
        if kind == "missing":
            grouped[path] = Problem(path, "required key is missing")
            continue
        msg = e["msg"]
        if kind == "literal_error":
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            msg = f"expected one of {', '.join(repr(c) for c in choices)}"
            close = difflib.get_close_matches(str(e["input"]), choices, n=1, cutoff=0.6)
            if close:
                msg += f"; did you mean {close[0]!r}?"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        else:
            msg = "expected " + re.sub(r"^Input should be (a valid )?", "", msg)
            msg = re.sub(r"dictionary or instance of \w+", "mapping", msg)
        if path in grouped and grouped[path].has_value:
            grouped[path].message += f", or {msg.removeprefix('expected ')}"
        else:
            grouped[path] = Problem(path, msg, e["input"], has_value=True)
    return list(grouped.values())


def render_all(
    problems: list[Problem], lines: dict[KeyPath, int], overridden: dict[KeyPath, str]
) -> list[str]:
    """One line per problem, in file order (`--set` problems last)."""
    located = [(_where(p.path, lines, overridden), p) for p in problems]
    located.sort(key=lambda item: item[0][0])
    return [_render(p, where) for (_, where), p in located]


def _where(path: KeyPath, lines: dict[KeyPath, int], overridden: dict[KeyPath, str]) -> tuple[float, str]:
    """(sort key, "line 12" or "from --set ...") for the nearest located ancestor of `path`."""
    for key, item in overridden.items():
        if path and key[: len(path)] == path:  # e.g. an unknown section created by --set
            return float("inf"), f"from --set {item}"
    for n in range(len(path), -1, -1):
        prefix = path[:n]
        if prefix in overridden:
            return float("inf"), f"from --set {overridden[prefix]}"
        if prefix in lines:
            return lines[prefix], f"line {lines[prefix]}"
    return 0, ""


def _render(problem: Problem, where: str) -> str:
    got = f": got {_show(problem.value)}" if problem.has_value else ""
    place = f" ({where})" if where else ""
    if not problem.path:
        return problem.message
    return f"{format_path(problem.path)}{place}{got}: {problem.message}"
