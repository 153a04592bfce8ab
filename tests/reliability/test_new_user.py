"""Issue 18 as a table: what a new user hit in one afternoon, each item run as a command with bad input.

One row per case: (issue item, name, setup, argv, expected exit code, expected first line of stderr as a
regex, extra checks, how to run it). Every case also asserts that no traceback was printed. Cases run in
a real process (`python -c "from speeched.cli import main; main()"`, umask 022, stdout and stderr apart,
neither a terminal) where signals, pipes, umask or stdout/stderr separation matter, in typer's CliRunner
elsewhere. Tiny models, corpora and a 2-step training run are built once per module (new_user_helpers.World).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import minilm_path
from new_user_helpers import (
    Result,
    World,
    assert_shared_modes,
    run_in_process,
    run_process,
    write_manifest,
)

README = Path(__file__).resolve().parents[2] / "README.md"
Setup = Callable[[World, Path], None]
Argv = Callable[[World, Path], list[str]]
Check = Callable[[World, Path, Result], None]


@dataclass
class Case:
    item: int
    name: str
    argv: Argv | None  # None: not a command (the README)
    code: int = 0
    first: str | None = None  # regex searched in the first non-empty line of stderr
    check: Check | None = None
    setup: Setup | None = None
    process: bool = False  # a real process instead of CliRunner
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 240
    interrupt: Callable[[World, Path], Callable[[], bool]] | None = None  # Ctrl-C when this says so
    in_cwd: bool = False  # run in TMP/cwd (an empty folder)
    slow: bool = False


def nothing(*_: object) -> None:
    return None


# ------------------------------------------------------------------------------------------ setups
def trained_model_dir(w: World, t: Path) -> None:
    """What a user has after training: a model dir with a best.json claiming its WER."""
    assert run_in_process(w.init_args(t / "trained")).code == 0
    (t / "trained" / "best.json").write_text(json.dumps({"metric": "wer_percent", "value": 5.0}))
    (t / "weights.before").write_bytes((t / "trained" / "model.safetensors").read_bytes())


def kept_trained_model(w: World, t: Path, r: Result) -> None:
    assert (t / "trained" / "best.json").is_file(), "the old best.json was removed without --force"
    assert (t / "trained" / "model.safetensors").read_bytes() == (t / "weights.before").read_bytes()


def synth_corpus_copy(w: World, t: Path) -> None:
    import shutil

    shutil.copytree(w.synth_corpus, t / "corpus")
    (t / "corpus" / "wavs" / "train" / "stale.wav").write_bytes(b"old")
    (t / "train.before").write_text((t / "corpus" / "train.jsonl").read_text())


def kept_corpus(w: World, t: Path, r: Result) -> None:
    assert (t / "corpus" / "train.jsonl").read_text() == (t / "train.before").read_text()
    assert (t / "corpus" / "wavs" / "train" / "stale.wav").exists()


def non_empty_dir(w: World, t: Path) -> None:
    (t / "full").mkdir()
    (t / "full" / "keep.txt").write_text("mine")


def kept_full(w: World, t: Path, r: Result) -> None:
    assert (t / "full" / "keep.txt").read_text() == "mine"


def a_file(w: World, t: Path) -> None:
    (t / "afile").write_text("not a directory")


def kept_file(w: World, t: Path, r: Result) -> None:
    assert (t / "afile").read_text() == "not a directory"


def earlier_run(w: World, t: Path) -> None:
    w.copy_run(t / "run")


def silent_manifest(w: World, t: Path) -> None:
    rows = [json.loads(x) for x in (w.corpus / "dev.jsonl").read_text().splitlines()[:2]]
    rows = [r | {"audio": str(w.corpus / r["audio"])} for r in rows]
    rows.append({"id": "zeros", "audio": str(w.wavs["zeros30"]), "text": "nothing said"})
    write_manifest(t / "silent.jsonl", rows)


def empty_manifest(w: World, t: Path) -> None:
    (t / "empty.jsonl").write_text("")
    w.recipe(t / "r", data={"train": [{"path": str(t / "empty.jsonl")}], "dev": []})


def bad_audio_recipe(w: World, t: Path) -> None:
    (t / "empty.wav").write_bytes(b"")
    rows = [json.loads(x) for x in (w.corpus / "train.jsonl").read_text().splitlines()[:3]]
    rows = [r | {"audio": str(w.corpus / r["audio"])} for r in rows]
    rows.append(rows[0] | {"id": "empty", "audio": str(t / "empty.wav")})
    write_manifest(t / "with-bad.jsonl", rows)
    w.recipe(t / "r", data={"train": [{"path": str(t / "with-bad.jsonl")}], "on_bad_audio": "error"})


def other_model_recipe(w: World, t: Path) -> None:
    w.recipe(t / "r", model={"decoder_options": {"num_hidden_layers": 2}})


def long_run_recipe(w: World, t: Path) -> None:
    w.recipe(
        t / "r",
        train={"max_steps": 100000, "seed": 0, "log_every": 1},
        checkpoint={"every_steps": 100000, "keep_last": 2},
        eval={"every_steps": None, "max_new_tokens": 3},
    )


def logged_steps(w: World, t: Path) -> Callable[[], bool]:
    metrics = t / "run" / "metrics.jsonl"
    return lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2


# ------------------------------------------------------------------------------------------ checks
def no_bars(r: Result) -> None:
    """Not a terminal: no carriage-return progress bars, no tqdm rates."""
    assert "\r" not in r.output, f"a progress bar was drawn on a pipe: {r.stderr[-300:]!r}"
    assert not re.search(r"\d+it/s|s/it\]", r.output), r.stderr[-300:]


def json_lines(r: Result, n: int) -> list[dict]:
    lines = r.stdout.splitlines()
    assert len(lines) == n and "==>" not in r.stdout, r.stdout
    return [json.loads(line) for line in lines]


def silence_is_cheap(w: World, t: Path, r: Result) -> None:
    """Both files give empty text, nothing like `[unused2]`; 10 minutes of zeros cost about nothing (the
    limit is mostly start-up and loading the model: decoding 10 minutes would take far longer)."""
    objs = json_lines(r, 2)
    assert [o["text"] for o in objs] == ["", ""], objs
    assert "[unused" not in r.stdout
    assert r.seconds < 90, f"5 s + 10 min of zeros took {r.seconds:.0f} s (start-up included)"
    no_bars(r)


def silent_scored_empty(w: World, t: Path, r: Result) -> None:
    preds = [json.loads(x) for x in (t / "e" / "predictions.jsonl").read_text().splitlines()]
    zeros = next(p for p in preds if p["id"] == "zeros")
    assert zeros["hypothesis"] == "", zeros
    assert "WER %" in r.stdout
    no_bars(r)


def wer_labelled(w: World, t: Path, r: Result) -> None:
    assert "WER %" in r.stdout, r.stdout
    train = w.run["result"].output
    assert "wer%=" in train, train
    assert not re.search(r"(?<![\w%])wer=\d", train), "training logs a bare `wer=` (a fraction?)"
    record = json.loads((w.run["dir"] / "best" / "best.json").read_text())
    assert record["metric"] == "wer_percent", record


def help_is_complete(command: list[str]) -> Check:
    """--help at 80 columns: examples, every option in full, --format is an output format, defaults of
    output locations said."""

    def check(w: World, t: Path, r: Result) -> None:
        import typer

        from speeched.cli import app

        cmd = typer.main.get_command(app)
        for part in command:
            cmd = cmd.commands[part]  # type: ignore[attr-defined]
        text = r.stdout
        assert "Examples" in text, f"`speeched {' '.join(command)} --help` shows no example"
        assert re.search(r"speeched " + re.escape(" ".join(command)) + r" \S", text), (
            "no example of this command"
        )
        if command == ["eval"]:  # its input format is --data-format: --format is an output format elsewhere
            assert "--data-format" in text and not re.search(r"(?<![\w-])--format(?![\w-])", text), text
        checked = 0
        for param in cmd.params:
            # typer vendors its own click: not an instance of `click.Option`, so ask the parameter
            if param.param_type_name != "option" or getattr(param, "hidden", False):
                continue
            checked += 1
            for name in (*param.opts, *param.secondary_opts):
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"{name} cut off or missing"
            if "--format" in param.opts:
                inputs = [
                    x for x in ("auto", "jsonl", "csv", "audiofolder", "datasets") if x in (param.help or "")
                ]
                assert not inputs, f"--format of `{' '.join(command)}` is an input format ({param.help!r})"
            if {"--out", "--output", "--output-dir", "-o"} & set(param.opts) and not param.required:
                assert "default" in (param.help or ""), f"{param.opts}: default location not shown"
        assert checked, "no option found: the check would pass on anything"

    return check


def check_writes_where_asked(w: World, t: Path, r: Result) -> None:
    assert (t / "where" / "durations.png").is_file() and (t / "where" / "bad_audio.jsonl").is_file()
    assert not list((t / "cwd").iterdir()), f"data check also wrote {list((t / 'cwd').iterdir())}"


def readme_tour(w: World, t: Path, r: Result) -> None:
    text = README.read_text()
    tour = text.split("## A tour of the CLI", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert not re.search(r"\b\w+\|\w+\b", tour.replace("||", "")), (
        "the tour has `a|b`: a shell pipe when pasted"
    )
    assert "speeched average" in tour, "the tour does not show `speeched average`"


def interrupted(w: World, t: Path, r: Result) -> None:
    line = next(x for x in reversed(r.stderr.splitlines()) if x.startswith("speeched train:"))
    assert re.search(r"stopped at step \d+", line) and line.rstrip().endswith(
        "resume with `--resume auto`"
    ), line
    step = int(re.search(r"stopped at step (\d+)", line).group(1))  # type: ignore[union-attr]
    if "checkpoint saved" in line:
        assert (t / "run" / "checkpoints" / f"step-{step:08d}" / "COMPLETE").is_file()


# ------------------------------------------------------------------------------------------ the table
def tx(w: World, *args: str) -> list[str]:
    """transcribe with energy segmentation (tones are not speech) and a low token cap (a random model)."""
    return ["transcribe", *args, "-m", str(w.model), "--segment", "energy", "--tokens-per-second", "2"]


def train_args(t: Path, *extra: str) -> list[str]:
    return ["train", str(t / "r" / "recipe.yaml"), *extra]


HELP_COMMANDS = [
    ["init"], ["train"], ["eval"], ["transcribe"], ["average"], ["export"],
    ["data", "synth"], ["data", "check"], ["data", "shard"],
]  # fmt: skip

CASES: list[Case] = [
    # 1. work is lost: a non-empty output directory is refused without --force
    Case(1, "init over a trained model", lambda w, t: w.init_args(t / "trained"), 2,
         r"^speeched init: .*is not empty.*--force", kept_trained_model, trained_model_dir),
    Case(1, "init --force replaces the old claims", lambda w, t: [*w.init_args(t / "trained"), "--force"], 0,
         None, lambda w, t, r: None if not (t / "trained" / "best.json").exists() else pytest.fail("stale best.json"),
         trained_model_dir),
    Case(1, "data synth over a corpus", lambda w, t: ["data", "synth", "--out", str(t / "corpus"), "--num", "20"],
         2, r"^speeched data synth: .*is not empty.*--force", kept_corpus, synth_corpus_copy),
    Case(1, "data shard into a non-empty folder",
         lambda w, t: ["data", "shard", str(w.corpus / "train.jsonl"), "--out", str(t / "full")], 2,
         r"^speeched data shard: .*is not empty", kept_full, non_empty_dir),
    Case(1, "average over a model dir",
         lambda w, t: ["average", *(str(w.run["dir"] / "checkpoints" / f"step-{s:08d}") for s in (1, 2)),
                       "--out", str(t / "trained")], 2,
         r"^speeched average: .*(not empty|already exists).*--force", kept_trained_model, trained_model_dir),
    Case(1, "export into an existing folder",
         lambda w, t: ["export", str(w.model), str(t / "full"), "--to", "transformers"], 2,
         r"^speeched export: .*already exists", kept_full, non_empty_dir),
    # 2. output locations checked or made before decoding; results kept per file
    Case(2, "transcribe -o into missing folders", lambda w, t: tx(w, str(w.wavs["a"]), "-o", str(t / "missing/dir/out.txt")),
         0, None, lambda w, t, r: (t / "missing" / "dir" / "out.txt").is_file() or pytest.fail("not written")),
    Case(2, "transcribe -o under a file", lambda w, t: tx(w, str(w.wavs["a"]), "-o", str(t / "afile" / "out.txt")),
         2, r"^speeched transcribe: .*is a file", kept_file, a_file),
    Case(2, "transcribe keeps the files that worked",
         lambda w, t: tx(w, str(w.wavs["a"]), str(t / "gone.wav"), str(w.wavs["b"]), "-o", str(t / "outdir")), 1,
         r"gone\.wav: no such file",
         lambda w, t, r: sorted(p.name for p in (t / "outdir").iterdir()) == ["a.txt", "b.txt"]
         or pytest.fail(str(list((t / "outdir").iterdir())))),
    # 3. files everyone may read (umask 022)
    Case(3, "init writes 0644", lambda w, t: w.init_args(t / "m"), 0, None,
         lambda w, t, r: assert_shared_modes(t / "m")),
    Case(3, "export writes 0644", lambda w, t: ["export", str(w.model), str(t / "hf"), "--to", "transformers"], 0,
         None, lambda w, t, r: assert_shared_modes(t / "hf")),
    Case(3, "train's best/ and average write 0644",
         lambda w, t: ["average", *(str(w.run["dir"] / "checkpoints" / f"step-{s:08d}") for s in (1, 2)),
                       "--out", str(t / "avg")], 0, None,
         lambda w, t, r: (assert_shared_modes(w.run["dir"] / "best"), assert_shared_modes(t / "avg"))),
    # 4. digital silence: empty text, almost free; eval does not hang on it
    Case(4, "transcribe 5 s and 10 min of zeros",
         lambda w, t: ["transcribe", str(w.wavs["zeros5"]), str(w.wavs["zeros600"]), "-m", str(w.model), "-f", "json"],
         0, None, silence_is_cheap, process=True, timeout=150),
    Case(4, "eval with a silent file", lambda w, t: ["eval", str(w.model), "-d", str(t / "silent.jsonl"), "-o", str(t / "e"),
                                                     "--max-new-tokens", "3"],
         0, None, silent_scored_empty, silent_manifest, process=True, timeout=180),
    # 5. one unit for WER, labelled
    Case(5, "WER in percent in training and eval",
         lambda w, t: ["eval", str(w.run["dir"] / "best"), "-d", str(w.corpus / "dev.jsonl"), "-o", str(t / "e"),
                       "--max-new-tokens", "3"], 0, None, wer_labelled),
    # 6. resuming past the target says so
    Case(6, "resume past the target",
         lambda w, t: ["train", str(w.run["recipe"]), "--output-dir", str(t / "run"), "--resume", "auto",
                       "--set", "train.max_steps=1"], 0, None,
         lambda w, t, r: "already at step 2, which reaches the target of 1 steps" in r.output or pytest.fail(r.output),
         earlier_run),
    # 7. an earlier run is refused before heavy work, and in the dry run
    Case(7, "train over an earlier run", lambda w, t: ["train", str(w.run["recipe"]), "--output-dir", str(t / "run")], 2,
         r"^speeched train: .*already holds checkpoints of an earlier run", None, earlier_run),
    Case(7, "dry run over an earlier run",
         lambda w, t: ["train", str(w.run["recipe"]), "--output-dir", str(t / "run"), "--dry-run"], 2,
         r"^speeched train: .*already holds checkpoints of an earlier run", None, earlier_run),
    # 8. empty inputs and options that lie
    Case(8, "data check on an empty manifest",
         lambda w, t: ["data", "check", str(t / "empty.jsonl"), "--out", str(t / "o")], 2,
         r"^speeched data check: .*empty",
         lambda w, t, r: "bad_audio" not in r.output or pytest.fail(r.output), empty_manifest),
    Case(8, "eval on an empty manifest", lambda w, t: ["eval", str(w.model), "-d", str(t / "empty.jsonl"), "-o", str(t / "o")],
         2, r"^speeched eval: .*empty", lambda w, t, r: "bad_audio" not in r.output or pytest.fail(r.output),
         empty_manifest),
    Case(8, "train on an empty manifest", lambda w, t: train_args(t, "--output-dir", str(t / "run")), 2,
         r"^speeched train: .*(empty|problem in the recipe)",
         lambda w, t, r: ("the data source is empty" in r.stderr and "bad_audio" not in r.output) or pytest.fail(r.output),
         empty_manifest),
    Case(8, "transcribe one missing file", lambda w, t: tx(w, str(t / "nope.wav")), 2,
         r"^speeched transcribe: .*nope\.wav: no such file",
         lambda w, t, r: "still transcribed" not in r.output or pytest.fail(r.output)),
    Case(8, "data synth --voices klingon", lambda w, t: ["data", "synth", "--out", str(t / "c"), "--voices", "klingon"], 2,
         r"^speeched data synth: .*unknown English eSpeak accent 'klingon'",
         lambda w, t, r: not (t / "c").exists() or pytest.fail("written anyway")),
    Case(8, "data synth --num 5", lambda w, t: ["data", "synth", "--out", str(t / "c"), "--num", "5"], 2,
         r"^speeched data synth: --num 5 gives no dev utterances",
         lambda w, t, r: not (t / "c").exists() or pytest.fail("written anyway")),
    # 9. tracebacks where a message belongs
    Case(9, "train output_dir under a file", lambda w, t: train_args(t, "--set", f"output_dir={t / 'afile' / 'run'}"), 2,
         r"^speeched train: output_dir .*which is a file", None,
         lambda w, t: (a_file(w, t), w.recipe(t / "r"))),
    Case(9, "train unwritable output dir", lambda w, t: train_args(t, "--output-dir", "/proc/speeched-no/run"), 2,
         r"^speeched train: output_dir /proc/.*choose another --output-dir", None, lambda w, t: w.recipe(t / "r")),
    Case(9, "train --resume another model's checkpoint",
         lambda w, t: train_args(t, "--output-dir", str(t / "b"), "--resume",
                                 str(w.run["dir"] / "checkpoints" / "step-00000002")), 2,
         r"^speeched train: .*belongs to a different model",
         lambda w, t, r: (len(r.stderr.splitlines()) < 5 and "size mismatch" not in r.output) or pytest.fail(r.stderr),
         other_model_recipe),
    Case(9, "init --decoder HuBERT",
         lambda w, t: ["init", "--encoder", str(w.halves["encoder"]), "--decoder", str(w.halves["hubert"]),
                       "--out", str(t / "m")], 2, r"^speeched init: .*cannot be the text decoder"),
    Case(9, "init --out a file", lambda w, t: w.init_args(t / "afile"), 2, r"^speeched init: .*is a file", kept_file, a_file),
    Case(9, "init --model-option ctc_weight=abc", lambda w, t: [*w.init_args(t / "m"), "--model-option", "ctc_weight=abc"], 2,
         r"^speeched init: .*ctc_weight must be a number, got 'abc'"),
    Case(9, "data synth --out a file", lambda w, t: ["data", "synth", "--out", str(t / "afile"), "--num", "20"], 2,
         r"^speeched data synth: .*is a file", kept_file, a_file),
    Case(9, "train on_bad_audio: error", lambda w, t: train_args(t, "--output-dir", str(t / "run")), 2,
         r"^speeched train: data\.train\[0\].*empty",
         lambda w, t, r: len(r.stderr.strip().splitlines()) <= 3 or pytest.fail(r.stderr), bad_audio_recipe),
    # 10. the wrong kind of half
    Case(10, "init --encoder BERT",
         lambda w, t: ["init", "--encoder", str(w.halves["bert"]), "--decoder", minilm_path(), "--out", str(t / "m"),
                       "--feature-extractor", str(w.halves["encoder"])], 2,
         r"^speeched init: .*reads input_ids \(text\), not audio"),
    Case(10, "init --decoder DistilBERT",
         lambda w, t: ["init", "--encoder", str(w.halves["encoder"]), "--decoder", str(w.halves["distilbert"]),
                       "--out", str(t / "m")], 2, r"^speeched init: .*cannot be the text decoder.*GPT-2",
         lambda w, t, r: len(r.first_err) < 600 or pytest.fail(f"{len(r.first_err)} characters")),
    Case(10, "init --decoder T5",
         lambda w, t: ["init", "--encoder", str(w.halves["encoder"]), "--decoder", str(w.halves["t5"]),
                       "--out", str(t / "m")], 2, r"^speeched init: .*cannot be the text decoder.*GPT-2",
         lambda w, t, r: len(r.first_err) < 600 or pytest.fail(f"{len(r.first_err)} characters")),
    # 11. offline hub names
    Case(11, "init with hub names offline",
         lambda w, t: ["init", "--encoder", "facebook/wav2vec2-base", "--decoder", "gpt2", "--out", str(t / "m")], 2,
         r"^speeched init: .*hub cannot be reached.*offline",
         lambda w, t, r: ("--encoder DIR --decoder DIR" in r.first_err and "gpt2" in r.first_err
                          and "facebook/wav2vec2-base" in r.first_err) or pytest.fail(r.first_err),
         env={"HF_HUB_OFFLINE": "1"}),
    # 12. JSON Lines on stdout
    Case(12, "transcribe -f json to a pipe", lambda w, t: tx(w, str(w.wavs["a"]), str(w.wavs["b"]), "-f", "json"), 0, None,
         lambda w, t, r: (no_bars(r), [o["path"] for o in json_lines(r, 2)] == [str(w.wavs["a"]), str(w.wavs["b"])]
                          or pytest.fail(r.stdout)), process=True),
    # 13. no bars on a pipe, plain periodic lines (transcribe and eval: items 12 and 4 check their pipes too)
    Case(13, "train on a pipe", lambda w, t: ["train", str(w.run["recipe"]), "--output-dir", str(t / "run"), "--dry-run"],
         0, None, lambda w, t, r: (no_bars(w.run["result"]), no_bars(r),
                                   "step 1/2: loss " in w.run["result"].output or pytest.fail(w.run["result"].output),
                                   "step 2/2: loss " in w.run["result"].output or pytest.fail(""))),
    Case(13, "data synth on a pipe", lambda w, t: ["data", "synth", "--out", str(t / "c"), "--num", "20"], 0, None,
         lambda w, t, r: no_bars(r), process=True),
    Case(13, "data check on a pipe", lambda w, t: ["data", "check", str(w.corpus / "train.jsonl"), "--out", str(t / "o")],
         0, None, lambda w, t, r: no_bars(r), process=True),
    # 14. Ctrl-C says where it stopped and how to resume
    Case(14, "Ctrl-C in training", lambda w, t: train_args(t, "--output-dir", str(t / "run")), 130,
         None, interrupted, long_run_recipe, process=True, interrupt=logged_steps),
    # 15. --help of every command; data check writes where the user says
    *[
        Case(15, f"{' '.join(c)} --help", lambda w, t, c=c: [*c, "--help"], 0, None, help_is_complete(c),
             process=True, env={"COLUMNS": "80"})
        for c in HELP_COMMANDS
    ],
    Case(15, "data check --out", lambda w, t: ["data", "check", str(w.corpus / "train.jsonl"), "--out", str(t / "where")],
         0, None, check_writes_where_asked, in_cwd=True),
    # 16. the README tour can be pasted
    Case(16, "README tour", None, check=readme_tour),
]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world")
    return World(root, root / "cache")


def _params() -> list:
    out = []
    for case in CASES:
        marks = [pytest.mark.slow] if case.slow else []
        out.append(pytest.param(case, id=f"{case.item:02d}-{case.name}", marks=marks))
    return out


def test_every_item_of_issue_18_is_in_the_table() -> None:
    assert {c.item for c in CASES if not c.slow} == set(range(1, 17))


@pytest.mark.parametrize("case", _params())
def test_new_user(case: Case, world: World, tmp_path: Path) -> None:
    if case.setup is not None:
        case.setup(world, tmp_path)
    if case.argv is None:
        result = Result(0, "", "", 0.0)
    else:
        argv = case.argv(world, tmp_path)
        cwd = None
        if case.in_cwd:
            cwd = tmp_path / "cwd"
            cwd.mkdir()
        if case.process or case.interrupt is not None:
            when = case.interrupt(world, tmp_path) if case.interrupt else None
            result = run_process(argv, world.cache, case.env, cwd, case.timeout, when)
        else:
            result = run_in_process(argv, case.env or None, cwd)
        where = f"`speeched {' '.join(argv)}`"
        assert "Traceback" not in result.output, f"{where} printed a traceback:\n{result.stderr[-3000:]}"
        assert result.code == case.code, (
            f"{where}: exit {result.code}, expected {case.code}\nstdout: {result.stdout[-1500:]}\n"
            f"stderr: {result.stderr[-1500:]}"
        )
        if case.first is not None:
            assert re.search(case.first, result.first_err), (
                f"{where}: first line of stderr {result.first_err!r} does not match {case.first!r}\n"
                f"stderr: {result.stderr[-1500:]}"
            )
    if case.check is not None:
        case.check(world, tmp_path, result)
