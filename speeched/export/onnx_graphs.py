"""torch modules that the ONNX graphs are traced from: encoder stack, first decoder step, later steps.

transformers 5 decoders keep their key/value cache in `EncoderDecoderCache` objects; a traced ONNX graph
can only take and return tensors, so these wrappers turn flat tensors into a cache and back:

- `EncoderGraph`: audio (+ mask) → encoder_hidden_states and the frame mask the decoder reads, after the
  whole adaptor stack (layer weighting, length adaptor, projector), so every speeched extension of the
  cross-attention coupling runs in ONNX too.
- `DecoderInitGraph`: the first step (start token + forced prefix tokens) → logits, the self-attention
  cache and the cross-attention keys/values (computed once per utterance).
- `DecoderWithPastGraph`: one new token + both caches → logits and the grown self-attention cache.

Two decoder graphs rather than one, as optimum does for Whisper/T5: one graph with an empty past would
have to branch on "is the cross-attention cache filled", and tracing bakes such branches in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache


def _flatten(cache: EncoderDecoderCache, num_layers: int, cross: bool) -> list[torch.Tensor]:
    out = []
    for i in range(num_layers):
        layer = cache.self_attention_cache.layers[i]
        out += [layer.keys, layer.values]
    if cross:
        for i in range(num_layers):
            layer = cache.cross_attention_cache.layers[i]
            out += [layer.keys, layer.values]
    return out


class EncoderGraph(nn.Module):
    def __init__(self, model: Any, with_mask: bool) -> None:
        super().__init__()
        self.model = model
        self.with_mask = with_mask

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None):
        enc = self.model.encode(inputs, attention_mask=attention_mask if self.with_mask else None)
        hidden = enc.last_hidden_state
        mask = enc.attention_mask
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        return hidden, mask.long()


class _DecoderGraph(nn.Module):
    """One decoder step with a KV cache; the two graphs differ only in the cache they start from."""

    def __init__(self, model: Any, num_layers: int) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.num_layers = num_layers

    def step(self, input_ids, encoder_hidden_states, encoder_attention_mask, cache, cross: bool):
        out = self.decoder(
            input_ids=input_ids,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            cache=cache,
            use_cache=True,
            return_dict=True,
        )
        return (out.logits, *_flatten(out.cache, self.num_layers, cross=cross))


class DecoderInitGraph(_DecoderGraph):
    def forward(self, input_ids, encoder_hidden_states, encoder_attention_mask):
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        return self.step(input_ids, encoder_hidden_states, encoder_attention_mask, cache, cross=True)


class DecoderWithPastGraph(_DecoderGraph):
    def forward(self, input_ids, encoder_hidden_states, encoder_attention_mask, *past):
        n = self.num_layers
        layers = [
            (past[2 * i], past[2 * i + 1], past[2 * n + 2 * i], past[2 * n + 2 * i + 1]) for i in range(n)
        ]
        cache = EncoderDecoderCache(layers)
        return self.step(input_ids, encoder_hidden_states, encoder_attention_mask, cache, cross=False)
