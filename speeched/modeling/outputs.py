"""Output dataclasses: the reference's fields plus what exact loss normalisation and CTC need."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput


@dataclass
class SpeechEncoderOutput(BaseModelOutput):
    """Encoder output *after* speeched's adaptor stack (layer weighting, length adaptor, projector).

    `attention_mask` is the mask over these (possibly downsampled) frames. `raw_last_hidden_state` /
    `raw_attention_mask` are the encoder's own outputs, which the CTC head reads. Being a distinct type
    lets `forward` tell adapted outputs (from `generate`) from raw ones a caller passes in.
    """

    attention_mask: torch.Tensor | None = None
    raw_last_hidden_state: torch.Tensor | None = None
    raw_attention_mask: torch.Tensor | None = None


@dataclass
class SpeechSeq2SeqLMOutput(Seq2SeqLMOutput):
    """`Seq2SeqLMOutput` plus the pieces of the loss, so training can normalise exactly.

    ce_loss_sum / num_target_tokens: summed token cross-entropy and the count of non-ignored labels.
    ctc_loss_sum / num_ctc_utterances: summed per-utterance CTC loss and the number of utterances.
    """

    ce_loss_sum: torch.Tensor | None = None
    num_target_tokens: torch.Tensor | None = None
    ctc_loss_sum: torch.Tensor | None = None
    num_ctc_utterances: torch.Tensor | None = None
    ctc_logits: torch.Tensor | None = None
