"""`SpeechEncoderDecoderModel`: any speech encoder + any autoregressive text decoder.

On a plain composition it computes exactly what transformers' `SpeechEncoderDecoderModel` computes
(same parameter names, so checkpoints load both ways). On top it adds the length adaptor, projector,
layer weighting, CTC auxiliary loss, SpecAugment for log-mel encoders and "prefix" coupling of
decoder-only LLMs, each switched on in the config.

Over ~500 lines on purpose: one class with the reference's whole surface (construction, encode, forward,
generate), laid out like transformers' modeling_speech_encoder_decoder.py so the two can be read side by
side. Loading and wiring the halves lives in halves.py, prefix coupling in prefix.py.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    GenerationConfig,
    GenerationMixin,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutput

from speeched.modeling.adaptors import LayerWeighting, LengthAdaptor, build_projector, spec_augment_features
from speeched.modeling.configuration import ModelConfigError, SpeechEncoderDecoderConfig
from speeched.modeling.ctc import CTCHead, ctc_loss_sum, encode_ctc
from speeched.modeling.halves import (
    LAYERDROP_KEYS,
    encoder_from_config,
    encoder_output_dim,
    load_decoder,
    load_encoder,
    no_layerdrop_with_layer_weighting,
    prepare_decoder_config,
    require_cross_attention,
    share_config,
    try_load_tokenizer,
)
from speeched.modeling.losses import token_cross_entropy
from speeched.modeling.outputs import SpeechEncoderOutput, SpeechSeq2SeqLMOutput
from speeched.modeling.prefix import prefix_forward, prefix_generate
from speeched.modeling.tokens import resolve_special_tokens

logger = logging.getLogger("speeched")


def shift_tokens_right(input_ids: torch.Tensor, pad_token_id: int | None, decoder_start_token_id: int | None):
    """Labels → decoder inputs: prepend the start token, drop the last label, turn -100 into padding."""
    if decoder_start_token_id is None:
        raise ValueError(
            "decoder_start_token_id is not set in the model config: compose the model with "
            "speeched.SpeechEncoderDecoderModel.from_encoder_decoder_pretrained or `speeched init`, which resolve "
            "it from the decoder's tokenizer, or set model.config.decoder_start_token_id."
        )
    if pad_token_id is None:
        raise ValueError("pad_token_id is not set in the model config: set model.config.pad_token_id.")
    shifted = input_ids.new_zeros(input_ids.shape)
    shifted[:, 1:] = input_ids[:, :-1].clone()
    shifted[:, 0] = decoder_start_token_id
    shifted.masked_fill_(shifted == -100, pad_token_id)
    return shifted


class _EncoderStack:
    """What `generate` calls as "the encoder": the speech encoder plus the adaptor stack, run once.

    Not an nn.Module on purpose: it owns no parameters, so the state dict keeps the reference's names.
    """

    def __init__(self, model: SpeechEncoderDecoderModel) -> None:
        self.model = model
        self.main_input_name = "inputs"

    def forward(self, inputs=None, attention_mask=None, **kwargs: Any) -> SpeechEncoderOutput:
        return self.model.encode(inputs, attention_mask=attention_mask, **kwargs)

    __call__ = forward


class SpeechEncoderDecoderModel(PreTrainedModel, GenerationMixin):
    """A speech encoder (AutoModel) and a text decoder (AutoModelForCausalLM) trained end to end."""

    config_class = SpeechEncoderDecoderConfig
    config: SpeechEncoderDecoderConfig
    base_model_prefix = "speech_encoder_decoder"
    main_input_name = "inputs"
    input_modalities = "audio"
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True

    def __init__(
        self,
        config: SpeechEncoderDecoderConfig | None = None,
        encoder: PreTrainedModel | None = None,
        decoder: PreTrainedModel | None = None,
    ) -> None:
        if config is None and (encoder is None or decoder is None):
            raise ValueError("Either a configuration or an encoder and a decoder has to be provided.")
        if config is None:
            config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config)
        elif not isinstance(config, SpeechEncoderDecoderConfig):
            raise ValueError(
                f"config must be a speeched SpeechEncoderDecoderConfig, got {type(config).__name__}; load it with "
                "speeched.SpeechEncoderDecoderConfig.from_pretrained(...)"
            )
        cross_size = getattr(config.decoder, "cross_attention_hidden_size", None)
        if cross_size is not None and cross_size != encoder_output_dim(config.encoder):
            raise ModelConfigError(
                f"decoder.cross_attention_hidden_size={cross_size} must equal the encoder's output width "
                f"{encoder_output_dim(config.encoder)}"
            )
        config.tie_word_embeddings = False
        super().__init__(config)

        if encoder is None:
            encoder = encoder_from_config(config.encoder)
        if decoder is None:
            prepare_decoder_config(config.decoder, config.coupling)
            decoder = AutoModelForCausalLM.from_config(config.decoder)
        if config.coupling == "cross_attention":
            require_cross_attention(decoder)
        self.encoder = encoder
        self.decoder = decoder
        # The halves read the shared config, so later updates stay in sync (as in the reference).
        self.config.encoder._attn_implementation = self.encoder.config._attn_implementation
        self.config.decoder._attn_implementation = self.decoder.config._attn_implementation
        share_config(self.encoder, self.config.encoder)
        share_config(self.decoder, self.config.decoder)
        if config.layer_weighting:
            no_layerdrop_with_layer_weighting(self.config.encoder)

        if self.encoder.get_output_embeddings() is not None:
            raise ModelConfigError(
                f"The encoder {type(self.encoder).__name__} must not have an LM head; use the base model."
            )

        self.encoder_output_dim = encoder_output_dim(config.encoder)
        dec_dim = self.decoder.config.hidden_size
        if config.layer_weighting:
            num_states = int(config.encoder.num_hidden_layers) + 1
            self.layer_weighting = LayerWeighting(num_states)
        if config.adaptor_layers:
            self.length_adaptor = LengthAdaptor(
                self.encoder_output_dim,
                config.adaptor_layers,
                config.adaptor_stride,
                config.adaptor_kernel_size,
            )
        projector = config.projector
        if projector is None and config.coupling == "prefix" and self.encoder_output_dim != dec_dim:
            projector = "linear"
        if projector is not None:
            self.enc_to_dec_proj = build_projector(projector, self.encoder_output_dim, dec_dim)
        elif self.encoder_output_dim != dec_dim and cross_size is None:
            # The reference sizes this from `hidden_size` and breaks for wav2vec2 adapters; we use the real width.
            self.enc_to_dec_proj = nn.Linear(self.encoder_output_dim, dec_dim)
        if config.ctc_vocab:
            self.ctc_head = CTCHead(self.encoder_output_dim, len(config.ctc_vocab))
        self.post_init()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_encoder_decoder_pretrained(
        cls,
        encoder_pretrained_model_name_or_path: str | None = None,
        decoder_pretrained_model_name_or_path: str | None = None,
        *model_args: Any,
        **kwargs: Any,
    ) -> SpeechEncoderDecoderModel:
        """Compose from two pretrained halves (hub IDs or local dirs).

        `encoder_*` / `decoder_*` kwargs go to each half's config (`encoder_model=` / `decoder_model=` pass
        ready models); generation kwargs (num_beams, max_new_tokens, ...) go to `generation_config`; the
        rest (extension fields, special token ids) go to the composite config. A directory with only a
        config.json gives a randomly initialised half, with a loud warning.
        """
        kwargs_encoder = {
            k[len("encoder_") :]: kwargs.pop(k) for k in list(kwargs) if k.startswith("encoder_")
        }
        kwargs_decoder = {
            k[len("decoder_") :]: kwargs.pop(k) for k in list(kwargs) if k.startswith("decoder_")
        }
        # decoder_start_token_id is a composite-config field, not a decoder option.
        if "start_token_id" in kwargs_decoder:
            kwargs["decoder_start_token_id"] = kwargs_decoder.pop("start_token_id")
        trust_remote_code = bool(kwargs.pop("trust_remote_code", False))
        tokenizer = kwargs.pop("tokenizer", None)
        coupling = kwargs.get("coupling", "cross_attention")

        gen_defaults = GenerationConfig()
        generation_kwargs = {
            k: kwargs.pop(k) for k in list(kwargs) if hasattr(gen_defaults, k) and not k.endswith("_token_id")
        }

        load_info: dict[str, Any] = {}
        encoder = kwargs_encoder.pop("model", None)
        if encoder is None:
            if encoder_pretrained_model_name_or_path is None:
                raise ValueError("Pass an encoder: a name or path, or encoder_model=<a loaded model>.")
            encoder, load_info["encoder"] = load_encoder(
                encoder_pretrained_model_name_or_path, trust_remote_code=trust_remote_code, **kwargs_encoder
            )
        decoder = kwargs_decoder.pop("model", None)
        if decoder is None:
            if decoder_pretrained_model_name_or_path is None:
                raise ValueError("Pass a decoder: a name or path, or decoder_model=<a loaded model>.")
            decoder, load_info["decoder"] = load_decoder(
                decoder_pretrained_model_name_or_path,
                coupling=coupling,
                trust_remote_code=trust_remote_code,
                **kwargs_decoder,
            )
        elif coupling == "cross_attention":
            require_cross_attention(decoder)

        if tokenizer is None and decoder_pretrained_model_name_or_path is not None:
            tokenizer = try_load_tokenizer(decoder_pretrained_model_name_or_path, trust_remote_code)
        special = resolve_special_tokens(
            tokenizer,
            decoder.config,
            overrides={
                k: kwargs.get(k)
                for k in ("decoder_start_token_id", "pad_token_id", "eos_token_id", "bos_token_id")
            },
        )
        for name in ("decoder_start_token_id", "pad_token_id", "eos_token_id"):
            kwargs[name] = getattr(special, name)
        if special.bos_token_id is not None:
            kwargs.setdefault("bos_token_id", special.bos_token_id)

        config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
            encoder.config, decoder.config, **kwargs
        )
        config.tie_word_embeddings = False
        model = cls(config=config, encoder=encoder, decoder=decoder)
        model.generation_config = model.build_generation_config(**generation_kwargs)
        model.load_info = load_info
        model.eval()
        return model

    def build_generation_config(self, **generation_kwargs: Any) -> GenerationConfig:
        """A generation config whose special tokens always equal the model config's."""
        gen = GenerationConfig(
            decoder_start_token_id=self.config.decoder_start_token_id,
            pad_token_id=self.config.pad_token_id,
            eos_token_id=self.config.eos_token_id,
            bos_token_id=self.config.bos_token_id,
            **generation_kwargs,
        )
        return gen

    # ------------------------------------------------------------------ reference surface
    def get_encoder(self, modality: str | None = None):  # noqa: ARG002 - transformers' signature
        return _EncoderStack(self)

    def get_input_embeddings(self):
        return self.decoder.get_input_embeddings()

    def get_output_embeddings(self):
        return self.decoder.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings):
        return self.decoder.set_output_embeddings(new_embeddings)

    def resize_token_embeddings(self, *args, **kwargs):
        raise NotImplementedError(
            "Resize the decoder's embeddings directly: model.decoder.resize_token_embeddings(...)"
        )

    def freeze_feature_encoder(self) -> bool:
        """Freeze the encoder's CNN feature encoder. Returns False (with a message) when there is none.

        Works for every wav2vec2-family encoder (HubertModel has no such method; its CNN is frozen
        directly) and is a clear no-op for log-mel encoders, whose front end is not a learned CNN.
        """
        if hasattr(self.encoder, "freeze_feature_encoder"):
            self.encoder.freeze_feature_encoder()
            return True
        cnn = getattr(self.encoder, "feature_extractor", None)
        if isinstance(cnn, nn.Module):
            for p in cnn.parameters():
                p.requires_grad = False
            if hasattr(cnn, "_requires_grad"):
                cnn._requires_grad = False
            return True
        logger.info(
            "freeze_feature_encoder: %s reads log-mel features and has no CNN feature encoder; nothing to freeze.",
            type(self.encoder).__name__,
        )
        return False

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    # ------------------------------------------------------------------ encoder side
    def _encoder_frame_mask(
        self, num_frames: int, attention_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Mask over encoder output frames from the input mask, for any encoder family."""
        if attention_mask is None:
            return None
        if hasattr(self.encoder, "_get_feature_vector_attention_mask"):
            return self.encoder._get_feature_vector_attention_mask(num_frames, attention_mask)
        if attention_mask.shape[-1] == num_frames:
            return attention_mask
        return None  # e.g. Whisper: fixed 30 s windows, no padding mask

    def encode(
        self,
        inputs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,  # noqa: ARG002 - always a ModelOutput
        **kwargs: Any,
    ) -> SpeechEncoderOutput:
        """Run the encoder and the adaptor stack once; what the decoder (and the CTC head) read."""
        if inputs is None:
            if input_values is not None and input_features is not None:
                raise ValueError("You cannot specify both input_values and input_features at the same time")
            inputs = input_values if input_values is not None else input_features
        if inputs is None:
            raise ValueError("You have to specify either input_values or input_features")
        kwargs = {
            k: v
            for k, v in kwargs.items()
            if not k.startswith("decoder_") and k not in ("labels", "use_cache")
        }
        if self.training and self.config.spec_augment and inputs.dim() == 3:
            inputs = spec_augment_features(inputs, attention_mask, **self.config.spec_augment)
        need_states = bool(self.config.layer_weighting) or bool(output_hidden_states)
        enc = self.encoder(
            inputs,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=need_states,
            return_dict=True,
            **kwargs,
        )
        raw = enc.last_hidden_state
        raw_mask = self._encoder_frame_mask(raw.shape[1], attention_mask)
        return self._adapt(enc, raw, raw_mask, keep_hidden_states=bool(output_hidden_states))

    def _adapt(
        self, enc: BaseModelOutput, raw: torch.Tensor, raw_mask: torch.Tensor | None, keep_hidden_states: bool
    ) -> SpeechEncoderOutput:
        hidden = raw
        if self.config.layer_weighting:
            states = enc.hidden_states or ()
            if len(states) != self.layer_weighting.logits.numel():
                dropping = [k for k in LAYERDROP_KEYS if getattr(self.config.encoder, k, 0.0)]
                raise ModelConfigError(
                    f"layer weighting was built for {self.layer_weighting.logits.numel()} hidden states but the "
                    f"encoder returned {len(states)}"
                    + (
                        f": encoder {', '.join(dropping)} > 0 skips layers in training; set it to 0"
                        if dropping
                        else ""
                    )
                )
            hidden = self.layer_weighting(states)
        mask = raw_mask
        if self.config.adaptor_layers:
            hidden, mask = self.length_adaptor(hidden, mask)
        if hasattr(self, "enc_to_dec_proj"):
            hidden = self.enc_to_dec_proj(hidden)
        return SpeechEncoderOutput(
            last_hidden_state=hidden,
            hidden_states=enc.hidden_states if keep_hidden_states else None,
            attentions=enc.attentions,
            attention_mask=mask,
            raw_last_hidden_state=raw,
            raw_attention_mask=raw_mask,
        )

    def add_ctc_head(self, vocab: list[str]) -> None:
        """Attach a freshly initialised CTC head (vocabulary saved in the config, so it reloads)."""
        self.config.ctc_vocab = list(vocab)
        head = CTCHead(self.encoder_output_dim, len(vocab))
        ref = next(self.parameters())
        self.ctc_head = head.to(device=ref.device, dtype=ref.dtype)

    def layer_weights(self) -> torch.Tensor | None:
        """The learnt softmax weights over encoder layers (None when layer weighting is off)."""
        return self.layer_weighting.weights().detach() if self.config.layer_weighting else None

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        inputs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.BoolTensor | None = None,
        encoder_outputs: tuple | BaseModelOutput | None = None,
        cache: Any | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        input_values: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        return_dict: bool | None = None,
        loss_reduction: str = "mean",
        ctc_labels: list[str] | None = None,
        prompt_ids: list[list[int]] | None = None,
        **kwargs: Any,
    ) -> SpeechSeq2SeqLMOutput | tuple:
        """Same arguments and numbers as the reference, plus `loss_reduction` ("mean" or "sum": the summed
        token cross-entropy, for exact normalisation across accumulation steps and processes) and
        `ctc_labels` (target texts for the CTC auxiliary loss) and, for prefix coupling, `prompt_ids` (each
        example's prompt tokens after the speech; default: the config's prompt)."""
        if "past_key_values" in kwargs:
            cache = kwargs.pop("past_key_values")
        if self.config.coupling == "prefix":
            return prefix_forward(
                self,
                inputs
                if inputs is not None
                else (input_values if input_values is not None else input_features),
                attention_mask=attention_mask,
                labels=labels,
                encoder_outputs=encoder_outputs,
                loss_reduction=loss_reduction,
                ctc_labels=ctc_labels,
                prompt_ids=prompt_ids,
            )
        if prompt_ids is not None:
            raise ValueError(
                "prompt_ids is for prefix coupling; cross-attention models take their decoder prompt as decoder_input_ids"
            )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        kwargs_encoder = {k: v for k, v in kwargs.items() if not k.startswith("decoder_")}
        kwargs_decoder = {k[len("decoder_") :]: v for k, v in kwargs.items() if k.startswith("decoder_")}
        if "num_items_in_batch" in kwargs_encoder:
            kwargs_decoder["num_items_in_batch"] = kwargs_encoder.pop("num_items_in_batch")

        if encoder_outputs is None:
            encoder_outputs = self.encode(
                inputs,
                attention_mask=attention_mask,
                input_values=input_values,
                input_features=input_features,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                **kwargs_encoder,
            )
        elif not isinstance(encoder_outputs, SpeechEncoderOutput):
            # Raw encoder outputs from a caller (as the reference accepts): run the adaptor stack on them.
            if isinstance(encoder_outputs, tuple):
                encoder_outputs = BaseModelOutput(*encoder_outputs)
            raw = encoder_outputs[0]
            encoder_outputs = self._adapt(
                encoder_outputs, raw, self._encoder_frame_mask(raw.shape[1], attention_mask), True
            )
        encoder_hidden_states = encoder_outputs.last_hidden_state
        encoder_attention_mask = encoder_outputs.attention_mask

        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = shift_tokens_right(
                labels, self.config.pad_token_id, self.config.decoder_start_token_id
            )

        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            inputs_embeds=decoder_inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            use_cache=use_cache,
            cache=cache,
            return_dict=True,
            **kwargs_decoder,
        )
        logits = decoder_outputs.logits

        loss = ce_sum = num_tokens = None
        if labels is not None:
            ce_sum, num_tokens = token_cross_entropy(logits, labels, self.decoder.config.vocab_size)
            ce = ce_sum if loss_reduction == "sum" else ce_sum / num_tokens.clamp(min=1)
            loss = ce
        loss, ctc_sum, num_ctc, ctc_logits = self.add_ctc_loss(
            loss, encoder_outputs, ctc_labels, loss_reduction
        )

        if not return_dict:
            out = (logits, decoder_outputs.cache) if decoder_outputs.cache is not None else (logits,)
            out = out + tuple(
                v for v in (decoder_outputs.hidden_states, decoder_outputs.attentions) if v is not None
            )
            enc_tuple = tuple(
                v
                for v in (encoder_hidden_states, encoder_outputs.hidden_states, encoder_outputs.attentions)
                if v is not None
            )
            return ((loss,) if loss is not None else ()) + out + enc_tuple

        return SpeechSeq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=decoder_outputs.cache,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_hidden_states,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            ce_loss_sum=ce_sum,
            num_target_tokens=num_tokens,
            ctc_loss_sum=ctc_sum,
            num_ctc_utterances=num_ctc,
            ctc_logits=ctc_logits,
        )

    def add_ctc_loss(
        self,
        loss: torch.Tensor | None,
        encoder_outputs: SpeechEncoderOutput,
        ctc_labels: list[str] | None,
        loss_reduction: str,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(1-λ)·loss + λ·CTC when CTC labels are given (both couplings share this).

        The CTC head runs only then: `generate` calls forward once per token, and decoding with the CTC head
        (joint_decoding, rescoring) applies `self.ctc_head` to `encode()`'s output once per utterance.

        Returns (loss, ctc_loss_sum, num_ctc_utterances, ctc_logits)."""
        ctc_sum = num_ctc = ctc_logits = None
        if self.config.ctc_vocab and ctc_labels is not None:
            ctc_logits = self.ctc_head(encoder_outputs.raw_last_hidden_state)
        if ctc_labels is not None and self.config.ctc_weight > 0:
            ctc_sum, num_ctc = self._ctc_loss(ctc_logits, encoder_outputs.raw_attention_mask, ctc_labels)
            if loss is not None:
                lam = self.config.ctc_weight
                ctc = ctc_sum if loss_reduction == "sum" else ctc_sum / num_ctc
                loss = (1 - lam) * loss + lam * ctc
        return loss, ctc_sum, num_ctc, ctc_logits

    def _ctc_loss(
        self, ctc_logits: torch.Tensor, frame_mask: torch.Tensor | None, texts: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, frames = ctc_logits.shape[:2]
        lengths = (
            frame_mask.sum(-1)
            if frame_mask is not None
            else torch.full((batch,), frames, device=ctc_logits.device)
        )
        targets = encode_ctc(texts, self.config.ctc_vocab, self.config.ctc_units)
        total = ctc_loss_sum(ctc_logits, lengths, targets)
        return total, torch.tensor(float(batch), device=ctc_logits.device)

    def ctc_frame_lengths(self, encoder_outputs: SpeechEncoderOutput) -> torch.Tensor:
        raw = encoder_outputs.raw_last_hidden_state
        if encoder_outputs.raw_attention_mask is not None:
            return encoder_outputs.raw_attention_mask.sum(-1)
        return torch.full((raw.shape[0],), raw.shape[1], device=raw.device)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, *args: Any, **kwargs: Any):
        """`GenerationMixin.generate` (greedy, beam search, sampling) — or, with prefix coupling, the decoder-only
        LLM's own `generate` over the speech-prefixed input embeddings (KV cache included)."""
        if self.config.coupling == "prefix":
            return prefix_generate(self, inputs, **kwargs)
        return super().generate(inputs, *args, **kwargs)


__all__ = ["SpeechEncoderDecoderModel", "shift_tokens_right", "token_cross_entropy", "AutoModel"]
