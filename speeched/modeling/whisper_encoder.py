"""Whisper's encoder on inputs shorter than its window.

transformers' `WhisperEncoder` refuses any input but exactly its window (30 s: 3000 log-mel frames), as
Whisper was pretrained. Fine-tuning on 2 s utterances then spends 15x the encoder compute on padding. This
subclass takes any length up to the window: the positional table is sliced to the frames there are (Whisper's
encoder positions are fixed sinusoids, so the first N rows are those of an N-frame window). At exactly the
window it computes what transformers' forward does (tested to the bit), so a plain Whisper composition is
unchanged.

Whether inputs are padded to the window or only to the longest of their batch is the feature extractor's
choice (`speeched_padding: longest` in preprocessor_config.json, written by `speeched convert --pad
longest`; see `speeched.data.feature_cache.padding_kwargs`). Every speeched Whisper encoder is this class, so a
model takes either.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.modeling_whisper import WhisperEncoder


class AnyLengthWhisperEncoder(WhisperEncoder):
    """`WhisperEncoder` that also takes inputs shorter than its window (same parameters, same state dict)."""

    def window_frames(self) -> int:
        return self.config.max_source_positions * self.conv1.stride[0] * self.conv2.stride[0]

    def forward(  # type: ignore[override]
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutput:
        del attention_mask, kwargs  # Whisper's encoder reads no mask, as upstream
        frames, window = input_features.shape[-1], self.window_frames()
        if frames > window:
            raise ValueError(
                f"Whisper's window is {window} log-mel frames ({window // 100} s) but the input has {frames}: "
                "cut the audio (the feature extractor truncates when called with truncation=True)"
            )
        # transformers' WhisperEncoder.forward (5.x) with the positions sliced to the frames there are. Also at
        # the window, not super().forward: its hidden-state capture is registered per class name, so a subclass
        # would silently get none (tests/test_whisper_encoder.py: the same states as upstream, to the bit).
        if output_hidden_states is None:
            output_hidden_states = bool(getattr(self.config, "output_hidden_states", False))
        hidden = nn.functional.gelu(self.conv1(input_features))
        hidden = nn.functional.gelu(self.conv2(hidden)).permute(0, 2, 1)
        hidden = hidden + self.embed_positions.weight[: hidden.shape[1]]
        hidden = nn.functional.dropout(hidden, p=self.dropout, training=self.training)
        states = [hidden]
        for layer in self.layers:
            if self.training and self.layerdrop > 0.0 and torch.rand([]) < self.layerdrop:
                continue  # LayerDrop: as upstream, a skipped layer records no hidden state
            out = layer(hidden, None)
            hidden = out[0] if isinstance(out, tuple) else out
            states.append(hidden)
        hidden = self.layer_norm(hidden)
        states[-1] = hidden  # upstream's last hidden state is the normalised one
        return BaseModelOutput(
            last_hidden_state=hidden, hidden_states=tuple(states) if output_hidden_states else None
        )


def any_length(encoder: nn.Module) -> nn.Module:
    """The same module as an `AnyLengthWhisperEncoder` when it is transformers' `WhisperEncoder`."""
    if type(encoder) is WhisperEncoder:
        encoder.__class__ = AnyLengthWhisperEncoder
    return encoder
