"""`speeched data check` on streamed data: shard folders (index.json), parquet/tar globs; every record
decoded through the stream reader, bad records reported with (shard, offset, reason), exit 1."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from speeched.cli import app
from speeched.data.records import Utterance
from speeched.data.shards import PARQUET_SCHEMA, write_shards

SR = 16000


def make_shards(folder, n=12, fmt="parquet", shard_size=6_000):
    rng = np.random.default_rng(0)
    utts = []
    for i in range(n):
        x = (0.1 * np.sin(2 * np.pi * 220 * np.arange(int(rng.uniform(0.2, 0.5) * SR)) / SR)).astype(
            np.float32
        )
        utts.append(Utterance(f"u{i}", None, f"text {i}", array=x, sampling_rate=SR, duration=len(x) / SR))
    index = write_shards(utts, str(folder), shard_size=shard_size, fmt=fmt, flac=True)
    assert len(index["shards"]) >= 3
    return index


def check(*args):
    return CliRunner().invoke(app, ["data", "check", *map(str, args), "--min-duration", "0.05"])


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_clean_shard_folder_exits_0(tmp_path, fmt):
    folder = tmp_path / "shards"
    index = make_shards(folder, fmt=fmt)
    res = check(folder, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert f"{index['rows']} total, {index['rows']} usable, 0 unusable" in res.output
    assert (tmp_path / "out" / "bad_audio.jsonl").read_text() == ""
    assert (tmp_path / "out" / "durations.png").is_file()


def test_corrupt_record_and_truncated_shard_exit_1(tmp_path):
    folder = tmp_path / "shards"
    index = make_shards(folder)
    first = folder / index["shards"][0]["file"]
    rows = pq.read_table(first).to_pylist()
    rows[1] = {**rows[1], "audio": {"bytes": b"not audio at all", "path": "x.flac"}}  # same row count
    pq.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA), first)
    last = folder / index["shards"][-1]["file"]
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    res = check(folder, "--out", out)
    assert res.exit_code == 1, res.output
    bad = [json.loads(line) for line in (out / "bad_audio.jsonl").read_text().splitlines()]
    by_shard = {os.path.basename(b["shard"]): b for b in bad}
    assert set(by_shard) == {first.name, last.name}
    assert by_shard[first.name]["offset"] == 1 and by_shard[first.name]["reason"] == "not audio"
    assert by_shard[first.name]["id"] == rows[1]["id"]
    assert by_shard[last.name]["reason"] in ("unreadable shard", "truncated shard")
    assert f"{first}:1: not audio" in res.output
    usable = index["rows"] - 1 - index["shards"][-1]["rows"]
    assert f"{usable} usable" in res.output


def test_glob_of_parquet_files_and_short_index(tmp_path):
    folder = tmp_path / "shards"
    index = make_shards(folder)
    res = check(str(folder / "*.parquet"), "--out", tmp_path / "glob")
    assert res.exit_code == 0, res.output
    assert f"{index['rows']} usable" in res.output
    # a shard that ends cleanly but with fewer rows than index.json says is truncated
    first = folder / index["shards"][0]["file"]
    table = pq.read_table(first)
    pq.write_table(table.slice(0, table.num_rows - 1), first)
    res = check(folder, "--out", tmp_path / "short")
    assert res.exit_code == 1, res.output
    bad = json.loads((tmp_path / "short" / "bad_audio.jsonl").read_text().splitlines()[0])
    assert bad["reason"] == "truncated shard" and bad["offset"] == table.num_rows - 1


def test_no_shards_is_a_usage_error(tmp_path):
    res = check(str(tmp_path / "nothing" / "*.parquet"))
    assert res.exit_code == 2
    assert "no shards found" in res.output
