"""`speeched export MODEL --to transformers OUT`: a directory transformers' own classes load faithfully.

What transformers' `SpeechEncoderDecoderModel` can represent is the plain composition: encoder, an
optional Linear `enc_to_dec_proj` when the widths differ, a cross-attending decoder. speeched's extensions
fall into three groups:

- dropped with a warning (the model still runs; decoding changes): the CTC head (joint CTC/attention
  decoding becomes attention-only; the warning names the dev scores of both when the model dir records
  them), SpecAugment (training only; nothing changes at inference);
- dropped only with `allow_lossy=True`: a decoder prompt (task/language tokens) longer than one token
  (a one-token prefix becomes `forced_bos_token_id`, which is exact);
- never exported (transformers would compute something else; `--to onnx` runs them): prefix coupling,
  length adaptor, layer weighting, an MLP projector or a Linear one between equal widths, and anything
  whose weights do not load into transformers' class one to one.

Every export is checked before it is kept: transformers reloads OUT and its logits must equal ours.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSpeechSeq2Seq, SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel

from speeched.export.common import (
    ExportError,
    check_output,
    copy_assets,
    known_scores,
    load_source,
    prefix_ids,
    probe_arrays,
    read_card,
    score_for,
)
from speeched.export.model_card import write_model_card
from speeched.inference.features import featurize
from speeched.modeling.model_dir import match_umask

logger = logging.getLogger("speeched")

PARITY_ATOL = 1e-4


@dataclass
class ExportReport:
    out: Path
    warnings: list[str] = field(default_factory=list)
    max_logit_diff: float | None = None


def structural_blockers(model: Any) -> list[str]:
    """Parts transformers' SpeechEncoderDecoderModel cannot compute: each a reason, empty when none."""
    cfg = model.config
    out = []
    if cfg.coupling == "prefix":
        out.append(
            "prefix coupling (speech as a soft prompt of a decoder-only LLM) has no transformers class; "
            "it runs only in speeched (ONNX export does not support it either)"
        )
    if cfg.adaptor_layers:
        out.append(
            f"the length adaptor ({cfg.adaptor_layers} strided conv layers) has no transformers equivalent"
        )
    if cfg.layer_weighting:
        out.append("layer weighting over encoder layers has no transformers equivalent")
    if cfg.projector == "mlp":
        out.append("the MLP projector has no transformers equivalent (only a Linear enc_to_dec_proj)")
    if cfg.projector == "linear" and model.encoder_output_dim == model.decoder.config.hidden_size:
        out.append(
            "a Linear projector between equal widths: transformers builds enc_to_dec_proj only when the "
            "encoder and decoder widths differ"
        )
    return out


