"""`speeched data shard`: manifest → shards → stream gives back the same ids, audio samples and texts."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speeched.cli import app
from speeched.data.config import DataSource
from speeched.data.shards import parse_size, write_shards
from speeched.data.sources import load_source
from speeched.data.stream_source import resolve_stream_source
from speeched.data.streaming import StreamingBatches


def make_manifest(folder, n=40, sr=16000, seed=0, bad=False):
    """n short WAV files (PCM16) + train.jsonl (id, audio, text, duration, lang, translation)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    rows = []
    for i in range(n):
        x = (rng.standard_normal(int(rng.uniform(0.2, 0.8) * sr)) * 0.1).astype(np.float32)
        sf.write(os.path.join(folder, f"{i}.wav"), x, sr, subtype="PCM_16")
        rows.append(
            {
                "id": f"utt{i}",
                "audio": f"{i}.wav",
                "text": f"words {i}",
                "translation": f"Wörter {i}",
                "lang": "en",
            }
        )
        rows[-1]["duration"] = len(x) / sr
    if bad:
        rows.append({"id": "gone", "audio": "missing.wav", "text": "x"})
    path = os.path.join(folder, "train.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return path


def stream_pass0(folder, n):
    """All items of the first pass over a shard folder, read through the streaming loader."""
    ds = StreamingBatches(
        [resolve_stream_source(DataSource(path=str(folder), streaming=True))],
        sampling_rate=16000,
        max_duration=2.0,
        buffer=n,
    )
    items = []
    for batch in ds:
        items += [it for it in batch if it["stream_pass"] == 0]
        if len(items) >= n:
            return items
    raise AssertionError("unreachable")


@pytest.mark.parametrize("fmt,flac", [("parquet", False), ("parquet", True), ("webdataset", True)])
def test_round_trip_manifest_shards_stream(tmp_path, fmt, flac):
    manifest = make_manifest(tmp_path / "corpus")
    out = tmp_path / "shards"
    args = ["data", "shard", manifest, "--out", str(out), "--shard-size", "30kB", "--format", fmt]
    res = CliRunner().invoke(app, args + (["--flac"] if flac else []))
    assert res.exit_code == 0, res.output
    index = json.loads((out / "index.json").read_text())
    assert index["rows"] == 40 and len(index["shards"]) > 3
    assert sum(s["rows"] for s in index["shards"]) == 40
    assert sum(os.path.getsize(out / s["file"]) for s in index["shards"]) >= index["bytes"]
    utts = {u.id: u for u in load_source(manifest)}
    assert index["seconds"] == pytest.approx(sum(u.duration for u in utts.values()), abs=1e-2)
    items = stream_pass0(out, 40)
    assert sorted(it["id"] for it in items) == sorted(utts)  # each exactly once
    for it in items:
        u = utts[it["id"]]
        ref, _ = sf.read(u.audio, dtype="float32")
        np.testing.assert_array_equal(it["array"], ref)  # PCM16 → (FLAC) → PCM16: bit-exact
        assert it["utterance"].text == u.text and it["utterance"].translation == u.translation
        assert it["utterance"].lang == "en"
        assert it["utterance"].duration == pytest.approx(u.duration)


def test_parquet_columns_and_no_audio_feature(tmp_path):
    manifest = make_manifest(tmp_path / "c", n=5)
    index = write_shards(load_source(manifest), str(tmp_path / "s"), shard_size=10**9, shuffle=False)
    table = pq.read_table(tmp_path / "s" / index["shards"][0]["file"])
    assert table.column_names == [
        "id",
        "audio",
        "duration",
        "sampling_rate",
        "text",
        "translation",
        "lang",
        "tgt_lang",
    ]
    assert table.column("id").to_pylist() == [f"utt{i}" for i in range(5)]  # shuffle=False keeps the order
    assert table.column("audio")[0].as_py()["bytes"][:4] == b"RIFF"  # original bytes kept without --flac


def test_refuses_non_empty_out_and_reports_bad_audio(tmp_path):
    manifest = make_manifest(tmp_path / "c", n=6, bad=True)
    out = tmp_path / "s"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    res = CliRunner().invoke(app, ["data", "shard", manifest, "--out", str(out)])
    assert res.exit_code == 2 and "not empty" in res.output and "--force" in res.output
    res = CliRunner().invoke(app, ["data", "shard", manifest, "--out", str(out), "--force"])
    assert res.exit_code == 1, res.output  # 1 of 7 unusable: written, reported
    bad = [json.loads(line) for line in (out / "bad_audio.jsonl").read_text().splitlines()]
    assert [b["id"] for b in bad] == ["gone"] and bad[0]["reason"] == "missing file"
    assert json.loads((out / "index.json").read_text())["rows"] == 6
    res = CliRunner().invoke(
        app, ["data", "shard", manifest, "--out", str(tmp_path / "t"), "--shard-size", "lots"]
    )
    assert res.exit_code == 2 and "--shard-size" in res.output


def test_parse_size():
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("64MiB") == 64 << 20
    assert parse_size("1.5G") == 1_500_000_000
    assert parse_size("1000") == 1000
    with pytest.raises(ValueError):
        parse_size("-1MB")
