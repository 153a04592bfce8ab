"""Long-form segmentation: Silero VAD on real (eSpeak) speech, the energy fallback, the training-range limit."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speeched.data.espeak import SAMPLE_RATE, Espeak
from speeched.transcription import segment
from speeched.transcription.segment import (
    SegmentationReport,
    VadSegmenter,
    new_report,
    segment_file,
    segment_limit,
)

SR = SAMPLE_RATE
PHRASES = ["seven three", "hello there", "nine", "four two one", "the cat sat down"]


def _speech_span(audio: np.ndarray) -> tuple[int, int]:
    """First/last sample above -40 dBFS: where eSpeak's speech really starts and ends."""
    idx = np.nonzero(np.abs(audio) > 0.01)[0]
    return int(idx[0]), int(idx[-1])


@pytest.fixture(scope="module")
def words_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    """eSpeak phrases separated by 0.5-1.0 s of digital silence; returns the file and the speech spans."""
    engine, rng = Espeak(), np.random.default_rng(0)
    parts, spans, t = [], [], 0
    for phrase in PHRASES:
        gap = int(rng.uniform(0.5, 1.0) * SR)
        audio = engine.synthesize(phrase, "en-us")
        s, e = _speech_span(audio)
        spans.append(((t + gap + s) / SR, (t + gap + e) / SR))
        parts += [np.zeros(gap, np.float32), audio]
        t += gap + len(audio)
    parts.append(np.zeros(SR // 2, np.float32))
    path = tmp_path_factory.mktemp("seg") / "words.wav"
    sf.write(path, np.concatenate(parts), SR)
    return path, spans


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~12 s of speech without any pause longer than eSpeak's word gaps."""
    text = "one two three four five six seven eight nine " * 3
    audio = Espeak().synthesize(text, "en-us", rate=170)
    s, e = _speech_span(audio)
    path = tmp_path_factory.mktemp("seg") / "long.wav"
    sf.write(path, audio[s : e + 1], SR)
    return path


def test_vad_finds_the_spoken_phrases(words_file: tuple[Path, list]) -> None:
    path, spans = words_file
    seg = VadSegmenter(SR, max_segment=10, pad=0.0)
    found = []
    for block in segment.stream_audio(str(path), SR):
        found += seg.feed(block)
    found += seg.finish()
    assert len(found) == len(spans)
    for s, (start, end) in zip(found, spans, strict=True):
        assert abs(s.start - start) <= 0.15 and abs(s.end - end) <= 0.15, (s.start, s.end, start, end)


def test_the_vad_leaves_torchs_thread_count_alone(words_file: tuple[Path, list], monkeypatch) -> None:
    """silero_vad sets torch.set_num_threads(1) when imported; the model decoding after it must keep its threads."""
    import torch

    path, _ = words_file
    threads = torch.get_num_threads()
    monkeypatch.delitem(sys.modules, "silero_vad", raising=False)  # import it afresh
    monkeypatch.delitem(sys.modules, "silero_vad.model", raising=False)
    monkeypatch.setattr(segment, "_SILERO", {})
    torch.set_num_threads(2)
    try:
        seg = VadSegmenter(SR, max_segment=10)
        for block in segment.stream_audio(str(path), SR):
            seg.feed(block)
        assert seg.finish()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def _vad_segments(path: Path) -> list[tuple[float, float]]:
    seg = VadSegmenter(SR, max_segment=10)
    found = []
    for block in segment.stream_audio(str(path), SR):
        found += seg.feed(block)
    return [(s.start, s.end) for s in found + seg.finish()]


def test_the_sequence_model_finds_what_the_window_by_window_model_finds(
    words_file: tuple[Path, list], monkeypatch
) -> None:
    """With onnxruntime, silero's sequence model (one call per 16 s) replaces the TorchScript model (one call
    per 32 ms); without it, the TorchScript model is the fallback. Same segments either way."""
    path, spans = words_file
    monkeypatch.setattr(segment, "_SILERO", {})
    assert segment._is_sequence(segment._silero_model())
    sequence = _vad_segments(path)
    monkeypatch.setattr(segment, "_SILERO", {})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    assert not segment._is_sequence(segment._silero_model())
    assert _vad_segments(path) == sequence and len(sequence) == len(spans)


def test_vad_segments_are_single_utterances_padded_into_the_pauses(words_file: tuple[Path, list]) -> None:
    path, spans = words_file
    report = new_report("vad", None, None)
    found = list(segment_file(str(path), SR, "vad", report=report))
    # Not packed: each phrase is its own segment, though all five would fit in the 20 s default.
    assert len(found) == len(spans)
    for s, (start, end) in zip(found, spans, strict=True):
        assert s.start <= start and s.end >= end  # padding never cuts speech
    assert all(a.end <= b.start for a, b in zip(found, found[1:], strict=False))
    d = report.as_dict()
    durations = [s.duration for s in found]
    assert d["method"] == "silero" and d["fallback"] is None and d["segments"] == len(found)
    assert d["min_seconds"] == round(min(durations), 2) and d["max_seconds"] == round(max(durations), 2)
    assert d["median_seconds"] == round(float(np.median(durations)), 2)
    assert d["limit_seconds"] == 20.0 and "no training durations" in d["limit_source"]
    assert "silero, 5 segments" in report.summary()
    packed = list(segment_file(str(path), SR, "vad", pack=True))
    assert len(packed) == 1  # the old behaviour, now only on request


@pytest.mark.parametrize("kind", ["vad", "energy"])
def test_long_continuous_speech_is_split_within_the_limit(long_speech: Path, kind: str) -> None:
    duration = sf.info(long_speech).duration
    assert duration > 7
    report = new_report(kind, {"min": 1.0, "max": 3.4, "median": 2.0, "p95": 2.8}, None)
    assert report.limit == 3.4
    found = list(segment_file(str(long_speech), SR, kind, max_segment=report.limit, report=report))
    assert len(found) >= int(duration / 3.4) + 1
    assert max(s.duration for s in found) <= 3.4 + 1e-6
    assert found[0].start == 0.0 and found[-1].end == pytest.approx(duration, abs=0.01)  # nothing lost
    assert all(abs(a.end - b.start) < 1e-9 for a, b in zip(found, found[1:], strict=False))  # cut, no gap
    assert report.as_dict()["segments"] == len(found)


def test_energy_fallback_when_silero_is_unavailable(
    words_file: tuple[Path, list], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, spans = words_file
    monkeypatch.setitem(sys.modules, "silero_vad", None)  # `import silero_vad` now raises ImportError
    assert not segment.silero_available()
    report = new_report("vad", None, 4.0)
    found = list(segment_file(str(path), SR, "vad", max_segment=report.limit, report=report))
    assert report.method == "energy" and "silero-vad is not installed" in (report.fallback or "")
    assert report.limit_source == "--max-segment"
    assert len(found) == len(spans)
    for s, (start, end) in zip(found, spans, strict=True):
        assert s.start <= start + 0.05 and s.end >= end - 0.05
        assert start - s.start <= 0.35 and s.end - end <= 0.35
    assert "energy (silero-vad is not installed" in report.summary()


def test_digital_silence_gives_no_segments_without_running_the_vad(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(SR * 200, np.float32), SR)

    def refuse(self: object, y: np.ndarray) -> list:
        raise AssertionError("the VAD ran on digital silence")

    monkeypatch.setattr(VadSegmenter, "_voiced", refuse)
    report = new_report("vad", None, None)
    assert list(segment_file(str(path), SR, "vad", report=report)) == []
    d = report.as_dict()
    assert d["segments"] == 0 and d["min_seconds"] is None and "0 segments" in report.summary()


def test_segment_limit_comes_from_the_training_range() -> None:
    assert segment_limit(None) == (20.0, "default (the model records no training durations)")
    assert segment_limit({"max": 3.0, "p95": 2.5}, 7.5) == (7.5, "--max-segment")
    limit, source = segment_limit({"min": 1.0, "max": 3.1, "median": 1.9, "p95": 2.7})
    assert limit == 3.1 and source == "model's training durations (max 3.1 s, p95 2.7 s)"
    assert segment_limit({"max": 40.0, "p95": 6.0})[0] == 9.0  # an outlier max is capped at 1.5 × p95
    assert segment_limit({"max": 0.8, "p95": 0.7})[0] == 2.0  # floor
    assert segment_limit({"max": 90.0, "p95": 80.0})[0] == 30.0  # ceiling


def test_unknown_segmentation_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of vad, energy, silence, fixed"):
        list(segment_file("x.wav", SR, "smart"))
    assert isinstance(new_report("fixed", None, 6.0), SegmentationReport)


def test_energy_split_follows_librosas_rule() -> None:
    """The hand-written energy rule (no numba start-up) gives librosa.effects.split's regions."""
    import librosa

    from speeched.transcription.segment import ABSOLUTE_FLOOR_POWER, energy_split

    rng = np.random.default_rng(4)
    sr = 16000
    for trial in range(6):
        parts = []
        for _ in range(rng.integers(2, 7)):
            n = int(rng.uniform(0.1, 2.0) * sr)
            level = rng.choice([0.0, 1e-4, 0.01, 0.3]) * (trial % 3 + 1) / 3
            parts.append((level * np.sin(np.arange(n) * rng.uniform(0.02, 0.2))).astype(np.float32))
        y = np.concatenate(parts) + 1e-4 * rng.standard_normal(sum(map(len, parts))).astype(np.float32)
        frame, hop = (1024, 256) if trial % 2 else (1000, 250)
        want = librosa.effects.split(
            y,
            top_db=35.0,
            ref=lambda rms: max(float(np.max(rms)), ABSOLUTE_FLOOR_POWER),
            frame_length=frame,
            hop_length=hop,
        )
        assert energy_split(y, 35.0, frame, hop, ABSOLUTE_FLOOR_POWER) == [tuple(r) for r in want.tolist()]


def test_digital_silence_in_a_segment_gets_a_seeded_noise_floor_and_speech_is_untouched() -> None:
    rng = np.random.default_rng(0)
    speech = (0.2 * rng.standard_normal(3000)).astype(np.float32)
    speech[speech == 0] = 1e-3
    short_gap = np.zeros(SR // 200, np.float32)  # 5 ms: under the 10 ms minimum, left alone
    audio = np.concatenate(
        [np.zeros(SR // 10, np.float32), speech, short_gap, speech, np.zeros(SR // 5, np.float32)]
    )
    out, filled = segment.fill_digital_silence(audio, SR, seed=7)
    zeros_filled = SR // 10 + SR // 5
    assert filled == zeros_filled and out.dtype == audio.dtype
    assert np.array_equal(out[SR // 10 : SR // 10 + 3000], speech)  # speech untouched
    assert np.all(out[SR // 10 + 3000 : SR // 10 + 3000 + len(short_gap)] == 0)  # the short gap too
    lead = out[: SR // 10]
    assert (
        np.all(lead != 0)
        and abs(20 * np.log10(np.sqrt(np.mean(lead**2))) - segment.DIGITAL_SILENCE_FILL_DBFS) < 1.0
    )
    again, _ = segment.fill_digital_silence(audio, SR, seed=7)
    assert np.array_equal(out, again)  # seeded: the same file gives the same features
    silent = np.zeros(SR, np.float32)
    assert segment.fill_digital_silence(silent, SR, seed=0) == (silent, 0)  # decoding skips these as silence


def test_vad_segments_of_a_file_with_exact_zero_pauses_carry_the_floor_and_say_so(
    words_file: tuple[Path, list],
) -> None:
    path, _ = words_file  # pauses of exact zeros, as eSpeak writes them
    report = new_report("vad", None, 10)
    segs = list(segment_file(str(path), SR, "vad", 10, report=report))
    assert segs and report.filled_seconds > 0
    for s in segs:  # no run of 10 ms of exact zeros is left in what gets decoded
        z = np.concatenate(([0], (s.audio == 0).view(np.int8), [0]))
        edges = np.diff(z)
        assert np.all(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1) < SR // 100)
    assert report.as_dict()["digital_silence_filled_seconds"] > 0
    assert "dBFS floor" in report.summary()
