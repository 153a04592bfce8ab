"""`speeched init` through the real CLI: what it refuses (exit 2, one line, no traceback) and what it writes.

Issue 18: a non-empty --out, an --out that is a file, a speech model as decoder, a text model as encoder,
decoders transformers cannot run, a bad --model-option value, hub names while offline; file modes.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from helpers import minilm_path, tiny_encoder_dir
from transformers import BertConfig, DistilBertConfig, T5Config
from typer.testing import CliRunner

from speeched.cli import app
from speeched.commands.init import EPILOG
from speeched.modeling.model_dir import load_model_dir


def run_init(*args: str):
    return CliRunner().invoke(app, ["init", *args])


def assert_refused(res, first_line_has: str) -> str:
    """Exit 2, one `speeched init: ...` line saying `first_line_has`, no traceback; returns that line."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("speeched init: ")]
    assert len(lines) == 1, res.output
    assert first_line_has in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> dict[str, str]:
    """Config-only dirs (random init, instant): a speech encoder, a HuBERT, a BERT, a DistilBERT and a T5."""
    root = tmp_path_factory.mktemp("halves")
    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    out = {
        "encoder": str(tiny_encoder_dir(root, "speech2text")),
        "hubert": str(tiny_encoder_dir(root, "hubert")),
    }
    for name, config in (
        ("bert", BertConfig(**small)),
        ("distilbert", DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64)),
        ("t5", T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16)),
    ):
        config.save_pretrained(root / name)
        out[name] = str(root / name)
    return out


def base_args(halves: dict[str, str], out: Path) -> list[str]:
    return [
        "--encoder", halves["encoder"], "--decoder", minilm_path(),
        "--decoder-option", "num_hidden_layers=1", "--out", str(out),
    ]  # fmt: skip


def test_init_writes_a_loadable_model_whose_files_everyone_may_read(tmp_path, halves):
    out = tmp_path / "m"
    res = run_init(*base_args(halves, out))
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output
    expected = 0o666 & ~_umask()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes["model.safetensors"] == expected, modes  # safetensors alone wrote 0600
    assert set(modes.values()) == {expected}, modes
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.")]  # no temporary dir left
    assert load_model_dir(out).model.config.decoder.num_hidden_layers == 1


def test_a_trained_model_directory_is_not_overwritten_without_force(tmp_path, halves):
    out = tmp_path / "trained"
    assert run_init(*base_args(halves, out)).exit_code == 0
    (out / "best.json").write_text(json.dumps({"wer": 0.05}))
    before = (out / "model.safetensors").read_bytes()
    line = assert_refused(run_init(*base_args(halves, out)), "is not empty")
    assert "best.json" in line and "--force" in line
    assert (out / "model.safetensors").read_bytes() == before and (out / "best.json").is_file()

    res = run_init(*base_args(halves, out), "--force")
    assert res.exit_code == 0, res.output
    assert not (out / "best.json").exists()  # the old run's claims went with its weights
    assert (out / "model.safetensors").is_file()


def test_force_does_not_clear_a_directory_that_is_not_a_model(tmp_path, halves):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    assert_refused(run_init(*base_args(halves, out), "--force"), "not a speeched model or run")
    assert (out / "thesis.tex").read_text() == "keep me"


def test_out_that_is_a_file_is_refused(tmp_path, halves):
    out = tmp_path / "model.txt"
    out.write_text("x")
    assert_refused(run_init(*base_args(halves, out)), "is a file")


def test_out_under_a_file_is_refused(tmp_path, halves):
    (tmp_path / "plain").write_text("x")
    assert_refused(run_init(*base_args(halves, tmp_path / "plain" / "m")), "cannot write the model next to")


def test_a_speech_model_as_decoder_says_so(tmp_path, halves):
    line = assert_refused(
        run_init("--encoder", halves["encoder"], "--decoder", halves["hubert"], "--out", str(tmp_path / "m")),
        "cannot be the text decoder",
    )
    assert "speech model" in line and "--encoder" in line
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kind", ["distilbert", "t5"])
def test_an_unsupported_decoder_names_the_families_that_work(tmp_path, halves, kind):
    line = assert_refused(
        run_init("--encoder", halves["encoder"], "--decoder", halves[kind], "--out", str(tmp_path / "m")),
        "cannot be the text decoder",
    )
    assert kind in line and "GPT-2" in line and "coupling=prefix" in line
    assert len(line) < 600  # not transformers' 3.5 kB list of config classes
    if kind == "t5":
        assert "encoder-decoder" in line


