"""Recipe schema and loader: every problem reported at once, with key path, line and a fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from speeched.errors import SpeechedError
from speeched.training.recipe import Recipe, RecipeError, load_recipe

REPO = Path(__file__).resolve().parents[1]

BASE = """\
task: asr
model:
  path: init
data:
  train:
    - path: train.jsonl
  dev:
    - path: dev.jsonl
optim:
  lr: 1.0e-4
train:
  max_steps: 100
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "init").mkdir()
    row = {"id": "a", "audio": "a.wav", "text": "one", "duration": 1.0}
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "dev.jsonl").write_text(json.dumps(row) + "\n")
    return tmp_path


def write(workdir: Path, text: str, name: str = "r.yaml") -> Path:
    path = workdir / name
    path.write_text(text)
    return path


def error_of(path: Path, **kwargs) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, **kwargs)
    return str(info.value)


def test_minimal_recipe_loads_with_defaults_and_resolved_paths(workdir: Path, monkeypatch) -> None:
    monkeypatch.chdir(workdir)
    recipe = load_recipe(write(workdir, BASE))
    assert recipe.model.path == str(workdir / "init")
    assert recipe.data.train[0].path == str(workdir / "train.jsonl")
    assert recipe.data.dev[0].name == "dev"
    assert recipe.eval.metrics == ["wer", "cer"]
    assert recipe.checkpoint.best_metric == "wer" and recipe.checkpoint.best_mode == "min"
    assert recipe.output_dir == str(workdir / "runs" / "r")
    assert recipe.optim.group_lrs() == {"new": 1e-4, "encoder": 1e-4, "decoder": 1e-4}


def test_unknown_key_at_depth_names_path_line_and_suggestion(workdir: Path) -> None:
    msg = error_of(write(workdir, BASE.replace("  lr: 1.0e-4", "  lrr: 1.0e-4")))
    assert "optim.lrr (line 10)" in msg
    assert "did you mean 'lr'?" in msg


def test_several_problems_reported_at_once(workdir: Path) -> None:
    text = BASE.replace("lr: 1.0e-4", "lr: -1").replace("max_steps: 100", "max_steps: lots\n  grad_acum: 2")
    text += "eval:\n  normalizer: englsh\n"
    with pytest.raises(RecipeError) as info:
        load_recipe(write(workdir, text))
    problems = info.value.problems
    assert len(problems) == 4, problems
    joined = "\n".join(problems)
    assert "optim.lr (line 10): got -1: expected greater than 0" in joined
    assert 'train.max_steps (line 12): got "lots"' in joined and "integer" in joined
    assert "train.grad_acum (line 13)" in joined and "did you mean 'grad_accum'?" in joined
    assert "eval.normalizer (line 15)" in joined and "did you mean 'english'?" in joined


def test_wrong_type_for_section(workdir: Path) -> None:
    msg = error_of(write(workdir, BASE + "finetune: lora\n"))
    assert 'finetune (line 13): got "lora": expected mapping' in msg


def test_missing_files_named_with_key_and_line(workdir: Path) -> None:
    text = BASE.replace("path: dev.jsonl", "path: nope.jsonl").replace("path: init", "path: no-model")
    msg = error_of(write(workdir, text))
    assert "model.path (line 3)" in msg and "model directory not found" in msg
    assert "data.dev.0.path (line 8)" in msg and "nope.jsonl" in msg
    # ...and the same recipe validates when paths are not checked
    assert load_recipe(workdir / "r.yaml", check_paths=False).data.dev[0].path == str(workdir / "nope.jsonl")


