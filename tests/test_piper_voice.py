"""The Piper neural voice behind `speeched data synth --piper-fraction` (the `voices` extra)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speeched.cli import app
from speeched.data import piper_voice, synth
from speeched.data.piper_voice import PiperStyle, PiperVoiceEngine

pytestmark = pytest.mark.skipif(
    not piper_voice.available(), reason="needs the voices extra (make test installs it)"
)

PLAIN = PiperStyle(length_scale=1.0, noise_scale=0.667, noise_w=0.8, shift=1.0)


def _centroid(x: np.ndarray, sr: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    return float((spectrum * freqs).sum() / spectrum.sum())


def test_seeded_engine_is_deterministic_and_shift_raises_every_frequency_not_the_tempo() -> None:
    texts = ["three one four one five", "nine two six"]
    a = [PiperVoiceEngine(seed=3).synthesize(t, PLAIN) for t in texts[:1]]
    first, second = PiperVoiceEngine(seed=3), PiperVoiceEngine(seed=3)
    runs = [[engine.synthesize(t, PLAIN) for t in texts] for engine in (first, second)]
    assert all(np.array_equal(x, y) for x, y in zip(*runs, strict=True))  # same calls, same bytes
    assert np.array_equal(a[0], runs[0][0])
    assert not np.array_equal(PiperVoiceEngine(seed=4).synthesize(texts[0], PLAIN), a[0])  # the seed matters
    audio = runs[0][0]
    assert audio.dtype == np.float32 and 0.8 < len(audio) / 16000 < 4 and np.abs(audio).max() > 0.1

    high = PiperVoiceEngine(seed=3).synthesize(texts[0], PiperStyle(1.0, 0.667, 0.8, shift=1.3))
    assert 1.15 < _centroid(high) / _centroid(audio) < 1.5  # pitch and formants x ~1.3
    assert 0.8 < len(high) / len(audio) < 1.2  # same tempo
    slow = PiperVoiceEngine(seed=3).synthesize(texts[0], PiperStyle(1.3, 0.667, 0.8, shift=1.0))
    assert len(slow) / len(audio) > 1.15


def test_synth_piper_fraction_replaces_train_voices_only_same_texts_and_deterministic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synth, "SHARD_SIZE", 8)  # several shards, so per-shard seeding is exercised
    runner = CliRunner()
    base = ["data", "synth", "--num", "24", "--no-progress", "--unseen-fraction", "0.1"]
    outs = {name: tmp_path / name for name in ("espeak", "piper1", "piper2")}
    for name, extra in (
        ("espeak", []),
        ("piper1", ["--piper-fraction", "0.5"]),
        ("piper2", ["--piper-fraction", "0.5", "--workers", "2"]),
    ):
        result = runner.invoke(app, [*base, "--out", str(outs[name]), *extra])
        assert result.exit_code == 0, result.output
    rows = {
        n: {s: [json.loads(x) for x in (o / f"{s}.jsonl").read_text().splitlines()] for s in synth.SPLITS}
        for n, o in outs.items()
    }
    train = rows["piper1"]["train"]
    spoken = [r for r in train if r.get("engine") == "piper"]
    assert len(spoken) == round(0.5 * len(train))
    for r in spoken:
        assert r["voice"] == piper_voice.VOICE_NAME and r["variant"] == "piper-joe"
        assert (
            piper_voice.SHIFT_RANGE[0] <= r["shift"] <= piper_voice.SHIFT_RANGE[1]
            and 0.75 <= r["length_scale"] <= 1.3
            and "rate" not in r
        )
        info = sf.info(str(outs["piper1"] / r["audio"]))
        assert info.samplerate == 16000 and abs(info.frames / 16000 - r["duration"]) < 1e-3

    # texts, ids and the eSpeak voices of everything else are what the corpus without Piper has (durations
    # within a few ms: eSpeak carries hidden state from one utterance to the next in a shard process)
    def plan(r: dict) -> dict:
        return {k: v for k, v in r.items() if k != "duration"}

    assert [r["text"] for r in train] == [r["text"] for r in rows["espeak"]["train"]]
    by_id = {r["id"]: r for split in synth.SPLITS for r in rows["espeak"][split]}
    others = [r for split in synth.SPLITS for r in rows["piper1"][split] if r.get("engine") != "piper"]
    assert len(others) == sum(len(r) for r in rows["piper1"].values()) - len(spoken)
    for r in others:
        assert plan(r) == plan(by_id[r["id"]]) and abs(r["duration"] - by_id[r["id"]]["duration"]) < 0.01
    meta = json.loads((outs["piper1"] / "corpus.json").read_text())
    assert (
        meta["piper"]["train_utterances"] == len(spoken)
        and piper_voice.VOICE_NAME in meta["splits"]["train"]["voices"]
    )
    assert json.loads((outs["espeak"] / "corpus.json").read_text())["piper"] is None
    # same seed, other worker count: identical bytes (Piper's noise is seeded per shard)
    for r in train:
        assert (outs["piper1"] / r["audio"]).read_bytes() == (outs["piper2"] / r["audio"]).read_bytes(), r[
            "id"
        ]


def test_piper_fraction_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["data", "synth", "--out", str(tmp_path / "x"), "--num", "20", "--piper-fraction", "1.5"]
    )
    assert result.exit_code == 2 and "piper-fraction" in result.output
    assert not (tmp_path / "x").exists()


def test_missing_voice_is_a_usage_error_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(piper_voice, "available", lambda: False)
    out = tmp_path / "x"
    result = CliRunner().invoke(
        app, ["data", "synth", "--out", str(out), "--num", "20", "--piper-fraction", "0.2"]
    )
    assert result.exit_code == 2 and "speeched[voices]" in result.output and "Traceback" not in result.output
    assert not out.exists()  # refused before anything is written
