"""Read a recipe's YAML with a line number for every key, and apply `--set key.sub=value` overrides.

Kept apart from the schema so error messages can point at `recipe.yaml:12` without pydantic knowing
anything about YAML. Only `yaml.SafeLoader` is used: a recipe can never construct Python objects.
"""

from __future__ import annotations

from typing import Any

import yaml

KeyPath = tuple[str | int, ...]


class Problem:
    """One thing wrong with a recipe; `RecipeError` lists them all at once."""

    def __init__(self, path: KeyPath, message: str, value: Any = None, has_value: bool = False) -> None:
        self.path = tuple(path)
        self.message = message
        self.value = value
        self.has_value = has_value

    def __repr__(self) -> str:
        return f"Problem({format_path(self.path)!r}, {self.message!r})"


def format_path(path: KeyPath) -> str:
    """`("data", "train", 0, "path")` -> `data.train.0.path` (the same spelling `--set` accepts)."""
    return ".".join(str(p) for p in path) or "(top level)"


def _walk(node: yaml.Node, prefix: KeyPath, lines: dict[KeyPath, int], dupes: list[Problem]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            path = (*prefix, key)
            if key in seen:
                dupes.append(
                    Problem(
                        path,
                        f"duplicate key (first at line {lines[path]}, again at line "
                        f"{key_node.start_mark.line + 1}); YAML keeps only the last one",
                    )
                )
            seen.add(key)
            lines[path] = key_node.start_mark.line + 1
            _walk(value_node, path, lines, dupes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*prefix, i)] = item.start_mark.line + 1
            _walk(item, (*prefix, i), lines, dupes)


def load_yaml_with_lines(text: str, source: str) -> tuple[Any, dict[KeyPath, int], list[Problem]]:
    """Parse YAML safely; return (data, {key path: 1-based line}, problems such as duplicate keys).

    A syntax error is returned as a problem at the top level (with its line) instead of raising, so
    it is reported the same way as everything else.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        return None, {}, [Problem((), f"{source} is not valid YAML{where}: {problem}")]
    lines: dict[KeyPath, int] = {}
    dupes: list[Problem] = []
    if node is not None:
        _walk(node, (), lines, dupes)
    return data, lines, dupes


def parse_override(text: str) -> tuple[KeyPath, Any]:
    """`train.max_steps=100` -> (("train", "max_steps"), 100); the value is parsed as YAML (`[a, b]`, `null`)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--set {text!r}: expected key.sub=value, e.g. train.max_steps=100")
    parts = key.split(".")
    if any(p == "" for p in parts):
        raise ValueError(f"--set {text!r}: empty segment in key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ValueError(f"--set {text!r}: the value is not valid YAML ({err})") from err
    path: KeyPath = tuple(int(p) if p.isdigit() else p for p in parts)
    return path, value


def apply_override(data: dict[str, Any], path: KeyPath, value: Any) -> None:
    """Set `value` at `path`, creating missing mappings; `list.N` may name an item or append one (N == len)."""
    node: Any = data
    for i, part in enumerate(path):
        last = i == len(path) - 1
        where = format_path(path[: i + 1])
        if isinstance(node, list):
            if not isinstance(part, int):
                raise ValueError(
                    f"{format_path(path[:i])} is a list: use a number, e.g. {format_path(path[:i])}.0"
                )
            if part > len(node):
                raise ValueError(f"{where}: index {part} is out of range (the list has {len(node)} items)")
            if part == len(node):
                node.append({})
        elif isinstance(node, dict):
            part = str(part)
            if not last and not isinstance(node.get(part), (dict, list)):
                if part in node and node[part] is not None:
                    raise ValueError(
                        f"{where} is {node[part]!r}, not a mapping: cannot set {format_path(path)}"
                    )
                node[part] = {}
        else:
            raise ValueError(
                f"{format_path(path[:i])} is {node!r}, not a mapping: cannot set {format_path(path)}"
            )
        if last:
            node[part] = value
        else:
            node = node[part]
