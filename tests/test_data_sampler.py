"""DurationBucketSampler: limits respected, every index once, reshuffled, rank-consistent, resumable."""

from __future__ import annotations

import numpy as np
import pytest

from speeched.data.sampler import DurationBucketSampler, padding_fraction


def durations(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(12.0), 0.5, n), 1.0, 35.0)


def test_max_duration_and_batch_size_respected():
    d = durations()
    s = DurationBucketSampler(d, max_duration=100.0, max_batch_size=6, seed=1, world_size=1)
    batches = list(s)
    assert batches and all(d[b].sum() <= 100.0 + 1e-9 for b in batches)
    assert max(len(b) for b in batches) == 6
    assert len(batches) == len(s)


def test_utterance_longer_than_budget_gets_its_own_batch():
    s = DurationBucketSampler([1.0, 50.0, 1.0], max_duration=10.0, shuffle=False, world_size=1)
    assert sorted(map(sorted, s)) == [[0, 2], [1]]


def test_every_index_once_and_reshuffled_per_epoch():
    d = durations()
    s = DurationBucketSampler(d, max_duration=150.0, seed=3, world_size=1)
    epochs = []
    for e in range(3):
        s.set_epoch(e)
        batches = list(s)
        assert sorted(i for b in batches for i in b) == list(range(len(d)))
        epochs.append(batches)
    assert epochs[0] != epochs[1] != epochs[2]
    sets0 = {frozenset(b) for b in epochs[0]}
    assert sum(frozenset(b) in sets0 for b in epochs[1]) < len(epochs[1]) / 2  # batch contents change too
    s.set_epoch(1)
    assert list(s) == epochs[1]  # a pure function of (seed, epoch)


def test_padding_fraction_is_low():
    d = durations(2000)
    s = DurationBucketSampler(d, max_duration=200.0, seed=0, world_size=1)
    assert padding_fraction(list(s), d) < 0.015
    rng = np.random.default_rng(0)
    random_batches = np.array_split(rng.permutation(len(d)), len(d) // 16)
    assert padding_fraction(random_batches, d) > 0.3


def test_two_ranks_disjoint_equal_counts():
    d = durations(301)
    r0 = DurationBucketSampler(d, max_duration=90.0, seed=5, rank=0, world_size=2)
    r1 = DurationBucketSampler(d, max_duration=90.0, seed=5, rank=1, world_size=2)
    for e in range(3):
        r0.set_epoch(e)
        r1.set_epoch(e)
        b0, b1 = list(r0), list(r1)
        assert len(b0) == len(b1) == len(r0) == len(r1)
        seen0 = [i for b in b0 for i in b]
        seen1 = [i for b in b1 for i in b]
        assert set(seen0) | set(seen1) == set(range(len(d)))
        single = DurationBucketSampler(d, max_duration=90.0, seed=5, world_size=1)
        single.set_epoch(e)
        real = single.global_batches()
        padded = r0.global_batches()
        assert padded[: len(real)] == real and len(padded) - len(real) <= 1
        # only the padding batch (a repeat of the first one) may be seen twice in an epoch
        allowed = {i for b in padded[len(real) :] for i in b}
        assert set(seen0) & set(seen1) <= allowed
        assert len(seen0) + len(seen1) == len(d) + len(allowed)


def test_drop_last_two_ranks():
    d = durations(301)
    samplers = [DurationBucketSampler(d, 90.0, seed=5, rank=r, world_size=2, drop_last=True) for r in (0, 1)]
    b0, b1 = (list(s) for s in samplers)
    assert len(b0) == len(b1)
    assert not {i for b in b0 for i in b} & {i for b in b1 for i in b}


def test_world_size_from_env(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    s = DurationBucketSampler(durations(50), max_duration=60.0)
    assert (s.rank, s.world_size) == (3, 4)


def test_resume_mid_epoch_gives_identical_remaining_batches():
    d = durations()
    a = DurationBucketSampler(d, max_duration=120.0, seed=7, rank=1, world_size=2)
    a.set_epoch(2)
    full = list(a)
    a.set_epoch(3)  # move away, then "crash" mid-epoch 2 in a fresh run
    a.set_epoch(2)
    it = iter(a)
    taken = [next(it) for _ in range(5)]
    state = a.state_dict()
    assert state == {"epoch": 2, "seed": 7, "batches_yielded": 5, "world_size": 2, "num_utterances": len(d)}
    b = DurationBucketSampler(d, max_duration=120.0, seed=0, rank=1, world_size=2)
    b.load_state_dict(state)
    b.set_epoch(2)  # the training loop calls this again on resume: must not reset
    rest = list(b)
    assert taken + rest == full
    b.set_epoch(3)
    assert len(list(b)) == len(b)  # next epoch starts from the beginning


def test_resume_refuses_other_world_size():
    d = durations(100)
    state = DurationBucketSampler(d, 60.0, world_size=2, rank=0).state_dict()
    with pytest.raises(ValueError, match="world_size=2 but this run has 1"):
        DurationBucketSampler(d, 60.0, world_size=1).load_state_dict(state)


def test_bad_durations_rejected():
    with pytest.raises(ValueError, match=r"duration\[1\]"):
        DurationBucketSampler([1.0, 0.0], max_duration=10.0, world_size=1)
