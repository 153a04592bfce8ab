"""`speeched export MODEL --to transformers|onnx OUT`: a model directory for transformers or ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import typer

from speeched.commands import options

TARGETS = ("transformers", "onnx")

EPILOG = options.epilog(
    "speeched export runs/demo/best runs/demo/hf --to transformers",
    "speeched export runs/demo/best runs/demo/onnx --to onnx --quantize int8",
)


def command(
    model: Path = typer.Argument(
        ..., help="Model directory written by `speeched init`/`train` (e.g. runs/NAME/best)."
    ),
    out: Path = typer.Argument(..., help="New directory to write (must not exist)."),
    to: str = typer.Option(
        ..., "--to", help="transformers (SpeechEncoderDecoderModel + pipeline) | onnx (ONNX Runtime)."
    ),
    quantize: str | None = typer.Option(
        None,
        "--quantize",
        help="onnx only: int8 = dynamic int8 quantisation of the weights (smaller, faster on CPU).",
    ),
    allow_lossy: bool = typer.Option(
        False,
        "--allow-lossy",
        help="transformers only: export even when a decoder prompt of several tokens must be dropped.",
    ),
    push_to_hub: str | None = typer.Option(
        None, "--push-to-hub", metavar="REPO", help="Upload OUT to this Hugging Face model repo (OWNER/NAME)."
    ),
    private: bool = typer.Option(False, "--private", help="With --push-to-hub: create the repo as private."),
) -> None:
    """Export MODEL to OUT; warns about everything that changes (e.g. a dropped CTC head). Exit 2 on bad input."""
    from speeched.commands.logging_setup import setup_logging
    from speeched.errors import UsageError

    setup_logging()
    if to not in TARGETS:
        raise UsageError(f"--to {to!r} is not one of {', '.join(TARGETS)}")
    if quantize is not None and to != "onnx":
        raise UsageError("--quantize applies to --to onnx only")
    if allow_lossy and to != "transformers":
        raise UsageError("--allow-lossy applies to --to transformers only")
    if push_to_hub:
        from speeched.export.hub import check_repo_id

        check_repo_id(push_to_hub)  # before minutes of exporting, not after
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if to == "transformers":
        from speeched.export.transformers_export import export_transformers

        report = export_transformers(model, out, allow_lossy=allow_lossy)
        detail = f"logits match speeched within {report.max_logit_diff:.1g}"
    else:
        from speeched.export.onnx_export import export_onnx

        report = export_onnx(model, out, quantize=quantize)
        detail = f"fp32 logits match torch within {report.max_logit_diff:.1g}"
        if report.quantized_logit_diff is not None:
            detail += f"; int8 changes logits by up to {report.quantized_logit_diff:.3g}"
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"exported {model} to {out} ({to}; {detail})")
    if push_to_hub:
        from speeched.export.hub import push_to_hub as push

        url = push(out, push_to_hub, private=private)
        typer.echo(f"uploaded {out} to {url}")
