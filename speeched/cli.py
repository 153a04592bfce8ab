"""speeched: fine-tune speech encoder + text decoder models for speech recognition and translation."""

from __future__ import annotations

import typer

from speeched.commands import average, data_check, data_synth, evaluate, init, train, transcribe

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_enable=False)
data_app = typer.Typer(no_args_is_help=True, help="Make and inspect spoken corpora.")

# The command table: tests/test_cli.py keeps it in sync with the README.
app.command("init", help="Compose a model from a pretrained speech encoder and text decoder.")(init.command)
app.command("train", help="Fine-tune from a YAML recipe (runs under `accelerate launch` too).")(train.command)
app.command("eval", help="Decode a data set with generate() and score it (WER/CER or BLEU/chrF).")(
    evaluate.command
)
app.command("transcribe", help="Transcribe audio files, directories or globs (long-form too).")(
    transcribe.command
)
app.command("average", help="Average the weights of several checkpoints into one model.")(average.command)
app.add_typer(data_app, name="data")
data_app.command("synth", help="Synthesize an offline spoken corpus with eSpeak NG.")(data_synth.command)
data_app.command("check", help="Scan a manifest or dataset and report every unusable entry.")(
    data_check.command
)


def main() -> None:
    app()


if __name__ == "__main__":  # `python -m speeched.cli` (what `accelerate launch -m` runs)
    main()