def test_overrides_apply_and_are_reported_by_their_flag(workdir: Path, monkeypatch) -> None:
    other = workdir / "sub"
    other.mkdir()
    (other / "x.jsonl").write_text((workdir / "train.jsonl").read_text())
    monkeypatch.chdir(other)  # --set paths are relative to the current directory
    recipe = load_recipe(
        write(workdir, BASE), ["train.max_steps=7", "data.train.0.path=x.jsonl", "optim.betas=[0.8, 0.9]"]
    )
    assert recipe.train.max_steps == 7
    assert recipe.data.train[0].path == str(other / "x.jsonl")
    assert recipe.optim.betas == (0.8, 0.9)
    msg = error_of(workdir / "r.yaml", overrides=["optim.lr=-2", "nokey"])
    assert "optim.lr (from --set optim.lr=-2)" in msg
    assert "expected key.sub=value" in msg
    msg = error_of(workdir / "r.yaml", overrides=["optimm.lr=1", "data.dev.3.path=x"])
    assert "optimm (from --set optimm.lr=1): unknown key 'optimm'; did you mean 'optim'?" in msg
    assert "--set data.dev.3.path=x: data.dev.3: index 3 is out of range" in msg


def test_hub_ids_left_alone_local_dirs_resolved(workdir: Path) -> None:
    (workdir / "enc").mkdir()
    text = BASE.replace("  path: init", "  encoder: enc\n  decoder: bert-base/uncased-x\n  tokenizer: ./tok")
    msg = error_of(write(workdir, text))
    assert "model.tokenizer (line 5)" in msg and "local directory not found" in msg
    recipe = load_recipe(workdir / "r.yaml", check_paths=False)
    assert recipe.model.encoder == str(workdir / "enc")
    assert recipe.model.decoder == "bert-base/uncased-x"


def test_max_steps_and_epochs_exactly_one(workdir: Path) -> None:
    assert "set exactly one" in error_of(
        write(workdir, BASE.replace("max_steps: 100", "max_steps: 1\n  epochs: 2"))
    )
    msg = error_of(write(workdir, BASE.replace("max_steps: 100", "seed: 1")))
    assert "train.max_steps (line 11)" in msg and "neither is set" in msg  # line of `train:`


def test_st_requires_translation_column(workdir: Path) -> None:
    msg = error_of(write(workdir, BASE.replace("task: asr", "task: st")))
    assert "data.train.0.columns.translation (line 6)" in msg
    assert "speech translation needs a target" in msg
    rows = {"id": "a", "audio": "a.wav", "text": "eins", "de": "one"}
    for name in ("train.jsonl", "dev.jsonl"):
        (workdir / name).write_text(json.dumps(rows) + "\n")
    cols = "\n      columns: {translation: de}"
    ok = BASE.replace("task: asr", "task: st").replace("train.jsonl", "train.jsonl" + cols)
    ok = ok.replace("dev.jsonl", "dev.jsonl" + cols)
    recipe = load_recipe(write(workdir, ok))
    assert recipe.eval.metrics == ["bleu", "chrf"] and recipe.checkpoint.best_mode == "max"


def test_metrics_must_match_task_and_best_mode(workdir: Path) -> None:
    text = BASE + "eval:\n  metrics: [wer, bleu]\ncheckpoint:\n  best_metric: wer\n  best_mode: max\n"
    with pytest.raises(RecipeError) as info:
        load_recipe(write(workdir, text))
    joined = "\n".join(info.value.problems)
    assert "eval.metrics (line 14)" in joined and "'bleu'" in joined
    assert "checkpoint.best_mode (line 17)" in joined


def test_model_needs_path_or_encoder_and_decoder(workdir: Path) -> None:
    msg = error_of(write(workdir, BASE.replace("  path: init", "  encoder: facebook/wav2vec2-base")))
    assert "model.decoder" in msg and "composed together" in msg


def test_yaml_syntax_error_has_line(workdir: Path) -> None:
    msg = error_of(write(workdir, BASE + "eval: [unclosed\n"))
    assert "not valid YAML at line" in msg


def test_duplicate_key_is_an_error(workdir: Path) -> None:
    msg = error_of(write(workdir, BASE + "optim:\n  lr: 1.0\n"))
    assert "optim (line 13)" in msg and "duplicate key" in msg


