"""Augmentation in the training data pipeline: SpeechDataset + DurationBucketSampler with `augment`.

Deterministic per (seed, epoch, key) in DataLoader workers, exact on resume, concatenation within the
batch budget, dev/eval never augmented, feature-cache keys.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from speeched.data.augment import AugmentConfig, SampleKey, concat_groups
from speeched.data.dataset import SpeechDataset
from speeched.data.records import Utterance
from speeched.data.sampler import DurationBucketSampler

SR = 16_000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Utterance]:
    root = tmp_path_factory.mktemp("aug")
    rng = np.random.default_rng(0)
    utts = []
    for i in range(24):
        d = float(rng.uniform(0.3, 1.2))
        t = np.arange(int(d * SR)) / SR
        x = (0.3 * np.sin(2 * np.pi * (200 + 20 * i) * t)).astype(np.float32)
        path = root / f"u{i}.wav"
        sf.write(path, x, SR)
        utts.append(
            Utterance(f"u{i}", str(path), f"word{i}", translation=f"mot{i}", duration=len(x) / SR, lang="en")
        )
    return utts


def noisy(**concat) -> AugmentConfig:
    return AugmentConfig.model_validate(
        {"speed": {"p": 0.5}, "noise": {"p": 0.8}, "gain": {"p": 0.5}, "concat": concat or {"p": 0.0}}
    )


def make(corpus, aug, seed=7, **kw):
    ds = SpeechDataset(corpus, SR, augment=aug, seed=seed)
    sampler = DurationBucketSampler(
        ds.durations,
        max_duration=kw.pop("max_duration", 3.0),
        seed=seed,
        world_size=1,
        rank=0,
        augment=aug,
        **kw,
    )
    return ds, sampler


def collect(ds, sampler, epoch, num_workers, take=None):
    sampler.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=list, num_workers=num_workers)
    out = []
    for b, batch in enumerate(loader):
        if take is not None and b >= take:
            break
        out.append([(it["utterance"].id, it["utterance"].text, it["array"]) for it in batch])
    return out


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y)
        and all(i == j and t == u and np.array_equal(p, q) for (i, t, p), (j, u, q) in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True)
    )


def test_identical_across_num_workers_and_fresh_per_epoch(corpus):
    aug = noisy(p=0.4)
    ds, sampler = make(corpus, aug)
    e1_w0 = collect(ds, sampler, 1, 0)
    e1_w2 = collect(ds, sampler, 1, 2)
    assert same(e1_w0, e1_w2)
    # and it really is augmented: not the stored audio
    raw = SpeechDataset(corpus, SR)
    first = next(b for b in e1_w0 for _ in b)[0]
    stored = raw[int(first[0].split("u")[1].split("+")[0])]["array"]
    assert not (len(first[2]) == len(stored) and np.array_equal(first[2], stored))
    # another epoch: another augmentation of the same utterance
    key = SampleKey(3, 1)
    assert not np.array_equal(ds[key]["array"], ds[SampleKey(3, 2)]["array"])
    np.testing.assert_array_equal(ds[key]["array"], ds[SampleKey(3, 1)]["array"])
    # same utterance, same epoch, another seed: different
    other = SpeechDataset(corpus, SR, augment=aug, seed=8)
    assert not np.array_equal(ds[key]["array"], other[key]["array"])


def test_resume_mid_epoch_gives_identical_batches(corpus):
    aug = noisy(p=0.5)
    ds, sampler = make(corpus, aug)
    full = collect(ds, sampler, 2, 2)
    assert len(full) >= 4
    ds2, resumed = make(corpus, aug)
    resumed.set_epoch(2)
    state = dict(resumed.state_dict(batches_consumed=3))
    ds3, fresh = make(corpus, aug)
    fresh.load_state_dict(state)
    rest = collect(ds3, fresh, 2, 2)
    assert same(full[3:], rest)


def test_resume_refuses_another_augment(corpus):
    _, s = make(corpus, noisy(p=0.5))
    _, other = make(corpus, noisy(p=0.2))
    with pytest.raises(ValueError, match="data.augment"):
        other.load_state_dict(s.state_dict())


def test_concatenation_joins_texts_and_keeps_the_batch_budget(corpus):
    aug = noisy(p=0.6, pause=[0.2, 0.5], max_duration=2.5)
    ds, sampler = make(corpus, aug, max_duration=3.0)
    seen, joined = [], 0
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        for batch in batches:
            items = [ds[k] for k in batch]
            # max speed factor slowdown is 1/0.9: the documented bound on what speed perturbation adds
            assert sum(len(it["array"]) for it in items) / SR <= 3.0 / 0.9 + 1e-6
            for k, it in zip(batch, items, strict=True):
                utts = [k.index, *k.partners]
                seen += utts if epoch == 0 else []
                if k.partners:
                    joined += 1
                    assert it["utterance"].text == " ".join(f"word{j}" for j in utts)
                    assert it["utterance"].translation == " ".join(f"mot{j}" for j in utts)
                    assert it["concat_ids"] == [f"u{j}" for j in utts]
                    budget = sum(corpus[j].duration for j in utts) + 0.5 * len(k.partners)
                    assert budget <= 2.5 + 1e-9
                    # silence between the parts: at least the shortest pause per gap, at most the longest
                    assert it["array"].size <= budget / 0.9 * SR + 1
    assert joined >= 3
    assert sorted(seen) == list(range(len(corpus)))  # every utterance exactly once per epoch


def test_concatenation_without_other_stages_is_exact(corpus):
    aug = AugmentConfig.model_validate({"concat": {"p": 1.0, "max_items": 2, "pause": [0.3, 0.3]}})
    ds, sampler = make(corpus, aug, max_duration=10.0)
    k = next(k for b in sampler for k in b if k.partners)
    a, b = corpus[k.index], corpus[k.partners[0]]
    xa, xb = sf.read(a.audio, dtype="float32")[0], sf.read(b.audio, dtype="float32")[0]
    want = np.concatenate([xa, np.zeros(int(0.3 * SR), np.float32), xb])
    np.testing.assert_array_equal(ds[k]["array"], want)
    assert ds[k]["utterance"].text == f"{a.text} {b.text}"
    assert ds.item_utterance(k).text == ds[k]["utterance"].text


def test_concat_groups_stay_within_source_and_limit():
    rng = np.random.default_rng(1)
    d = rng.uniform(0.5, 3.0, size=300)
    src = rng.integers(0, 3, size=300)
    cfg = AugmentConfig.model_validate(
        {"concat": {"p": 0.7, "max_items": 3, "pause": [0.1, 0.4], "max_duration": 6}}
    )
    units = concat_groups(d, src, cfg.concat, np.random.default_rng(5), cap=5.0)
    flat = sorted(i for u in units for i in u)
    assert flat == list(range(300))
    assert any(len(u) == 3 for u in units) and any(len(u) == 2 for u in units)
    for u in units:
        assert len({int(src[i]) for i in u}) == 1
        if len(u) > 1:
            assert d[u].sum() + 0.4 * (len(u) - 1) <= 5.0 + 1e-9
    again = concat_groups(d, src, cfg.concat, np.random.default_rng(5), cap=5.0)
    assert again == units


def test_augment_off_gives_the_plain_sampler_and_dataset(corpus):
    ds_plain = SpeechDataset(corpus, SR)
    plain = DurationBucketSampler(ds_plain.durations, max_duration=3.0, seed=7, world_size=1, rank=0)
    off = AugmentConfig()  # everything p=0 is no augmentation: plain indices, the same batches and state
    _, same_sampler = make(corpus, off)
    for e in (0, 1):
        plain.set_epoch(e)
        same_sampler.set_epoch(e)
        assert list(same_sampler) == list(plain)
    assert same_sampler.state_dict() == plain.state_dict()  # older checkpoints still resume
    keyed = DurationBucketSampler(
        ds_plain.durations, max_duration=3.0, seed=7, world_size=1, rank=0, augment=noisy()
    )
    plain.set_epoch(0)
    assert [[k.index for k in b] for b in keyed] == list(plain)  # no concatenation: the same batches
    k = SampleKey(5, 3)
    np.testing.assert_array_equal(SpeechDataset(corpus, SR, augment=off)[k]["array"], ds_plain[5]["array"])


def test_dev_and_eval_data_is_never_augmented(corpus):
    # A dataset built without augment (how dev/eval data is read) gives the stored audio even when it
    # is handed the keys of an augmenting training sampler.
    aug = noisy(p=0.5)
    _, sampler = make(corpus, aug)
    dev = SpeechDataset(corpus, SR)
    plain_keys = [k for b in sampler for k in b if not k.partners]
    for k in plain_keys[:5]:
        np.testing.assert_array_equal(dev[k]["array"], dev[k.index]["array"])
    # ... and an augmenting dataset refuses a bare index instead of guessing the epoch.
    with pytest.raises(TypeError, match="SampleKeys"):
        SpeechDataset(corpus, SR, augment=aug)[0]


def test_weighted_copies_get_different_augmentations(corpus):
    aug = noisy()
    ds = SpeechDataset(corpus, SR, augment=aug, seed=7)
    sampler = DurationBucketSampler(
        ds.durations,
        max_duration=3.0,
        seed=7,
        world_size=1,
        rank=0,
        augment=aug,
        source_ids=[0] * len(corpus),
        source_weights=[2.0],
    )
    keys = [k for b in sampler for k in b]
    assert sorted((k.index, k.copy) for k in keys) == sorted(
        (i, c) for i in range(len(corpus)) for c in (0, 1)
    )
    k0 = next(k for k in keys if k.copy == 0)
    k1 = SampleKey(k0.index, k0.epoch, (), 1)
    assert not np.array_equal(ds[k0]["array"], ds[k1]["array"])


def test_cache_variant(corpus):
    assert SpeechDataset(corpus, SR).cache_variant(SampleKey(1, 4)) == ""
    assert SpeechDataset(corpus, SR, augment=noisy()).cache_variant(SampleKey(1, 4)) is None
    aug = noisy().model_copy(update={"copies": 3})
    ds = SpeechDataset(corpus, SR, augment=aug)
    assert ds.cache_variant(SampleKey(1, 4)) == ds.cache_variant(SampleKey(1, 7))
    assert ds.cache_variant(SampleKey(1, 4)) != ds.cache_variant(SampleKey(1, 5))
    assert ds.cache_variant(SampleKey(1, 4, (2,))) != ds.cache_variant(SampleKey(1, 4))
    # epochs e and e + copies: the same augmented audio, so a cache keyed by the variant is exact
    np.testing.assert_array_equal(ds[SampleKey(1, 4)]["array"], ds[SampleKey(1, 7)]["array"])


def test_feature_cache_keeps_copies_versions_and_skips_fresh_augmentation(corpus, tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    from speeched.data.feature_cache import CachedFeatureDataset, FeatureCache

    fe = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SR, do_normalize=True, return_attention_mask=True
    )
    aug = noisy(p=0.5).model_copy(update={"copies": 2})
    ds, sampler = make(corpus, aug)
    cache = FeatureCache(tmp_path / "fc", fe, "input_values")
    cached = CachedFeatureDataset(ds, cache)
    per_epoch = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        keys = [k for b in sampler for k in b]
        before = cache.extracted
        items = {k: cached[k] for k in keys}
        per_epoch.append(cache.extracted - before)
        for k in keys[:4]:  # what the cache gives is the features of exactly this epoch's augmented audio
            want, _ = cache.extract(ds[k]["array"])
            np.testing.assert_allclose(np.asarray(items[k]["features"]), want, rtol=1e-6, atol=1e-6)
            assert items[k]["utterance"].text == ds[k]["utterance"].text and items[k]["id"] == ds[k]["id"]
    assert per_epoch[0] > 0 and per_epoch[1] > 0
    assert per_epoch[2] == 0 and per_epoch[3] == 0  # epochs 2, 3 = versions 0, 1: all read back
    # without `copies` nothing is cached: every epoch is a fresh augmentation
    fresh = CachedFeatureDataset(
        SpeechDataset(corpus, SR, augment=noisy(), seed=7), FeatureCache(tmp_path / "f2", fe, "input_values")
    )
    item = fresh[SampleKey(0, 0)]
    assert "array" in item and "features" not in item and fresh.cache.extracted == 0
