"""`speeched average CKPT... --out DIR`: average the weights of several checkpoints into one model directory."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    checkpoints: list[Path] = typer.Argument(
        ..., help="Checkpoint dirs (run/checkpoints/step-N) or model dirs with model.safetensors."
    ),
    out: Path = typer.Option(..., "--out", help="Model directory to write the averaged model to."),
    assets_from: Path | None = typer.Option(
        None,
        "--assets-from",
        help="Model dir to copy tokenizer/preprocessor files from (default: the run's best/).",
    ),
) -> None:
    """Average float weights (in fp32) of CKPTs; config from the newest. Exit 2 on unusable input."""
    from speeched.logging_setup import setup_logging
    from speeched.training.averaging import AveragingError, average_checkpoints

    setup_logging()
    if len(checkpoints) < 2:
        typer.echo("speeched average: give at least two checkpoints to average", err=True)
        raise typer.Exit(2)
    try:
        average_checkpoints(checkpoints, out, assets_from=assets_from)
    except AveragingError as err:
        typer.echo(f"speeched average: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"averaged {len(checkpoints)} checkpoints into {out}")
