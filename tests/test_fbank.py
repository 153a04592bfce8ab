"""speeched.modeling.fbank: the one-pass Kaldi fbank is transformers' Speech2Text fbank, bit for bit."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from transformers import AutoFeatureExtractor, Speech2TextFeatureExtractor, Wav2Vec2FeatureExtractor

from speeched.modeling.fbank import VectorisedSpeech2TextFeatureExtractor, kaldi_fbank, vectorised
from speeched.modeling.model_dir import load_feature_extractor


def _signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("n", [400, 401, 559, 560, 16000, 84_321])
def test_kaldi_fbank_equals_the_extractors_per_frame_loop(n: int) -> None:
    fe = Speech2TextFeatureExtractor()
    x = _signal(n)
    ours = kaldi_fbank(x, fe.window, fe.mel_filters)
    theirs = fe._extract_fbank_features(x)
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)


def test_the_vectorised_extractor_gives_the_same_batches_and_saves_as_the_stock_class(tmp_path) -> None:
    stock = Speech2TextFeatureExtractor(num_mel_bins=80)
    fast = vectorised(stock)
    assert type(fast) is VectorisedSpeech2TextFeatureExtractor
    batch = [_signal(16000, 1), _signal(9_000, 2), _signal(300, 3)]  # the last: shorter than one frame
    kw = {"sampling_rate": 16000, "return_tensors": "np", "padding": True, "return_attention_mask": True}
    a, b = stock(batch, **kw), fast(batch, **kw)
    assert np.array_equal(a["input_features"], b["input_features"])
    assert np.array_equal(a["attention_mask"], b["attention_mask"])
    fast.save_pretrained(tmp_path)
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is Speech2TextFeatureExtractor
    assert type(load_feature_extractor(str(tmp_path))) is VectorisedSpeech2TextFeatureExtractor
    assert (
        type(pickle.loads(pickle.dumps(fast))) is VectorisedSpeech2TextFeatureExtractor
    )  # DataLoader workers


def test_other_extractors_are_left_as_they_are() -> None:
    w2v = Wav2Vec2FeatureExtractor()
    assert vectorised(w2v) is w2v


def test_the_mel_product_runs_on_one_blas_thread_and_leaves_the_limit_as_it_was(monkeypatch) -> None:
    """numpy's OpenBLAS spins its threads ~0.1 s after a multithreaded call, on torch's cores: one thread."""
    import speeched.modeling.fbank as fbank

    blas = fbank.NUMPY_BLAS
    libs = [lib for lib in blas.info() if "numpy" in lib["filepath"]]
    assert [lib["internal_api"] for lib in libs] == ["openblas"]  # numpy's, found at import
    seen: list[int] = []
    dot = np.dot

    def threads() -> int:
        return next(lib["num_threads"] for lib in blas.info() if "numpy" in lib["filepath"])

    def recording_dot(a, b):  # noqa: ANN001, ANN202
        seen.append(threads())
        return dot(a, b)

    before = threads()
    with blas.limit(limits=2):  # as on this 2-core machine by default, whatever the test runner set
        monkeypatch.setattr(fbank.np, "dot", recording_dot)
        fe = Speech2TextFeatureExtractor()
        out = kaldi_fbank(_signal(16000), fe.window, fe.mel_filters)
        monkeypatch.undo()
        assert seen == [1]
        assert threads() == 2  # restored after the product
    assert threads() == before
    assert np.array_equal(out, fe._extract_fbank_features(_signal(16000)))
