"""`speeched export --to transformers`, the model card, --push-to-hub and the export's bad-input table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from export_helpers import audio_model_dir, set_decoding, waveforms, write_wavs
from helpers import make_tiny_model_dir
from typer.testing import CliRunner

from speeched.cli import app
from speeched.export import write_model_card
from speeched.inference.features import featurize
from speeched.modeling.model_dir import load_model_dir


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def plain(root) -> Path:
    d = audio_model_dir(root, "plain")
    set_decoding(d, num_beams=3, ctc_weight=0.0)
    return d


@pytest.fixture(scope="module")
def exported(root, plain) -> Path:
    out = root / "plain-hf"
    result = run("export", str(plain), str(out), "--to", "transformers")
    assert result.exit_code == 0, result.output
    assert "exported" in result.output
    return out


def test_transformers_reload_has_equal_logits(plain, exported):
    from transformers import AutoModelForSpeechSeq2Seq, SpeechEncoderDecoderModel

    ours = load_model_dir(plain)
    theirs = AutoModelForSpeechSeq2Seq.from_pretrained(str(exported)).eval()
    assert type(theirs) is SpeechEncoderDecoderModel
    inputs = featurize(ours.feature_extractor, waveforms(), "cpu")
    dec = torch.tensor([[101, 2000, 3000, 4000]] * 4)
    with torch.no_grad():
        a = ours.model(**inputs, decoder_input_ids=dec).logits
        b = theirs(**inputs, decoder_input_ids=dec).logits
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    gen = json.loads((exported / "generation_config.json").read_text())
    assert gen["num_beams"] == 3  # config.decoding carried over
    assert gen["decoder_start_token_id"] == 101 and gen["eos_token_id"] == 102
    assert gen["max_length"] > 20  # the pipeline must not cut transcripts at 20 tokens
    cfg = json.loads((exported / "config.json").read_text())
    assert not {"ctc_vocab", "coupling", "decoding", "adaptor_layers"} & set(cfg)


def test_pipeline_text_equals_speeched_transcribe(root, plain, exported):
    """transformers' pipeline on arrays == `speeched transcribe --ctc-weight 0 --num-beams 1` on the files."""
    from transformers import pipeline

    # Equal durations: transcribe batches files and caps tokens by a batch's longest audio.
    wavs = write_wavs(root / "wavs", waveforms(seconds=(0.6, 0.6, 0.6)))
    result = run(
        "transcribe", *map(str, wavs), "--model", str(plain), "--ctc-weight", "0", "--num-beams", "1",
        "--format", "json", "--output", str(root / "tx"), "--segment", "fixed",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ours = {}
    for p in wavs:
        data = json.loads((root / "tx" / f"{p.stem}.json").read_text())
        ours[p.name] = data["text"].strip()
    asr = pipeline("automatic-speech-recognition", model=str(exported))
    for p in wavs:
        audio, sr = sf.read(p, dtype="float32")
        cap = int(np.ceil(15.0 * len(audio) / sr)) + 10  # transcribe's token cap (15 tokens/s + 10)
        text = asr(
            {"raw": audio, "sampling_rate": sr}, generate_kwargs={"max_new_tokens": cap, "num_beams": 1}
        )
        assert text["text"].strip() == ours[p.name], p.name
    assert len(set(ours.values())) == len(ours)  # the transcripts depend on the audio: the test can fail


def test_pipeline_text_equals_greedy_generate(plain, exported):
    from transformers import pipeline

    ours = load_model_dir(plain)
    asr = pipeline("automatic-speech-recognition", model=str(exported))
    arrays = waveforms(seconds=(0.8, 0.5), seed=9)
    got = asr(list(arrays), generate_kwargs={"max_new_tokens": 8, "num_beams": 1})
    for a, g in zip(arrays, got, strict=True):
        with torch.no_grad():
            ids = ours.model.generate(
                **featurize(ours.feature_extractor, [a], "cpu"),
                max_new_tokens=8,
                num_beams=1,
                do_sample=False,
            )
        assert g["text"].strip() == ours.tokenizer.decode(ids[0], skip_special_tokens=True).strip()


def test_ctc_head_dropped_with_the_dev_scores_of_both_decodings(root):
    d = make_tiny_model_dir(root / "ctc", ctc_weight=0.3, ctc_vocab=["<blank>", "<unk>", "|", "a", "b"])
    set_decoding(d, num_beams=2, ctc_weight=0.3)
    write_model_card(
        d,
        {
            "metrics": [
                {
                    "metric": "wer",
                    "value": 0.012,
                    "dataset": "dev",
                    "decoding": {"num_beams": 2, "ctc_weight": 0.3},
                },
                {
                    "metric": "wer",
                    "value": 0.65,
                    "dataset": "dev",
                    "decoding": {"num_beams": 2, "ctc_weight": 0.0},
                },
            ]
        },
    )
    out = root / "ctc-hf"
    result = run("export", str(d), str(out), "--to", "transformers")
    assert result.exit_code == 0, result.output
    assert "dropping the CTC head" in result.output
    assert "attention-only" in result.output and "wer=0.012" in result.output and "wer=0.65" in result.output
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if k.startswith("ctc_head")]  # noqa: SIM118
    card = (out / "README.md").read_text()
    assert "attention-only" in card


