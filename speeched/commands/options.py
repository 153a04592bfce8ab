"""Flags shared by `eval` and `transcribe`, defined once so they cannot drift apart."""

from __future__ import annotations

import sys

import typer

from speeched.errors import EXIT_CODES_HELP

NUM_BEAMS = typer.Option(
    None,
    "--num-beams",
    min=1,
    help="1 = greedy search (default: the beam size the model was validated with in training, else 1).",
)
CTC_WEIGHT = typer.Option(
    None,
    "--ctc-weight",
    min=0.0,
    max=1.0,
    help="λ of joint CTC/attention beam search (needs a CTC head; 0 = plain generate; 1 = the CTC head's best "
    "path alone, no decoder) (default: the λ the model was validated with in training, else 0).",
)
SRC_LANG = typer.Option(
    None,
    "--src-lang",
    help="Language of the speech, for models with a language prefix (default: the model's; a manifest's "
    "`lang` column wins in eval).",
)
TGT_LANG = typer.Option(
    None,
    "--tgt-lang",
    help="Output language of translation models, e.g. de or de_DE (default: the model's; a manifest's "
    "`tgt_lang` column wins in eval). Checked against the tokenizer's language tokens.",
)
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N.")
PROGRESS = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on a terminal).")


def epilog(*examples: str) -> str:
    """Examples (one per line, kept as written by click's \\b marker) followed by the exit-code rule."""
    lines = "\n".join(f"  {e}" for e in examples)
    return f"Examples:\n\n\b\n{lines}\n\n{EXIT_CODES_HELP}"


def show_progress(progress: bool | None) -> bool:
    """--progress/--no-progress, else a bar only when stderr is a terminal."""
    return sys.stderr.isatty() if progress is None else progress


def quiet_transformers() -> None:
    """Keep stderr for our own messages: no weight-loading bars or generate() config chatter."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
