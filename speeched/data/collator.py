"""Turn a list of dataset items into model inputs + labels, for any Hugging Face speech feature extractor.

The input kind is read from the extractor itself (`model_input_names[0]`): `input_values` for raw-waveform
encoders (wav2vec2, HuBERT, ...) and `input_features` for log-mel encoders (Speech2Text, Whisper, ...).
Extractors with a fixed window (`n_samples`, e.g. Whisper's 30 s) are padded to it because their
encoders require it, unless the extractor says `speeched_padding: longest` (then to the longest item, cut
at the window: `feature_cache.padding_kwargs`); everything else is padded to the longest item in the
batch. Items may instead carry features from `speeched.data.feature_cache` (extracted the same way, one
utterance at a time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from speeched.data.feature_cache import extraction_kwargs, pad_features, time_axis
from speeched.data.records import Utterance

IGNORE_INDEX = -100


class SpeechCollator:
    """Batch {"array", "utterance", ...} items into `input_values|input_features`, masks and labels.

    labels = tokenizer(target, add_special_tokens=False) + [eos_token_id], padded with -100 (never with
    pad/eos: where pad == eos, padding with it would hide the real final EOS).
    Also returns `ids`, `audio_seconds` (float, unpadded total) and `num_target_tokens` (non-ignored labels)
    for logging and per-token loss normalisation.

    `decoder_prompt(utt)` (speeched.modeling.prompting.DecoderPrompt.for_utterance) gives the forced
    task/language tokens (the "decoder prompt"; "prefix" only ever means prefix coupling). They condition
    the decoder and are never predicted: with `prefix_coupling` they go to `prompt_ids` (the LLM prompt
    after the speech); otherwise the batch gets explicit `decoder_input_ids = [start] + prompt + target`
    and the prompt positions of `labels` are -100.
    """

    def __init__(
        self,
        feature_extractor: Any,
        tokenizer: Any,
        task: str = "asr",
        eos_token_id: int | None = None,
        decoder_prompt: Callable[[Utterance], list[int]] | None = None,
        normalize_target: Callable[[str], str] | None = None,
        max_target_tokens: int | None = None,
        decoder_start_token_id: int | None = None,
        pad_token_id: int | None = None,
        prefix_coupling: bool = False,
    ) -> None:
        if task not in ("asr", "st"):
            raise ValueError(f"task must be 'asr' or 'st', got {task!r}")
        self.fe = feature_extractor
        self.tokenizer = tokenizer
        self.task = task
        if eos_token_id is None:
            eos_token_id = (
                tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
            )
        if eos_token_id is None:
            raise ValueError(
                f"{type(tokenizer).__name__} has neither eos_token_id nor sep_token_id; pass eos_token_id="
            )
        self.eos_token_id = int(eos_token_id)
        self.decoder_prompt = decoder_prompt
        self.decoder_start_token_id = decoder_start_token_id
        self.pad_token_id = pad_token_id if pad_token_id is not None else self.eos_token_id
        self.prefix_coupling = prefix_coupling
        if decoder_prompt is not None and not prefix_coupling and decoder_start_token_id is None:
            raise ValueError("a decoder_prompt needs decoder_start_token_id (to build decoder_input_ids)")
        self.normalize_target = normalize_target
        self.max_target_tokens = max_target_tokens
        names = list(getattr(feature_extractor, "model_input_names", []) or [])
        if not names or names[0] not in ("input_values", "input_features"):
            raise ValueError(
                f"{type(feature_extractor).__name__}.model_input_names = {names}: expected 'input_values' "
                "(waveform encoder) or 'input_features' (log-mel encoder) first"
            )
        self.input_name = names[0]
        self.sampling_rate = int(feature_extractor.sampling_rate)
        # Attention mask only where the extractor/model expects one (wav2vec2 "base" models with
        # group-norm are trained without it and get worse with one).
        self.return_attention_mask = "attention_mask" in names and bool(
            getattr(feature_extractor, "return_attention_mask", True)
        )

    def targets(self, utts: list[Utterance]) -> list[str]:
        out = []
        for u in utts:
            t = u.target(self.task)
            if t is None:
                raise ValueError(
                    f"{u.origin or u.id}: no {'translation' if self.task == 'st' else 'text'} for task {self.task!r}; "
                    "set columns.translation in the recipe or filter the utterance out"
                )
            out.append(self.normalize_target(t) if self.normalize_target else t)
        return out

    def label_inputs(self, utts: list[Utterance]) -> dict[str, Any]:
        """labels, num_target_tokens and, when examples have a decoder prompt, decoder_input_ids or prompt_ids."""
        texts = self.targets(utts)
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        prompts = [list(self.decoder_prompt(u)) if self.decoder_prompt else [] for u in utts]
        inline = any(prompts) and not self.prefix_coupling  # prompt tokens are decoder inputs
        seqs, masked = [], []
        for prompt, t in zip(prompts, ids, strict=True):
            body = list(t)
            used = len(prompt) if inline else 0
            if self.max_target_tokens is not None:
                body = body[: max(0, self.max_target_tokens - used - 1)]
            seqs.append((prompt if inline else []) + body + [self.eos_token_id])
            masked.append(used)
        width = max(len(s) for s in seqs)
        labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
        for i, (s, m) in enumerate(zip(seqs, masked, strict=True)):
            labels[i, m : len(s)] = torch.tensor(s[m:], dtype=torch.long)
        out: dict[str, Any] = {"labels": labels, "num_target_tokens": int((labels != IGNORE_INDEX).sum())}
        if inline:
            dec = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
            for i, s in enumerate(seqs):
                dec[i, : len(s)] = torch.tensor([self.decoder_start_token_id, *s[:-1]], dtype=torch.long)
            out["decoder_input_ids"] = dec
        elif any(prompts):
            out["prompt_ids"] = prompts
        return out

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Items carry `array` (a waveform, extracted here) or `features` (from a FeatureCache)."""
        if not items:
            raise ValueError("SpeechCollator got an empty batch")
        if "features" in items[0]:
            batch, seconds = self._pad_features(items)
        else:
            batch, seconds = self._extract(items)
        utts = [it["utterance"] for it in items]
        batch.update(self.label_inputs(utts))
        batch["targets"] = self.targets(utts)
        # The CTC auxiliary loss reads transcripts (for st too: CTC needs a monotonic target, a translation is not)
        batch["transcripts"] = [
            self.normalize_target(u.text) if self.normalize_target else u.text for u in utts
        ]
        batch["ids"] = [it["id"] for it in items]
        batch["audio_seconds"] = seconds
        return batch

    def _extract(self, items: list[dict[str, Any]]) -> tuple[dict[str, Any], float]:
        arrays = []
        for it in items:
            sr = it.get("sampling_rate", self.sampling_rate)
            if sr != self.sampling_rate:
                raise ValueError(
                    f"{it.get('id')}: audio at {sr} Hz but the feature extractor expects {self.sampling_rate} Hz; "
                    "build SpeechDataset with sampling_rate=feature_extractor.sampling_rate"
                )
            arrays.append(np.asarray(it["array"], dtype=np.float32))
        kwargs = extraction_kwargs(self.fe, self.return_attention_mask)
        feats = self.fe(arrays, return_tensors="pt", **kwargs)
        batch: dict[str, Any] = {self.input_name: feats[self.input_name]}
        if self.return_attention_mask and "attention_mask" in feats:
            batch["attention_mask"] = feats["attention_mask"]
        return batch, float(sum(len(a) for a in arrays) / self.sampling_rate)

    def _pad_features(self, items: list[dict[str, Any]]) -> tuple[dict[str, Any], float]:
        """Pad per-utterance cached features the way the extractor pads a batch (`feature_cache.pad_features`)."""
        x, mask = pad_features(
            self.fe,
            [np.asarray(it["features"]) for it in items],
            [int(it["num_samples"]) for it in items],
            [
                int(it.get("valid_frames", np.asarray(it["features"]).shape[time_axis(self.fe)]))
                for it in items
            ],
        )
        batch: dict[str, Any] = {self.input_name: torch.from_numpy(x)}
        if self.return_attention_mask:
            batch["attention_mask"] = torch.from_numpy(mask)
        seconds = float(sum(int(it["num_samples"]) for it in items) / self.sampling_rate)
        return batch, seconds
