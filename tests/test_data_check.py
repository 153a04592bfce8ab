"""`speeched data check`: exit 0 when all usable, 1 when not, 2 on usage errors (missing/empty/malformed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speeched.cli import app


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHED_CACHE_DIR", str(tmp_path / "cache"))


def _manifest(tmp_path, bad: bool) -> str:
    rows = []
    for i in range(4):
        t = np.arange(int((1.0 + i * 0.5) * 16000)) / 16000
        sf.write(tmp_path / f"u{i}.wav", (0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
        rows.append({"id": f"u{i}", "audio": f"u{i}.wav", "text": "words"})
    if bad:
        (tmp_path / "broken.wav").write_bytes(b"")
        rows.append({"id": "broken", "audio": "broken.wav", "text": "words"})
        rows.append({"id": "gone", "audio": "gone.wav", "text": "words"})
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_all_usable_exits_0_with_stats_and_histogram(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["data", "check", _manifest(tmp_path, False), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "4 total, 4 usable, 0 unusable" in res.output
    assert "hours (usable): 0.002" in res.output and "p50=" in res.output
    assert (out / "durations.png").stat().st_size > 1000
    assert (out / "bad_audio.jsonl").read_text() == ""


def test_bad_entries_exit_1_and_are_listed(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["data", "check", _manifest(tmp_path, True), "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "2 unusable" in res.output
    assert "m.jsonl:5: 0-byte file" in res.output and "m.jsonl:6: missing file" in res.output
    assert len((out / "bad_audio.jsonl").read_text().splitlines()) == 2


def test_json_output(tmp_path):
    res = CliRunner().invoke(
        app, ["data", "check", _manifest(tmp_path, True), "--out", str(tmp_path / "o"), "--json"]
    )
    data = json.loads(res.stdout)
    assert (
        res.exit_code == 1
        and data["usable"] == 4
        and {b["reason"] for b in data["bad"]} == {"0-byte file", "missing file"}
    )


def test_usage_errors_exit_2(tmp_path):
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = CliRunner().invoke(app, ["data", "check", _manifest(tmp_path, False), "--data-format", "xml"])
    assert res.exit_code == 2 and "format" in res.output


def test_malformed_manifest_exit_2_names_line(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"audio": "a.wav", "text": "x"}\nnot json\n')
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "m.jsonl:2: invalid JSON" in res.output


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_manifest_is_a_usage_error(tmp_path, content):
    (tmp_path / "m.jsonl").write_text(content)
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert "empty" in res.output and "bad_audio" not in res.output
    assert not (tmp_path / "o").exists()


def test_default_out_is_under_runs_and_printed(tmp_path, monkeypatch):
    manifest = _manifest(tmp_path, False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    res = CliRunner().invoke(app, ["data", "check", manifest])
    assert res.exit_code == 0, res.output
    out = work / "runs" / "data-check" / "m"
    assert (out / "durations.png").is_file() and (out / "bad_audio.jsonl").is_file()
    assert "report: runs/data-check/m/bad_audio.jsonl" in res.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "cache",
        "cwd",
    ]  # nothing beside the data


def test_check_probes_every_file_even_with_a_duration_column(tmp_path):
    rows = []
    for i in range(3):
        sf.write(tmp_path / f"u{i}.wav", np.full(16000, 0.1, np.float32), 16000)
        rows.append({"id": f"u{i}", "audio": f"u{i}.wav", "text": "w", "duration": 1.0})
    rows.append({"id": "gone", "audio": "gone.wav", "text": "w", "duration": 1.0})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "m.jsonl:4: missing file" in res.output