def test_model_card_has_everything(root, plain):
    info = {
        "name": "digits-demo",
        "encoder": "facebook/wav2vec2-base",
        "decoder": "sentence-transformers/all-MiniLM-L6-v2",
        "language": "en",
        "license": "apache-2.0",
        "data": [
            {"name": "synth-digits train", "hours": 0.83, "role": "train", "utterances": 2000},
            {"name": "synth-digits dev", "hours": 0.08, "role": "dev", "utterances": 200},
        ],
        "recipe": {"optim": {"lr": 0.001}, "train": {"max_steps": 600}},
        "metrics": [
            {"metric": "wer", "value": 0.025, "dataset": "dev", "normalizer": "whisper_en",
             "decoding": {"num_beams": 4, "ctc_weight": 0.3}},
        ],
        "compute": {"device": "cpu (2 cores)", "wall_seconds": 682, "steps": 600},
        "synthetic": True,
    }  # fmt: skip
    readme = write_model_card(plain, info)
    text = readme.read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["language"] == ["en"] and front["license"] == "apache-2.0"
    assert front["pipeline_tag"] == "automatic-speech-recognition"
    result = front["model-index"][0]["results"][0]
    assert result["metrics"][0] == {"type": "wer", "value": 2.5, "name": result["metrics"][0]["name"]}
    assert "whisper_en" in result["metrics"][0]["name"]
    assert "WER %" in result["metrics"][0]["name"]
    assert "sentence-transformers/all-MiniLM-L6-v2" in front["base_model"]
    for needle in ("synth-digits train", "0.83", "whisper_en", "beams 4, ctc_weight 0.3", "wall seconds: 682",
                   "synthetic speech", "lr: 0.001", "bert, 1 layers, width 384", "wav2vec2, 2 layers, width 32"):  # fmt: skip
        assert needle in text, needle
    assert json.loads((plain / "model_card.json").read_text())["compute"]["steps"] == 600


def test_push_to_hub_builds_the_upload_call(root, plain, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", {"token": token}))

        def create_repo(self, **kwargs):
            calls.append(("create_repo", kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            assert (Path(kwargs["folder_path"]) / "model.safetensors").is_file()
            return type("Info", (), {"commit_url": "https://huggingface.co/me/demo/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = root / "pushed"
    result = run(
        "export", str(plain), str(out), "--to", "transformers", "--push-to-hub", "me/demo", "--private"
    )
    assert result.exit_code == 0, result.output
    assert calls[1] == (
        "create_repo",
        {"repo_id": "me/demo", "repo_type": "model", "private": True, "exist_ok": True},
    )
    assert calls[2][0] == "upload_folder"
    assert calls[2][1]["folder_path"] == str(out) and calls[2][1]["repo_id"] == "me/demo"
    assert "uploaded" in result.output and "commit/1" in result.output


# ------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def adaptor_model(root) -> Path:
    return make_tiny_model_dir(root / "adaptor", adaptor_layers=1)


@pytest.fixture(scope="module")
def prefix_model(root) -> Path:
    return make_tiny_model_dir(root / "prefix", coupling="prefix")


BAD = [
    # (case, args builder, first line must contain)
    ("not a model dir", lambda r, p, a, x: [str(r), str(r / "o1"), "--to", "transformers"], "is not a model directory"),
    ("missing dir", lambda r, p, a, x: [str(r / "nope"), str(r / "o2"), "--to", "onnx"], "is not a model directory"),
    ("output exists", lambda r, p, a, x: [str(p), str(r), "--to", "transformers"], "already exists"),
    ("output exists onnx", lambda r, p, a, x: [str(p), str(p), "--to", "onnx"], "already exists"),
    ("unknown target", lambda r, p, a, x: [str(p), str(r / "o3"), "--to", "tflite"], "is not one of transformers, onnx"),
    ("quantize hf", lambda r, p, a, x: [str(p), str(r / "o4"), "--to", "transformers", "--quantize", "int8"], "onnx only"),
    ("bad quantize", lambda r, p, a, x: [str(p), str(r / "o5"), "--to", "onnx", "--quantize", "int4"], "int4"),
    ("adaptor to hf", lambda r, p, a, x: [str(a), str(r / "o6"), "--to", "transformers"], "length adaptor"),
    ("prefix to hf", lambda r, p, a, x: [str(x), str(r / "o7"), "--to", "transformers"], "prefix coupling"),
    ("prefix to onnx", lambda r, p, a, x: [str(x), str(r / "o8"), "--to", "onnx"], "prefix coupling"),
    ("bad hub repo", lambda r, p, a, x: [str(p), str(r / "o9"), "--to", "transformers", "--push-to-hub", "noslash"], "OWNER/NAME"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "build", "needle"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_with_what_to_do(root, plain, adaptor_model, prefix_model, case, build, needle):
    result = run("export", *build(root, plain, adaptor_model, prefix_model))
    assert result.exit_code == 2, (case, result.output)
    first = result.output.strip().splitlines()[0]
    assert first.startswith("speeched export:"), first
    assert needle in first, first
    assert "Traceback" not in result.output
    leftovers = [p.name for p in root.iterdir() if p.name.endswith(".partial")]
    assert not leftovers
