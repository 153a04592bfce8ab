"""Every kind of bad audio gets its own reason, is reported, and never crashes a scan."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import soundfile as sf

from speeched.data import audio as A
from speeched.data.config import Filters
from speeched.data.records import Utterance
from speeched.data.scan import BadAudioError, DurationCache, scan
from speeched.data.sources import load_source


def _tone(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def make_bad_files(d) -> dict[str, str]:
    """One file per reason; returns {expected reason: relative path}."""
    os.makedirs(d / "a", exist_ok=True)
    sf.write(d / "a/good.wav", _tone(1.0), 16000, subtype="PCM_16")
    good = (d / "a/good.wav").read_bytes()
    (d / "a/empty.wav").write_bytes(b"")
    (d / "a/trunc_header.wav").write_bytes(good[:20])
    (d / "a/trunc_data.wav").write_bytes(good[: len(good) // 2])
    (d / "a/text.wav").write_text("this is a text file, not audio\n")
    mp3_in_wav = bytearray(good)
    mp3_in_wav[20:22] = struct.pack("<H", 0x55)  # WAVE_FORMAT_MPEGLAYER3: a codec libsndfile lacks
    (d / "a/codec.wav").write_bytes(bytes(mp3_in_wav))
    x = _tone(1.0)
    x[100] = np.nan
    sf.write(d / "a/nan.wav", x, 16000, subtype="FLOAT")
    sf.write(d / "a/silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(d / "a/long.wav", _tone(3.0), 16000)
    sf.write(d / "a/short.wav", _tone(0.05), 16000)
    return {
        "ok": "a/good.wav",
        A.MISSING: "a/nope.wav",
        A.EMPTY_FILE: "a/empty.wav",
        A.TRUNCATED: "a/trunc_data.wav",
        A.NOT_AUDIO: "a/text.wav",
        A.UNSUPPORTED: "a/codec.wav",
        A.NON_FINITE: "a/nan.wav",
        A.SILENT: "a/silent.wav",
        A.TOO_LONG: "a/long.wav",
        A.TOO_SHORT: "a/short.wav",
    }


@pytest.fixture()
def bad_manifest(tmp_path):
    files = make_bad_files(tmp_path)
    lines = [json.dumps({"id": r, "audio": p, "text": "some words"}).encode() for r, p in files.items()]
    lines.append(json.dumps({"id": A.EMPTY_TEXT, "audio": files["ok"], "text": "  "}).encode())
    lines.append(b'{"id": "enc", "audio": "a/good.wav", "text": "caf\xe9"}')
    lines.append(json.dumps({"id": "trunc_header", "audio": "a/trunc_header.wav", "text": "x"}).encode())
    (tmp_path / "m.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return tmp_path / "m.jsonl"


FILTERS = Filters(min_duration=0.1, max_duration=2.0)


def test_every_reason_is_distinct_and_reported(bad_manifest, tmp_path, caplog):
    utts = load_source(str(bad_manifest))
    res = scan(utts, FILTERS, decode=True, report_dir=str(tmp_path / "out"), cache=False)
    got = {b.id: b.reason for b in res.bad}
    expected = {u.id: u.id for u in utts if u.id not in ("ok", "enc", "trunc_header")}
    expected["enc"] = A.BAD_ENCODING
    expected["trunc_header"] = A.TRUNCATED
    assert got == expected
    assert [u.id for u in res.kept] == ["ok"] and res.kept[0].duration == pytest.approx(1.0)
    report = [json.loads(x) for x in (tmp_path / "out" / "bad_audio.jsonl").read_text().splitlines()]
    assert {r["id"] for r in report} == set(expected)
    assert all(r["origin"].startswith(str(bad_manifest)) for r in report)
    assert "skipping" in caplog.text and "nope.wav" in caplog.text
    assert "kept 1/13" in res.summary() and "1 too long" in res.summary()


def test_header_only_scan_defers_nan_and_silence(bad_manifest):
    res = scan(load_source(str(bad_manifest)), FILTERS, decode=False, cache=False)
    kept = {u.id for u in res.kept}
    assert {A.NON_FINITE, A.SILENT} <= kept  # found only by decoding (or at load time)


def test_on_bad_audio_error_lists_all_and_points_at_report(bad_manifest, tmp_path):
    with pytest.raises(
        BadAudioError, match=r"(?s)9 unusable.*m\.jsonl:2: missing file.*bad_audio\.jsonl"
    ) as ei:
        scan(
            load_source(str(bad_manifest)),
            FILTERS,
            decode=True,
            on_bad_audio="error",
            report_dir=str(tmp_path),
        )
    assert "too long" not in str(ei.value)  # filter drops are choices, not errors


def test_load_audio_raises_audio_error_per_kind(tmp_path):
    files = make_bad_files(tmp_path)
    for reason in (A.MISSING, A.EMPTY_FILE, A.TRUNCATED, A.NOT_AUDIO, A.UNSUPPORTED, A.NON_FINITE, A.SILENT):
        with pytest.raises(A.AudioError) as ei:
            A.load_audio(str(tmp_path / files[reason]), 16000)
        assert ei.value.reason == reason and files[reason] in str(ei.value)


def test_load_audio_mono_and_resample(tmp_path):
    stereo = np.stack([_tone(1.0, 8000), -_tone(1.0, 8000) * 0.5], axis=1)
    sf.write(tmp_path / "s.flac", stereo, 8000)
    x = A.load_audio(str(tmp_path / "s.flac"), 16000)
    assert x.ndim == 1 and x.dtype == np.float32 and abs(len(x) - 16000) <= 2
    assert np.abs(x).max() == pytest.approx(0.025, rel=0.1)  # (0.1 - 0.05) / 2 mixdown
    info = A.audio_info(str(tmp_path / "s.flac"))
    assert (info.channels, info.sampling_rate, info.duration) == (2, 8000, pytest.approx(1.0))


def test_duration_cache_probes_once_and_notices_changes(tmp_path, monkeypatch):
    sf.write(tmp_path / "x.wav", _tone(1.0), 16000)
    utts = [Utterance(id="x", audio=str(tmp_path / "x.wav"), text="a")]
    cache = DurationCache(str(tmp_path / "cache.sqlite"))
    assert scan(utts, cache=cache).kept[0].duration == pytest.approx(1.0)
    calls = []
    real = A.audio_info
    monkeypatch.setattr(A, "audio_info", lambda u: calls.append(u) or real(u))
    assert scan(utts, cache=DurationCache(str(tmp_path / "cache.sqlite"))).kept[0].duration == pytest.approx(
        1.0
    )
    assert calls == []  # served from the on-disk cache
    sf.write(tmp_path / "x.wav", _tone(2.0), 16000)  # size changes -> re-probed
    assert scan(utts, cache=cache).kept[0].duration == pytest.approx(2.0)
    assert len(calls) == 1


def test_max_target_tokens_with_real_tokenizer(tmp_path, minilm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    sf.write(tmp_path / "x.wav", _tone(1.0), 16000)
    utts = [
        Utterance(id="short", audio=str(tmp_path / "x.wav"), text="hello"),
        Utterance(id="long", audio=str(tmp_path / "x.wav"), text="hello " * 20),
    ]
    res = scan(utts, Filters(max_target_tokens=5), tokenizer=tok, cache=False)
    assert [u.id for u in res.kept] == ["short"]
    assert res.bad[0].reason == A.TOO_MANY_TOKENS and "20 > max_target_tokens 5" in res.bad[0].detail
