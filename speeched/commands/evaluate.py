"""`speeched eval MODEL_DIR --data SOURCE`: decode with generate() and score (WER/CER or BLEU/chrF)."""

from __future__ import annotations

from pathlib import Path

import typer

from speeched.commands import options

EPILOG = options.epilog(
    "speeched eval runs/demo/best --data data/demo/test.jsonl",
    "speeched eval runs/st/best -d st/test.csv --task st --target-column de --num-beams 4",
)


def command(
    model_dir: Path = typer.Argument(..., help="Model directory (from `speeched init` or training)."),
    data: str = typer.Option(
        ..., "--data", "-d", help="Manifest (.jsonl/.csv/.tsv), audiofolder or datasets path."
    ),
    task: str = typer.Option("asr", "--task", help="asr (WER/CER) or st (BLEU/chrF)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Report directory (default: runs/eval/MODEL-DATA)."
    ),
    num_beams: int | None = options.NUM_BEAMS,
    ctc_weight: float | None = options.CTC_WEIGHT,
    max_duration: float = typer.Option(120.0, "--max-duration", help="Seconds of audio per batch."),
    max_batch_size: int | None = typer.Option(
        None, "--max-batch-size", min=1, help="Cap on utterances per batch."
    ),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", min=1, help="Fixed token cap (default: 25 per second of audio + 10)."
    ),
    normalizer: str | None = typer.Option(
        None, "--normalizer", help="english | basic | none (default: english for English, else basic)."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N utterances."),
    plot_attention: int = typer.Option(
        0, "--plot-attention", min=0, help="Save cross-attention PNGs for N utterances."
    ),
    check_batching: bool = typer.Option(
        False, "--check-batching", help="Decode with batch size 1 too and compare."
    ),
    lang: str | None = typer.Option(
        None, "--lang", help="Target language (picks normaliser/BLEU tokenizer)."
    ),
    text_column: str = typer.Option("text", "--text-column", help="Manifest column with the transcript."),
    target_column: str = typer.Option(
        "translation", "--target-column", help="Manifest column with the translation."
    ),
    audio_column: str = typer.Option("audio", "--audio-column", help="Manifest column with the audio path."),
    data_format: str = typer.Option(
        "auto", "--data-format", help="Format of --data: auto | jsonl | csv | tsv | audiofolder | datasets."
    ),
    split: str | None = typer.Option(None, "--split", help="`datasets` split."),
    device: str = options.DEVICE,
    progress: bool | None = options.PROGRESS,
    src_lang: str | None = options.SRC_LANG,
    tgt_lang: str | None = options.TGT_LANG,
) -> None:
    """Decode a data set with generate() and score it."""
    from pydantic import ValidationError

    from speeched.data.config import Columns, DataSource
    from speeched.errors import UsageError
    from speeched.evaluation.evaluate import EvalOptions, evaluate_model
    from speeched.evaluation.normalize import NORMALIZERS
    from speeched.evaluation.report import print_summary, raise_if_failed
    from speeched.inference import DecodeOptions

    if task not in ("asr", "st"):
        raise UsageError(f"--task {task!r} is not 'asr' or 'st'")
    if normalizer is not None and normalizer not in NORMALIZERS:
        raise UsageError(f"--normalizer {normalizer!r} is not one of {', '.join(NORMALIZERS)}")
    try:
        columns = Columns(text=text_column, translation=target_column, audio=audio_column)
        source = DataSource(path=data, format=data_format, split=split, columns=columns)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UsageError(f"bad data source option {where}: {first['msg']}") from err
    if out is None:
        out = Path("runs") / "eval" / f"{Path(model_dir).name}-{Path(data.rstrip('/')).stem}"
    decode = DecodeOptions(
        num_beams=num_beams,
        ctc_weight=ctc_weight,
        max_duration=max_duration,
        max_batch_size=max_batch_size,
        max_new_tokens=max_new_tokens,
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        device=device,
        progress=options.show_progress(progress),
    )
    opts = EvalOptions(task, decode, normalizer, limit, lang, plot_attention, check_batching)
    options.quiet_transformers()
    summary = evaluate_model(model_dir, source, opts, out, log=lambda msg: typer.echo(msg, err=True))
    print_summary(summary)
    raise_if_failed(summary)
