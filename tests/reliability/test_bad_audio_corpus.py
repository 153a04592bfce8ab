"""A corpus with every kind of broken entry mixed into good utterances.

`speeched data check` must list each one with its file and reason (exit 1), and `speeched train` must
finish on the good ones and record each bad one with its reason in `bad_audio.jsonl`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from rel_helpers import tiny_recipe
from typer.testing import CliRunner

from speeched.cli import app

SR = 16000


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _make_bad(d: Path, good_wav: Path) -> dict[str, tuple[str, str, str]]:
    """Write the broken files; return {id: (audio file name, transcript, expected reason)}."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "empty.wav").write_bytes(b"")
    data = good_wav.read_bytes()
    (d / "truncated.wav").write_bytes(data[: len(data) // 2])
    (d / "text.wav").write_text("this is a text file, not audio\n")
    # An MP4/M4A container libsndfile cannot decode.
    (d / "codec.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A \x00\x00\x02\x00M4A mp42isom" + b"\x00" * 512)
    nan = _tone(1.0)
    nan[100:200] = np.nan
    sf.write(d / "nan.wav", nan, SR, subtype="FLOAT")
    inf = _tone(1.0)
    inf[300] = np.inf
    sf.write(d / "inf.wav", inf, SR, subtype="FLOAT")
    sf.write(d / "silence.wav", np.zeros(SR, dtype=np.float32), SR)
    sf.write(d / "long.wav", _tone(31.0), SR)
    sf.write(d / "short.wav", _tone(0.05), SR)
    sf.write(d / "noframes.wav", np.zeros(0, dtype=np.float32), SR)
    for name in ("latin1.wav", "notext.wav", "blank.wav"):
        shutil.copy(good_wav, d / name)
    return {
        "missing": ("gone.wav", "one two", "missing file"),
        "empty": ("empty.wav", "one two", "0-byte file"),
        "truncated": ("truncated.wav", "one two", "truncated"),
        "textfile": ("text.wav", "one two", "not audio"),
        "codec": ("codec.m4a", "one two", "unsupported format"),
        "nan": ("nan.wav", "one two", "NaN/inf samples"),
        "inf": ("inf.wav", "one two", "NaN/inf samples"),
        "silence": ("silence.wav", "one two", "all silence"),
        "long": ("long.wav", "one two", "too long"),
        "short": ("short.wav", "one two", "too short"),
        "noframes": ("noframes.wav", "one two", "truncated"),
        "latin1": ("latin1.wav", "caf\udce9", "unreadable text encoding"),
        "notext": ("notext.wav", "", "empty transcript"),
        "blank": ("blank.wav", "   ", "empty transcript"),
    }


@pytest.fixture
def mixed(tmp_path, corpus) -> tuple[Path, dict[str, tuple[str, str, str]]]:
    good = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()[:8]]
    bad = _make_bad(tmp_path / "bad", corpus / good[0]["audio"])
    lines: list[bytes] = []
    for i, row in enumerate(good):
        lines.append(
            json.dumps({"id": f"good{i}", "audio": str(corpus / row["audio"]), "text": row["text"]}).encode()
        )
    for name, (audio, text, _) in bad.items():
        row = json.dumps({"id": name, "audio": f"bad/{audio}", "text": text}, ensure_ascii=False)
        lines.append(row.encode("utf-8", errors="surrogateescape"))  # "caf\xe9": a Latin-1 byte, not UTF-8
    # Interleave bad entries between good ones, as in a real manifest.
    good_lines, bad_lines = lines[: len(good)], lines[len(good) :]
    padded = good_lines + [b""] * (len(bad_lines) - len(good_lines))
    mixed_lines = [x for pair in zip(bad_lines, padded, strict=True) for x in pair if x]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_bytes(b"\n".join(mixed_lines) + b"\n")
    return manifest, bad


def test_data_check_lists_every_bad_entry(tmp_path, mixed):
    manifest, bad = mixed
    res = CliRunner().invoke(app, ["data", "check", str(manifest), "--out", str(tmp_path / "check")])
    assert res.exit_code == 1, res.output
    assert f"{8 + len(bad)} total, 8 usable, {len(bad)} unusable" in res.output
    listed = [line for line in res.output.splitlines() if line.startswith("  ")]
    for name, (audio, _, reason) in bad.items():
        hits = [line for line in listed if f"bad/{audio}]" in line]
        assert len(hits) == 1, f"{name}: {hits}"
        assert f": {reason}" in hits[0], f"{name}: expected {reason!r} in {hits[0]!r}"
    report = [json.loads(x) for x in (tmp_path / "check" / "bad_audio.jsonl").read_text().splitlines()]
    assert {r["id"]: r["reason"] for r in report} == {n: r for n, (_, _, r) in bad.items()}


def test_train_skips_bad_entries_and_reports_each(tmp_path, corpus, mixed):
    manifest, bad = mixed
    recipe = tiny_recipe(
        tmp_path / "r",
        corpus,
        data={
            "train": [{"path": str(manifest)}],
            "batching": {"max_duration": 1000, "max_batch_size": 4, "shuffle": False},
        },
        train={"max_steps": None, "epochs": 1, "seed": 0, "log_every": 1},
    )
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", str(recipe), "--output-dir", str(run)])
    assert res.exit_code == 0, res.output
    assert f"kept {8 + 3}/{8 + len(bad)} utterances" in res.output  # NaN/inf/silence need a decode to spot
    assert (run / "best" / "model.safetensors").is_file()
    report = [json.loads(x) for x in (run / "bad_audio.jsonl").read_text().splitlines()]
    reasons = {r["id"]: r["reason"] for r in report}
    assert reasons == {n: r for n, (_, _, r) in bad.items()}
    assert all(r["audio"] and r["audio"].endswith(bad[r["id"]][0]) for r in report)
