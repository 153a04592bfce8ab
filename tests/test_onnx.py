"""`speeched export --to onnx` and the ONNX Runtime runner: logits, greedy transcripts, int8, extensions."""

from __future__ import annotations

import json
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch
from export_helpers import audio_model_dir, waveforms

from speeched.export.onnx_export import export_onnx
from speeched.inference.features import featurize
from speeched.inference.onnx_backend import OnnxModelError, OnnxSpeechModel, load_onnx_model
from speeched.modeling.model_dir import load_model_dir


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def model_dir(root) -> Path:
    return audio_model_dir(root, "plain", tiny_decoder=True)


@pytest.fixture(scope="module")
def torch_model(model_dir):
    return load_model_dir(model_dir)


@pytest.fixture(scope="module")
def fp32(root, model_dir) -> tuple[Path, object]:
    report = export_onnx(model_dir, root / "fp32")
    return root / "fp32", report


@pytest.fixture(scope="module")
def int8(root, model_dir) -> tuple[Path, object]:
    report = export_onnx(model_dir, root / "int8", quantize="int8")
    return root / "int8", report


def test_logits_within_1e4_of_torch_on_a_batch(fp32, torch_model):
    out, report = fp32
    assert report.max_logit_diff < 1e-4
    onnx_model = OnnxSpeechModel(out)
    arrays = waveforms(seconds=(1.1, 0.4, 0.8), seed=5)  # other lengths than the traced probe batch
    dec = np.array([[101, 2054, 2003, 1037, 3899, 2000]] * 3)
    got = onnx_model.logits(arrays, dec)
    with torch.no_grad():
        want = torch_model.model(
            **featurize(torch_model.feature_extractor, arrays, "cpu"), decoder_input_ids=torch.tensor(dec)
        ).logits.numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4


def torch_greedy(loaded, arrays, cap):
    with torch.no_grad():
        ids = loaded.model.generate(
            **featurize(loaded.feature_extractor, arrays, "cpu"),
            max_new_tokens=cap,
            num_beams=1,
            do_sample=False,
        )
    return [loaded.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]


def test_greedy_transcripts_identical_to_torch(fp32, torch_model):
    onnx_model = OnnxSpeechModel(fp32[0])
    arrays = waveforms(seconds=(0.9, 0.6, 1.2, 0.5), seed=11)
    # 30 tokens: far more cache steps than the graphs were traced with
    for batch in ([a] for a in arrays):
        assert onnx_model.transcribe(batch, max_new_tokens=30) == torch_greedy(torch_model, batch, 30)
    texts = [onnx_model.transcribe([a], max_new_tokens=30)[0] for a in arrays]
    assert len(set(texts)) == len(texts)  # the transcripts depend on the audio: the test can fail
    batched = onnx_model.generate_batch(arrays[:2], max_new_tokens=10)
    assert [d.text for d in batched] == torch_greedy(torch_model, arrays[:2], 10)
    assert all(d.hit_token_cap and d.num_tokens == 10 and d.token_ids[0] == 101 for d in batched)


@pytest.mark.slow  # a second export + quantisation: ~20 s on an idle 2-core machine
def test_int8_is_smaller_and_its_transcript_change_is_measured(fp32, int8, capsys):
    out, report = int8
    meta = json.loads((out / "speeched_onnx.json").read_text())
    assert meta["quantization"] == "int8"
    assert report.quantized_logit_diff is not None and report.quantized_logit_diff > 0
    size = sum(f.stat().st_size for f in out.glob("*.onnx"))
    assert size < 0.5 * sum(f.stat().st_size for f in fp32[0].glob("*.onnx"))
    arrays = waveforms(seconds=(0.9, 0.6, 1.2), seed=11)
    a = OnnxSpeechModel(fp32[0]).transcribe(arrays, max_new_tokens=15)
    b = OnnxSpeechModel(out).transcribe(arrays, max_new_tokens=15)
    change = jiwer.wer(a, b)
    with capsys.disabled():
        print(
            f"\nint8 vs fp32 on {len(arrays)} inputs: WER {change:.3f}, max logit change {report.quantized_logit_diff:.3g}"
        )
    assert change >= 0.0  # measured and reported (a random tiny model has no reference transcript)
    assert "int8" in (out / "README.md").read_text()


@pytest.mark.slow  # a second model and export: ~15 s on an idle 2-core machine
def test_encoder_side_extensions_run_in_onnx(root):
    """Length adaptor, layer weighting and an MLP projector (which transformers cannot load) export to ONNX."""
    d = audio_model_dir(
        root, "ext", tiny_decoder=True, adaptor_layers=1, layer_weighting=True, projector="mlp"
    )
    report = export_onnx(d, root / "ext-onnx")
    assert report.max_logit_diff < 1e-4
    loaded = load_model_dir(d)
    arrays = waveforms(seconds=(0.7, 1.0), seed=2)
    onnx_model = OnnxSpeechModel(root / "ext-onnx")
    dec = np.array([[101, 2054, 2003]] * 2)
    with torch.no_grad():
        want = loaded.model(
            **featurize(loaded.feature_extractor, arrays, "cpu"), decoder_input_ids=torch.tensor(dec)
        ).logits.numpy()
    assert np.abs(onnx_model.logits(arrays, dec) - want).max() < 1e-4


def test_runner_refuses_a_directory_that_is_not_an_export(model_dir):
    with pytest.raises(OnnxModelError, match="speeched export MODEL --to onnx"):
        load_onnx_model(model_dir)
