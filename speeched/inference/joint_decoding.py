"""Joint CTC/attention beam search (Watanabe et al. 2017, as in ESPnet) for cross-attention models.

Each beam hypothesis is scored by (1-λ)·log p_att(y) + λ·log p_ctc(prefix of y), where the CTC prefix
probability comes from the model's CTC head. The CTC term enforces a monotonic, complete alignment
with the audio, which fixes exactly what a young cross-attention decoder gets wrong (swapped, dropped
and repeated words) while the attention decoder supplies the language model.

Decoder tokens are mapped to CTC units through their text (`tokenizer.decode`), so the decoder's
tokenizer and the CTC vocabulary (characters or words) can differ. Why not transformers' `generate`:
its beam search has no hook for a per-hypothesis state that must be extended as hypotheses grow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from speeched.modeling.ctc import UNK, _units

NEG_INF = -1e30


def _logadd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.logaddexp(a, b)


@dataclass
class CTCState:
    """Forward variables of the CTC prefix score: r_n (prefix ends in its last unit) and r_b (in blank)."""

    r_n: np.ndarray
    r_b: np.ndarray
    units: list[int] = field(default_factory=list)
    score: float = 0.0  # log p_ctc(prefix ...), the prefix score of `units`

    @classmethod
    def initial(cls, logp: np.ndarray) -> CTCState:
        r_b = np.cumsum(logp[:, 0])
        return cls(np.full(logp.shape[0], NEG_INF), r_b, [], 0.0)

    def full_score(self) -> float:
        """log p_ctc(units | audio): the complete sequence (used when a hypothesis ends)."""
        return float(np.logaddexp(self.r_n[-1], self.r_b[-1]))


def extend(state: CTCState, unit: int, logp: np.ndarray) -> CTCState:
    """The prefix state of `state.units + [unit]` (one unit; blank = index 0)."""
    steps = logp.shape[0]
    x = logp[:, unit]
    last = state.units[-1] if state.units else None
    phi = state.r_b.copy() if last == unit else _logadd(state.r_n, state.r_b)
    r_n = np.full(steps, NEG_INF)
    r_b = np.full(steps, NEG_INF)
    if not state.units:
        r_n[0] = x[0]
    psi = r_n[0]
    blank = logp[:, 0]
    for t in range(1, steps):
        r_n[t] = np.logaddexp(r_n[t - 1], phi[t - 1]) + x[t]
        r_b[t] = np.logaddexp(r_b[t - 1], r_n[t - 1]) + blank[t]
        psi = np.logaddexp(psi, phi[t - 1] + x[t])
    return CTCState(r_n, r_b, [*state.units, unit], float(psi))


def extend_to(state: CTCState, units: list[int], logp: np.ndarray, initial: CTCState) -> CTCState:
    """State for `units`, reusing `state` when its units are a prefix of them (the usual case)."""
    if units[: len(state.units)] != state.units:
        state = initial
    for u in units[len(state.units) :]:
        state = extend(state, u, logp)
    return state


@dataclass
class Hypothesis:
    tokens: list[int]
    att: float
    ctc: CTCState
    score: float = 0.0


def _unit_ids(text: str, index: dict[str, int], unit_kind: str) -> list[int]:
    unk = index.get(UNK, 1)
    return [index.get(u, unk) for u in _units(text, unit_kind)]


@torch.no_grad()
def joint_decode(
    model: Any,
    tokenizer: Any,
    inputs: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    num_beams: int = 4,
    ctc_weight: float = 0.5,
    max_new_tokens: int = 64,
    prefix: list[int] | None = None,
) -> list[list[int]]:
    """Best token ids per utterance (without the start token and the forced `prefix` — the task/language
    tokens of speeched.modeling.prompting —, ending with EOS when one was produced)."""
    cfg = model.config
    if not cfg.ctc_vocab:
        raise ValueError(
            "joint CTC/attention decoding needs a CTC head (ctc_vocab); compose with ctc_weight > 0"
        )
    if cfg.coupling != "cross_attention":
        raise ValueError("joint_decode is for cross-attention models; prefix models use rescoring")
    was_training = model.training
    model.eval()
    try:
        enc = model.encode(inputs, attention_mask=attention_mask)
        ctc_logp = torch.log_softmax(model.ctc_head(enc.raw_last_hidden_state).float(), dim=-1).cpu().numpy()
        frames = model.ctc_frame_lengths(enc).tolist()
        index = {u: i for i, u in enumerate(cfg.ctc_vocab)}
        results = []
        for b in range(inputs.shape[0]):
            hidden = enc.last_hidden_state[b : b + 1]
            mask = enc.attention_mask[b : b + 1] if enc.attention_mask is not None else None
            results.append(
                _decode_one(
                    model,
                    tokenizer,
                    hidden,
                    mask,
                    ctc_logp[b, : int(frames[b])],
                    index,
                    num_beams,
                    ctc_weight,
                    max_new_tokens,
                    list(prefix or []),
                )
            )
        return results
    finally:
        model.train(was_training)


def _decode_one(
    model: Any,
    tokenizer: Any,
    hidden: torch.Tensor,
    mask: torch.Tensor | None,
    logp: np.ndarray,
    index: dict[str, int],
    num_beams: int,
    lam: float,
    max_new_tokens: int,
    prefix: list[int],
) -> list[int]:
    cfg = model.config
    eos, start = cfg.eos_token_id, cfg.decoder_start_token_id
    initial = CTCState.initial(logp)
    beams = [Hypothesis([], 0.0, initial)]
    finished: list[Hypothesis] = []
    for _ in range(max_new_tokens):
        ids = torch.tensor([[start, *prefix, *h.tokens] for h in beams], device=hidden.device)
        out = model.decoder(
            input_ids=ids,
            encoder_hidden_states=hidden.expand(len(beams), -1, -1),
            encoder_attention_mask=mask.expand(len(beams), -1) if mask is not None else None,
            use_cache=False,
        )
        att = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        top = att.topk(num_beams + 1, dim=-1)
        candidates: list[Hypothesis] = []
        for h, vals, toks in zip(beams, top.values.tolist(), top.indices.tolist(), strict=True):
            for v, tok in zip(vals, toks, strict=True):
                att_score = h.att + v
                if tok == eos:
                    ctc = h.ctc.full_score()
                    finished.append(
                        Hypothesis([*h.tokens, tok], att_score, h.ctc, (1 - lam) * att_score + lam * ctc)
                    )
                    continue
                tokens = [*h.tokens, tok]
                units = _unit_ids(tokenizer.decode(tokens, skip_special_tokens=True), index, cfg.ctc_units)
                state = extend_to(h.ctc, units, logp, initial)
                candidates.append(
                    Hypothesis(tokens, att_score, state, (1 - lam) * att_score + lam * state.score)
                )
        candidates.sort(key=lambda h: h.score, reverse=True)
        beams = candidates[:num_beams]
        best_done = max((f.score for f in finished), default=-math.inf)
        if not beams or (len(finished) >= num_beams and best_done >= beams[0].score):
            break
    if not finished:  # ran into the token cap: score what we have as complete sequences
        finished = [
            Hypothesis(h.tokens, h.att, h.ctc, (1 - lam) * h.att + lam * h.ctc.full_score()) for h in beams
        ]
    return max(finished, key=lambda h: h.score).tokens
