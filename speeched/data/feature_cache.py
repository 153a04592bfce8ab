"""Extracted features kept on disk, read back memory-mapped: memory does not grow with the corpus.

Log-mel extraction costs about as much as a small model's training step on a CPU, so with
`data.feature_cache: true` each utterance is extracted once, the first time an epoch asks for it, and
every later epoch, resume or rerun in the same output directory reads it back from disk.

Layout under the cache root (by default `<output_dir>/feature_cache`):
    <fingerprint>/<kk>/<key>.npy        the features of one utterance, exactly as the extractor returned them
    <fingerprint>/<kk>/<key>.len.npy    int64 [number of audio samples, number of valid feature frames]
`fingerprint` hashes the feature extractor's settings (a different extractor never reads another's
features); `key` hashes the utterance id, its audio path and the file's size and mtime (a re-encoded file
is extracted again). Files are written to a temporary name and renamed, so a crash or two DataLoader
workers never leave a half-written entry.

Per-utterance extraction then padding equals batch extraction for the extractors that normalise each
utterance over its own valid samples/frames (Speech2Text's CMVN, Whisper, wav2vec2 with an attention
mask); a wav2vec2 extractor *without* attention mask normalises over the padding too when batched, so
there the cached features are the per-utterance (unpadded) ones. Fixed-window extractors (Whisper's 30 s)
are extracted padded/truncated to their window, as the collator does without the cache.

A Whisper extractor that pads to the longest item (`speeched_padding: longest`) is the one case where an
utterance's features depend on its batch: the batch's waveforms are zero-padded *before* the log-mel, so
an item's frames after its end hold the tail of its audio (the STFT window reaches back) and then a
floor that is its own peak minus 80 dB (Whisper clamps there). The cache stores each utterance extracted
with `n_fft` zeros after it (so those tail frames are the batch's), and `pad_features` cuts them to the
batch's width and fills the rest with that floor. The result equals extracting the batch, except the
longest item's last frame (there the live extraction reflects the waveform at the batch's end, not zeros).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from speeched.data.records import Utterance


def extractor_fingerprint(feature_extractor: Any, input_name: str) -> str:
    """A short hash of the extractor's class and settings (its JSON form) and the input kind."""
    try:
        settings = feature_extractor.to_dict()
    except AttributeError:  # not a transformers extractor: its public attributes
        settings = {k: v for k, v in vars(feature_extractor).items() if not k.startswith("_")}
    text = json.dumps(
        {"class": type(feature_extractor).__name__, "input": input_name, "settings": settings},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def padding_kwargs(feature_extractor: Any) -> dict[str, Any]:
    """How an extractor pads a batch: to its fixed window, to the longest input cut at the window, or longest.

    Whisper's extractor has a fixed window (`n_samples`, 30 s) and transformers pads every input to it. One
    whose preprocessor_config.json says `speeched_padding: longest` (`speeched convert --pad longest`) pads
    only to the longest input of its batch, still cut at the window: speeched's Whisper encoder takes any
    length up to its window (`speeched.modeling.whisper_encoder`).
    """
    window = getattr(feature_extractor, "n_samples", None)
    if not window:
        return {"padding": "longest"}
    padding = "longest" if pads_longest_window(feature_extractor) else "max_length"
    return {"padding": padding, "max_length": int(window), "truncation": True}


def pads_longest_window(feature_extractor: Any) -> bool:
    """A fixed-window (Whisper) extractor told to pad to the longest item of its batch."""
    return bool(getattr(feature_extractor, "n_samples", None)) and (
        getattr(feature_extractor, "speeched_padding", "window") == "longest"
    )


def time_axis(feature_extractor: Any) -> int:
    """Where time is in one utterance's features: Whisper's are (mel bins, frames), the others' (frames, ...)."""
    return -1 if getattr(feature_extractor, "n_samples", None) else 0


def pad_features(
    feature_extractor: Any, feats: list[np.ndarray], num_samples: list[int], valid_frames: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-utterance features (as `FeatureCache` stores them) -> (batch, attention mask), padded the way the
    extractor pads a batch of waveforms: with its `padding_value`, to the longest item; a fixed-window
    extractor's items all have the window's length. A Whisper extractor padding to the longest: cut to the
    batch's frames (its longest waveform // hop, at most the window) and filled with each item's floor
    (module docstring)."""
    axis = time_axis(feature_extractor)
    if pads_longest_window(feature_extractor):
        hop = int(feature_extractor.hop_length)
        width = min(max(num_samples), int(feature_extractor.n_samples)) // hop
        # Whisper: log10 clamped at (peak - 8), then (x + 4) / 4; zeros give log10(1e-10) = -10.
        floors = [max(float(np.max(f)) - 2.0, -1.5) for f in feats]
    else:
        width = max(f.shape[axis] for f in feats)
        floors = [float(getattr(feature_extractor, "padding_value", 0.0))] * len(feats)
    shape = list(feats[0].shape)
    shape[axis] = width
    x = np.empty((len(feats), *shape), dtype=feats[0].dtype)
    mask = np.zeros((len(feats), width), dtype=np.int32)  # as the extractors return it
    for i, (f, floor, valid) in enumerate(zip(feats, floors, valid_frames, strict=True)):
        f = np.moveaxis(np.asarray(f), axis, 0)[:width]
        row = np.moveaxis(x[i], axis, 0)  # a view: writes land in x
        row[: f.shape[0]] = f
        row[f.shape[0] :] = floor
        mask[i, : min(int(valid), width)] = 1
    return x, mask


def extraction_kwargs(feature_extractor: Any, return_attention_mask: bool) -> dict[str, Any]:
    """The extractor call both the collator (a batch) and the cache (one utterance) make."""
    return {
        "sampling_rate": int(feature_extractor.sampling_rate),
        "return_attention_mask": return_attention_mask,
        **padding_kwargs(feature_extractor),
    }


class FeatureCache:
    """Per-utterance features as .npy files under `root/<fingerprint>/`, loaded with `mmap_mode="r"`."""

    def __init__(self, root: str | os.PathLike[str], feature_extractor: Any, input_name: str) -> None:
        self.fe = feature_extractor
        self.input_name = input_name
        self.dir = Path(root) / extractor_fingerprint(feature_extractor, input_name)
        names = list(getattr(feature_extractor, "model_input_names", []) or [])
        # The collator's rule (speeched.data.collator.SpeechCollator.return_attention_mask).
        with_mask = "attention_mask" in names and bool(
            getattr(feature_extractor, "return_attention_mask", True)
        )
        self.kwargs = extraction_kwargs(feature_extractor, with_mask)
        self.extracted = 0  # in this process: how many utterances were extracted rather than read back

    @staticmethod
    def key(utt: Utterance, variant: str = "") -> str:
        parts = [utt.id, utt.audio or "", variant]
        if utt.audio:
            try:
                st = os.stat(utt.audio)
                parts += [str(st.st_size), str(st.st_mtime_ns)]
            except OSError:
                pass
        return hashlib.sha1("\0".join(parts).encode()).hexdigest()

    def _paths(self, utt: Utterance, variant: str = "") -> tuple[Path, Path]:
        k = self.key(utt, variant)
        base = self.dir / k[:2] / k
        return base.with_suffix(".npy"), base.with_name(k + ".len.npy")

    def get(self, utt: Utterance, variant: str = "") -> tuple[np.ndarray, int, int] | None:
        """(features memory-mapped, audio samples, valid frames), or None when not cached yet."""
        feats, lens = self._paths(utt, variant)
        if not (feats.is_file() and lens.is_file()):
            return None
        n = np.load(lens)
        return np.load(feats, mmap_mode="r"), int(n[0]), int(n[1])

    def extract(self, array: np.ndarray) -> tuple[np.ndarray, int]:
        """Features of one waveform and the number of valid frames."""
        array = np.asarray(array, dtype=np.float32)
        if pads_longest_window(self.fe):  # its frames past the end, as a batch has them (module docstring)
            tail = np.zeros(int(self.fe.n_fft), dtype=np.float32)
            out = self.fe([np.concatenate([array, tail])], return_tensors="np", **self.kwargs)
            feats = np.asarray(out[self.input_name][0])
            return feats, min(len(array), int(self.fe.n_samples)) // int(self.fe.hop_length)
        out = self.fe([array], return_tensors="np", **self.kwargs)
        feats = np.asarray(out[self.input_name][0])
        mask = out.get("attention_mask")
        valid = int(np.asarray(mask[0]).sum()) if mask is not None else int(feats.shape[time_axis(self.fe)])
        return feats, valid

    def put(self, utt: Utterance, feats: np.ndarray, samples: int, valid: int, variant: str = "") -> None:
        path, lens = self._paths(utt, variant)
        path.parent.mkdir(parents=True, exist_ok=True)
        for target, value in ((path, feats), (lens, np.array([samples, valid], dtype=np.int64))):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
            with os.fdopen(fd, "wb") as f:
                np.save(f, value)
            os.replace(tmp, target)

    def item(self, raw: dict[str, Any], utt: Utterance | None = None, variant: str = "") -> dict[str, Any]:
        """A dataset item with audio -> the same item with `features` (extracted now, or read back). Stored
        under `utt` (the utterance asked for) only when the item is that utterance, not a replacement."""
        utt = utt or raw["utterance"]
        same = raw["utterance"].id == utt.id and "replaces" not in raw
        hit = self.get(utt, variant) if same else None
        if hit is None:
            feats, valid = self.extract(raw["array"])
            samples = len(raw["array"])
            if same:
                self.put(utt, feats, samples, valid, variant)
            self.extracted += 1
        else:
            feats, samples, valid = hit
        out = {k: v for k, v in raw.items() if k != "array"}
        out.update(features=feats, num_samples=samples, valid_frames=valid)
        return out


class CachedFeatureDataset(Dataset):
    """Wraps a `SpeechDataset`: `dataset[i]` gives `features` instead of `array`.

    A cached utterance is read back without touching its audio; an uncached one is loaded through the
    wrapped dataset (its bad-audio handling included) and extracted once.
    """

    def __init__(self, dataset: Any, cache: FeatureCache) -> None:
        self.dataset = dataset
        self.cache = cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        ds = self.dataset
        # Augmented items (speeched.data.augment) are cached per augmented version, or never (None).
        variant = ds.cache_variant(key) if hasattr(ds, "cache_variant") else ""
        if variant is None:
            return ds[key]  # augmented afresh every epoch: the collator extracts it
        utt = ds.item_utterance(key) if hasattr(ds, "item_utterance") else ds.utterances[key]
        hit = self.cache.get(utt, variant)
        if hit is None:
            return self.cache.item(ds[key], utt, variant)
        feats, samples, valid = hit
        return {
            "id": utt.id,
            "utterance": utt,
            "sampling_rate": ds.sampling_rate,
            "features": feats,
            "num_samples": samples,
            "valid_frames": valid,
        }
