"""speeched: fine-tune speech encoder + text decoder models for speech recognition and translation."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer

from speeched.commands import (
    average,
    convert,
    data_check,
    data_shard,
    data_synth,
    evaluate,
    export,
    init,
    train,
    transcribe,
)
from speeched.errors import EXIT_CODES_HELP, EXIT_INTERRUPTED, SpeechedError, debug_enabled

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    epilog=EXIT_CODES_HELP,
    pretty_exceptions_enable=False,
    # plain click help: descriptions wrap instead of option names being cut at 80 columns
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
)
data_app = typer.Typer(
    no_args_is_help=True,
    help="Make and inspect spoken corpora.",
    rich_markup_mode=None,
    epilog=EXIT_CODES_HELP,
)


def user_errors(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command: a `SpeechedError` becomes one line on stderr and its exit code, no traceback
    (unless --debug / SPEECHED_DEBUG=1); Ctrl-C exits 130. Bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SpeechedError as err:
            if debug_enabled():
                traceback.print_exc()
            typer.echo(f"speeched {name}: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            typer.echo(f"speeched {name}: interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


def register(typer_app: typer.Typer, name: str, module: Any, help: str, full_name: str = "") -> None:
    """Add `module.command` under `name`; its `EPILOG` (examples + exit codes) ends its --help."""
    epilog = getattr(module, "EPILOG", EXIT_CODES_HELP)
    typer_app.command(name, help=help, epilog=epilog)(user_errors(full_name or name, module.command))


# The command table: tests/test_cli.py keeps it in sync with the README.
register(app, "init", init, "Compose a model from a pretrained speech encoder and text decoder.")
register(app, "train", train, "Fine-tune from a YAML recipe (runs under `accelerate launch` too).")
register(app, "eval", evaluate, "Decode a data set with generate() and score it (WER/CER or BLEU/chrF).")
register(app, "transcribe", transcribe, "Transcribe audio files, directories or globs (long-form too).")
register(app, "average", average, "Average the weights of several checkpoints into one model.")
register(
    app, "convert", convert, "Convert a faster-whisper (CTranslate2) Whisper model for init/transformers."
)
register(app, "export", export, "Export a model for transformers' pipeline or ONNX Runtime (+ model card).")
app.add_typer(data_app, name="data")
register(data_app, "synth", data_synth, "Synthesize an offline spoken corpus with eSpeak NG.", "data synth")
register(
    data_app,
    "check",
    data_check,
    "Scan a manifest or dataset and report every unusable entry.",
    "data check",
)
register(data_app, "shard", data_shard, "Write a corpus as streaming shards + index.", "data shard")


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of user errors (for bug reports)."),
) -> None:
    if debug:
        os.environ["SPEECHED_DEBUG"] = "1"


def main() -> None:
    if subcommand(sys.argv[1:]) == "train":  # before torch is imported: the allocator is chosen at exec
        from speeched.training.allocator import AllocatorChoiceError, reexec_with_mimalloc

        try:
            reexec_with_mimalloc()
        except AllocatorChoiceError as err:
            typer.echo(f"speeched train: {err}", err=True)
            raise SystemExit(2) from None
    app(prog_name="speeched")


def subcommand(args: list[str]) -> str | None:
    """The first word that is not an option (`speeched --debug train x.yaml` -> train)."""
    return next((a for a in args if not a.startswith("-")), None)


if __name__ == "__main__":  # `python -m speeched.cli` (what `accelerate launch -m` runs)
    main()
