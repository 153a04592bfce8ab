""" "Prefix" coupling: projected speech frames prepended to a decoder-only LLM's input embeddings.

Decoder-only LLMs (Llama, GPT-2 without `add_cross_attention`, ...) have no cross-attention, so the
speech reaches them as a soft prompt (SLAM-LLM / SALMONN style). Each example's sequence is

    [bos] + valid speech frames + prompt tokens  (+ target tokens when training)

with the prefixes LEFT-padded to one length (mask 0) so that every example's last prefix position lines
up and generation can append tokens to all of them at once. Position ids are `cumsum(mask) - 1` (0 on
padding) both in training and in `generate`, which builds them the same way from the attention mask, so
an example's numbers do not depend on what it is batched with.

The prompt: the model owns no tokenizer, so the prompt's token ids live in the config as the extra
attribute `config.prompt_ids` (PreTrainedConfig saves and reloads extra attributes). `set_prompt`
tokenizes `config.prompt` and stores them; a model with a prompt but no ids refuses to run.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

from speeched.modeling.losses import token_cross_entropy
from speeched.modeling.outputs import SpeechEncoderOutput, SpeechSeq2SeqLMOutput

if TYPE_CHECKING:
    from speeched.modeling.model import SpeechEncoderDecoderModel


def set_prompt(model: SpeechEncoderDecoderModel, tokenizer: Any, prompt: str | None) -> list[int]:
    """Store `prompt` and its token ids (no special tokens) in the config; saved with the model."""
    ids = [] if not prompt else list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    model.config.prompt = prompt
    model.config.prompt_ids = ids
    return ids


def prompt_ids(model: SpeechEncoderDecoderModel) -> list[int]:
    """The prompt's token ids; fails loudly rather than silently dropping a configured prompt."""
    ids = getattr(model.config, "prompt_ids", None)
    if model.config.prompt and ids is None:
        raise ValueError(
            f"config.prompt={model.config.prompt!r} has no token ids: call "
            "speeched.modeling.prefix.set_prompt(model, tokenizer, model.config.prompt) once after composing "
            "(it stores config.prompt_ids, which are saved with the model)"
        )
    return list(ids or [])


def prefix_head_ids(model: SpeechEncoderDecoderModel) -> list[int]:
    """Tokens before the speech: the BOS when the decoder has one (LLMs are trained with it first)."""
    bos = model.config.bos_token_id
    return [] if bos is None else [int(bos)]


