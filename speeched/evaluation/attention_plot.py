"""Cross-attention alignment plots: which encoder frames each generated token looked at.

A healthy encoder-decoder shows a roughly monotonic diagonal; a flat or vertical-stripe map means the
decoder ignores the audio (a language model babbling), the usual cause of identical hypotheses.
The map is recomputed by one teacher-forced forward pass over the generated tokens (one utterance at a
time, so no padding), with eager attention, because fused attention kernels do not return weights.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from speeched.data.audio import load_audio
from speeched.data.records import Utterance
from speeched.inference.features import featurize

MAX_TOKEN_LABELS = 60


def cross_attention_map(model: Any, inputs: dict[str, Any], token_ids: Sequence[int]) -> np.ndarray:
    """[generated tokens, encoder frames]: last decoder layer's cross-attention averaged over heads.

    Row t is the attention while predicting token t+1 of `token_ids` (which starts with the decoder
    start token).
    """
    if len(token_ids) < 2:
        raise ValueError("need at least one generated token after the decoder start token")
    device = next(model.parameters()).device
    dec_in = torch.tensor([list(token_ids[:-1])], device=device)
    # Only the decoder switches: some encoders (Speech2Text) have a single attention implementation.
    decoder = getattr(model, "decoder", model)
    previous = getattr(decoder.config, "_attn_implementation", None)
    switch = hasattr(decoder, "set_attn_implementation") and previous not in (None, "eager")
    if switch:
        decoder.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = model(**inputs, decoder_input_ids=dec_in, output_attentions=True, return_dict=True)
    finally:
        if switch:
            decoder.set_attn_implementation(previous)
    cross = getattr(out, "cross_attentions", None)
    if not cross or cross[-1] is None:
        raise RuntimeError(
            f"{type(model).__name__} returned no cross-attentions (prefix coupling has none to plot)"
        )
    return cross[-1][0].float().mean(dim=0).cpu().numpy()


def save_alignment_png(
    matrix: np.ndarray, tokens: Sequence[str], seconds: float, path: str | Path, title: str = ""
) -> Path:
    """Write the tokens x frames heat map; the x axis is in seconds of audio."""
    n_tok = matrix.shape[0]
    # A bare Figure (no pyplot): no global backend switch, no figure registry to close.
    fig = Figure(figsize=(min(16, 4 + seconds), min(12, 2 + 0.22 * n_tok)), dpi=100)
    ax = fig.subplots()
    ax.imshow(
        matrix, aspect="auto", origin="upper", interpolation="nearest", extent=(0, seconds, n_tok - 0.5, -0.5)
    )
    if n_tok <= MAX_TOKEN_LABELS:
        ax.set_yticks(range(n_tok))
        ax.set_yticklabels(tokens, fontsize=7)
    ax.set_xlabel(f"encoder frames ({matrix.shape[1]} over {seconds:.2f} s of audio)")
    ax.set_ylabel("generated token")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_predictions(
    model: Any,
    tokenizer: Any,
    feature_extractor: Any,
    utterances: Sequence[Utterance],
    predictions: Sequence[Any],
    out_dir: str | Path,
) -> list[str]:
    """One PNG per (utterance, prediction with `token_ids`); returns the written paths (skips none-token ones)."""
    sr = feature_extractor.sampling_rate
    device = next(model.parameters()).device
    written: list[str] = []
    for utt, pred in zip(utterances, predictions, strict=True):
        if len(pred.token_ids) < 2:
            continue
        audio = load_audio(utt, sr, check=False)
        matrix = cross_attention_map(model, featurize(feature_extractor, [audio], device), pred.token_ids)
        tokens = tokenizer.convert_ids_to_tokens(list(pred.token_ids[1:]))
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", utt.id)[:80] or "utt"
        title = f"{utt.id}: {pred.hypothesis[:90]}"
        written.append(
            str(save_alignment_png(matrix, tokens, len(audio) / sr, Path(out_dir) / f"{safe}.png", title))
        )
    return written
