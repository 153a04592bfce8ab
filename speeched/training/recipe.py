"""Load a training recipe: read the YAML, apply `--set` overrides, resolve paths, validate, report.

`load_recipe` reports *every* problem at once, each with its key path, line in the file, the bad
value, what is expected and a "did you mean" for typos, before anything heavy is imported (no torch
here): a typo must cost a second, not a model download.

The parts live in their own modules; import them from here:
  speeched.training.schema         the pydantic models (every key, default and description, once)
  speeched.training.recipe_errors  `RecipeError` and the translation of pydantic's errors
  speeched.training.recipe_paths   path resolution and the manifests' first-record check
  speeched.training.overrides      YAML with line numbers, `--set key.sub=value`
docs/recipe-reference.md is generated from the schema by scripts/gen_recipe_reference.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from speeched.training.overrides import KeyPath, Problem, apply_override, load_yaml_with_lines, parse_override
from speeched.training.recipe_errors import RecipeError, problems_from_validation, render_all
from speeched.training.recipe_paths import column_problems, resolve_paths
from speeched.training.schema import (
    DEFAULT_NORMALIZER,
    LOWER_IS_BETTER,
    TASK_METRICS,
    UNFREEZE_GROUPS,
    UNFREEZE_PRESETS,
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    FinetuneConfig,
    LanguagesConfig,
    LogConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    Recipe,
    TrainConfig,
)

__all__ = [
    "DEFAULT_NORMALIZER",
    "LOWER_IS_BETTER",
    "TASK_METRICS",
    "UNFREEZE_GROUPS",
    "UNFREEZE_PRESETS",
    "CheckpointConfig",
    "DataConfig",
    "EvalConfig",
    "FinetuneConfig",
    "LanguagesConfig",
    "LogConfig",
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "Recipe",
    "RecipeError",
    "TrainConfig",
    "load_recipe",
]


def load_recipe(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    output_dir: str | os.PathLike[str] | None = None,
    check_paths: bool = True,
) -> Recipe:
    """Read, override, resolve and validate a recipe; raise `RecipeError` listing every problem.

    `overrides` are `key.sub=value` strings (`data.train.0.path=x.jsonl`); values are YAML scalars.
    Relative paths in the file resolve against the recipe's folder, paths given by `--set` against
    the current directory. `check_paths=False` skips existence checks (to validate recipes whose
    data is not there yet).
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise RecipeError(source, [f"cannot read the recipe: {err.strerror or err}"]) from err
    data, lines, problems = load_yaml_with_lines(text, source)
    if data is None and not problems:
        problems.append(Problem((), "the recipe is empty"))
    elif data is not None and not isinstance(data, dict):
        problems.append(Problem((), "the recipe must be a mapping of sections (task:, model:, data:, ...)"))
    if not isinstance(data, dict):
        raise RecipeError(source, render_all(problems, lines, {}))

    overridden: dict[KeyPath, str] = {}
    for item in overrides:
        try:
            key, value = parse_override(item)
            apply_override(data, key, value)
            overridden[key] = item
        except ValueError as err:
            text = str(err)
            problems.append(Problem((), text if text.startswith("--set") else f"--set {item}: {text}"))
    if output_dir is not None:
        data["output_dir"] = str(output_dir)
        overridden[("output_dir",)] = f"output_dir={output_dir}"
    if data.get("output_dir") is None:
        data["output_dir"] = os.path.join("runs", path.stem)
    if isinstance(data["output_dir"], str):
        data["output_dir"] = os.path.abspath(os.path.expanduser(data["output_dir"]))

    problems += resolve_paths(data, path.resolve().parent, overridden, check_paths)
    recipe = None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        problems += problems_from_validation(err, data)
    if recipe is not None and check_paths and not problems:
        problems += column_problems(recipe)
    if problems or recipe is None:
        raise RecipeError(source, render_all(problems, lines, overridden))
    return recipe
