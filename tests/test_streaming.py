"""Streamed sources: exact resume (2 ranks × 2 workers), shard split, equal batch counts, bad records,
weighted mixing, refused world-size changes, padding on LibriSpeech-like durations."""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from speeched.data.config import DataSource
from speeched.data.records import Utterance
from speeched.data.shards import PARQUET_SCHEMA, write_shards
from speeched.data.stream_loader import StreamStateError, build_stream_loader
from speeched.data.stream_source import resolve_stream_source
from speeched.data.streaming import StreamingBatches

SR = 16000


def synth_shards(folder, n=120, shard_size=12_000, seed=0, prefix="u"):
    """n synthetic clips of 0.1-0.4 s written as parquet shards (FLAC), about n/4 shards."""
    rng = np.random.default_rng(seed)
    utts = []
    for i in range(n):
        x = (rng.standard_normal(int(rng.uniform(0.1, 0.4) * SR)) * 0.1).astype(np.float32)
        utts.append(
            Utterance(f"{prefix}{i}", None, f"text {i}", array=x, sampling_rate=SR, duration=len(x) / SR)
        )
    index = write_shards(utts, str(folder), shard_size=shard_size, flac=True)
    return [u.id for u in utts], index


def loader_for(folder, rank, world_size, num_workers, **kw):
    src = DataSource(path=str(folder), streaming=True, stream_buffer=kw.pop("buffer", 24))
    kw.setdefault("max_duration", 1.0)
    return build_stream_loader(
        [src], sampling_rate=SR, rank=rank, world_size=world_size, num_workers=num_workers, seed=7, **kw
    )


def ids_of(batches):
    return [[it["id"] for it in b] for b in batches]


def take(loader, n):
    """The next n batches' ids, stopping mid-epoch (one epoch per iter(); epochs continue the stream)."""
    out = []
    while len(out) < n:
        for batch in iter(loader):
            out.append([it["id"] for it in batch])
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream") / "shards"
    ids, index = synth_shards(folder)
    return folder, ids, index


@pytest.mark.slow  # ~70 s on 2 shared cores: 6 loaders × 2 worker processes
def test_resume_is_exact_two_ranks_two_workers(shards):
    folder, _, _ = shards
    for rank in (0, 1):
        full_loader, _, _ = loader_for(folder, rank, 2, 2)
        n_epoch = len(full_loader)
        full = take(full_loader, n_epoch + 5)  # past an epoch boundary
        for stop in (n_epoch + 1,):  # mid-epoch, after an epoch boundary
            first, state_fn, _ = loader_for(folder, rank, 2, 2)
            got = take(first, stop)
            state = json.loads(json.dumps(state_fn()))  # a checkpoint stores it as JSON
            del first  # "kill": the workers and their prefetched batches are gone
            resumed, _, load_fn = loader_for(folder, rank, 2, 2)
            load_fn(state)
            rest = take(resumed, len(full) - stop)
            assert got + rest == full, (rank, stop)


@pytest.mark.slow  # ~30 s: 2 loaders × 2 worker processes
def test_every_sample_once_per_pass_across_ranks_and_workers(shards):
    folder, ids, index = shards
    assert len(index["shards"]) % 4 != 0  # shards do not divide by 2 ranks × 2 workers
    seen = []
    lengths = []
    for rank in (0, 1):
        loader, _, _ = loader_for(folder, rank, 2, 2)
        lengths.append(len(loader))
        for batch in take_items(loader, 2):
            seen += [it["id"] for it in batch if it["stream_pass"] == 0]
    assert lengths[0] == lengths[1]  # every rank runs the same number of batches per epoch
    assert Counter(seen) == Counter(ids)  # pass 0: every utterance exactly once over 2 ranks × 2 workers


def take_items(loader, epochs):
    for _ in range(epochs):
        yield from iter(loader)


def test_epoch_batches_equal_per_rank_and_from_index(shards):
    folder, _, index = shards
    counts = []
    for rank in (0, 1):
        loader, _, _ = loader_for(folder, rank, 2, 0)
        counts.append((len(loader), sum(1 for _ in iter(loader)), sum(1 for _ in iter(loader))))
    assert counts[0] == counts[1]
    expected = int(np.ceil(index["seconds"] / 1.0 / 2))
    assert counts[0] == (expected, expected, expected)


