"""`speeched export MODEL --to onnx OUT [--quantize int8]`: encoder + decoder graphs for ONNX Runtime.

optimum has no SpeechEncoderDecoder export, so the graphs are traced here (see onnx_graphs.py) with
torch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`): the dynamo exporter needs
the `onnxscript` package, which is not a speeched dependency, and the traced graphs were checked to
generalise over batch size, audio length and cache length (tests/test_onnx.py).

Supported: cross-attention coupling with every encoder-side extension (layer weighting, length adaptor,
projector: they run inside the encoder graph) and a forced decoder prompt (its ids are stored in
speeched_onnx.json). Not supported: prefix coupling (refused: the LLM's prefix is built per batch in
Python), the CTC head (not exported; ONNX decoding is attention-only greedy search), graphs over 2 GB
(protobuf's limit; the exporter would need external data files).

Every export is checked before it is kept: onnxruntime's logits on a probe batch must be within 1e-4 of
torch's (fp32). With `--quantize int8` (onnxruntime's dynamic quantisation of the weights) the logit
difference is measured and reported, not bounded.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speeched.data.feature_cache import time_axis
from speeched.export.common import (
    ExportError,
    check_output,
    copy_assets,
    load_source,
    prefix_ids,
    probe_arrays,
    read_card,
)
from speeched.export.model_card import write_model_card
from speeched.export.onnx_graphs import DecoderInitGraph, DecoderWithPastGraph, EncoderGraph
from speeched.inference.features import featurize
from speeched.inference.onnx_backend import (
    DECODER_INIT,
    DECODER_WITH_PAST,
    ENCODER,
    FORMAT_VERSION,
    ONNX_META,
    OnnxSpeechModel,
    cache_names,
)

logger = logging.getLogger("speeched")

OPSET = 17
PARITY_ATOL = 1e-4
QUANTIZE = ("int8",)


@dataclass
class OnnxExportReport:
    out: Path
    max_logit_diff: float = 0.0  # fp32 graphs vs torch
    quantized_logit_diff: float | None = None  # int8 graphs vs torch
    warnings: list[str] = field(default_factory=list)


def num_decoder_layers(model: Any) -> int:
    cfg = model.config.decoder
    for name in ("num_hidden_layers", "decoder_layers", "n_layer", "num_layers"):
        if getattr(cfg, name, None):
            return int(getattr(cfg, name))
    raise ExportError(f"cannot tell how many layers the {cfg.model_type} decoder has")


def _export(
    module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict
) -> None:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python branches the graphs do not depend on
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def export_graphs(model: Any, feature_extractor: Any, tmp: Path, head: list[int]) -> dict[str, Any]:
    """Trace the three graphs into `tmp`; returns the facts the runner needs (speeched_onnx.json)."""
    inputs = featurize(feature_extractor, probe_arrays(feature_extractor.sampling_rate), "cpu")
    input_name = "input_values" if "input_values" in inputs else "input_features"
    with_mask = "attention_mask" in inputs
    x = inputs[input_name]
    mask = inputs["attention_mask"].long() if with_mask else None
    n = num_decoder_layers(model)
    # waveforms (batch, samples); Whisper's log-mel (batch, bins, frames); Speech2Text's (batch, frames, bins)
    time = "samples" if x.dim() == 2 else "frames"
    axis = x.dim() - 1 if time_axis(feature_extractor) == -1 else 1  # time last (Whisper) or after batch
    time_axes = {0: "batch", axis: time}
    enc = EncoderGraph(model, with_mask)
    enc_args = (x, mask) if with_mask else (x,)
    enc_in = ["inputs", "attention_mask"] if with_mask else ["inputs"]
    enc_axes = {
        "inputs": time_axes,
        "encoder_hidden_states": {0: "batch", 1: "enc"},
        "encoder_attention_mask": {0: "batch", 1: "enc"},
    }
    if with_mask:
        enc_axes["attention_mask"] = {0: "batch", 1: time}
    _export(
        enc, enc_args, tmp / ENCODER, enc_in, ["encoder_hidden_states", "encoder_attention_mask"], enc_axes
    )
    with torch.no_grad():
        hidden, frame_mask = enc(*enc_args)

    batch = x.shape[0]
    # Trace the first step with two head tokens even for a one-token head, so its length stays dynamic.
    ids = torch.tensor([(head + [head[-1]])[: max(2, len(head))]] * batch, dtype=torch.long)
    present = cache_names(n, "present")
    dec_axes = {
        "encoder_hidden_states": {0: "batch", 1: "enc"},
        "encoder_attention_mask": {0: "batch", 1: "enc"},
    }
    init_axes = {
        "input_ids": {0: "batch", 1: "tokens"},
        "logits": {0: "batch", 1: "tokens"},
        **dec_axes,
        **{k: {0: "batch", 2: "enc" if ".cross." in k else "tokens"} for k in present},
    }
    dec_in = ["input_ids", "encoder_hidden_states", "encoder_attention_mask"]
    init = DecoderInitGraph(model, n)
    _export(init, (ids, hidden, frame_mask), tmp / DECODER_INIT, dec_in, ["logits", *present], init_axes)
    with torch.no_grad():
        first = init(ids, hidden, frame_mask)
    past = cache_names(n, "past")
    past_axes = {
        "input_ids": {0: "batch"},
        "logits": {0: "batch"},
        **dec_axes,
        **{k: {0: "batch", 2: "enc" if ".cross." in k else "past"} for k in past},
        **{k: {0: "batch", 2: "past_plus_one"} for k in present[: 2 * n]},
    }
    step = DecoderWithPastGraph(model, n)
    _export(
        step,
        (ids[:, :1], hidden, frame_mask, *first[1:]),
        tmp / DECODER_WITH_PAST,
        dec_in + past,
        ["logits", *present[: 2 * n]],
        past_axes,
    )
    cfg = model.config
    limit = getattr(cfg.decoder, "max_position_embeddings", None) or getattr(cfg.decoder, "n_positions", None)
    return {
        "format": FORMAT_VERSION,
        "num_layers": n,
        "input_name": input_name,
        "with_mask": with_mask,
        "decoder_start_token_id": cfg.decoder_start_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "prefix_ids": head[1:],
        "max_positions": limit,
        "decoding": {"num_beams": 1, "ctc_weight": 0.0, "search": "greedy"},
        "quantization": None,
        "opset": OPSET,
    }


def torch_logits(
    model: Any, feature_extractor: Any, arrays: list[np.ndarray], dec: torch.Tensor
) -> np.ndarray:
    with torch.no_grad():
        return model(**featurize(feature_extractor, arrays, "cpu"), decoder_input_ids=dec).logits.numpy()


def quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # its "consider pre-processing" advice, once per graph
    try:
        for name in (ENCODER, DECODER_INIT, DECODER_WITH_PAST):
            quantize_dynamic(str(src / name), str(dst / name), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


def export_onnx(model_dir: Path, out: Path, quantize: str | None = None) -> OnnxExportReport:
    if quantize is not None and quantize not in QUANTIZE:
        raise ExportError(f"--quantize {quantize!r} is not supported: choose one of {', '.join(QUANTIZE)}")
    check_output(out)
    loaded = load_source(model_dir)
    model, tokenizer, fe = loaded.model, loaded.tokenizer, loaded.feature_extractor
    cfg = model.config
    if cfg.coupling == "prefix":
        raise ExportError(
            f"{model_dir} uses prefix coupling (speech as a soft prompt of a decoder-only LLM), which the ONNX "
            "export does not support: run it with speeched (`speeched transcribe`)"
        )
    report = OnnxExportReport(out=out)
    if cfg.ctc_vocab:
        lam = float((cfg.decoding or {}).get("ctc_weight", 0.0) or 0.0)
        report.warnings.append(
            "the CTC head is not exported: ONNX decoding is attention-only greedy search"
            + (
                f" (the model was validated with joint CTC/attention decoding, ctc_weight {lam})"
                if lam
                else ""
            )
        )
    if (cfg.decoding or {}).get("num_beams", 1) > 1:
        report.warnings.append(
            f"the model was validated with {cfg.decoding['num_beams']} beams; the ONNX runner decodes greedily"
        )
    head = [int(cfg.decoder_start_token_id), *prefix_ids(model, tokenizer)]
    tmp = out.with_name(out.name + ".partial")
    fp32 = out.with_name(out.name + ".fp32-partial")
    for d in (tmp, fp32):
        shutil.rmtree(d, ignore_errors=True)
    tmp.mkdir()
    try:
        graph_dir = fp32 if quantize else tmp
        graph_dir.mkdir(exist_ok=True)
        meta = export_graphs(model, fe, graph_dir, head)
        copy_assets(model_dir, tmp)
        for name in (
            "config.json",
            "generation_config.json",
        ):  # what the graphs were made from; the card reads it
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)
        if quantize:
            copy_assets(model_dir, fp32)
        (graph_dir / ONNX_META).write_text(json.dumps(meta, indent=2) + "\n")
        # other lengths than the traced ones: a time axis the export left fixed fails here, not in users' hands
        arrays = probe_arrays(fe.sampling_rate, seconds=(1.3, 0.8))
        dec = torch.tensor([[*head, 1000, 2000]] * len(arrays)) % cfg.decoder.vocab_size
        dec[:, : len(head)] = torch.tensor(head)
        expected = torch_logits(model, fe, arrays, dec)
        got = OnnxSpeechModel(graph_dir).logits(arrays, dec.numpy())
        report.max_logit_diff = float(np.abs(got - expected).max())
        if report.max_logit_diff > PARITY_ATOL:
            raise RuntimeError(
                f"onnxruntime's logits differ from torch's by {report.max_logit_diff:.3g}: this is a bug in "
                "speeched export; please report it with the model's config.json"
            )
        if quantize:
            quantize_int8(fp32, tmp)
            meta["quantization"] = quantize
            (tmp / ONNX_META).write_text(json.dumps(meta, indent=2) + "\n")
            got = OnnxSpeechModel(tmp).logits(arrays, dec.numpy())
            report.quantized_logit_diff = float(np.abs(got - expected).max())
        card = read_card(model_dir)
        card.setdefault("name", out.name)
        card.setdefault("encoder", cfg.encoder.model_type)
        card.setdefault("decoder", cfg.decoder.model_type)
        card["library_name"] = "onnx"
        card["exported_from"] = str(model_dir)
        card["export_notes"] = [
            "exported with `speeched export --to onnx`: encoder.onnx, decoder_init.onnx, decoder_with_past.onnx "
            f"(opset {OPSET}); run with `speeched transcribe --backend onnx` or "
            "speeched.inference.onnx_backend.OnnxSpeechModel",
            f"fp32 logits equal torch's within {PARITY_ATOL} (measured: {report.max_logit_diff:.2g})",
            *(
                [
                    f"weights quantised to {quantize} (onnxruntime dynamic quantisation); largest logit change "
                    f"on a probe batch: {report.quantized_logit_diff:.3g}"
                ]
                if quantize
                else []
            ),
            *report.warnings,
        ]
        write_model_card(tmp, card)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(fp32, ignore_errors=True)
    return report
