"""Compact, lazy sources: datasets tables stay mapped, manifests are cached, durations are trusted but
spot-checked, and the sampler/dataset work from the columns."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speeched.data import audio as A
from speeched.data import sources
from speeched.data.config import DataSource
from speeched.data.dataset import SpeechDataset
from speeched.data.records import Utterance
from speeched.data.sampler import DurationBucketSampler
from speeched.data.scan import scan
from speeched.data.sources import ManifestError, load_source
from speeched.data.table import ConcatUtterances, UtteranceTable, concat

datasets = pytest.importorskip("datasets")
BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHED_CACHE_DIR", str(tmp_path / "cache"))


def _noise(seconds: float, seed: int, sr: int = 16000) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def _wav_bytes(x: np.ndarray, sr: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV")
    return buf.getvalue()


@pytest.fixture()
def saved(tmp_path):
    """A save_to_disk dataset of 12 embedded WAVs, in two Arrow files (so rows span files)."""
    blobs = [_wav_bytes(_noise(0.3 + 0.05 * i, i), 8000 if i % 3 == 0 else 16000) for i in range(12)]
    ds = datasets.Dataset.from_dict(
        {
            "audio": [{"bytes": b, "path": f"clip{i}.wav"} for i, b in enumerate(blobs)],
            "text": [f"text {i}" for i in range(12)],
            "speaker": [f"s{i % 2}" for i in range(12)],
        }
    ).cast_column("audio", datasets.Audio(decode=False))
    ds.save_to_disk(str(tmp_path / "saved"), num_shards=2)
    return tmp_path / "saved", blobs


def _eager(path: Path) -> list[Utterance]:
    """What read_datasets did before: every blob copied into the Utterance."""
    ds = datasets.load_from_disk(str(path))
    return [
        Utterance(id=str(i), audio=None, text=r["text"], extra={"audio_bytes": r["audio"]["bytes"]})
        for i, r in enumerate(ds)
    ]


def test_lazy_datasets_source_yields_the_eager_audio(saved):
    path, blobs = saved
    utts = load_source(DataSource(path=str(path), format="datasets"))
    assert isinstance(utts, UtteranceTable) and len(utts) == 12
    assert len(utts.store.maps) == 2  # both Arrow files mapped, none copied
    assert all("audio_bytes" not in u.extra for u in utts)
    for lazy, eager, blob in zip(utts, _eager(path), blobs, strict=True):
        assert lazy.audio_bytes() == blob
        np.testing.assert_array_equal(A.load_audio(lazy, 16000), A.load_audio(eager, 16000))
    assert utts[5].extra == {"audio_name": "clip5.wav", "speaker": "s1"}
    assert utts[5].origin.endswith("saved:5") and utts[5].text == "text 5" and utts[5].id == "saved-5"


def test_rows_pickle_by_reference_and_workers_load_the_same_audio(saved):
    path, blobs = saved
    utts = load_source(DataSource(path=str(path), format="datasets"))
    payload = pickle.dumps(utts[7])
    assert len(payload) < len(blobs[7]) // 4  # the blob is not in the pickle
    assert pickle.loads(payload).audio_bytes() == blobs[7]
    res = scan(utts, cache=False)
    ds = SpeechDataset(res.kept, 16000)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    got = {item["id"]: item["array"] for item in loader}
    for i, u in enumerate(_eager(path)):
        np.testing.assert_array_equal(got[f"saved-{i}"], A.load_audio(u, 16000))


def _manifest(tmp_path: Path, n: int, durations: bool = True, wrong_row: int | None = None) -> Path:
    os.makedirs(tmp_path / "wavs", exist_ok=True)
    rows = []
    for i in range(n):
        sec = 0.5 + 0.1 * (i % 5)
        sf.write(tmp_path / "wavs" / f"u{i}.wav", _noise(sec, i), 16000)
        row = {"id": f"u{i}", "audio": f"wavs/u{i}.wav", "text": f"words {i}"}
        if durations:
            row["duration"] = sec + (1.0 if i == wrong_row else 0.0)
        rows.append(row)
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_given_durations_are_used_and_only_a_sample_is_probed(tmp_path, monkeypatch):
    path = _manifest(tmp_path, 40)
    calls = []
    real = A.audio_info
    monkeypatch.setattr(A, "audio_info", lambda u: calls.append(u) or real(u))
    res = scan(load_source(str(path)), cache=False, spot_check=5)
    assert len(calls) == 5 and len(res.kept) == 40
    np.testing.assert_allclose(res.kept.durations, [0.5 + 0.1 * (i % 5) for i in range(40)])
    calls.clear()
    scan(load_source(DataSource(path=str(path), durations="probe")), cache=False)
    assert len(calls) == 40  # durations: probe measures every file


def test_duration_spot_check_mismatch_names_the_row_and_file(tmp_path):
    path = _manifest(tmp_path, 12, wrong_row=6)
    with pytest.raises(
        ManifestError, match=r"m\.jsonl:7: the duration column says 1\.600 s but .*u6\.wav is 0\.600 s"
    ):
        scan(load_source(str(path)), cache=False, spot_check=12)


def test_missing_durations_are_probed_once_and_cached(tmp_path, monkeypatch):
    path = _manifest(tmp_path, 6, durations=False)
    calls = []
    real = A.audio_info
    monkeypatch.setattr(A, "audio_info", lambda u: calls.append(u) or real(u))
    first = scan(load_source(str(path)))
    assert len(calls) == 6
    second = scan(load_source(str(path)))
    assert len(calls) == 6  # served by the cache keyed by path + size + mtime
    np.testing.assert_array_equal(first.kept.durations, second.kept.durations)


def test_manifest_is_parsed_once_then_mapped_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CACHE_MIN_ROWS", 0)
    path = _manifest(tmp_path, 5)
    first = load_source(str(path))
    cached = list((tmp_path / "cache" / "manifests").glob("*.arrow"))
    assert len(cached) == 1 and first.store.maps  # the table is mapped from the cache file

    def no_parse(*_a, **_k):
        raise AssertionError("the manifest was parsed again")

    monkeypatch.setattr(sources._Rows, "add", no_parse)
    second = load_source(str(path))
    assert [u.id for u in second] == [u.id for u in first] and second[2].origin.endswith("m.jsonl:3")
    assert second[2].audio == str(tmp_path / "wavs" / "u2.wav") and second[2].duration == pytest.approx(0.7)
    monkeypatch.undo()
    monkeypatch.setenv("SPEECHED_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "CACHE_MIN_ROWS", 0)
    path.write_text(path.read_text().replace("words 2", "changed"))  # size/mtime change: parsed again
    assert load_source(str(path))[2].text == "changed"


def test_assignments_to_rows_are_kept(tmp_path):
    utts = load_source(str(_manifest(tmp_path, 3)))
    for u in utts:  # what eval does with --src-lang
        u.lang = u.lang or "de"
    assert [u.lang for u in utts] == ["de", "de", "de"]
    view = utts.subset([2, 0])
    assert view[0].id == "u2" and view[0].lang == "de" and view[:1][0].id == "u2"
    with pytest.raises(IndexError):
        utts[3]


def test_sampler_and_dataset_work_on_the_columns(tmp_path):
    a = scan(load_source(str(_manifest(tmp_path / "a", 7))), cache=False).kept
    b = scan(load_source(str(_manifest(tmp_path / "b", 4))), cache=False).kept
    both = concat([a, b])
    assert isinstance(both, ConcatUtterances) and len(both) == 11 and both[8].id == "u1"
    ds = SpeechDataset(both, 16000)
    assert ds.source_ids.tolist() == [0] * 7 + [1] * 4
    listed = [u.duration for u in [*a, *b]]
    kw = {"max_duration": 2.0, "seed": 3, "world_size": 1, "rank": 0}
    cols = DurationBucketSampler(ds.durations, source_ids=ds.source_ids, source_weights=[1.0, 2.0], **kw)
    ref = DurationBucketSampler(listed, source_ids=[0] * 7 + [1] * 4, source_weights=[1.0, 2.0], **kw)
    assert list(cols) == list(ref) and sum(map(len, cols)) == 7 + 2 * 4
    assert ds[8]["id"] == "u1" and ds[8]["array"].shape == (int(0.6 * 16000),)


def _rss_growth(tmp_path: Path, audio_bytes: float) -> tuple[int, int]:
    sys.path.insert(0, str(BENCH))
    try:
        import bench_memory
    finally:
        sys.path.remove(str(BENCH))
    env = {"SPEECHED_CACHE_DIR": str(tmp_path / "cache")}
    bench_memory.make_corpus(str(tmp_path / "tiny"), 1, seed=1)
    info = bench_memory.make_corpus(str(tmp_path / "big"), audio_bytes, seed=2)
    base = bench_memory.run_child("check", str(tmp_path / "tiny"), env)["peak_rss"]
    big = bench_memory.run_child("check", str(tmp_path / "big"), env)
    assert big["usable"] == info["rows"]
    return big["peak_rss"] - base, info["audio_bytes"]


@pytest.mark.slow  # two fresh processes importing torch + datasets: ~30 s idle, minutes on a loaded machine
def test_data_check_rss_does_not_grow_with_the_corpus(tmp_path):
    growth, audio = _rss_growth(tmp_path, 60e6)
    assert growth < 0.25 * audio, (growth, audio)  # the eager reader held 2x the audio bytes


@pytest.mark.slow
def test_data_check_rss_on_200mb_stays_under_50mb(tmp_path):
    growth, audio = _rss_growth(tmp_path, 200e6)
    assert growth < 50e6, (growth, audio)


@pytest.mark.slow  # eight fresh processes
def test_bench_memory_script_runs_small(tmp_path):
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(BENCH / "bench_memory.py"), "--sizes", "0.005", "--rows", "300"]
    cmd += [
        "--batches",
        "2",
        "--workdir",
        str(tmp_path),
        "--json",
        str(out),
        "--markdown",
        str(tmp_path / "r.md"),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    res = json.loads(out.read_text())
    assert res["corpora"][0]["check"]["usable"] == res["corpora"][0]["rows"]
    assert res["manifest"]["second"]["total"] == 300
    assert "growth / audio bytes" in (tmp_path / "r.md").read_text()


def test_datasets_without_durations_are_probed_once_per_fingerprint(saved, monkeypatch):
    path, blobs = saved
    calls = []
    real = A.audio_info
    monkeypatch.setattr(A, "audio_info", lambda u: calls.append(u) or real(u))
    first = scan(load_source(DataSource(path=str(path), format="datasets")))
    assert len(calls) == 12 and len(first.kept) == 12
    second = scan(load_source(DataSource(path=str(path), format="datasets")))
    assert len(calls) == 12  # served from the cache keyed by the dataset's fingerprint
    np.testing.assert_allclose(second.kept.durations, [sf.info(io.BytesIO(b)).duration for b in blobs])
