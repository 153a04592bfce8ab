"""`speeched transcribe AUDIO... --model DIR`: text or subtitles for files, directories and globs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from speeched.commands import options
from speeched.transcription.formats import FORMATS


def _output_paths(paths: list[str], output: Path, fmt: str) -> dict[str, Path]:
    """One output per input: `output` itself for a single input (unless it is a directory), else files in it."""
    if len(paths) == 1 and not (output.is_dir() or str(output).endswith(("/", os.sep))):
        return {paths[0]: output}
    output.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    out: dict[str, Path] = {}
    for p in paths:
        stem = Path(p).stem or "audio"
        name, n = f"{stem}.{fmt}", 1
        while name in taken:  # same file name in two input folders
            n += 1
            name = f"{stem}-{n}.{fmt}"
        taken.add(name)
        out[p] = output / name
    return out


def command(
    audio: list[str] = typer.Argument(
        ..., help="Audio files, directories (searched recursively) or glob patterns."
    ),
    model: Path = typer.Option(
        ..., "--model", "-m", help="Model directory (from `speeched init` or training)."
    ),
    fmt: str = typer.Option("txt", "--format", "-f", help=f"Output format: {', '.join(FORMATS)}."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Output file (one input) or directory (several); default: stdout."
    ),
    num_beams: int | None = options.NUM_BEAMS,
    ctc_weight: float | None = options.CTC_WEIGHT,
    segment: str = typer.Option("silence", "--segment", help="How long audio is cut: silence | fixed."),
    max_segment: float = typer.Option(
        20.0, "--max-segment", help="Longest segment decoded at once (seconds)."
    ),
    overlap: float = typer.Option(
        2.0, "--overlap", help="Seconds shared by neighbouring --segment fixed windows."
    ),
    max_duration: float = typer.Option(240.0, "--max-duration", help="Seconds of audio per decoding batch."),
    tokens_per_second: float = typer.Option(
        15.0, "--tokens-per-second", help="Cap on generated tokens per second of audio (stops runaway loops)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    progress: bool = typer.Option(
        None, "--progress/--no-progress", help="Progress bar (default: on a terminal)."
    ),
    src_lang: str | None = options.SRC_LANG,
    tgt_lang: str | None = options.TGT_LANG,
) -> None:
    """Transcribe audio files, directories or globs (long-form too)."""
    from speeched.evaluation.runner import load_inference_model
    from speeched.transcription.formats import render
    from speeched.transcription.runner import FailedFile, TranscribeOptions, Transcriber, expand_inputs

    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r} is not one of {', '.join(FORMATS)}", param_hint="--format")
    if segment not in ("silence", "fixed"):
        raise typer.BadParameter(f"{segment!r} is not 'silence' or 'fixed'", param_hint="--segment")
    if max_segment <= 1 or not 0 <= overlap < max_segment / 2:
        raise typer.BadParameter(
            "need --max-segment > 1 and 0 <= --overlap < max-segment/2", param_hint="--overlap"
        )
    paths, failures = expand_inputs(audio)
    for f in failures:
        typer.echo(f"error: {f.path}: {f.message}", err=True)
    if not paths:
        raise typer.Exit(1)
    _quiet_transformers()
    try:
        loaded = load_inference_model(model, device)
    except Exception as err:  # noqa: BLE001 - any load failure ends the same way: say which dir and why
        typer.echo(f"error: cannot load the model from {model}: {err}", err=True)
        raise typer.Exit(1) from err
    from speeched.evaluation.runner import model_decoding

    num_beams, ctc_weight = model_decoding(loaded[0], num_beams, ctc_weight)
    options = TranscribeOptions(
        num_beams=num_beams,
        ctc_weight=ctc_weight,
        segment=segment,
        max_segment=max_segment,
        overlap=overlap,
        max_duration=max_duration,
        tokens_per_second=tokens_per_second,
        device=device,
        progress=sys.stderr.isatty() if progress is None else progress,
        src_lang=src_lang,
        tgt_lang=tgt_lang,
    )
    from speeched.modeling.prompting import PromptError

    try:
        transcriber = Transcriber(*loaded, options)
    except PromptError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    if (src_lang or tgt_lang) and not transcriber.prefix:
        typer.echo(
            "warning: this model has no language prefix (decoder_prompt: none), so --src-lang/--tgt-lang "
            "change nothing; see docs/languages.md",
            err=True,
        )
    targets = _output_paths(paths, output, fmt) if output is not None else None
    failed = len(failures)
    for result in transcriber.run(paths):
        if isinstance(result, FailedFile):
            failed += 1
            typer.echo(
                f"error: {result.path}: {result.message} (skipped; the other files are still transcribed)",
                err=True,
            )
            continue
        text = render(result, fmt)
        if targets is not None:
            targets[result.path].write_text(text, encoding="utf-8")
            typer.echo(f"wrote {targets[result.path]}", err=True)
        else:
            if len(paths) > 1:
                typer.echo(f"==> {result.path} <==")
            typer.echo(text, nl=False)
        if result.info.get("loops_truncated"):
            typer.echo(
                f"warning: {result.path}: {result.info['loops_truncated']} segment(s) looped and were cut",
                err=True,
            )
    if failed:
        typer.echo(f"{failed} input(s) failed; see the errors above", err=True)
        raise typer.Exit(1)


def _quiet_transformers() -> None:
    """Keep stderr for our own messages: no weight-loading bars or generate() config chatter."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
