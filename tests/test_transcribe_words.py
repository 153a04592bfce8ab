"""`transcribe --words`: word times from the CTC head through the whole transcription path (json, srt)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_alignment import CHAR_VOCAB
from typer.testing import CliRunner

from speeched.cli import app
from speeched.errors import UsageError
from speeched.inference import DecodeOptions, InferenceModel, load_inference_model
from speeched.transcription.formats import parse_subtitles
from speeched.transcription.transcribe import transcribe_files
from speeched.transcription.transcriber import TranscribeOptions

# (start, end) of the noise bursts in the test recording; silence between them
BURSTS = [(0.5, 2.5), (3.5, 5.0), (6.0, 7.8)]
DURATION = 8.5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_eval_cli import make_fast_model_dir

    return make_fast_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def ctc_model(model_dir: Path) -> InferenceModel:
    im = load_inference_model(model_dir, "cpu")
    im.model.add_ctc_head(CHAR_VOCAB)
    im.model.config.ctc_units = "char"
    im.model.eval()
    return im


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> str:
    sr = 16000
    rng = np.random.default_rng(0)
    x = np.zeros(int(DURATION * sr), np.float32)
    for k, (a, b) in enumerate(BURSTS):
        t = np.arange(int((b - a) * sr)) / sr
        burst = 0.3 * np.sin(2 * np.pi * (180 + 90 * k) * t) + 0.05 * rng.standard_normal(len(t))
        x[int(a * sr) : int(a * sr) + len(t)] = burst
    path = tmp_path_factory.mktemp("audio") / "bursts.wav"
    sf.write(path, x, sr)
    return str(path)


def _options(words: bool = True) -> TranscribeOptions:
    # a few tokens per segment: a random decoder's words then fit the frames of a 1.5-2 s segment
    return TranscribeOptions(DecodeOptions(max_new_tokens=4), segment="energy", words=words)


def test_json_words_are_monotone_and_inside_their_segment(ctc_model: InferenceModel, recording: str) -> None:
    stream = io.StringIO()
    transcribe_files(ctc_model, [recording], _options(), None, "json", stdout=stream)
    data = json.loads(stream.getvalue())
    segs = data["segments"]
    assert len(segs) == len(BURSTS) and all(s["text"] for s in segs)
    info = data["word_alignment"]
    assert info["segments_aligned"] == len(BURSTS) and info["segments_proportional"] == 0
    times = []
    for seg, (a, b) in zip(segs, BURSTS, strict=True):
        assert seg["start"] <= a + 0.2 and seg["end"] >= b - 0.2  # the segment is the burst (plus padding)
        assert [w["word"] for w in seg["words"]] == seg["text"].split()
        for w in seg["words"]:
            assert seg["start"] - 1e-3 <= w["start"] <= w["end"] <= seg["end"] + 1e-3
            times += [w["start"], w["end"]]
        # CTC frames are 20 ms (the encoder's 320-sample stride), measured from the segment's start
        starts = [w["start"] - seg["start"] for w in seg["words"]]
        assert all(abs(s / 0.02 - round(s / 0.02)) < 0.06 for s in starts)
    assert times == sorted(times)  # monotone over the whole file
    assert len({w["start"] for s in segs for w in s["words"]}) > len(segs)  # not all at one point


def test_srt_words_gives_one_cue_per_word(ctc_model: InferenceModel, recording: str, tmp_path: Path) -> None:
    summary = transcribe_files(ctc_model, [recording], _options(), tmp_path / "w.srt", "srt")
    assert summary.written == [str(tmp_path / "w.srt")]
    cues = parse_subtitles((tmp_path / "w.srt").read_text())
    stream = io.StringIO()
    transcribe_files(ctc_model, [recording], _options(), None, "json", stdout=stream)
    words = [w for s in json.loads(stream.getvalue())["segments"] for w in s["words"]]
    assert [c.text for c in cues] == [w["word"] for w in words]
    assert [t for c in cues for t in (c.start, c.end)] == pytest.approx(
        [t for w in words for t in (w["start"], w["end"])], abs=1e-6
    )
    plain = transcribe_files(ctc_model, [recording], _options(words=False), tmp_path / "s.srt", "srt")
    assert plain.written and len(parse_subtitles((tmp_path / "s.srt").read_text())) == len(BURSTS)


def test_words_are_refused_without_a_ctc_head(model_dir: Path, recording: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["transcribe", recording, "-m", str(model_dir), "--words", "--segment", "energy"]
    )
    assert res.exit_code == 2 and "--words needs a model with a CTC head" in res.output
    assert "Traceback" not in res.output
    im = load_inference_model(model_dir, "cpu")  # a loaded model is checked too
    with pytest.raises(UsageError, match="--words needs a model with a CTC head"):
        transcribe_files(im, [recording], _options(), tmp_path / "x.json", "json")


def test_fixed_windows_keep_words_and_text_in_step(ctc_model: InferenceModel, recording: str) -> None:
    """Overlapping windows: the words decoded twice are cut from the words as from the text, and every
    word stays inside its (narrowed) cue."""
    stream = io.StringIO()
    opts = TranscribeOptions(
        DecodeOptions(max_new_tokens=4), segment="fixed", max_segment=4, overlap=1.5, words=True
    )
    transcribe_files(ctc_model, [recording], opts, None, "json", stdout=stream)
    segs = json.loads(stream.getvalue())["segments"]
    assert len(segs) >= 2  # 8.5 s in 4 s windows every 2.5 s; a window may stitch to nothing
    for seg in segs:
        assert [w["word"] for w in seg["words"]] == seg["text"].split()
        assert all(seg["start"] <= w["start"] <= w["end"] <= seg["end"] for w in seg["words"])
    assert all(a["end"] <= b["start"] for a, b in zip(segs, segs[1:], strict=False))
