"""prepare_run: `train` and `--dry-run` refuse the same recipes, with the same one-line message, before the
model is built; issue 18's training fixes (target already reached, another model's checkpoint, progress
lines on a pipe, Ctrl-C, the duration range recorded in the exported model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import tone_corpus, write_tiny_recipe
from typer.testing import CliRunner

import speeched.training.run as run_module
from speeched.cli import app


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tone_corpus(tmp_path_factory.mktemp("corpus"), num=12, dev=3)


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _message(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("speeched train:")]
    assert len(lines) == 1, result.output
    return lines[0]


def _bad_audio(tmp: Path, corpus: Path) -> dict:
    (tmp / "empty.wav").write_bytes(b"")
    rows = (corpus / "train.jsonl").read_text().splitlines()[:3]
    bad = json.loads(rows[0]) | {"id": "empty", "audio": str(tmp / "empty.wav")}
    manifest = tmp / "with-bad.jsonl"
    fixed = [json.loads(r) | {"audio": str(corpus / json.loads(r)["audio"])} for r in rows]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in [*fixed, bad]))
    return {"args": [], "data": {"train": [{"path": str(manifest)}], "on_bad_audio": "error"}}


def _earlier_run(tmp: Path, corpus: Path) -> dict:
    ckpt = tmp / "out" / "checkpoints" / "step-00000005"
    ckpt.mkdir(parents=True)
    (ckpt / "meta.json").write_text(json.dumps({"step": 5, "files": {}}))
    (ckpt / "COMPLETE").write_text("5\n")
    return {"args": ["--output-dir", str(tmp / "out")]}


def _under_a_file(tmp: Path, corpus: Path) -> dict:
    (tmp / "afile").write_text("not a directory")
    return {"args": ["--set", f"output_dir={tmp / 'afile' / 'run'}"]}


def _unwritable(tmp: Path, corpus: Path) -> dict:
    return {"args": ["--output-dir", "/proc/speeched-cannot-write-here/run"]}


def _missing_resume(tmp: Path, corpus: Path) -> dict:
    return {"args": ["--output-dir", str(tmp / "out"), "--resume", str(tmp / "no-such-checkpoint")]}


# (case, setup, start of the message after "speeched train: ")
REFUSALS = [
    ("bad audio with on_bad_audio: error", _bad_audio, "data.train[0]"),
    ("an earlier run's checkpoints without --resume", _earlier_run, ""),
    ("output_dir under a regular file", _under_a_file, "output_dir "),
    ("unwritable output_dir", _unwritable, "output_dir /proc/"),
    ("--resume of a missing checkpoint", _missing_resume, "--resume "),
]
EXPECTED_TEXT = {
    "bad audio with on_bad_audio: error": "empty",
    "an earlier run's checkpoints without --resume": "already holds checkpoints of an earlier run",
    "output_dir under a regular file": "which is a file",
    "unwritable output_dir": "choose another --output-dir",
    "--resume of a missing checkpoint": "does not exist",
}


@pytest.mark.parametrize(("case", "setup", "starts"), REFUSALS, ids=[c for c, _, _ in REFUSALS])
def test_train_and_dry_run_refuse_the_same_recipes_before_building_the_model(
    tmp_path, corpus, monkeypatch, case, setup, starts
):
    spec = setup(tmp_path, corpus)
    recipe = write_tiny_recipe(tmp_path, corpus, **{k: v for k, v in spec.items() if k != "args"})

    def never(*_a, **_k):
        raise AssertionError("the model was built before a cheap check refused the run")

    monkeypatch.setattr(run_module, "build_model", never)
    given = any("output" in a for a in spec["args"])
    default_out = [] if given else ["--output-dir", str(tmp_path / "fresh")]
    messages = {}
    for mode in ("train", "dry-run"):
        extra = ["--dry-run"] if mode == "dry-run" else []
        result = _invoke("train", str(recipe), *default_out, *spec["args"], *extra)
        assert result.exit_code == 2, (mode, result.output)
        assert (
            "Traceback" not in result.output
            and result.exception is None
            or isinstance(result.exception, SystemExit)
        )
        messages[mode] = _message(result)
    assert messages["train"] == messages["dry-run"]
    assert messages["train"].startswith(f"speeched train: {starts}")
    assert EXPECTED_TEXT[case] in messages["train"]
    assert not (tmp_path / "fresh" / "checkpoints").exists()


def test_dry_run_writes_nothing(tmp_path, corpus):
    recipe = write_tiny_recipe(tmp_path, corpus)
    result = _invoke("train", str(recipe), "--dry-run", "--output-dir", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "dry run OK" in result.output and not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    """A 2-step run through the CLI (stdout is not a terminal here)."""
    tmp = tmp_path_factory.mktemp("trained")
    recipe = write_tiny_recipe(tmp, corpus, eval={"every_steps": 2, "max_new_tokens": 3})
    result = _invoke("train", str(recipe), "--output-dir", str(tmp / "run"))
    assert result.exit_code == 0, result.output
    return {"recipe": recipe, "out": tmp / "run", "output": result.output, "tmp": tmp}


def test_progress_is_plain_lines_when_not_a_terminal(trained):
    assert "step 1/2: loss " in trained["output"] and "step 2/2: loss " in trained["output"]
    assert "\r" not in trained["output"] and "it/s" not in trained["output"]


def test_exported_model_records_the_training_duration_range(trained, corpus):
    config = json.loads((trained["out"] / "best" / "config.json").read_text())
    rows = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()[:8]]  # limit: 8
    d = np.array([r["duration"] for r in rows])
    got = config["training_durations"]
    assert got["min"] == pytest.approx(d.min(), abs=2e-3) and got["max"] == pytest.approx(d.max(), abs=2e-3)
    assert got["median"] == pytest.approx(np.median(d), abs=2e-3)
    assert got["p95"] == pytest.approx(np.percentile(d, 95), abs=2e-3)
    assert config["decoding"] == {"num_beams": 1, "ctc_weight": 0.0}  # written next to it


def test_wer_is_percent_everywhere_and_labelled(trained):
    record = json.loads((trained["out"] / "best" / "best.json").read_text())
    dev = [
        json.loads(line)["values"]
        for line in (trained["out"] / "metrics.jsonl").read_text().splitlines()
        if '"dev/dev"' in line
    ]
    assert record["metric"] == "wer_percent" and record["value"] == pytest.approx(dev[-1]["wer_percent"])
    assert f"wer%={dev[-1]['wer_percent']:.4g}" in trained["output"]


def test_resume_past_the_target_says_it_is_already_reached(trained):
    result = _invoke(
        "train", str(trained["recipe"]), "--output-dir", str(trained["out"]), "--resume", "auto",
        "--set", "train.max_steps=1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "already at step 2, which reaches the target of 1 steps" in result.output


def test_resume_from_another_models_checkpoint_is_one_line(trained, tmp_path, corpus):
    other = write_tiny_recipe(tmp_path, corpus, model={"decoder_options": {"num_hidden_layers": 2}})
    ckpt = trained["out"] / "checkpoints" / "step-00000002"
    result = _invoke("train", str(other), "--output-dir", str(tmp_path / "b"), "--resume", str(ckpt))
    assert result.exit_code == 2, result.output
    line = _message(result)
    assert "belongs to a different model" in line and "num_hidden_layers 1 vs 2" in line
    assert "size mismatch" not in result.output and "Traceback" not in result.output
    dry = _invoke(
        "train", str(other), "--output-dir", str(tmp_path / "b"), "--resume", str(ckpt), "--dry-run"
    )
    assert dry.exit_code == 2 and _message(dry) == line  # the dry run refuses it too, in the same words


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("training did not get there in time")
        time.sleep(0.2)


def test_ctrl_c_saves_and_says_how_to_resume(tmp_path, corpus):
    recipe = write_tiny_recipe(
        tmp_path,
        corpus,
        train={"max_steps": 10000, "seed": 0, "log_every": 1},
        checkpoint={"every_steps": 5000, "keep_last": 2},
        eval={"every_steps": None, "max_new_tokens": 3},
    )
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "speeched.cli", "train", str(recipe), "--output-dir", str(out)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # as from a terminal: a child started with SIGINT ignored (inherited from the test worker) would ignore
        # Ctrl-C, since Python only installs its KeyboardInterrupt handler when SIGINT is not ignored at start
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )

    def logged_steps() -> int:
        path = out / "metrics.jsonl"
        return len(path.read_text().splitlines()) if path.exists() else 0

    _wait_for(lambda: logged_steps() >= 3, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    last = [line for line in stderr.splitlines() if line.startswith("speeched train:")][-1]
    step = int(last.split("stopped at step ")[1].split()[0])
    assert step >= 3 and last.endswith("resume with `--resume auto`")
    assert f"checkpoint saved at step {step}" in last
    assert (out / "checkpoints" / f"step-{step:08d}" / "COMPLETE").is_file()


def test_feature_cache_run_reuses_features_on_resume(tmp_path, corpus):
    recipe = write_tiny_recipe(
        tmp_path, corpus, data={"feature_cache": True}, train={"max_steps": 1, "seed": 0}
    )
    out = tmp_path / "run"
    assert _invoke("train", str(recipe), "--output-dir", str(out)).exit_code == 0
    files = {p: p.stat().st_mtime_ns for p in (out / "feature_cache").rglob("*.npy")}
    assert len(files) == 2 * 8  # features + lengths of each of the 8 training utterances
    result = _invoke(
        "train", str(recipe), "--output-dir", str(out), "--resume", "auto", "--set", "train.max_steps=3"
    )
    assert result.exit_code == 0, result.output
    assert {
        p: p.stat().st_mtime_ns for p in (out / "feature_cache").rglob("*.npy")
    } == files  # not re-extracted
    assert yaml.safe_load((out / "checkpoints" / "step-00000003" / "recipe.yaml").read_text())["data"][
        "feature_cache"
    ]


@pytest.fixture(scope="module")
def card_run(tmp_path_factory):
    """A 2-step run of a CTC model on a `data synth`-like corpus (corpus.json beside the manifests), with
    averaging, under the default umask 022."""
    tmp = tmp_path_factory.mktemp("card")
    corpus = tone_corpus(tmp / "corpus", num=8, dev=3)
    (corpus / "corpus.json").write_text(json.dumps({"splits": {}}))
    recipe = write_tiny_recipe(
        tmp, corpus, model={"ctc_weight": 0.3}, eval={"every_steps": 2, "max_new_tokens": 3, "ctc_weight": 0.3},
        checkpoint={"every_steps": 1, "keep_last": 5, "average_last": 2},
    )  # fmt: skip
    old = os.umask(0o022)
    try:
        result = _invoke("train", str(recipe), "--output-dir", str(tmp / "run"))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    return tmp / "run"


def test_weights_we_write_get_the_umask_mode(card_run):
    for path in [
        card_run / "best" / "model.safetensors",
        card_run / "averaged" / "model.safetensors",
        card_run / "checkpoints" / "step-00000002" / "model" / "model.safetensors",
    ]:
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_best_and_averaged_carry_a_model_card(card_run):
    card = (card_run / "best" / "README.md").read_text()
    info = json.loads((card_run / "best" / "model_card.json").read_text())
    assert info["task"] == "asr" and info["synthetic"] is True
    assert info["encoder"].endswith("speech2text") or "speech2text" in info["encoder"]
    assert info["decoder"] == write_tiny_recipe.__globals__["minilm_path"]()
    roles = {(d["name"], d["role"]): d for d in info["data"]}
    train, dev = roles[("train", "train")], roles[("dev", "dev")]
    rows = [
        json.loads(line) for line in (card_run.parent / "corpus" / "train.jsonl").read_text().splitlines()
    ]
    assert train["utterances"] == 8 and dev["utterances"] == 3
    assert train["hours"] == pytest.approx(sum(r["duration"] for r in rows) / 3600, abs=1e-4)
    assert info["recipe"]["model"]["ctc_weight"] == 0.3 and info["recipe"]["checkpoint"]["average_last"] == 2
    wers = {m["decoding"]["ctc_weight"]: m for m in info["metrics"] if m["metric"] == "wer"}
    assert set(wers) == {0.3, 0.0}  # joint CTC/attention (as selected) and attention-only, measured once
    normalizer = info["recipe"]["eval"]["normalizer"]
    assert normalizer and all(m["normalizer"] == normalizer and m["dataset"] == "dev" for m in wers.values())
    assert wers[0.3]["value"] == pytest.approx(
        json.loads((card_run / "best" / "best.json").read_text())["value"] / 100
    )
    c = info["compute"]
    assert c["device"] == "cpu" and c["processes"] == 1 and c["steps"] == 2 and c["precision"] == "no"
    assert c["wall_seconds"] > 0
    assert "## Data" in card and "| train | train |" in card and "synthetic" in card.lower()
    averaged = json.loads((card_run / "averaged" / "config.json").read_text())
    best = json.loads((card_run / "best" / "config.json").read_text())
    assert averaged["training_durations"] == best["training_durations"]
    assert (card_run / "averaged" / "README.md").is_file()
