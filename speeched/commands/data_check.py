"""`speeched data check`: scan a manifest or dataset and report every unusable entry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from speeched.commands import options

EPILOG = options.epilog(
    "speeched data check data/digits/train.jsonl --out runs/check-digits",
    "speeched data check data/train-shards --json > check.json",
)


def command(
    path: Annotated[
        str,
        typer.Argument(
            help="JSONL/CSV/TSV manifest, audiofolder dir, datasets path, or streamed shards: a "
            "`speeched data shard` folder (index.json), a parquet/tar glob or file, an fsspec URL"
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="folder for bad_audio.jsonl and durations.png (default: runs/data-check/<source name>)",
        ),
    ] = None,
    data_format: Annotated[
        str,
        typer.Option("--data-format", help="format of PATH: auto, jsonl, csv, tsv, audiofolder or datasets"),
    ] = "auto",
    config: Annotated[str | None, typer.Option("--config", help="`datasets` config name")] = None,
    split: Annotated[str | None, typer.Option("--split", help="`datasets` split")] = None,
    min_duration: Annotated[float, typer.Option(help="seconds; shorter is reported")] = 0.1,
    max_duration: Annotated[float, typer.Option(help="seconds; longer is reported")] = 30.0,
    decode: Annotated[
        bool, typer.Option(help="decode every file (finds NaN/silence); --no-decode: headers only")
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar while scanning")] = False,
    streaming: Annotated[
        bool,
        typer.Option(
            "--streaming",
            help="read PATH as streamed shards (automatic for index.json folders, globs, .tar/.parquet URLs)",
        ),
    ] = False,
) -> None:
    """Exit 0 when every entry is usable, 1 when some are not, 2 on usage errors (a missing, empty or
    malformed manifest, a bad option)."""
    import os

    from pydantic import ValidationError

    from speeched.data.check import check_data, default_out_dir
    from speeched.data.config import DataSource, Filters
    from speeched.data.stream_source import StreamSourceError
    from speeched.errors import PartialFailure, UsageError

    remote_or_glob = "://" in path or any(c in path for c in "*?[")
    if data_format != "datasets" and not remote_or_glob and not os.path.exists(path):
        raise UsageError(f"{path} does not exist (give a manifest file, audiofolder or dataset folder)")
    try:
        source = DataSource(
            path=path,
            format=data_format,
            config=config,
            split=split,
            streaming=streaming,
            filters=Filters(min_duration=min_duration, max_duration=max_duration),
        )
    except ValidationError as err:
        first = err.errors()[0]
        raise UsageError(f"bad option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    out_dir = str(out) if out is not None else default_out_dir(path.replace("*", "all"))
    try:
        report = check_data(source, out_dir=out_dir, decode=decode, progress=progress)
    except StreamSourceError as err:
        raise UsageError(str(err)) from None
    if json_out:
        typer.echo(report.to_json())
    else:
        for line in report.lines():
            typer.echo(line)
    if not report.ok:
        raise PartialFailure(
            f"{len(report.bad)} of {report.total} entries unusable; see {report.report_path}"
        )
