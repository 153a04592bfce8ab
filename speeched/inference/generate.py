"""Decode one batch of waveforms: transformers' `generate()` (greedy or beam search, KV-cached), or joint
CTC/attention search (`joint_decoding`) / N-best CTC rescoring (`rescoring`) when `ctc_weight > 0`.

Inputs here are already known to be sound (see `speeched.inference.decode`); a row whose features come
out non-finite is still taken out before the model sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from speeched.errors import UsageError
from speeched.inference.batching import token_cap
from speeched.inference.features import featurize, finite_rows, select_rows
from speeched.inference.joint_decoding import joint_decode
from speeched.inference.loading import InferenceModel
from speeched.inference.options import Decoded, DecodeOptions
from speeched.inference.rescoring import rescore_beams
from speeched.modeling.ctc import ctc_greedy_decode

NON_FINITE_FEATURES = "non-finite features"


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None) or tokenizer.eos_token_id or tokenizer.sep_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}


def generate_batch(
    im: InferenceModel,
    arrays: Sequence[np.ndarray],
    options: DecodeOptions,
    prefix: Sequence[int] | None = None,
) -> list[Decoded]:
    """Decode one batch with resolved `options` (see `resolve_options`); results in input order.

    `prefix`: the forced task/language tokens every input of the batch shares (from
    `speeched.modeling.prompting.DecoderPrompt`, exactly as the training collator built them). They are
    decoder inputs after the start token (cross-attention) or the prompt after the speech (prefix
    coupling), never part of the returned text.
    """
    inputs = featurize(im.feature_extractor, arrays, im.device)
    cap = token_cap(im.model, options, max(len(a) for a in arrays) / im.sampling_rate)
    finite = finite_rows(inputs)
    keep = [i for i, ok in enumerate(finite) if ok]
    out: list[Decoded] = [Decoded("", token_cap=cap, skipped=NON_FINITE_FEATURES)] * len(arrays)
    if not keep:
        return out
    if len(keep) < len(arrays):
        inputs = select_rows(inputs, keep)
    prefix = [int(t) for t in prefix or []]
    if options.ctc_weight:
        decoded = _generate_with_ctc(im, inputs, cap, options, prefix)
    else:
        decoded = _generate(im, inputs, len(keep), cap, options, prefix)
    for i, d in zip(keep, decoded, strict=True):
        out[i] = d
    return out


def _generate(
    im: InferenceModel, inputs: dict[str, Any], n: int, cap: int, options: DecodeOptions, prefix: list[int]
) -> list[Decoded]:
    model, tokenizer = im.model, im.tokenizer
    kwargs: dict[str, Any] = {"max_new_tokens": cap, "num_beams": options.num_beams or 1, "do_sample": False}
    start = getattr(model.generation_config, "decoder_start_token_id", None)
    if start is None:
        start = model.config.decoder_start_token_id
    cross = getattr(model.config, "coupling", "cross_attention") != "prefix"
    head = [start, *prefix] if cross else []
    if prefix and cross:
        kwargs["decoder_input_ids"] = torch.tensor([head] * n, dtype=torch.long, device=im.device)
    elif prefix:
        kwargs["prompt_ids"] = [prefix] * n
    if (options.num_beams or 1) > 1:
        kwargs["early_stopping"] = True
    if options.no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = options.no_repeat_ngram_size
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # generate() warns on every call that max_new_tokens beats max_length
    try:
        with torch.inference_mode():
            sequences = model.generate(**inputs, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    if not torch.is_tensor(sequences):
        sequences = sequences.sequences
    rows = sequences.tolist()
    bodies = [seq[len(head) :] if seq[: len(head)] == head else seq for seq in rows]
    texts = tokenizer.batch_decode(bodies, skip_special_tokens=True)
    eos = eos_ids(model, tokenizer)
    out = []
    for seq, body, text in zip(rows, bodies, texts, strict=True):
        end = next((i for i, t in enumerate(body) if t in eos), None)
        k = len(body) if end is None else end
        ids = seq[: len(seq) - len(body) + k + (0 if end is None else 1)]
        out.append(Decoded(text.strip(), k, end is None and k >= cap, ids, cap))
    return out


def _generate_with_ctc(
    im: InferenceModel, inputs: dict[str, Any], cap: int, options: DecodeOptions, prefix: list[int]
) -> list[Decoded]:
    """Joint CTC/attention decoding: (1-λ)·attention + λ·CTC prefix scores inside the beam search for
    cross-attention models; N-best rescoring for prefix-coupled LLMs."""
    model, tokenizer = im.model, im.tokenizer
    if not getattr(model.config, "ctc_vocab", None):
        raise UsageError(
            "--ctc-weight needs a model with a CTC head (compose it with ctc_weight / ctc_vocab)"
        )
    name = "input_values" if "input_values" in inputs else "input_features"
    if options.ctc_weight is not None and options.ctc_weight >= 1.0:
        return _ctc_only(im, inputs[name], inputs.get("attention_mask"), cap)
    cross = model.config.coupling == "cross_attention"
    # The joint search runs with one beam too (greedy, each step's best joint score among the pre-beam's
    # candidates); rescoring needs at least two hypotheses to choose from.
    beams = max(1 if cross else 2, options.num_beams or 1)
    lam = float(options.ctc_weight or 0.0)
    if cross:
        token_lists = joint_decode(
            model, tokenizer, inputs[name], inputs.get("attention_mask"), beams, lam, cap, prefix=prefix
        )
        texts = tokenizer.batch_decode(token_lists, skip_special_tokens=True)
    else:
        prompts = {"prompt_ids": [prefix] * inputs[name].shape[0]} if prefix else {}
        with torch.inference_mode():
            scored = rescore_beams(
                model,
                tokenizer,
                inputs[name],
                attention_mask=inputs.get("attention_mask"),
                num_beams=beams,
                ctc_weight=lam,
                max_new_tokens=cap,
                do_sample=False,
                **prompts,
            )
        token_lists = [list(scored.token_ids[b][i]) for b, i in enumerate(scored.best)]
        texts = [scored.texts[b][i] for b, i in enumerate(scored.best)]
    eos = eos_ids(model, tokenizer)
    out = []
    for ids, text in zip(token_lists, texts, strict=True):
        k = next((i for i, t in enumerate(ids) if t in eos), len(ids))
        out.append(Decoded(text.strip(), k, k == len(ids) and k >= cap, list(ids), cap))
    return out


def _ctc_only(im: InferenceModel, x: torch.Tensor, mask: torch.Tensor | None, cap: int) -> list[Decoded]:
    """λ = 1: the attention term has no weight, so the decoder is not run at all: the CTC head's best path
    (argmax per frame, repeats collapsed, blanks dropped), as ESPnet/NeMo decode CTC models. Fast (encoder
    only) and monotonic; no language model beyond what the encoder learned. `token_ids` stay empty (no
    decoder sequence, so no attention plot); `num_tokens` counts the decoder tokens of the text."""
    model, tokenizer = im.model, im.tokenizer
    with torch.inference_mode():
        enc = model.encode(x, attention_mask=mask)
        logits = model.ctc_head(enc.raw_last_hidden_state)
        frames = model.ctc_frame_lengths(enc)
    texts = ctc_greedy_decode(logits, frames, model.config.ctc_vocab, model.config.ctc_units)
    counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids] if texts else []
    return [Decoded(text, n, False, [], cap) for text, n in zip(texts, counts, strict=True)]
