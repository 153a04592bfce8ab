"""Decoding with ONNX Runtime: the runner behind `speeched transcribe --backend onnx`.

Reads a directory written by `speeched export --to onnx`:

    encoder.onnx            audio (+ mask) -> encoder_hidden_states, encoder_attention_mask (adaptors included)
    decoder_init.onnx       start (+ prompt) tokens -> logits, self-attention cache, cross-attention keys/values
    decoder_with_past.onnx  one token + caches -> logits, grown self-attention cache
    speeched_onnx.json      token ids, input name, layer count, quantisation (ONNX_META below)
    tokenizer + preprocessor_config.json

Greedy search only (the cross-attention keys/values are computed once per utterance and the self-attention
cache grows per token, as in transformers' generate). Beam search and joint CTC/attention decoding stay
in the torch backend: the graphs have no CTC head output.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoFeatureExtractor, AutoTokenizer

from speeched.errors import UsageError
from speeched.inference.options import Decoded
from speeched.modeling.fbank import vectorised

ENCODER = "encoder.onnx"
DECODER_INIT = "decoder_init.onnx"
DECODER_WITH_PAST = "decoder_with_past.onnx"
ONNX_META = "speeched_onnx.json"
FORMAT_VERSION = 1


class OnnxModelError(UsageError, ValueError):
    """The directory is not a usable ONNX export; the message says what is missing."""


def cache_names(num_layers: int, prefix: str) -> list[str]:
    """`{prefix}.{i}.{self|cross}.{key|value}` for every layer: self-attention first, then cross-attention."""
    names = []
    for i in range(num_layers):
        names += [f"{prefix}.{i}.self.key", f"{prefix}.{i}.self.value"]
    for i in range(num_layers):
        names += [f"{prefix}.{i}.cross.key", f"{prefix}.{i}.cross.value"]
    return names


class OnnxSpeechModel:
    """Encoder + decoder graphs on onnxruntime, with the tokenizer and feature extractor beside them."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort  # optional dependency: pip install 'speeched[onnx]'

        root = Path(path)
        missing = [
            n for n in (ENCODER, DECODER_INIT, DECODER_WITH_PAST, ONNX_META) if not (root / n).is_file()
        ]
        if missing:
            raise OnnxModelError(
                f"{root} is not an ONNX export (missing {', '.join(missing)}): make one with "
                "`speeched export MODEL --to onnx OUT`"
            )
        self.path = root
        self.meta = json.loads((root / ONNX_META).read_text())
        if self.meta.get("format") != FORMAT_VERSION:
            raise OnnxModelError(
                f"{root}/{ONNX_META} has format {self.meta.get('format')}; re-export the model"
            )
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]

        def session(name: str) -> Any:
            return ort.InferenceSession(str(root / name), sess_options=opts, providers=providers)

        self.encoder = session(ENCODER)
        self.decoder_init = session(DECODER_INIT)
        self.decoder_with_past = session(DECODER_WITH_PAST)
        self._past_inputs = {i.name for i in self.decoder_with_past.get_inputs()}
        self._init_inputs = {i.name for i in self.decoder_init.get_inputs()}
        self.tokenizer = AutoTokenizer.from_pretrained(str(root))
        self.feature_extractor = vectorised(AutoFeatureExtractor.from_pretrained(str(root)))
        self.num_layers = int(self.meta["num_layers"])
        eos = self.meta["eos_token_id"]
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])

    # ---------------------------------------------------------------- graphs
    def features(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """What the encoder graph takes: padded features (and the mask when the model was exported with one)."""
        fe = self.feature_extractor
        enc = fe(
            [np.asarray(a, dtype=np.float32) for a in arrays],
            sampling_rate=fe.sampling_rate,
            return_tensors="np",
            padding=True,
        )
        feed = {"inputs": np.asarray(enc[self.meta["input_name"]], dtype=np.float32)}
        if self.meta["with_mask"]:
            mask = enc.get("attention_mask")
            if mask is None:
                mask = np.ones(feed["inputs"].shape[:2], dtype=np.int64)
            feed["attention_mask"] = np.asarray(mask, dtype=np.int64)
        return feed

    def encode(self, arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        hidden, mask = self.encoder.run(None, self.features(arrays))
        return hidden, mask

    def _init(self, ids: np.ndarray, hidden: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        feed = {"input_ids": ids, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        return self.decoder_init.run(None, {k: v for k, v in feed.items() if k in self._init_inputs})

    def logits(self, arrays: Sequence[np.ndarray], decoder_input_ids: np.ndarray) -> np.ndarray:
        """Teacher-forced logits (batch, tokens, vocab) for given decoder inputs: for parity checks."""
        hidden, mask = self.encode(arrays)
        return self._init(np.asarray(decoder_input_ids, dtype=np.int64), hidden, mask)[0]

    def head(self, prefix: Sequence[int] | None = None) -> list[int]:
        """Start token + forced prompt tokens (the model's default prompt unless `prefix` is given)."""
        prompt = (self.meta.get("prefix_ids") or []) if prefix is None else list(prefix)
        return [int(self.meta["decoder_start_token_id"]), *[int(t) for t in prompt]]

    def token_cap(self, seconds: float, tokens_per_second: float = 15.0) -> int:
        cap = math.ceil(tokens_per_second * seconds) + 10
        limit = self.meta.get("max_positions")
        return max(1, min(cap, int(limit) - 2)) if limit else cap

    def generate(
        self, arrays: Sequence[np.ndarray], max_new_tokens: int, prefix: Sequence[int] | None = None
    ) -> list[list[int]]:
        """Greedy search with the KV cache; each row is head + generated ids, cut after its first EOS."""
        hidden, mask = self.encode(arrays)
        batch = hidden.shape[0]
        head = self.head(prefix)
        ids = np.asarray([head] * batch, dtype=np.int64)
        out = self._init(ids, hidden, mask)
        n = self.num_layers
        cross = out[1 + 2 * n : 1 + 4 * n]
        self_cache = out[1 : 1 + 2 * n]
        rows = [list(head) for _ in range(batch)]
        done = np.zeros(batch, dtype=bool)
        pad = self.meta.get("pad_token_id")
        pad = int(pad) if pad is not None else next(iter(self.eos_ids))
        past_names = cache_names(n, "past")
        for step in range(max_new_tokens):
            nxt = out[0][:, -1].argmax(-1).astype(np.int64)
            nxt = np.where(done, pad, nxt)
            for b in range(batch):
                if not done[b]:
                    rows[b].append(int(nxt[b]))
                    done[b] = int(nxt[b]) in self.eos_ids
            if done.all() or step == max_new_tokens - 1:
                break
            feed = {
                "input_ids": nxt[:, None],
                "encoder_hidden_states": hidden,
                "encoder_attention_mask": mask,
                **dict(zip(past_names, [*self_cache, *cross], strict=True)),
            }
            out = self.decoder_with_past.run(None, {k: v for k, v in feed.items() if k in self._past_inputs})
            self_cache = out[1 : 1 + 2 * n]
        return rows

    def generate_batch(
        self,
        arrays: Sequence[np.ndarray],
        max_new_tokens: int | None = None,
        prefix: Sequence[int] | None = None,
        tokens_per_second: float = 15.0,
    ) -> list[Decoded]:
        """Decode one batch of waveforms at the extractor's rate (what `transcribe --backend onnx` calls per
        batch); `Decoded` as the torch backend returns it (token_ids: head + generated ids up to EOS)."""
        sr = self.feature_extractor.sampling_rate
        cap = max_new_tokens or self.token_cap(max(len(a) for a in arrays) / sr, tokens_per_second)
        head = self.head(prefix)
        results = []
        for row in self.generate(arrays, cap, prefix):
            body = row[len(head) :]
            end = next((i for i, t in enumerate(body) if t in self.eos_ids), None)
            n = len(body) if end is None else end
            text = self.tokenizer.decode(body[:n], skip_special_tokens=True).strip()
            results.append(
                Decoded(
                    text, num_tokens=n, hit_token_cap=end is None and n >= cap, token_ids=row, token_cap=cap
                )
            )
        return results

    def transcribe(self, arrays: Sequence[np.ndarray], **kwargs: Any) -> list[str]:
        return [d.text for d in self.generate_batch(arrays, **kwargs)]


def load_onnx_model(path: str | os.PathLike, threads: int | None = None) -> OnnxSpeechModel:
    """An `OnnxSpeechModel`, or an OnnxModelError naming what the directory lacks (onnxruntime missing too)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise OnnxModelError("the ONNX backend needs onnxruntime: pip install 'speeched[onnx]'") from err
    return OnnxSpeechModel(path, threads=threads)
