"""`speeched data synth`: an offline spoken corpus (digits or English->German sentences) from eSpeak NG."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    out: Path = typer.Option(..., "--out", help="Output folder: train/dev/test.jsonl and wavs/ go here."),
    kind: str = typer.Option(
        "digits",
        "--kind",
        help="digits: spoken digit strings (ASR); sentences: English sentences with German translations (ASR/ST).",
    ),
    num: int = typer.Option(2000, "--num", min=1, help="Utterances in total, over all splits."),
    seed: int = typer.Option(0, "--seed", help="Same seed -> identical manifests and audio."),
    voices: list[str] | None = typer.Option(
        None,
        "--voices",
        metavar="VOICE[,VOICE...]",
        help="eSpeak voice variants to use, repeat or comma-separate (default: a curated English set). "
        "Dev and test get variants train never hears.",
    ),
    dev_fraction: float = typer.Option(0.05, "--dev-fraction", min=0.0, max=0.9),
    test_fraction: float = typer.Option(0.1, "--test-fraction", min=0.0, max=0.9),
    workers: int = typer.Option(1, "--workers", min=1, help="Parallel synthesis processes."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Synthesize an offline spoken corpus with eSpeak NG."""
    from speeched.data.grammar import KINDS

    if kind not in KINDS:
        typer.echo(f"error: --kind {kind!r} is not supported; use one of: {', '.join(KINDS)}", err=True)
        raise typer.Exit(2)
    voice_list = [v.strip() for item in voices or [] for v in item.split(",") if v.strip()] or None

    from speeched.data.synth import synthesize_corpus  # heavy (numpy, soxr): keep CLI start-up fast

    try:
        result = synthesize_corpus(
            out,
            kind=kind,
            num=num,
            seed=seed,
            voices=voice_list,
            dev_fraction=dev_fraction,
            test_fraction=test_fraction,
            workers=workers,
            progress=progress,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    counts = ", ".join(f"{split} {n}" for split, n in result.counts.items())
    typer.echo(
        f"{sum(result.counts.values())} utterances ({counts}), {result.audio_seconds / 3600:.2f} h of audio "
        f"in {result.wall_seconds:.1f} s ({result.realtime_factor:.0f}x real time) -> {result.out_dir}"
    )
