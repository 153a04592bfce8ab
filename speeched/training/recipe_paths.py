"""Where a recipe's paths point: made absolute, checked to exist, and manifests' first record checked.

Relative paths in the file resolve against the recipe's folder, `--set` values against the current
directory; hub IDs such as `facebook/wav2vec2-base` are left alone. The first record of each local
manifest is read with the data layer's own reader (`speeched.data.sources`), so a recipe whose columns
do not match its manifest fails in a second, with the same message `train` would give later.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from speeched.data.config import DataSource
from speeched.data.sources import ManifestError, detect_format, load_source
from speeched.training.overrides import KeyPath, Problem
from speeched.training.schema import Recipe

MANIFEST_FORMATS = ("jsonl", "csv", "tsv")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_paths(
    data: dict[str, Any], recipe_dir: Path, overridden: dict[KeyPath, str], check: bool
) -> list[Problem]:
    """Make local paths absolute (recipe-relative; `--set` values cwd-relative) and report missing ones."""
    problems: list[Problem] = []

    def base(path: KeyPath) -> Path:
        over = any(path[:n] in overridden for n in range(len(path) + 1))
        return Path.cwd() if over else recipe_dir

    def absolute(path: KeyPath, value: str) -> Path:
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else (base(path) / p).resolve()

    model = data.get("model")
    if isinstance(model, dict):
        if isinstance(model.get("path"), str):
            key: KeyPath = ("model", "path")
            raw = model["path"]
            p = absolute(key, raw)
            model["path"] = str(p)
            if check and not p.is_dir():
                what = "is a file, expected a model directory" if p.exists() else "model directory not found"
                problems.append(Problem(key, f"{what}: {p} (make it with `speeched init`)", raw, True))
        for name in ("encoder", "decoder", "tokenizer", "feature_extractor"):
            value = model.get(name)
            if not isinstance(value, str):
                continue
            key = ("model", name)
            p = absolute(key, value)
            if p.exists():
                model[name] = str(p)
            elif not _HUB_ID.match(value) or value.startswith((".", "~")):
                model[name] = str(p)
                if check:
                    problems.append(Problem(key, f"local directory not found: {p}", value, True))
    data_section = data.get("data")
    if isinstance(data_section, dict):
        for split in ("train", "dev"):
            sources = data_section.get(split)
            if not isinstance(sources, list):
                continue
            for i, src in enumerate(sources):
                if not isinstance(src, dict) or not isinstance(src.get("path"), str):
                    continue
                key = ("data", split, i, "path")
                raw = src["path"]
                p = absolute(key, raw)
                if src.get("format") == "datasets" and not p.exists():
                    continue  # a hub dataset name
                src["path"] = str(p)
                if check and not p.exists():
                    problems.append(Problem(key, f"data file not found: {p}", raw, True))
    return problems


def first_record_problem(src: DataSource, where: KeyPath, task: str) -> Problem | None:
    """Read the first record of a local manifest through the data reader; None when it has what `task` needs.

    Only JSONL/CSV/TSV files are read (one record); datasets and audiofolders are checked by the scan.
    """
    fmt = src.format
    if fmt == "auto":
        try:
            fmt = detect_format(src.path)
        except ManifestError:
            return None
    if fmt not in MANIFEST_FORMATS or not os.path.isfile(src.path):
        return None
    try:
        first = load_source(src.model_copy(update={"format": fmt, "limit": 1}))
    except ManifestError as err:
        return Problem((*where, "path"), str(err))
    if task != "st" or not first or first[0].translation is not None:
        return None
    name = src.columns.translation
    spare = [k for k in first[0].extra if k != "text_error"]
    hint = f" (columns not otherwise used: {', '.join(spare)})" if spare else ""
    return Problem(
        (*where, "columns", "translation"),
        f"column {name!r} is missing or empty in the first record of {src.path} (speech translation needs a "
        f"target){hint}: set columns.translation to the right column",
        name,
        True,
    )


def column_problems(recipe: Recipe) -> list[Problem]:
    """The first record of each local manifest has the audio and target columns the task needs."""
    problems: list[Problem] = []
    for split in ("train", "dev"):
        for i, src in enumerate(getattr(recipe.data, split)):
            problem = first_record_problem(src, ("data", split, i), recipe.task)
            if problem is not None:
                problems.append(problem)
    return problems
