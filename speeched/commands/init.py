"""`speeched init`: compose a model directory from a pretrained speech encoder and a text decoder."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    encoder: str = typer.Option(
        ..., "--encoder", help="Speech encoder: hub ID or local dir (config-only = random init)."
    ),
    decoder: str = typer.Option(..., "--decoder", help="Text decoder: hub ID or local dir."),
    out: Path = typer.Option(..., "--out", help="Directory to write the model to."),
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
        "auto", "--prompt-style", help="auto | none | lang_token | whisper | template (decoder prefix)."
    ),
    prompt_template: str | None = typer.Option(
        None,
        "--prompt-template",
        help="Text prefix, e.g. '{tgt_lang}:' (fields task src_lang tgt_lang lang).",
    ),
) -> None:
    """Compose a model from a pretrained speech encoder and text decoder and save it to OUT."""
    from speeched.logging_setup import setup_logging
    from speeched.modeling.compose import ComposeSpec, init_model, parse_options

    setup_logging()
    try:
        extensions = parse_options(model_option, "--model-option")
        if ctc_vocab_from:
            from speeched.modeling.ctc import build_ctc_vocab
            from speeched.modeling.vocab_source import transcripts_from_manifests

            extensions["ctc_vocab"] = build_ctc_vocab(
                transcripts_from_manifests(ctc_vocab_from), extensions.get("ctc_units", "char")
            )
        spec = ComposeSpec(
            encoder=encoder,
            decoder=decoder,
            tokenizer=tokenizer,
            feature_extractor=feature_extractor,
            encoder_options=parse_options(encoder_option, "--encoder-option"),
            decoder_options=parse_options(decoder_option, "--decoder-option"),
            extensions=extensions,
            generation=parse_options(generation_option, "--generation-option"),
            trust_remote_code=trust_remote_code,
            prompt={
                "task": task,
                "style": prompt_style,
                "src_lang": src_lang,
                "tgt_lang": tgt_lang,
                "template": prompt_template,
            },
        )
        loaded = init_model(spec, out)
    except ValueError as err:
        typer.echo(f"speeched init: {err}", err=True)
        raise typer.Exit(2) from err
    from speeched.modeling.compose import format_init_report
    from speeched.modeling.prompting import describe, prompt_spec

    typer.echo(format_init_report(loaded.model.init_report))
    typer.echo(describe(prompt_spec(loaded.model), loaded.tokenizer))
    n = sum(p.numel() for p in loaded.model.parameters())
    typer.echo(f"wrote {out} ({n / 1e6:.1f} M parameters; coupling={loaded.model.config.coupling})")
