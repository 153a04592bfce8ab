"""`speeched data check`: scan a manifest or dataset and report every unusable entry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    path: Annotated[str, typer.Argument(help="JSONL/CSV/TSV manifest, audiofolder dir, or datasets path")],
    out: Annotated[Path, typer.Option("--out", help="folder for bad_audio.jsonl and durations.png")] = Path(
        "data-check"
    ),
    format: Annotated[
        str, typer.Option("--format", help="auto, jsonl, csv, tsv, audiofolder or datasets")
    ] = "auto",
    config: Annotated[str | None, typer.Option("--config", help="`datasets` config name")] = None,
    split: Annotated[str | None, typer.Option("--split", help="`datasets` split")] = None,
    min_duration: Annotated[float, typer.Option(help="seconds; shorter is reported")] = 0.1,
    max_duration: Annotated[float, typer.Option(help="seconds; longer is reported")] = 30.0,
    decode: Annotated[
        bool, typer.Option(help="decode every file (finds NaN/silence); --no-decode: headers only")
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Exit 0 when every entry is usable, 1 when some are not (or the manifest is malformed), 2 on usage errors."""
    import os

    from pydantic import ValidationError

    from speeched.data.check import check_data
    from speeched.data.config import DataSource, Filters
    from speeched.data.sources import ManifestError

    if format != "datasets" and not os.path.exists(path):
        typer.echo(
            f"error: {path} does not exist (give a manifest file, audiofolder or dataset folder)", err=True
        )
        raise typer.Exit(2)
    try:
        source = DataSource(
            path=path,
            format=format,
            config=config,
            split=split,
            filters=Filters(min_duration=min_duration, max_duration=max_duration),
        )
    except ValidationError as err:
        typer.echo(f"error: bad option: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}", err=True)
        raise typer.Exit(2) from None
    try:
        report = check_data(source, out_dir=str(out), decode=decode)
    except (ManifestError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    if json_out:
        typer.echo(report.to_json())
    else:
        for line in report.lines():
            typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)
