"""Joint CTC/attention rescoring of beam hypotheses (Watanabe et al. 2017, as in ESPnet's N-best rescoring).

The attention decoder alone sometimes ends early or loops; the CTC head's monotonic alignment penalises
hypotheses that do not cover the audio. Each of the beam's K hypotheses gets

    score = (1 - λ) · log p_att(y | x) + λ · log p_ctc(y | x)

with both log-likelihoods *summed* over the hypothesis (not length-normalised), and the best one wins.
The beam itself runs with `length_penalty=0` so that its own ranking uses the same summed log-prob, and
λ = 0 returns exactly the plain beam's best.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from speeched.modeling.ctc import ctc_scores
from speeched.modeling.outputs import SpeechEncoderOutput


@dataclass
class RescoredHypotheses:
    """Per utterance: the K hypotheses' token ids, texts and scores (tensors shaped (batch, K))."""

    token_ids: list[list[list[int]]]
    texts: list[list[str]]
    attention: torch.Tensor
    ctc: torch.Tensor
    combined: torch.Tensor
    best: list[int]


def _expand(enc: SpeechEncoderOutput, k: int) -> SpeechEncoderOutput:
    fields = {
        name: getattr(enc, name).repeat_interleave(k, dim=0)
        for name in ("last_hidden_state", "attention_mask", "raw_last_hidden_state", "raw_attention_mask")
        if getattr(enc, name) is not None
    }
    return SpeechEncoderOutput(**fields)


def hypothesis_labels(model: Any, sequences: torch.Tensor) -> tuple[torch.Tensor, list[list[int]]]:
    """Generated ids → labels (tokens up to and including the first EOS, then -100) and the token lists.

    Cross-attention sequences start with `decoder_start_token_id`, which is dropped; prefix sequences
    hold only generated tokens.
    """
    if model.config.coupling != "prefix":
        sequences = sequences[:, 1:]
    eos = model.config.eos_token_id
    labels = torch.full_like(sequences, -100)
    tokens: list[list[int]] = []
    for i, row in enumerate(sequences.tolist()):
        cut = row.index(eos) + 1 if eos in row else len(row)
        labels[i, :cut] = torch.tensor(row[:cut], dtype=labels.dtype)
        tokens.append(row[:cut])
    return labels, tokens


def attention_log_probs(
    model: Any,
    encoder_outputs: SpeechEncoderOutput,
    labels: torch.Tensor,
    prompt_ids: list[list[int]] | None = None,
) -> torch.Tensor:
    """Summed decoder log-probability of each labelled hypothesis (recomputed by a teacher-forced forward)."""
    extra = {"prompt_ids": prompt_ids} if prompt_ids is not None else {}
    out = model(encoder_outputs=encoder_outputs, labels=labels, **extra)
    logp = torch.log_softmax(out.logits.float(), dim=-1)
    mask = labels != -100
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


@torch.no_grad()
def rescore_beams(
    model: Any,
    tokenizer: Any,
    inputs: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    num_beams: int = 4,
    ctc_weight: float = 0.3,
    **generate_kwargs: Any,
) -> RescoredHypotheses:
    """Beam search with K returned hypotheses, each scored by attention and CTC; see the module docstring."""
    if not model.config.ctc_vocab:
        raise ValueError(
            "CTC rescoring needs a CTC head: compose the model with ctc_vocab=... (and ctc_weight)"
        )
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
    for name in ("input_values", "input_features"):
        if inputs is None and name in generate_kwargs:
            inputs = generate_kwargs.pop(name)
    prompts = generate_kwargs.pop("prompt_ids", None)  # prefix coupling: each example's prompt
    if prompts is not None:
        generate_kwargs["prompt_ids"] = prompts
    was_training = model.training
    model.eval()
    try:
        enc = model.encode(inputs, attention_mask=attention_mask)
        generate_kwargs.setdefault("length_penalty", 0.0)
        out = model.generate(
            inputs,
            attention_mask=attention_mask,
            num_beams=num_beams,
            num_return_sequences=num_beams,
            output_scores=True,
            return_dict_in_generate=True,
            # Encode once for the beam, the recomputation and the CTC head; a copy, because generate
            # expands the encoder outputs for the beams in place.
            encoder_outputs=SpeechEncoderOutput(**dict(enc.items())),
            **generate_kwargs,
        )
        labels, tokens = hypothesis_labels(model, out.sequences)
        expanded = _expand(enc, num_beams)
        beam_prompts = None if prompts is None else [p for p in prompts for _ in range(num_beams)]
        att = attention_log_probs(model, expanded, labels, beam_prompts)
        texts = tokenizer.batch_decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=True)
        ctc_logits = model.ctc_head(expanded.raw_last_hidden_state)
        ctc = ctc_scores(
            ctc_logits,
            model.ctc_frame_lengths(expanded),
            texts,
            model.config.ctc_vocab,
            model.config.ctc_units,
        )
    finally:
        model.train(was_training)
    batch = att.shape[0] // num_beams
    att, ctc = att.view(batch, num_beams), ctc.view(batch, num_beams)
    combined = (1 - ctc_weight) * att + ctc_weight * ctc if ctc_weight > 0 else att
    best = combined.argmax(-1).tolist()
    return RescoredHypotheses(
        token_ids=[tokens[b * num_beams : (b + 1) * num_beams] for b in range(batch)],
        texts=[texts[b * num_beams : (b + 1) * num_beams] for b in range(batch)],
        attention=att,
        ctc=ctc,
        combined=combined,
        best=best,
    )


def generate_with_ctc_rescoring(
    model: Any,
    tokenizer: Any,
    inputs: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    num_beams: int = 4,
    ctc_weight: float = 0.3,
    **generate_kwargs: Any,
) -> list[str]:
    """The best transcript per utterance under (1-λ)·attention + λ·CTC log-likelihood."""
    scored = rescore_beams(
        model,
        tokenizer,
        inputs,
        attention_mask=attention_mask,
        num_beams=num_beams,
        ctc_weight=ctc_weight,
        **generate_kwargs,
    )
    return [scored.texts[b][i] for b, i in enumerate(scored.best)]


__all__ = ["RescoredHypotheses", "generate_with_ctc_rescoring", "rescore_beams"]
