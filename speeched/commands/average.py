"""`speeched average CKPT... --out DIR`: average the weights of several checkpoints into one model directory."""

from __future__ import annotations

import shutil
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
    force: bool = typer.Option(False, "--force", help="Replace a model already in --out."),
) -> None:
    """Average float weights (in fp32) of CKPTs; config from the newest."""
    from speeched.commands.logging_setup import setup_logging
    from speeched.modeling.compose import check_output_dir
    from speeched.training.averaging import AveragingError, average_checkpoints

    setup_logging()
    if len(checkpoints) < 2:
        raise AveragingError("give at least two checkpoints to average")
    check_output_dir(
        out, force
    )  # a non-empty --out (a trained model, its best.json) is never silently replaced
    if force and out.is_dir():
        shutil.rmtree(out)
    average_checkpoints(checkpoints, out, assets_from=assets_from)
    typer.echo(f"averaged {len(checkpoints)} checkpoints into {out}")
