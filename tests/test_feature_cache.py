"""The on-disk feature cache: features equal a fresh extraction, a second pass extracts nothing, they come back
memory-mapped, and the one collator gives the same batch with and without the cache (fixed window too)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import minilm_path, tone_corpus
from transformers import (
    AutoTokenizer,
    Speech2TextFeatureExtractor,
    Wav2Vec2FeatureExtractor,
    WhisperFeatureExtractor,
)

from speeched.data.collator import SpeechCollator
from speeched.data.dataset import SpeechDataset
from speeched.data.feature_cache import CachedFeatureDataset, FeatureCache, time_axis
from speeched.data.scan import scan
from speeched.data.sources import load_source


@pytest.fixture(scope="module")
def utterances(tmp_path_factory):
    root = tone_corpus(tmp_path_factory.mktemp("c"), num=6, dev=0)
    return list(scan(load_source(str(root / "train.jsonl")), cache=False).kept)


def _whisper_longest() -> WhisperFeatureExtractor:
    """As `speeched convert --window-seconds 10 --pad longest` writes it."""
    fe = WhisperFeatureExtractor(chunk_length=10)
    fe.speeched_padding = "longest"
    return fe


EXTRACTORS = {
    "speech2text": lambda: Speech2TextFeatureExtractor(),
    "wav2vec2-mask": lambda: Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True),
    "whisper-window": lambda: WhisperFeatureExtractor(),
    "whisper-longest": _whisper_longest,
}


def _collator(fe) -> SpeechCollator:
    return SpeechCollator(fe, AutoTokenizer.from_pretrained(minilm_path()))


@pytest.mark.parametrize("kind", list(EXTRACTORS))
def test_cache_round_trip_reuse_and_collator_equivalence(tmp_path, utterances, kind):
    fe = EXTRACTORS[kind]()
    collator = _collator(fe)
    raw = SpeechDataset(utterances, int(fe.sampling_rate))
    cache = FeatureCache(tmp_path / "cache", fe, collator.input_name)
    cached = CachedFeatureDataset(raw, cache)
    items = [cached[i] for i in range(len(cached))]
    assert cache.extracted == len(utterances)
    axis = time_axis(fe)
    for it, r in zip(items, (raw[i] for i in range(len(raw))), strict=True):
        fresh = collator._extract([r])[0][collator.input_name][0].numpy()
        n = it["features"].shape[axis]
        if kind == "whisper-longest":  # cached with the frames a batch has past its end; its own last frame
            # is the one an utterance alone reflects at its end (module docstring of feature_cache)
            assert n > fresh.shape[axis] and it["valid_frames"] == fresh.shape[axis]
            n = fresh.shape[axis] - 1
        np.testing.assert_allclose(
            np.take(it["features"], range(n), axis), np.take(fresh, range(n), axis), rtol=0, atol=1e-6
        )
    # A new process (new cache object) reads everything back, memory-mapped, and extracts nothing.
    again = FeatureCache(tmp_path / "cache", fe, collator.input_name)
    back = [CachedFeatureDataset(raw, again)[i] for i in range(len(raw))]
    assert again.extracted == 0 and all(isinstance(b["features"], np.memmap) for b in back)
    # The same batch with and without the cache.
    idx = [0, 3, 5]
    with_cache = collator([back[i] for i in idx])
    without = collator([raw[i] for i in idx])
    if kind == "whisper-longest":  # padded to the batch's longest, below the window, with real padding
        lengths = [len(raw[i]["array"]) for i in idx]
        assert len(set(lengths)) > 1
        width = max(lengths) // fe.hop_length
        assert with_cache["input_features"].shape[-1] == width < fe.nb_max_frames
        # All but the longest item's last frame (there the batch reflects its end): ignore that one frame.
        j = int(np.argmax(lengths))
        with_cache["input_features"][j, :, width - 1] = without["input_features"][j, :, width - 1]
    assert with_cache.keys() == without.keys()
    for key, value in without.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(with_cache[key], value, rtol=0, atol=1e-5, msg=key)
        else:
            assert (
                with_cache[key] == pytest.approx(value)
                if key == "audio_seconds"
                else with_cache[key] == value
            )
    if kind == "whisper-window":  # padded to the extractor's 30 s window, as without the cache
        assert with_cache["input_features"].shape[-1] == 3000


def test_another_extractor_never_reads_these_features(tmp_path, utterances):
    fe = Speech2TextFeatureExtractor()
    FeatureCache(tmp_path, fe, "input_features").item(SpeechDataset(utterances, 16000)[0])
    other = FeatureCache(tmp_path, Speech2TextFeatureExtractor(num_mel_bins=40), "input_features")
    assert other.get(utterances[0]) is None and other.dir != FeatureCache(tmp_path, fe, "input_features").dir


def test_a_changed_audio_file_is_extracted_again(tmp_path, utterances):
    import shutil

    import soundfile as sf

    u = utterances[1]
    copy = tmp_path / "copy.wav"
    shutil.copy(u.audio, copy)
    moved = dataclasses.replace(u, audio=str(copy))
    cache = FeatureCache(tmp_path / "c", Speech2TextFeatureExtractor(), "input_features")
    cache.item(SpeechDataset([moved], 16000)[0])
    assert cache.get(moved) is not None
    x, sr = sf.read(copy)
    sf.write(copy, np.concatenate([x, x]), sr)
    assert cache.get(moved) is None  # size/mtime changed: the old features are not reused
    assert Path(cache.dir).is_dir()
