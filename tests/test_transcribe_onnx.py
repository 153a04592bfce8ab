"""`transcribe --backend onnx`: an exported model gives the torch backend's greedy transcripts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from export_helpers import audio_model_dir, set_decoding, waveforms
from typer.testing import CliRunner

from speeched.cli import app
from speeched.errors import UsageError
from speeched.export.onnx_export import export_onnx
from speeched.inference import DecodeOptions
from speeched.transcription.transcribe import transcribe_files
from speeched.transcription.transcriber import TranscribeOptions


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("onnx-transcribe")
    model_dir = audio_model_dir(root, "plain", tiny_decoder=True)
    export_onnx(model_dir, root / "onnx")
    return model_dir, root / "onnx"


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two files of tone stretches between pauses (several segments each, batched together)."""
    root = tmp_path_factory.mktemp("audio")
    paths = []
    for f, seconds in enumerate(((0.9, 1.2, 0.6), (0.7, 1.0))):
        pieces = [np.zeros(8000, np.float32)]
        for a in waveforms(seconds=seconds, seed=f):
            pieces += [a, np.zeros(8000, np.float32)]
        paths.append(str(root / f"rec{f}.wav"))
        sf.write(paths[-1], np.concatenate(pieces), 16000)
    return paths


def _json(model: Path, paths: list[str], backend: str, log: list[str] | None = None) -> list[dict]:
    stream = io.StringIO()
    opts = TranscribeOptions(
        DecodeOptions(num_beams=None, ctc_weight=None, tokens_per_second=10.0),
        segment="energy",
        backend=backend,
    )
    transcribe_files(model, paths, opts, None, "json", stdout=stream, log=None if log is None else log.append)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_onnx_backend_transcripts_equal_torch_greedy(
    models: tuple[Path, Path], recordings: list[str]
) -> None:
    model_dir, onnx_dir = models
    # validated with beams and joint CTC: the ONNX backend decodes greedily anyway, and says so
    set_decoding(onnx_dir, num_beams=4, ctc_weight=0.5)
    log: list[str] = []
    got, want = _json(onnx_dir, recordings, "onnx", log), _json(model_dir, recordings, "torch")
    assert any("decodes greedily; the model was validated with 4 beams and ctc_weight 0.5" in m for m in log)
    assert [len(d["segments"]) for d in want] == [3, 2]
    assert [[s["text"] for s in d["segments"]] for d in got] == [
        [s["text"] for s in d["segments"]] for d in want
    ]
    assert [[(s["start"], s["end"]) for s in d["segments"]] for d in got] == [
        [(s["start"], s["end"]) for s in d["segments"]] for d in want
    ]
    texts = [s["text"] for d in want for s in d["segments"]]
    assert len(set(texts)) > 1 and all(texts)  # transcripts depend on the audio: the comparison can fail


def test_onnx_backend_refuses_what_it_cannot_do(models: tuple[Path, Path], recordings: list[str]) -> None:
    model_dir, onnx_dir = models
    runner = CliRunner()
    base = ["transcribe", recordings[0], "-m", str(onnx_dir), "--backend", "onnx", "--no-progress"]
    for extra, message in (
        (["--num-beams", "4"], "--backend onnx decodes greedily"),
        (["--ctc-weight", "0.3"], "--backend onnx has no CTC head"),
        (["--words"], "--words needs the CTC head"),
    ):
        res = runner.invoke(app, [*base, *extra])
        assert res.exit_code == 2 and message in res.output, res.output
        assert "Traceback" not in res.output
    res = runner.invoke(app, ["transcribe", recordings[0], "-m", str(model_dir), "--backend", "onnx"])
    assert res.exit_code == 2 and "speeched export MODEL --to onnx" in res.output
    res = runner.invoke(app, ["transcribe", recordings[0], "-m", str(model_dir), "--backend", "tf"])
    assert res.exit_code == 2 and "--backend 'tf' is not one of torch, onnx" in res.output
    with pytest.raises(UsageError, match="greedily"):
        transcribe_files(onnx_dir, recordings, TranscribeOptions(DecodeOptions(num_beams=2), backend="onnx"))