def test_resolved_recipe_round_trips_through_yaml(workdir: Path) -> None:
    recipe = load_recipe(write(workdir, BASE))
    again = load_recipe(write(workdir, recipe.to_yaml(), "copy.yaml"))
    assert again == recipe


def test_recipe_module_does_not_import_torch() -> None:
    code = "import sys, speeched.training.recipe; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("path", sorted((REPO / "recipes").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path: Path) -> None:
    recipe = load_recipe(path, check_paths=False)
    assert isinstance(recipe, Recipe)


def test_shipped_recipes_exist() -> None:
    assert (REPO / "recipes" / "demo" / "asr-digits.yaml").is_file()


def test_reference_doc_is_up_to_date() -> None:
    """The generator runs as the docs say (a script, its own process) and matches the committed file."""
    committed = (REPO / "docs" / "recipe-reference.md").read_text(encoding="utf-8")
    generated = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_recipe_reference.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    assert committed == generated, (
        "docs/recipe-reference.md is stale: run .venv/bin/python scripts/gen_recipe_reference.py > "
        "docs/recipe-reference.md"
    )
    assert "`optim`" in committed and "`lr_new`" in committed
    assert "| `lr` | number (> 0) | `0.0001` |" in committed  # a row rendered from the schema itself


def test_recipe_error_is_a_user_error_with_exit_2(workdir: Path) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(workdir, BASE.replace("lr: 1.0e-4", "lrr: 1.0e-4")))
    assert isinstance(info.value, SpeechedError) and isinstance(info.value, ValueError)
    assert info.value.exit_code == 2


def test_demo_recipe_opens_with_its_command() -> None:
    first = (REPO / "recipes" / "demo" / "asr-digits.yaml").read_text().splitlines()[0]
    assert "speeched train recipes/demo/asr-digits.yaml" in first
    assert os.path.basename(first.split()[-1]) == "asr-digits.yaml"


# ---------------------------------------------------------------- staged unfreezing (optim.unfreeze)
def recipe_error(workdir: Path, optim: str = "", train: str = "") -> str:
    """The loader's message for BASE with extra lines in its optim (from line 11) and train sections."""
    path = workdir / "r.yaml"
    path.write_text(BASE.replace("\ntrain:\n", "\n" + optim + "train:\n") + train)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return str(info.value)


def test_mapping_errors_name_the_key_and_the_valid_groups(workdir: Path) -> None:
    msg = recipe_error(workdir, optim="  unfreeze: {decodr: 500, new: 10, encoder: -1}\n")
    assert "optim.unfreeze.decodr (line 11)" in msg and "did you mean 'decoder'?" in msg
    assert "groups here: encoder, decoder" in msg
    assert "optim.unfreeze.new" in msg and "new parts always train from step 0" in msg
    assert "optim.unfreeze.encoder" in msg and "start step ≥ 0" in msg
    msg = recipe_error(workdir, optim="  unfreeze: gradul\n")
    assert "optim.unfreeze (line 11)" in msg and "did you mean 'gradual'?" in msg
    msg = recipe_error(workdir, optim="  unfreeze_warmup: 100\n")
    assert "optim.unfreeze_warmup" in msg and "has no effect" in msg


def test_freeze_encoder_steps_is_an_alias_and_refused_together_with_unfreeze(workdir: Path) -> None:
    path = workdir / "r.yaml"
    path.write_text(BASE + "  freeze_encoder_steps: 40\n")
    recipe = load_recipe(path)
    assert recipe.optim.unfreeze == {"encoder": 40}
    assert recipe.train.freeze_encoder_steps == 0
    saved = workdir / "saved.yaml"  # what a checkpoint stores loads again (no "both given" error)
    saved.write_text(recipe.to_yaml())
    assert load_recipe(saved).optim.unfreeze_starts(100) == {"new": 0, "encoder": 40, "decoder": 0}
    msg = recipe_error(workdir, optim="  unfreeze: gradual\n", train="  freeze_encoder_steps: 40\n")
    assert "train.freeze_encoder_steps" in msg and "give only optim.unfreeze" in msg
