"""`speeched init`: compose a model directory from a pretrained speech encoder and a text decoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from speeched.commands import options
from speeched.errors import UsageError

EPILOG = options.epilog(
    "speeched init --encoder facebook/wav2vec2-base --decoder bert-base-uncased --out models/w2v-bert",
    "speeched init --encoder ENC_DIR --decoder DEC_DIR --out models/m --model-option ctc_weight=0.3 "
    "--ctc-vocab-from data/train.jsonl",
)


def parse_options(pairs: list[str], flag: str) -> dict[str, Any]:
    """`k=v` strings → dict; values parsed as YAML scalars (2 → int, true → bool, [1, 2] → list)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {pair!r} is not key=value (e.g. {flag} num_hidden_layers=2)")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as err:
            raise UsageError(
                f"{flag} {pair!r}: the value is not valid YAML ({err.__class__.__name__})"
            ) from err
    return out


def read_transcripts(manifests: list[Path]) -> list[str]:
    """The `text` of every record of the manifests, read with the data layer's one reader."""
    from speeched.data.sources import load_source

    texts: list[str] = []
    for path in manifests:
        if not path.exists():
            raise UsageError(f"--ctc-vocab-from {path}: no such file")
        texts += [u.text for u in load_source(str(path))]
    return texts


def command(
    encoder: str = typer.Option(
        ..., "--encoder", help="Speech encoder: hub ID or local dir (config-only = random init)."
    ),
    decoder: str = typer.Option(..., "--decoder", help="Text decoder: hub ID or local dir."),
    out: Path = typer.Option(
        ..., "--out", help="Directory to write the model to (must be missing or empty)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace what --out holds (a model directory or training run)."
    ),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="Tokenizer source (default: the decoder)."
    ),
    feature_extractor: str | None = typer.Option(
        None, "--feature-extractor", help="Feature extractor source (default: the encoder)."
    ),
    encoder_option: list[str] = typer.Option([], "--encoder-option", help="k=v for the encoder config."),
    decoder_option: list[str] = typer.Option([], "--decoder-option", help="k=v for the decoder config."),
    model_option: list[str] = typer.Option(
        [],
        "--model-option",
        help="k=v speeched extension, e.g. adaptor_layers=2, projector=mlp, ctc_weight=0.3.",
    ),
    generation_option: list[str] = typer.Option([], "--generation-option", help="k=v, e.g. num_beams=4."),
    ctc_vocab_from: list[Path] = typer.Option(
        [], "--ctc-vocab-from", help="Manifest(s) whose transcripts define the CTC head's vocabulary."
    ),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Allow code from the checkpoints."
    ),
    task: str = typer.Option(
        "asr", "--task", help="asr | st: picks the task token of Whisper-style prompts."
    ),
    src_lang: str | None = typer.Option(None, "--src-lang", help="Default language of the speech."),
    tgt_lang: str | None = typer.Option(
        None, "--tgt-lang", help="Default output language for st (checked against the tokenizer, e.g. de_DE)."
    ),
    prompt_style: str = typer.Option(
        "auto",
        "--prompt-style",
        help="auto | none | lang_token | whisper | template (the decoder prompt: language/task tokens).",
    ),
    prompt_template: str | None = typer.Option(
        None,
        "--prompt-template",
        help="Text prompt, e.g. '{tgt_lang}:' (fields task src_lang tgt_lang lang).",
    ),
) -> None:
    """Compose a model from a pretrained speech encoder and text decoder and save it to OUT."""
    from speeched.commands.logging_setup import setup_logging
    from speeched.modeling.compose import ComposeSpec, describe_init, init_model

    setup_logging()
    spec = ComposeSpec(
        encoder=encoder,
        decoder=decoder,
        tokenizer=tokenizer,
        feature_extractor=feature_extractor,
        encoder_options=parse_options(encoder_option, "--encoder-option"),
        decoder_options=parse_options(decoder_option, "--decoder-option"),
        extensions=parse_options(model_option, "--model-option"),
        generation=parse_options(generation_option, "--generation-option"),
        trust_remote_code=trust_remote_code,
        prompt={
            "task": task,
            "style": prompt_style,
            "src_lang": src_lang,
            "tgt_lang": tgt_lang,
            "template": prompt_template,
        },
        ctc_texts=read_transcripts(ctc_vocab_from) if ctc_vocab_from else None,
    )
    typer.echo(describe_init(init_model(spec, out, force=force)))
