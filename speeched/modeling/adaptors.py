"""Modules between the speech encoder and the decoder: layer weighting, length adaptor, projector, SpecAugment."""

from __future__ import annotations

import torch
from torch import nn


class LayerWeighting(nn.Module):
    """SUPERB-style learnable softmax-weighted sum of all encoder layers' hidden states.

    Starts uniform; `weights()` returns the normalised weights so users can see which layers the task uses.
    """

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits.float(), dim=0)

    def forward(self, hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if len(hidden_states) != self.logits.numel():
            raise ValueError(
                f"layer weighting was built for {self.logits.numel()} hidden states but the encoder returned "
                f"{len(hidden_states)}"
            )
        stacked = torch.stack(hidden_states, dim=0)
        w = self.weights().to(stacked.dtype).view(-1, *([1] * (stacked.dim() - 1)))
        return (w * stacked).sum(dim=0)


class LengthAdaptor(nn.Module):
    """N strided Conv1d + GLU layers cutting the frame rate by stride**N (fairseq xm_transformer, ESPnet).

    Long encoder sequences (50 frames/s for wav2vec2) make cross-attention and especially an LLM prefix
    expensive; the decoder rarely needs that resolution.
    """

    def __init__(self, dim: int, num_layers: int, stride: int = 2, kernel_size: int = 3) -> None:
        super().__init__()
        self.stride = stride
        self.kernel_size = kernel_size
        self.padding = kernel_size // 2
        self.layers = nn.ModuleList(
            nn.Conv1d(dim, 2 * dim, kernel_size, stride=stride, padding=self.padding)
            for _ in range(num_layers)
        )

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _ in self.layers:
            lengths = self._layer_lengths(lengths)
        return lengths

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = hidden.transpose(1, 2)
        if attention_mask is None:
            for conv in self.layers:
                x = nn.functional.glu(conv(x), dim=1)
            return x.transpose(1, 2), None
        # Padded frames must not leak into valid ones. speeched fix: re-mask after *every* layer — a
        # padded frame's output (GLU of the bias) is not zero, so masking only the input made a batched
        # example differ from the same example alone as soon as adaptor_layers >= 2.
        lengths = attention_mask.sum(-1)
        valid = attention_mask.bool()
        for conv in self.layers:
            x = x * valid.unsqueeze(1).to(x.dtype)
            x = nn.functional.glu(conv(x), dim=1)
            lengths = self._layer_lengths(lengths)
            valid = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]
        return x.transpose(1, 2), valid.to(attention_mask.dtype)

    def _layer_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        out = torch.div(lengths + 2 * self.padding - self.kernel_size, self.stride, rounding_mode="floor") + 1
        return out.clamp(min=1)


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """Encoder width → decoder width: a Linear (the reference's `enc_to_dec_proj`) or a 2-layer MLP (SLAM-LLM)."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, 2 * out_dim), nn.GELU(), nn.Linear(2 * out_dim, out_dim))
    raise ValueError(f"unknown projector {kind!r}: expected 'linear' or 'mlp'")


def spec_augment_features(
    features: torch.Tensor,
    attention_mask: torch.Tensor | None,
    time_masks: int = 2,
    time_width: float = 0.05,
    freq_masks: int = 2,
    freq_width: int = 8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) time and frequency masking of log-mel features (batch, time, bins).

    Waveform encoders (wav2vec2 family) have their own masking (`mask_time_prob`); this covers log-mel
    encoders, which have none. Masks are drawn per utterance within its valid length.
    """
    x = features.clone()
    batch, steps, bins = x.shape
    lengths = attention_mask.sum(-1) if attention_mask is not None else torch.full((batch,), steps)
    for b in range(batch):
        length = int(lengths[b])
        max_t = max(1, int(time_width * length))
        for _ in range(time_masks):
            width = int(torch.randint(0, max_t + 1, (1,), generator=generator))
            start = int(torch.randint(0, max(1, length - width), (1,), generator=generator))
            x[b, start : start + width, :] = 0.0
        for _ in range(freq_masks):
            width = int(torch.randint(0, freq_width + 1, (1,), generator=generator))
            start = int(torch.randint(0, max(1, bins - width), (1,), generator=generator))
            x[b, :, start : start + width] = 0.0
    return x
