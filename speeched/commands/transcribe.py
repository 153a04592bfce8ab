"""`speeched transcribe AUDIO... --model DIR`: text or subtitles for files, directories and globs."""

from __future__ import annotations

from pathlib import Path

import typer

from speeched.commands import options

EPILOG = options.epilog(
    "speeched transcribe talk.wav -m runs/demo/best -f srt -o talk.srt",
    "speeched transcribe recordings/ -m runs/demo/best -f json > transcripts.jsonl",
    "speeched transcribe talk.wav -m runs/demo/best -f srt --words -o talk-words.srt",
    "speeched transcribe talk.wav -m runs/demo/onnx --backend onnx",
)


def command(
    audio: list[str] = typer.Argument(
        ..., help="Audio files, directories (searched recursively) or glob patterns."
    ),
    model: Path = typer.Option(
        ..., "--model", "-m", help="Model directory (from `speeched init` or training)."
    ),
    fmt: str = typer.Option(
        "txt", "--format", "-f", help="Output format: txt | json | srt | vtt (json on stdout: JSON Lines)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Output file (one input) or directory (several); default: stdout."
    ),
    num_beams: int | None = options.NUM_BEAMS,
    ctc_weight: float | None = options.CTC_WEIGHT,
    segment: str = typer.Option(
        "vad", "--segment", help="How long audio is cut: vad | energy | fixed (silence = energy)."
    ),
    max_segment: float | None = typer.Option(
        None,
        "--max-segment",
        help="Longest segment decoded at once, seconds (default: from the model's training durations).",
    ),
    overlap: float = typer.Option(
        2.0, "--overlap", help="Seconds shared by neighbouring windows (--segment fixed only)."
    ),
    max_duration: float = typer.Option(240.0, "--max-duration", help="Seconds of audio per decoding batch."),
    tokens_per_second: float = typer.Option(
        15.0, "--tokens-per-second", help="Cap on generated tokens per second of audio (stops runaway loops)."
    ),
    words: bool = typer.Option(
        False,
        "--words",
        help="Word start/end times from a CTC forced alignment (needs a CTC head): json `words`, srt/vtt "
        "one cue per word.",
    ),
    backend: str = typer.Option(
        "torch",
        "--backend",
        help="torch (a model directory) | onnx (a `speeched export --to onnx` directory; greedy only).",
    ),
    device: str = options.DEVICE,
    progress: bool | None = options.PROGRESS,
    src_lang: str | None = options.SRC_LANG,
    tgt_lang: str | None = options.TGT_LANG,
) -> None:
    """Transcribe audio files, directories or globs (long-form too)."""
    from speeched.inference import DecodeOptions
    from speeched.transcription.transcribe import transcribe_files
    from speeched.transcription.transcriber import TranscribeOptions

    decode = DecodeOptions(
        num_beams=num_beams,
        ctc_weight=ctc_weight,
        max_duration=max_duration,
        tokens_per_second=tokens_per_second,
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        device=device,
    )
    opts = TranscribeOptions(
        decode,
        segment,
        max_segment,
        overlap,
        progress=options.show_progress(progress),
        words=words,
        backend=backend,
    )
    options.quiet_transformers()
    transcribe_files(model, audio, opts, output, fmt, log=lambda msg: typer.echo(msg, err=True))