def test_refuses_other_world_size_or_workers(shards):
    folder, _, _ = shards
    loader, state_fn, _ = loader_for(folder, 0, 2, 2)
    next(iter(loader))
    state = state_fn()
    for ws, nw in ((1, 2), (2, 1), (4, 2)):
        other, _, load_fn = loader_for(folder, 0, ws, nw)
        with pytest.raises(StreamStateError, match="same number of processes"):
            load_fn(state)


def test_too_few_shards_refused(tmp_path):
    synth_shards(tmp_path / "few", n=10, shard_size=10**9)  # one shard
    with pytest.raises(ValueError, match="1 shards for 4 readers"):
        loader_for(tmp_path / "few", 0, 2, 2)


def test_bad_record_and_truncated_shard_reported_and_skipped(tmp_path):
    folder = tmp_path / "bad"
    ids, index = synth_shards(folder, n=40, shard_size=6_000)
    # shard 0 gets a row whose audio is not audio; the last shard is cut in half (parquet footer gone)
    first = folder / index["shards"][0]["file"]
    table = pq.read_table(first)
    rows = table.to_pylist()
    rows.insert(1, {**rows[0], "id": "garbage", "audio": {"bytes": b"not audio at all", "path": "x.flac"}})
    rows[1]["duration"] = None
    pq.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA), first)
    last = folder / index["shards"][-1]["file"]
    lost = pq.read_table(last).column("id").to_pylist()
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    report = tmp_path / "run"
    ds = StreamingBatches(
        [resolve_stream_source(DataSource(path=str(folder), streaming=True))],
        sampling_rate=SR,
        max_duration=1.0,
        buffer=20,
        report_dir=str(report),
    )
    seen = []
    expected = [i for i in ids if i not in lost]
    for k, batch in enumerate(ds):
        seen += [it["id"] for it in batch if it["stream_pass"] == 0]
        if len(seen) >= len(expected) or k > 200:
            break
    assert Counter(seen) == Counter(expected)
    bad = [json.loads(line) for line in (report / "bad_audio.jsonl").read_text().splitlines()]
    by_shard = {os.path.basename(b["shard"]): b for b in bad}
    assert by_shard[first.name]["offset"] == 1 and by_shard[first.name]["reason"] == "not audio"
    assert by_shard[last.name]["reason"] in ("unreadable shard", "truncated shard")


def test_weighted_mixing_proportions_and_resume(tmp_path):
    # Few, larger shards and 4 s batches: the same ~500 draws as before at a fraction of the shard
    # opens (opening a shard through `datasets` is what this test's time went into).
    synth_shards(tmp_path / "a", n=60, shard_size=40_000, seed=1, prefix="a")
    synth_shards(tmp_path / "b", n=60, shard_size=40_000, seed=2, prefix="b")
    sources = [
        DataSource(path=str(tmp_path / "a"), streaming=True, weight=3.0, stream_buffer=40),
        DataSource(path=str(tmp_path / "b"), streaming=True, weight=1.0, stream_buffer=40),
    ]

    def make():
        return build_stream_loader(
            sources, sampling_rate=SR, rank=0, world_size=1, num_workers=0, seed=1, max_duration=4.0
        )

    loader, state_fn, _ = make()
    batches = take(loader, 36)
    flat = [i for b in batches for i in b]
    assert len(flat) >= 450
    share_a = sum(i.startswith("a") for i in flat) / len(flat)
    assert abs(share_a - 0.75) < 0.05, share_a
    loader2, state_fn2, _ = make()
    head = take(loader2, 13)  # mid-pool and mid-epoch
    state = json.loads(json.dumps(state_fn2()))
    loader3, _, load3 = make()
    load3(state)
    assert head + take(loader3, 23) == batches


class _FakeReader:
    def __init__(self, durations):
        self.d = iter(durations)

    def next_item(self):
        return {"duration": float(next(self.d))}


