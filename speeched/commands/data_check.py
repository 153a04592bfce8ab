"""`speeched data check` (not yet available)."""

from __future__ import annotations

import typer


def command() -> None:
    """Not yet available."""
    typer.echo("speeched data check: not yet available in this version", err=True)
    raise typer.Exit(2)