def test_a_text_model_as_encoder_is_refused_before_any_forward(tmp_path, halves):
    line = assert_refused(
        run_init(
            "--encoder",
            halves["bert"],
            "--decoder",
            minilm_path(),
            "--out",
            str(tmp_path / "m"),
            "--feature-extractor",
            halves["encoder"],
        ),  # fmt: skip
        "reads input_ids (text), not audio",
    )
    assert "speech model" in line


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("ctc_weight=abc", "ctc_weight must be a number, got 'abc'"),
        ("ctc_weight=1.5", "ctc_weight must be in [0, 1)"),
        ("layer_weighting=maybe", "layer_weighting must be true or false"),
        ("adaptor_layers", "is not key=value"),
        ("no_such_option=1", "unknown model option(s) ['no_such_option']"),
    ],
)
def test_bad_model_options_are_one_line(tmp_path, halves, option, message):
    assert_refused(run_init(*base_args(halves, tmp_path / "m"), "--model-option", option), message)


def test_hub_names_offline_say_the_hub_is_unreachable_and_how_to_point_at_local_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = assert_refused(
        run_init("--encoder", "facebook/wav2vec2-base", "--decoder", "gpt2", "--out", str(tmp_path / "m")),
        "neither the encoder 'facebook/wav2vec2-base' nor the decoder 'gpt2'",
    )
    assert "hub cannot be reached (offline: HF_HUB_OFFLINE is set)" in line
    assert "--encoder DIR --decoder DIR" in line
    assert "tokenizer" not in line  # the old message blamed the tokenizer


def test_one_half_missing_offline_names_that_half(tmp_path, monkeypatch, halves):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = assert_refused(
        run_init("--encoder", halves["encoder"], "--decoder", "gpt2", "--out", str(tmp_path / "m")),
        "'gpt2' was not found locally",
    )
    assert "offline" in line and "pass a local directory" in line


def test_ctc_vocabulary_comes_from_the_manifests_through_the_data_reader(tmp_path, halves):
    rows = [{"audio": "a.wav", "text": "ab ba"}, {"audio": "b.wav", "text": "Cab"}]
    manifest = tmp_path / "train.csv"
    manifest.write_text("audio,text\n" + "".join(f"{r['audio']},{r['text']}\n" for r in rows))
    out = tmp_path / "m"
    res = run_init(
        *base_args(halves, out), "--model-option", "ctc_weight=0.3", "--ctc-vocab-from", str(manifest)
    )
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config["ctc_vocab"] == ["<blank>", "<unk>", "a", "b", "c", "|"]
    missing = assert_refused(
        run_init(*base_args(halves, tmp_path / "m2"), "--ctc-vocab-from", str(tmp_path / "none.jsonl")),
        "no such file",
    )
    assert "none.jsonl" in missing


def test_the_examples_are_written_for_help():
    assert EPILOG.startswith("Examples:") and EPILOG.count("speeched init --encoder") == 2
    assert "Exit codes" in EPILOG


def test_help_shows_examples():
    res = CliRunner().invoke(app, ["init", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "speeched init --encoder facebook/wav2vec2-base" in res.output
    assert "--force" in res.output


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_user_errors_of_modeling_and_recipes_are_speeched_errors():
    """The CLI prints these as one line with exit 2; callers catching ValueError keep working."""
    from speeched.errors import EXIT_USAGE, SpeechedError
    from speeched.modeling.configuration import ModelConfigError
    from speeched.modeling.halves import HalfLoadError
    from speeched.modeling.model_dir import ModelDirError
    from speeched.modeling.prompting import PromptError
    from speeched.modeling.tokens import SpecialTokenError
    from speeched.training.recipe import RecipeError

    for cls in (ModelDirError, HalfLoadError, SpecialTokenError, PromptError, ModelConfigError):
        err = cls("x")
        assert isinstance(err, SpeechedError) and isinstance(err, ValueError) and err.exit_code == EXIT_USAGE
    err = RecipeError("r.yaml", ["a", "b"])
    assert isinstance(err, SpeechedError) and isinstance(err, ValueError) and err.exit_code == EXIT_USAGE
    assert str(err).splitlines()[0] == "r.yaml: 2 problems in the recipe:"
