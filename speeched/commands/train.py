"""`speeched train RECIPE`: fine-tune from a YAML recipe (under `accelerate launch` too)."""

from __future__ import annotations

from pathlib import Path

import typer

from speeched.commands import options

EPILOG = options.epilog(
    "speeched train recipes/demo.yaml --output-dir runs/demo",
    "speeched train recipes/demo.yaml --output-dir runs/demo --resume auto --set train.max_steps=2000",
)


def command(
    recipe: Path = typer.Argument(..., help="The YAML recipe."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a key: --set train.max_steps=100 (repeatable)."
    ),
    output_dir: Path | None = typer.Option(
        None,
        "--output-dir",
        help="Where checkpoints, best/, metrics and plots go (default: runs/RECIPE_NAME).",
    ),
    resume: str | None = typer.Option(
        None, "--resume", help="'auto' (latest complete checkpoint, if any) or a checkpoint/run directory."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check everything training checks, compose the model, print the plan."
    ),
    overfit_batch: int | None = typer.Option(
        None, "--overfit-batch", help="Train N steps on one batch and show the loss falling (debugging)."
    ),
    progress: bool | None = options.PROGRESS,
) -> None:
    """Fine-tune a model from a YAML recipe."""
    from speeched.commands.logging_setup import setup_logging
    from speeched.training.recipe import load_recipe

    setup_logging()
    progress = options.show_progress(progress)
    if not progress:  # no bars in logs: transformers' weight-loading bar included
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    r = load_recipe(recipe, overrides=set_, output_dir=output_dir)
    # Only now the heavy modules (torch, transformers' models): a recipe typo is refused without them.
    from speeched.training.plan import dry_run as plan
    from speeched.training.trainer import train

    if dry_run:
        typer.echo(plan(r, resume=resume))
        return
    result = train(r, resume=resume, overfit_batch=overfit_batch, progress=progress)
    if not overfit_batch:
        typer.echo(f"done: {result.step} steps in {result.output_dir}; best model: {result.best_dir}")
