"""Decoding options shared by `eval` and `transcribe`, defined once so their flags cannot drift apart."""

from __future__ import annotations

import typer

NUM_BEAMS = typer.Option(
    None,
    "--num-beams",
    min=1,
    help="1 = greedy search [default: the beam size the model was validated with in training, else 1].",
)
CTC_WEIGHT = typer.Option(
    None,
    "--ctc-weight",
    min=0.0,
    max=1.0,
    help="λ of joint CTC/attention beam search (needs a CTC head; 0 = plain generate) [default: the λ the "
    "model was validated with in training, else 0].",
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