def reference_config(model: Any) -> Any:
    cfg = model.config
    enc = copy.deepcopy(model.encoder.config)
    dec = copy.deepcopy(model.decoder.config)
    dec.is_decoder = True
    dec.add_cross_attention = True
    ref = SpeechEncoderDecoderConfig(encoder=enc.to_dict(), decoder=dec.to_dict())
    for name in ("decoder_start_token_id", "pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(ref, name, getattr(cfg, name))
    ref.tie_word_embeddings = False
    return ref


def generation_config(model: Any, forced_bos: int | None) -> Any:
    """Our generation defaults + the decoding the model was validated with (beams), as generation_config.json."""
    gen = copy.deepcopy(model.generation_config)
    decoding = getattr(model.config, "decoding", None) or {}
    if decoding.get("num_beams"):
        gen.num_beams = int(decoding["num_beams"])
        if gen.num_beams > 1:
            gen.early_stopping = True
    limit = getattr(model.config.decoder, "max_position_embeddings", None) or getattr(
        model.config.decoder, "n_positions", None
    )
    if gen.max_new_tokens is None and limit:
        # The default max_length (20 tokens) would cut every longer transcript in the pipeline.
        gen.max_length = int(limit) - 2
    if forced_bos is not None:
        gen.forced_bos_token_id = int(forced_bos)
    gen.do_sample = False
    return gen


def logits_diff(ours: Any, theirs: Any, feature_extractor: Any, start: int) -> float:
    inputs = featurize(feature_extractor, probe_arrays(feature_extractor.sampling_rate), "cpu")
    batch = next(iter(inputs.values())).shape[0]
    dec = torch.tensor([[start, 1000, 2000]] * batch) % ours.config.decoder.vocab_size
    dec[:, 0] = start
    with torch.no_grad():
        a = ours(**inputs, decoder_input_ids=dec).logits
        b = theirs(**inputs, decoder_input_ids=dec).logits
    return float((a - b).abs().max())


def export_transformers(model_dir: Path, out: Path, allow_lossy: bool = False) -> ExportReport:
    check_output(out)
    loaded = load_source(model_dir)
    model, tokenizer = loaded.model, loaded.tokenizer
    cfg = model.config
    blockers = structural_blockers(model)
    if blockers:
        raise ExportError(
            f"{model_dir} cannot be exported to transformers: "
            + "; ".join(blockers)
            + (
                ". Use `speeched export --to onnx` (it runs the whole adaptor stack) or load it with speeched"
                if cfg.coupling != "prefix"
                else ". Load it with speeched.SpeechEncoderDecoderModel.from_pretrained"
            )
        )
    report = ExportReport(out=out)
    notes = []
    prefix = prefix_ids(model, tokenizer)
    forced_bos = None
    if len(prefix) == 1:
        forced_bos = prefix[0]
        notes.append(
            f"the one-token decoder prompt ({tokenizer.convert_ids_to_tokens(prefix[0])}) is forced_bos_token_id"
        )
    elif prefix:
        msg = (
            f"the decoder prompt has {len(prefix)} tokens ({' '.join(tokenizer.convert_ids_to_tokens(prefix))}); "
            "transformers' generate can force only one (forced_bos_token_id), so the pipeline would decode "
            "without the task/language prefix"
        )
        if not allow_lossy:
            raise ExportError(f"{msg}: pass --allow-lossy to export anyway, or use `--to onnx`")
        report.warnings.append(msg + " (exported anyway: --allow-lossy)")
    if cfg.ctc_vocab:
        scores = known_scores(model_dir)
        joint, attention = score_for(scores, ctc=True), score_for(scores, ctc=False)
        lam = float((cfg.decoding or {}).get("ctc_weight", 0.0) or 0.0)
        msg = (
            f"dropping the CTC head ({len(cfg.ctc_vocab)} units): transformers cannot run it, so "
            + (
                f"joint CTC/attention decoding (ctc_weight {lam}) becomes attention-only"
                if lam
                else "it is not used"
            )
            + f"; dev score with the CTC head: {joint or 'not recorded'}, attention-only: {attention or 'not recorded'}"
        )
        if lam and not attention:
            msg += " (measure it: speeched eval MODEL --data DEV --ctc-weight 0)"
        report.warnings.append(msg)
    if cfg.decoding and float(cfg.decoding.get("ctc_weight", 0) or 0) > 0 and not cfg.ctc_vocab:
        report.warnings.append("config.decoding asks for ctc_weight > 0 but there is no CTC head; ignored")

    ref_config = reference_config(model)
    ref = SpeechEncoderDecoderModel(config=ref_config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("ctc_head.")}
    ref_state = ref.state_dict()
    mismatched = [k for k in state if k in ref_state and ref_state[k].shape != state[k].shape]
    missing = sorted(set(ref_state) - set(state))
    unexpected = sorted(set(state) - set(ref_state))
    if mismatched or missing or unexpected:
        raise ExportError(
            f"transformers' SpeechEncoderDecoderModel builds a different network for {model_dir}: "
            + "; ".join(
                f"{what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                for what, keys in (
                    ("shape differs", mismatched),
                    ("missing", missing),
                    ("not in transformers", unexpected),
                )
                if keys
            )
            + ". Use `speeched export --to onnx` instead"
        )
    ref.load_state_dict(state, strict=True)
    ref.generation_config = generation_config(model, forced_bos)
    ref.eval()

    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        ref.save_pretrained(str(tmp), safe_serialization=True)
        copy_assets(model_dir, tmp)
        match_umask(tmp)  # safetensors writes 0600: the umask's mode like every other file
        reloaded = AutoModelForSpeechSeq2Seq.from_pretrained(str(tmp)).eval()
        if type(reloaded).__name__ != "SpeechEncoderDecoderModel":
            raise RuntimeError(f"transformers reloaded the export as {type(reloaded).__name__}")
        report.max_logit_diff = logits_diff(
            model, reloaded, loaded.feature_extractor, cfg.decoder_start_token_id
        )
        if report.max_logit_diff > PARITY_ATOL:
            raise RuntimeError(
                f"transformers' reload of the export differs from speeched by {report.max_logit_diff:.3g} in "
                "logits: this is a bug in speeched export; please report it with the model's config.json"
            )
        card = read_card(model_dir)
        card.setdefault("encoder", cfg.encoder.model_type)
        card.setdefault("decoder", cfg.decoder.model_type)
        card.setdefault("name", out.name)
        card["exported_from"] = str(model_dir)
        card["export_notes"] = [
            "exported with `speeched export --to transformers`: loads in transformers' "
            "SpeechEncoderDecoderModel / AutoModelForSpeechSeq2Seq and pipeline('automatic-speech-recognition')",
            f"logits equal speeched's within {PARITY_ATOL} (measured: {report.max_logit_diff:.2g})",
            *notes,
            *report.warnings,
        ]
        write_model_card(tmp, card)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report
