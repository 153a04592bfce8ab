"""Decoding options shared by `eval` and `transcribe`, defined once so their flags cannot drift apart."""

from __future__ import annotations

import typer

NUM_BEAMS = typer.Option(1, "--num-beams", min=1, help="1 = greedy search.")
CTC_WEIGHT = typer.Option(
    0.0,
    "--ctc-weight",
    min=0.0,
    max=1.0,
    help="λ of joint CTC/attention beam search (needs a CTC head; 0 = plain generate).",
)
