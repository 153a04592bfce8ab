"""`speeched data shard`: write a corpus as parquet/webdataset shards (audio embedded) + index.json."""

from __future__ import annotations

from typing import Annotated

import typer

from speeched.commands import options

EPILOG = options.epilog(
    "speeched data shard data/train.jsonl --out data/train-shards --flac",
    "speeched data shard data/cv-arrow --source-format datasets --out s3-staging/cv --shard-size 1GB",
)


def command(
    source: Annotated[str, typer.Argument(help="JSONL/CSV/TSV manifest, audiofolder dir, or datasets path")],
    out: Annotated[str, typer.Option("--out", help="folder to write the shards and index.json into")],
    shard_size: Annotated[
        str, typer.Option("--shard-size", help="audio bytes per shard (500MB, 1GB, 64MiB)")
    ] = "500MB",
    format: Annotated[str, typer.Option("--format", help="parquet or webdataset (tar)")] = "parquet",
    flac: Annotated[bool, typer.Option("--flac", help="re-encode audio to 16-bit FLAC")] = False,
    shuffle: Annotated[
        bool, typer.Option(help="write rows in a seeded random order (recommended for streaming)")
    ] = True,
    seed: Annotated[int, typer.Option(help="seed of the row order")] = 0,
    source_format: Annotated[
        str, typer.Option("--source-format", help="auto, jsonl, csv, tsv, audiofolder or datasets")
    ] = "auto",
    config: Annotated[str | None, typer.Option("--config", help="`datasets` config name")] = None,
    split: Annotated[str | None, typer.Option("--split", help="`datasets` split")] = None,
    force: Annotated[bool, typer.Option("--force", help="write into a non-empty --out")] = False,
) -> None:
    """Exit 0 when every utterance was written, 1 when some were unusable (listed in OUT/bad_audio.jsonl)."""
    import os

    from pydantic import ValidationError

    from speeched.data.config import DataSource
    from speeched.data.scan import BadEntry, write_report
    from speeched.data.shards import FORMATS, parse_size, stderr_progress, write_shards
    from speeched.data.sources import load_source
    from speeched.errors import PartialFailure, UsageError

    if format not in FORMATS:
        raise UsageError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    try:
        size = parse_size(shard_size)
    except ValueError as err:
        raise UsageError(f"--shard-size: {err}") from None
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise UsageError(f"--out {out} is not empty; choose an empty folder or pass --force to write into it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file; give a folder")
    if source_format != "datasets" and not os.path.exists(source):
        raise UsageError(f"{source} does not exist (give a manifest file, audiofolder or dataset folder)")
    try:
        src = DataSource(path=source, format=source_format, config=config, split=split)
    except ValidationError as err:
        first = err.errors()[0]
        raise UsageError(f"bad option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    try:
        utts = load_source(src)
    except (ValueError, FileNotFoundError) as err:  # ManifestError is a ValueError
        raise UsageError(str(err)) from None
    if len(utts) == 0:
        raise UsageError(f"{source} holds no utterances")
    bad: list[BadEntry] = []

    def on_bad(utt, err) -> None:  # noqa: ANN001
        bad.append(BadEntry(utt.id, utt.origin, utt.audio, err.reason, err.detail))

    index = write_shards(
        utts,
        out,
        shard_size=size,
        fmt=format,
        flac=flac,
        shuffle=shuffle,
        seed=seed,
        on_bad=on_bad,
        progress=stderr_progress(),
        source=source,
    )
    if bad:
        write_report(bad, out)
    typer.echo(
        f"wrote {index['rows']} utterances ({index['seconds'] / 3600:.2f} h, {index['bytes'] / 1e6:.1f} MB of audio) "
        f"in {len(index['shards'])} {format} shards to {out} (index: {os.path.join(out, 'index.json')})"
    )
    if bad:
        raise PartialFailure(
            f"{len(bad)} of {len(utts)} utterances were unusable and left out: see {os.path.join(out, 'bad_audio.jsonl')}"
        )