def test_padding_on_librispeech_like_durations_is_small():
    """Lognormal durations (median 12 s, 1-35 s, as LibriSpeech) in pools of 1000, 200 s batches."""
    rng = np.random.default_rng(0)
    d = np.clip(rng.lognormal(np.log(12.0), 0.45, size=20_000), 1.0, 35.0)
    ds = StreamingBatches.__new__(StreamingBatches)
    ds.buffer, ds.jitter, ds.max_duration, ds.max_batch_size = 1000, 0.01, 200.0, None
    ds.probs, ds.concat = np.array([1.0]), None
    reader = _FakeReader(d)
    padded = real = 0.0
    for _ in range(20):
        pool, batches = ds._pool_batches([reader], np.random.default_rng(1))
        for b in batches:
            x = np.array([pool[i]["duration"] for i in b])
            assert x.sum() <= 200.0 or len(x) == 1
            padded += len(x) * x.max()
            real += x.sum()
    assert (padded - real) / padded <= 0.03


def test_sample_utterances_for_vocabulary(shards):
    from speeched.data.stream_source import sample_utterances

    folder, ids, _ = shards
    utts = sample_utterances(resolve_stream_source(DataSource(path=str(folder), streaming=True)), limit=30)
    assert len(utts) == 30 and len({u.id for u in utts}) == 30 and set(u.id for u in utts) <= set(ids)
    assert all(u.text.startswith("text ") and u.audio is None and u.duration > 0 for u in utts)


def _aug(**concat):
    from speeched.data.augment import AugmentConfig

    return AugmentConfig.model_validate(
        {"noise": {"p": 0.8}, "gain": {"p": 0.5}, "speed": {"p": 0.3}, "concat": concat or {"p": 0.0}}
    )


def take_full(loader, n):
    out = []
    while len(out) < n:
        for batch in iter(loader):
            out.append(batch)
            if len(out) == n:
                break
    return out


def test_augmented_stream_is_deterministic_and_resumes_exactly(shards):
    folder, _, _ = shards
    aug = _aug(p=0.5, pause=[0.1, 0.3])
    loader, _, _ = loader_for(folder, 0, 1, 0, augment=aug, max_duration=2.0)
    full = take_full(loader, 12)
    again, state_fn, _ = loader_for(folder, 0, 1, 0, augment=aug, max_duration=2.0)
    head = take_full(again, 5)
    state = json.loads(json.dumps(state_fn()))
    resumed, _, load_fn = loader_for(folder, 0, 1, 0, augment=aug, max_duration=2.0)
    load_fn(state)
    rest = take_full(resumed, 7)
    for a, b in zip(full, head + rest, strict=True):
        assert [it["utterance"].id for it in a] == [it["utterance"].id for it in b]
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x["array"], y["array"])
    plain, _, _ = loader_for(folder, 0, 1, 0, max_duration=2.0)
    with pytest.raises(StreamStateError, match="data.augment"):
        plain.load_state_dict(state)
    joined = [it for b in full for it in b if "concat_ids" in it]
    assert joined
    for it in joined:
        parts = it["concat_ids"]
        assert 2 <= len(parts) <= 3
        assert it["utterance"].text == " ".join(f"text {p[1:]}" for p in parts)
    for b in full:  # the pool packs units by their budgeted seconds; speed 0.9 may add at most 1/0.9
        assert sum(len(it["array"]) for it in b) / SR <= 2.0 / 0.9 + 1e-6 or len(b) == 1


def test_stream_augmentation_differs_per_pass_and_is_off_without_config(shards):
    folder, _, _ = shards
    aug = _aug()
    loader, _, _ = loader_for(folder, 0, 1, 0, augment=aug)
    plain, _, _ = loader_for(folder, 0, 1, 0)
    n = 2 * len(loader) + 2  # into the second pass over the data
    aug_items = [it for b in take_full(loader, n) for it in b]
    raw_items = [it for b in take_full(plain, n) for it in b]
    assert [it["id"] for it in aug_items] == [it["id"] for it in raw_items]  # no concat: same stream
    by_pass: dict[str, dict[int, np.ndarray]] = {}
    changed = 0
    for a, r in zip(aug_items, raw_items, strict=True):
        by_pass.setdefault(a["id"], {})[a["stream_pass"]] = a["array"]
        changed += not (a["array"].shape == r["array"].shape and np.array_equal(a["array"], r["array"]))
        assert "concat_ids" not in r
    assert changed > len(aug_items) // 2
    twice = [v for v in by_pass.values() if len(v) == 2]
    assert twice and all(not np.array_equal(v[0], v[1]) or v[0].shape != v[1].shape for v in twice)
