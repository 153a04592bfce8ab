"""DurationBucketSampler: limits, every index once (or as weighted), reshuffled, per-rank, resumable."""

from __future__ import annotations

import numpy as np
import pytest

from speeched.data.sampler import DurationBucketSampler, epoch_indices, padding_fraction, source_mix


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


# ---- weighted sources -----------------------------------------------------------------------------
def two_sources(n0: int = 120, n1: int = 80) -> tuple[np.ndarray, list[int]]:
    """Durations plus interleaved source ids (source membership must not follow index order)."""
    d = durations(n0 + n1, seed=4)
    ids = [0] * n0 + [1] * n1
    np.random.default_rng(1).shuffle(ids)
    return d, ids


def counts(batches: list[list[int]], n: int) -> np.ndarray:
    return np.bincount([i for b in batches for i in b], minlength=n)


def test_weights_give_exact_per_source_counts_each_epoch():
    d, ids = two_sources()
    src = np.asarray(ids)
    s = DurationBucketSampler(d, 100.0, seed=2, world_size=1, source_ids=ids, source_weights=[0.5, 2.0])
    halves = []
    for e in range(3):
        s.set_epoch(e)
        c = counts(list(s), len(d))
        assert (c[src == 1] == 2).all()  # w=2: every utterance exactly twice
        assert set(c[src == 0].tolist()) == {0, 1} and c[src == 0].sum() == 60  # w=0.5: exactly half, once
        halves.append(frozenset(np.flatnonzero((c == 1) & (src == 0)).tolist()))
    assert len(set(halves)) == 3  # a fresh half every epoch
    again = DurationBucketSampler(d, 100.0, seed=2, world_size=1, source_ids=ids, source_weights=[0.5, 2.0])
    again.set_epoch(1)
    assert frozenset(np.flatnonzero((counts(list(again), len(d)) == 1) & (src == 0)).tolist()) == halves[1]
    other = DurationBucketSampler(d, 100.0, seed=3, world_size=1, source_ids=ids, source_weights=[0.5, 2.0])
    other.set_epoch(1)
    assert frozenset(np.flatnonzero((counts(list(other), len(d)) == 1) & (src == 0)).tolist()) != halves[1]


def test_epoch_indices_fractional_weight_above_one():
    ids = [0] * 10 + [1] * 7
    idx = epoch_indices(ids, [2.3, 1.0], seed=0, epoch=0)
    c = np.bincount(idx, minlength=17)
    assert c[:10].sum() == 23 and set(c[:10].tolist()) == {2, 3}  # 2 copies + round(0.3 * 10) = 3 extra
    assert (c[10:] == 1).all()
    assert np.array_equal(idx, epoch_indices(ids, [2.3, 1.0], seed=0, epoch=0))  # pure function


def test_all_one_weights_give_the_unweighted_batches():
    d, ids = two_sources()
    for kw in ({}, {"rank": 1, "world_size": 2}):
        kw = {"world_size": 1, **kw}
        plain = DurationBucketSampler(d, 90.0, seed=5, **kw)
        ones = DurationBucketSampler(d, 90.0, seed=5, source_ids=ids, source_weights=[1.0, 1.0], **kw)
        for e in range(2):
            plain.set_epoch(e)
            ones.set_epoch(e)
            assert list(plain) == list(ones)
        assert ones.state_dict() == plain.state_dict()  # unweighted state is unchanged (old checkpoints load)


def test_weighted_two_ranks_share_the_epoch_multiset():
    d, ids = two_sources(101, 60)
    kw = dict(max_duration=90.0, seed=5, source_ids=ids, source_weights=[0.3, 2.5])
    ranks = [DurationBucketSampler(d, rank=r, world_size=2, **kw) for r in (0, 1)]
    for e in range(2):
        for s in ranks:
            s.set_epoch(e)
        b0, b1 = (list(s) for s in ranks)
        assert len(b0) == len(b1) == len(ranks[0]) == len(ranks[1])
        padded = ranks[0].global_batches()
        single = DurationBucketSampler(d, world_size=1, **kw)
        single.set_epoch(e)
        real = single.global_batches()
        assert padded[: len(real)] == real and len(padded) - len(real) <= 1
        # the ranks' batches are disjoint positions of the padded list: together exactly the epoch's multiset
        assert sorted(map(tuple, b0 + b1)) == sorted(map(tuple, padded))
        want = np.bincount(epoch_indices(ids, [0.3, 2.5], 5, e), minlength=len(d))
        assert np.array_equal(counts(real, len(d)), want)
        assert want.sum() == round(0.3 * 101) + round(2.5 * 60)


def test_weighted_resume_mid_epoch_gives_identical_remaining_batches():
    d, ids = two_sources()
    kw = dict(max_duration=120.0, rank=0, world_size=2, source_ids=ids, source_weights=[0.25, 3.0])
    a = DurationBucketSampler(d, seed=7, **kw)
    a.set_epoch(1)
    full = list(a)
    it = iter(a)
    taken = [next(it) for _ in range(4)]
    state = a.state_dict()
    assert state["source_weights"] == [0.25, 3.0]
    b = DurationBucketSampler(d, seed=0, **kw)
    b.load_state_dict(state)
    b.set_epoch(1)
    assert taken + list(b) == full


def test_resume_refuses_other_weights():
    d, ids = two_sources()
    state = DurationBucketSampler(
        d, 60.0, world_size=1, source_ids=ids, source_weights=[0.5, 2.0]
    ).state_dict()
    with pytest.raises(ValueError, match=r"source weights \[0.5, 2.0\] but this run has \[0.5, 3.0\]"):
        DurationBucketSampler(
            d, 60.0, world_size=1, source_ids=ids, source_weights=[0.5, 3.0]
        ).load_state_dict(state)
    with pytest.raises(ValueError, match="but this run has all 1.0"):
        DurationBucketSampler(d, 60.0, world_size=1).load_state_dict(state)
    plain = DurationBucketSampler(d, 60.0, world_size=1).state_dict()
    with pytest.raises(ValueError, match="saved with source weights all 1.0"):
        DurationBucketSampler(
            d, 60.0, world_size=1, source_ids=ids, source_weights=[0.5, 2.0]
        ).load_state_dict(plain)


def test_source_mix_and_bad_weights():
    d, ids = two_sources(100, 50)
    mix = source_mix(d, ids, [0.2, 3.0], names=["general", "indomain"])
    assert [(m["source"], m["utterances_per_epoch"]) for m in mix] == [("general", 20), ("indomain", 150)]
    assert mix[0]["share"] == pytest.approx(20 / 170)
    hours1 = d[np.asarray(ids) == 1].sum() / 3600
    assert mix[1]["hours_per_epoch"] == pytest.approx(3 * hours1)
    with pytest.raises(ValueError, match="leave no utterance"):
        DurationBucketSampler([1.0, 2.0], 10.0, world_size=1, source_weights=[0.1])
    with pytest.raises(ValueError, match="one source id per utterance"):
        DurationBucketSampler([1.0, 2.0], 10.0, world_size=1, source_ids=[0], source_weights=[1.0])
    with pytest.raises(ValueError, match=r"source ids must lie in \[0, 1\)"):
        DurationBucketSampler([1.0, 2.0], 10.0, world_size=1, source_ids=[0, 1], source_weights=[2.0])
