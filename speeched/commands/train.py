"""`speeched train RECIPE`: fine-tune from a YAML recipe (under `accelerate launch` too)."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    recipe: Path = typer.Argument(..., help="The YAML recipe."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a key: --set train.max_steps=100 (repeatable)."
    ),
    output_dir: Path | None = typer.Option(
        None, "--output-dir", help="Where runs, checkpoints and plots go."
    ),
    resume: str | None = typer.Option(
        None, "--resume", help="'auto' (latest complete checkpoint, if any) or a checkpoint/run directory."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate, compose the model, scan data, print the plan."
    ),
    overfit_batch: int | None = typer.Option(
        None, "--overfit-batch", help="Train N steps on one batch and show the loss falling (debugging)."
    ),
) -> None:
    """Fine-tune a model from a YAML recipe."""
    from speeched.logging_setup import setup_logging
    from speeched.training.recipe import RecipeError, load_recipe

    setup_logging()
    try:
        r = load_recipe(recipe, overrides=set_, output_dir=output_dir)
    except RecipeError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    from speeched.training.checkpoint import CheckpointError
    from speeched.training.plan import dry_run as plan
    from speeched.training.trainer import TrainingError, train

    try:
        if dry_run:
            typer.echo(plan(r))
            return
        result = train(r, resume=resume, overfit_batch=overfit_batch)
    except (TrainingError, CheckpointError, ValueError, FileNotFoundError) as err:
        typer.echo(f"speeched train: {err}", err=True)
        raise typer.Exit(2) from err
    if overfit_batch:
        return
    typer.echo(f"done: {result.step} steps in {result.output_dir}; best model: {result.best_dir}")
