"""`speeched average CKPT... --out DIR`: average the weights of several checkpoints into one model directory."""

from __future__ import annotations

from pathlib import Path

import typer

from speeched.commands import options

EPILOG = options.epilog(
    "speeched average runs/demo/checkpoints/step-00000800 runs/demo/checkpoints/step-00001000 --out runs/demo/avg",
    "speeched average runs/demo/checkpoints/step-* --out runs/demo/avg --assets-from runs/demo/best",
)


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
    """Average float weights (in fp32) of CKPTs; config from the newest."""
    from speeched.commands.logging_setup import setup_logging
    from speeched.training.averaging import AveragingError, average_checkpoints

    setup_logging()
    if len(checkpoints) < 2:
        raise AveragingError("give at least two checkpoints to average")
    average_checkpoints(checkpoints, out, assets_from=assets_from)
    typer.echo(f"averaged {len(checkpoints)} checkpoints into {out}")