def build_prefix(
    model: SpeechEncoderDecoderModel,
    encoder_outputs: SpeechEncoderOutput,
    prompts: list[list[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded `[bos] + speech + prompt` embeddings (batch, P, width) and their 0/1 mask (batch, P).

    `prompts`: each example's prompt ids (speeched.modeling.prompting); default the config's prompt."""
    speech = encoder_outputs.last_hidden_state
    batch, frames, _ = speech.shape
    frame_mask = encoder_outputs.attention_mask
    if frame_mask is None:
        frame_mask = torch.ones(batch, frames, dtype=torch.long, device=speech.device)
    embed = model.decoder.get_input_embeddings()
    dtype = embed.weight.dtype
    device = speech.device

    def token_embeds(ids: list[int]) -> torch.Tensor:
        return embed(torch.tensor(ids, dtype=torch.long, device=device)).to(dtype)

    head = token_embeds(prefix_head_ids(model))
    if prompts is not None and len(prompts) != batch:
        raise ValueError(f"{len(prompts)} prompts for a batch of {batch}")
    default = prompt_ids(model) if prompts is None else []
    tails = [token_embeds(prompts[b] if prompts is not None else default) for b in range(batch)]
    lengths = frame_mask.sum(-1).long()
    total = head.shape[0] + int((lengths + torch.tensor([t.shape[0] for t in tails], device=device)).max())
    rows, masks = [], []
    for b in range(batch):
        valid = speech[b, frame_mask[b].bool()].to(dtype)
        seq = torch.cat([head, valid, tails[b]], dim=0)
        pad = total - seq.shape[0]
        rows.append(torch.cat([seq.new_zeros(pad, seq.shape[1]), seq], dim=0))
        masks.append(torch.cat([frame_mask.new_zeros(pad), frame_mask.new_ones(seq.shape[0])]))
    return torch.stack(rows), torch.stack(masks).long()


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """`cumsum(mask) - 1`, 0 on padding: exactly what `GenerationMixin.generate` builds from the mask."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 0)


def _encode(model: SpeechEncoderDecoderModel, inputs, attention_mask, encoder_outputs) -> SpeechEncoderOutput:
    if encoder_outputs is None:
        return model.encode(inputs, attention_mask=attention_mask)
    if not isinstance(encoder_outputs, SpeechEncoderOutput):
        raise TypeError(
            "prefix coupling takes encoder_outputs only as returned by model.encode(...) (SpeechEncoderOutput)"
        )
    return encoder_outputs


def prefix_forward(
    model: SpeechEncoderDecoderModel,
    inputs: torch.Tensor | None,
    attention_mask: torch.Tensor | None = None,
    labels: torch.LongTensor | None = None,
    encoder_outputs: SpeechEncoderOutput | None = None,
    loss_reduction: str = "mean",
    ctc_labels: list[str] | None = None,
    prompt_ids: list[list[int]] | None = None,
) -> SpeechSeq2SeqLMOutput:
    """Teacher-forced forward. `labels` = target tokens + EOS, right-padded with -100 (as the collator makes).

    `logits` are aligned with `labels` (logits[:, i] predicts labels[:, i]), as in cross-attention mode;
    without labels they are the next-token logits after the prefix, shape (batch, 1, vocab). The loss
    counts target tokens only, never the speech or prompt positions.
    """
    enc = _encode(model, inputs, attention_mask, encoder_outputs)
    embeds, mask = build_prefix(model, enc, prompt_ids)
    prefix_len = embeds.shape[1]
    if labels is not None:
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        target_ids = labels.masked_fill(labels == -100, pad)
        target_embeds = model.decoder.get_input_embeddings()(target_ids).to(embeds.dtype)
        embeds = torch.cat([embeds, target_embeds], dim=1)
        mask = torch.cat([mask, (labels != -100).long()], dim=1)
    out = model.decoder(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=False,
        return_dict=True,
    )
    loss = ce_sum = num_tokens = None
    if labels is not None:
        logits = out.logits[:, prefix_len - 1 : prefix_len - 1 + labels.shape[1]]
        ce_sum, num_tokens = token_cross_entropy(logits, labels, logits.shape[-1])
        loss = ce_sum if loss_reduction == "sum" else ce_sum / num_tokens.clamp(min=1)
    else:
        logits = out.logits[:, prefix_len - 1 : prefix_len]
    loss, ctc_sum, num_ctc, ctc_logits = model.add_ctc_loss(loss, enc, ctc_labels, loss_reduction)
    return SpeechSeq2SeqLMOutput(
        loss=loss,
        logits=logits,
        decoder_hidden_states=out.hidden_states,
        decoder_attentions=out.attentions,
        encoder_last_hidden_state=enc.last_hidden_state,
        encoder_hidden_states=enc.hidden_states,
        encoder_attentions=enc.attentions,
        ce_loss_sum=ce_sum,
        num_target_tokens=num_tokens,
        ctc_loss_sum=ctc_sum,
        num_ctc_utterances=num_ctc,
        ctc_logits=ctc_logits,
    )


def prefix_generate(model: SpeechEncoderDecoderModel, inputs: torch.Tensor | None = None, **kwargs: Any):
    """The LLM's own `generate` (greedy, beam, sampling; KV cache) over the left-padded prefix embeddings.

    Returns the token ids of the *generated part only* (no BOS/speech/prompt positions), unlike
    cross-attention mode whose sequences start with `decoder_start_token_id`; with
    `return_dict_in_generate=True` the output's `sequences` are the same generated-only ids.
    """
    attention_mask = kwargs.pop("attention_mask", None)
    input_values = kwargs.pop("input_values", None)
    input_features = kwargs.pop("input_features", None)
    encoder_outputs = kwargs.pop("encoder_outputs", None)
    prompts = kwargs.pop("prompt_ids", None)
    if inputs is None:
        inputs = input_values if input_values is not None else input_features
    enc = _encode(model, inputs, attention_mask, encoder_outputs)
    embeds, mask = build_prefix(model, enc, prompts)
    gen = copy.deepcopy(kwargs.pop("generation_config", None) or model.generation_config)
    gen.decoder_start_token_id = None  # decoder-only: the prefix is the whole context
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        if getattr(gen, name, None) is None:
            setattr(gen, name, getattr(model.config, name))
    model_kwargs = gen.update(**kwargs)  # generation options into the config, the rest go to the model
    return model.decoder.generate(
        inputs_embeds=embeds, attention_mask=mask, generation_config=gen, **model_kwargs
    )


__all__ = [
    "build_prefix",
    "position_ids_from_mask",
    "prefix_forward",
    "prefix_generate",
    "prompt_ids",
    "set_prompt",
]
