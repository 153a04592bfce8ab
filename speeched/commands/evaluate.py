"""`speeched eval MODEL_DIR --data SOURCE`: decode with generate() and score (WER/CER or BLEU/chrF)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from speeched.commands import options


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}" if pct else f"{value:.2f}"


def print_summary(summary: dict[str, Any]) -> None:
    """A short rich table: normalised and raw scores side by side, then what went wrong while decoding."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False, soft_wrap=True)
    task = summary["task"]
    table = Table(
        title=f"{summary['data']} — {summary['num_utterances']} utterances, {summary['decoding']['strategy']}"
    )
    table.add_column("metric")
    table.add_column(f"normalised ({summary['normalizer']['name']})", justify="right")
    table.add_column("raw", justify="right")
    norm, raw = summary["normalized"], summary["raw"]
    if task == "asr":
        table.add_row("WER %", _fmt(norm["wer"], True), _fmt(raw["wer"], True))
        table.add_row("CER %", _fmt(norm["cer"], True), _fmt(raw["cer"], True))
        table.add_row(
            "S / D / I",
            f"{norm.get('substitutions', 0)} / {norm.get('deletions', 0)} / {norm.get('insertions', 0)}",
            f"{raw.get('substitutions', 0)} / {raw.get('deletions', 0)} / {raw.get('insertions', 0)}",
        )
    else:
        table.add_row("BLEU", _fmt(norm["bleu"]), _fmt(raw["bleu"]))
        table.add_row("chrF", _fmt(norm["chrf"]), _fmt(raw["chrf"]))
    console.print(table)
    d = summary["diagnostics"]
    n = summary["num_utterances"]
    ratio = summary.get("length_ratio")
    console.print(
        f"hyp/ref length {ratio:.3f}" if ratio is not None else "hyp/ref length n/a",
        f"| hit token cap {d['hit_token_cap']}/{n} | loops {d['repetition_loops']} "
        f"| identical across a batch {d['identical_in_batch']} | empty {d['empty_hypotheses']} "
        f"| distinct hypotheses {d['distinct_hypotheses']}/{n}",
    )
    if task == "st":
        console.print(f"sacreBLEU: {summary.get('bleu_signature')}  chrF: {summary.get('chrf_signature')}")
        if summary.get("bleu_tokenizer_note"):
            console.print(f"[yellow]note:[/] {summary['bleu_tokenizer_note']}")
    console.print(f"normaliser: {summary['normalizer']['description']}")
    console.print(
        f"{summary['audio_seconds']:.1f} s of audio decoded in {summary['decode_seconds']:.1f} s "
        f"(RTFx {summary['rtfx']}); {summary['decoding']['num_batches']} batches on {summary['decoding']['device']}"
    )
    if d["degenerate"]:
        ex = (d["repetition_loop_examples"] or d["identical_in_batch_examples"])[:1]
        console.print(f"[yellow]warning:[/] {d['degenerate']} degenerate hypotheses, e.g. {ex}")
    check = summary.get("batching_check")
    if check:
        verdict = (
            "identical" if check["identical"] else f"[red]{check['compared'] - check['agree']} differ[/]"
        )
        console.print(f"batch size 1 vs batched: {check['agree']}/{check['compared']} agree ({verdict})")
    dropped = summary["data_report"].get("dropped")
    if dropped or summary.get("num_failed_audio"):
        console.print(f"[yellow]skipped:[/] {dropped} {summary.get('failed_audio') or ''}")
    if summary.get("files"):
        console.print(f"wrote {summary['files']['predictions']} and {summary['files']['summary']}")


def command(
    model_dir: Path = typer.Argument(..., help="Model directory (from `speeched init` or training)."),
    data: str = typer.Option(
        ..., "--data", "-d", help="Manifest (.jsonl/.csv/.tsv), audiofolder or datasets path."
    ),
    task: str = typer.Option("asr", "--task", help="asr (WER/CER) or st (BLEU/chrF)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Report directory [default: runs/eval/MODEL-DATA]."
    ),
    num_beams: int | None = options.NUM_BEAMS,
    ctc_weight: float | None = options.CTC_WEIGHT,
    max_duration: float = typer.Option(120.0, "--max-duration", help="Seconds of audio per batch."),
    max_batch_size: int | None = typer.Option(
        None, "--max-batch-size", min=1, help="Cap on utterances per batch."
    ),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", min=1, help="Fixed token cap [default: 25 per second of audio + 10]."
    ),
    normalizer: str | None = typer.Option(
        None, "--normalizer", help="english | basic | none [default: english for English, else basic]."
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
        "auto", "--format", help="auto | jsonl | csv | tsv | audiofolder | datasets."
    ),
    split: str | None = typer.Option(None, "--split", help="`datasets` split."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    progress: bool = typer.Option(
        None, "--progress/--no-progress", help="Progress bar (default: on a terminal)."
    ),
    src_lang: str | None = options.SRC_LANG,
    tgt_lang: str | None = options.TGT_LANG,
) -> None:
    """Decode a data set with generate() and score it."""
    from pydantic import ValidationError

    from speeched.data.config import Columns, DataSource
    from speeched.data.sources import ManifestError
    from speeched.evaluation.normalize import NORMALIZERS
    from speeched.evaluation.runner import evaluate_model

    if task not in ("asr", "st"):
        raise typer.BadParameter(f"{task!r} is not 'asr' or 'st'", param_hint="--task")
    if normalizer is not None and normalizer not in NORMALIZERS:
        raise typer.BadParameter(
            f"{normalizer!r} is not one of {', '.join(NORMALIZERS)}", param_hint="--normalizer"
        )
    try:
        source = DataSource(
            path=data,
            format=data_format,
            split=split,
            columns=Columns(text=text_column, translation=target_column, audio=audio_column),
        )
    except ValidationError as err:
        raise typer.BadParameter(str(err), param_hint="--format") from err
    if out is None:
        out = Path("runs") / "eval" / f"{Path(model_dir).name}-{Path(data.rstrip('/')).stem}"
    from speeched.commands.transcribe import _quiet_transformers

    _quiet_transformers()
    try:
        summary = evaluate_model(
            model_dir,
            source,
            task,
            out,
            num_beams=num_beams,
            ctc_weight=ctc_weight,
            max_duration=max_duration,
            normalizer=normalizer,
            limit=limit,
            max_batch_size=max_batch_size,
            max_new_tokens=max_new_tokens,
            lang=lang,
            plot_attention=plot_attention,
            check_batch=check_batching,
            device=device,
            progress=sys.stderr.isatty() if progress is None else progress,
            log=lambda msg: typer.echo(msg, err=True),
            src_lang=src_lang,
            tgt_lang=tgt_lang,
        )
    except (OSError, ValueError, ManifestError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    print_summary(summary)
