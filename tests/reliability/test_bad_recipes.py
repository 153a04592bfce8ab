"""Bad recipes fail fast: exit 2, a message naming the key and the fix, and (for schema problems) before
torch or transformers is even imported — a typo must cost a second, not a model download.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml
from helpers import minilm_path, tiny_encoder_dir
from typer.testing import CliRunner

from speeched.cli import app


@pytest.fixture
def base(tmp_path) -> dict[str, Any]:
    """A valid recipe (local tiny encoder, MiniLM decoder, a two-line manifest)."""
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "a.wav", (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    rows = [{"id": f"u{i}", "audio": "a.wav", "text": "one two"} for i in range(2)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    enc = tiny_encoder_dir(tmp_path, "speech2text")
    return {
        "task": "asr",
        "model": {"encoder": str(enc), "decoder": minilm_path(), "decoder_options": {"num_hidden_layers": 1}},
        "data": {"train": [{"path": str(tmp_path / "train.jsonl")}]},
        "optim": {"lr": 1e-3},
        "train": {"max_steps": 1},
        "checkpoint": {"every_steps": 1},
        "log": {"plots": False},
    }


def _edit(recipe: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node: Any = recipe
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()

# (case id, edits {dotted key: value or _DELETE}, renames {old dotted key: new last name}, --set args,
#  substrings the error must contain)
SCHEMA_CASES: list[tuple[str, dict[str, Any], dict[str, str], list[str], list[str]]] = [
    ("typo-top", {}, {"train": "trian"}, [], ["unknown key 'trian'", "did you mean 'train'"]),
    ("typo-depth2", {}, {"optim.lr": "lrr"}, [], ["optim.lrr", "did you mean 'lr'"]),
    (
        "typo-depth4",
        {"data.train.0.filters": {"max_duraton": 10}},
        {},
        [],
        ["data.train.0.filters.max_duraton", "did you mean 'max_duration'"],
    ),
    ("wrong-type", {"train.max_steps": "ten"}, {}, [], ["train.max_steps", '"ten"', "expected integer"]),
    ("wrong-type-section", {"optim": [1e-3]}, {}, [], ["optim", "expected mapping"]),
    ("negative-lr", {"optim.lr": -0.001}, {}, [], ["optim.lr", "-0.001", "greater than 0"]),
    ("bad-literal", {"optim.scheduler": "cosin"}, {}, [], ["optim.scheduler", "did you mean 'cosine'"]),
    (
        "missing-data-file",
        {"data.train.0.path": "nowhere.jsonl"},
        {},
        [],
        ["data.train.0.path", "data file not found"],
    ),
    (
        "missing-model-dir",
        {"model": {"path": "no-such-model"}},
        {},
        [],
        ["model.path", "make it with `speeched init`"],
    ),
    (
        "missing-local-encoder",
        {"model.encoder": "./enc-missing"},
        {},
        [],
        ["model.encoder", "local directory not found"],
    ),
    (
        "st-without-translation",
        {"task": "st"},
        {},
        [],
        ["data.train.0.columns.translation", "set columns.translation"],
    ),
    (
        "steps-and-epochs",
        {"train.epochs": 2},
        {},
        [],
        ["train.max_steps", "set exactly one of `max_steps` and `epochs`"],
    ),
    (
        "metrics-vs-task",
        {"eval": {"metrics": ["bleu"]}},
        {},
        [],
        ["eval.metrics", "do not score task 'asr'", "'wer'"],
    ),
    ("missing-section", {"data": _DELETE}, {}, [], ["data", "required key is missing"]),
    (
        "bad-set-syntax",
        {},
        {},
        ["--set", "trainmax_steps"],
        ["--set 'trainmax_steps'", "expected key.sub=value"],
    ),
    ("bad-set-path", {}, {}, ["--set", "data.train.5.path=x"], ["data.train.5", "out of range"]),
    (
        "set-typo",
        {},
        {},
        ["--set", "train.max_step=3"],
        ["train.max_step", "from --set", "did you mean 'max_steps'"],
    ),
]


def _write(tmp: Path, base: dict[str, Any], edits: dict[str, Any], renames: dict[str, str]) -> Path:
    recipe = copy.deepcopy(base)
    for key, value in edits.items():
        _edit(recipe, key, value)
    for old, new in renames.items():
        *parents, last = old.split(".")
        node = recipe
        for p in parents:
            node = node[p]
        node[new] = node.pop(last)
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.mark.parametrize("case", SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES])
def test_schema_problem_exits_2_naming_key_and_fix(tmp_path, base, case):
    _, edits, renames, extra, expected = case
    path = _write(tmp_path, base, edits, renames)
    res = CliRunner().invoke(app, ["train", str(path), *extra, "--output-dir", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    for text in expected:
        assert text in res.output, f"{text!r} not in:\n{res.output}"
    assert not (tmp_path / "run").exists()


def test_yaml_syntax_error_names_line(tmp_path, base):
    path = _write(tmp_path, base, {}, {})
    path.write_text(path.read_text() + "optim:\n  lr: [1e-3\n")
    res = CliRunner().invoke(app, ["train", str(path)])
    assert res.exit_code == 2
    assert "is not valid YAML at line" in res.output, res.output


def test_schema_errors_are_fast_and_import_no_models(tmp_path, base):
    """All schema cases in one fresh interpreter: each under a second; torch and model code never imported.

    (`setup_logging` imports `transformers.utils` to quiet its logger; no model module is loaded. The
    schema reads the prompt template fields from `speeched.modeling.prompting`, which is plain Python.)
    """
    paths = []
    for i, (_, edits, renames, extra, _) in enumerate(SCHEMA_CASES):
        d = tmp_path / f"c{i}"
        d.mkdir()
        paths.append([str(_write(d, base, edits, renames)), *extra])
    script = textwrap.dedent(
        """
        import json, sys, time
        from speeched.cli import app
        HEAVY = ("transformers.models", "transformers.modeling_utils", "speeched.modeling.")
        LIGHT = ("speeched.modeling.prompting",)

        def heavy_modules():
            return [
                m for m in sys.modules
                if (m.split(".")[0] in ("torch", "accelerate") or m.startswith(HEAVY)) and m not in LIGHT
            ]

        cases, times, codes = json.loads(sys.argv[1]), [], []
        for args in cases:
            t = time.perf_counter()
            codes.append(app(["train", *args], standalone_mode=False))  # click returns Exit's code
            times.append(time.perf_counter() - t)
            heavy = heavy_modules()
            if heavy:
                sys.exit(f"{args}: imported {heavy[:5]}")
        heavy = heavy_modules()
        print(json.dumps({"codes": codes, "times": times, "heavy": heavy}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(paths)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["codes"] == [2] * len(SCHEMA_CASES), result
    assert result["heavy"] == [], f"schema errors imported {result['heavy']}"
    # The first case pays for importing pydantic/yaml/typer and `transformers.utils` (setup_logging) once:
    # ~1.5 s idle, 5-6 s measured with 8 jobs on 2 cores. Every later one is pure validation.
    slow = {c[0]: round(t, 2) for c, t in zip(SCHEMA_CASES, result["times"], strict=True)}
    assert result["times"][0] < 10.0 and max(result["times"][1:]) < 1.0, sorted(
        slow.items(), key=lambda kv: -kv[1]
    )[:4]


def test_unknown_hub_id_offline_fails_before_training(tmp_path, base, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = _write(tmp_path, base, {"model.encoder": "nobody/missing"}, {})
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", str(path), "--output-dir", str(out)])
    assert res.exit_code == 2, res.output
    assert "'nobody/missing' was not found locally" in res.output
    assert "pass a local directory" in res.output
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()
