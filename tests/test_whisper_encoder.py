"""speeched's Whisper encoder: transformers' own at the window, and any shorter input sliced exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_bert_decoder_dir
from test_alignment import CHAR_VOCAB
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from speeched import SpeechEncoderDecoderModel
from speeched.inference.alignment import ctc_log_probs
from speeched.inference.features import featurize
from speeched.modeling.whisper_encoder import AnyLengthWhisperEncoder, any_length


def _config(positions: int, layerdrop: float = 0.0) -> WhisperConfig:
    return WhisperConfig(
        d_model=16, encoder_layers=3, encoder_attention_heads=2, encoder_ffn_dim=24, num_mel_bins=8,
        max_source_positions=positions, encoder_layerdrop=layerdrop,
    )  # fmt: skip


def _pair(positions: int) -> tuple[WhisperEncoder, AnyLengthWhisperEncoder]:
    torch.manual_seed(0)
    ref = WhisperEncoder(_config(positions)).eval()
    ours = any_length(WhisperEncoder(_config(positions)))
    ours.load_state_dict(ref.state_dict())
    return ref, ours.eval()


def test_at_the_window_it_is_transformers_encoder() -> None:
    ref, ours = _pair(20)
    assert isinstance(ours, AnyLengthWhisperEncoder)
    x = torch.randn(2, 8, 40)
    a, b = ref(x, output_hidden_states=True), ours(x, output_hidden_states=True)
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, rtol=0, atol=0)
    assert len(b.hidden_states) == len(a.hidden_states) == 4
    for got, want in zip(b.hidden_states, a.hidden_states, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("frames", [24, 13])  # even, and odd (the stride-2 conv rounds up)
def test_a_shorter_input_is_a_window_of_that_length(frames: int) -> None:
    _, ours = _pair(20)
    positions = (frames + 1) // 2
    short = WhisperEncoder(_config(positions)).eval()  # transformers' encoder with a window of `frames`
    state = ours.state_dict()
    state["embed_positions.weight"] = state["embed_positions.weight"][:positions]
    short.load_state_dict(state)
    x = torch.randn(2, 8, frames)
    pad = frames % 2  # transformers' encoder takes exactly 2 x positions frames; one zero frame evens it
    want = short(torch.nn.functional.pad(x, (0, pad)), output_hidden_states=True) if pad else None
    got = ours(x, output_hidden_states=True)
    assert got.last_hidden_state.shape == (2, positions, 16)
    if want is None:
        want = short(x, output_hidden_states=True)
        for g, w in zip(got.hidden_states, want.hidden_states, strict=True):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-6)
        torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="window is 40 log-mel frames"):
        ours(torch.randn(1, 8, 42))


def test_layerdrop_in_train_mode_drops_layers_and_their_states() -> None:
    torch.manual_seed(3)
    enc = any_length(WhisperEncoder(_config(20, layerdrop=0.5))).train()
    counts = {len(enc(torch.randn(1, 8, 10), output_hidden_states=True).hidden_states) for _ in range(30)}
    assert len(counts) > 1 and max(counts) <= 4


def _whisper_dir(path, encoder_layers: int) -> None:
    """A tiny random Whisper checkpoint (2 s window) for `init --encoder`."""
    config = WhisperConfig(
        d_model=32, encoder_layers=encoder_layers, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=80,
        max_source_positions=100, vocab_size=100, pad_token_id=1, bos_token_id=2, eos_token_id=2,
        decoder_start_token_id=3,
    )  # fmt: skip
    WhisperModel(config).save_pretrained(path)


def test_composed_model_decodes_short_inputs_with_either_padding(tmp_path) -> None:
    _whisper_dir(tmp_path / "whisper", encoder_layers=2)
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(tmp_path / "whisper"), str(tiny_bert_decoder_dir(tmp_path))
    ).eval()
    audio = [np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 12000)]
    for padding, frames in (("window", 200), ("longest", 75)):
        fe = WhisperFeatureExtractor(feature_size=80, chunk_length=2, speeched_padding=padding)
        # inference pads as training does (it once padded Whisper's inputs to the longest, whatever the extractor)
        inputs = featurize(fe, audio, "cpu")
        assert inputs["input_features"].shape == (2, 80, frames)
        ids = model.generate(**inputs, max_new_tokens=3)
        assert ids.shape[0] == 2
    # the CTC head's frames for word times: 20 ms each and only the audio's, whether or not the extractor
    # pads to its window (it once read a window-padded input as the audio: times 4x too short, 0.12 s off)
    model.add_ctc_head(CHAR_VOCAB)
    model.config.ctc_units = "char"
    model.eval()
    for padding in ("window", "longest"):
        fe = WhisperFeatureExtractor(feature_size=80, chunk_length=2, speeched_padding=padding)
        lp, seconds = ctc_log_probs(model, fe, audio[0])  # 0.5 s
        assert seconds == 0.02 and lp.shape[0] == 25


def test_onnx_export_keeps_whisper_frames_dynamic(tmp_path) -> None:
    """Whisper's features are (batch, mel bins, frames): the export once left the frames axis fixed, so any
    input of another length than the traced probe failed in onnxruntime."""
    from export_helpers import waveforms
    from helpers import minilm_path

    from speeched.export.onnx_export import export_onnx
    from speeched.inference.onnx_backend import OnnxSpeechModel
    from speeched.modeling.compose import ComposeSpec, init_model
    from speeched.modeling.model_dir import load_model_dir

    _whisper_dir(tmp_path / "whisper", encoder_layers=1)
    WhisperFeatureExtractor(feature_size=80, chunk_length=2, speeched_padding="longest").save_pretrained(
        tmp_path / "whisper"
    )
    spec = ComposeSpec(encoder=str(tmp_path / "whisper"), decoder=minilm_path(),
                       decoder_options={"num_hidden_layers": 1})  # fmt: skip
    init_model(spec, tmp_path / "m")
    report = export_onnx(tmp_path / "m", tmp_path / "onnx")
    assert report.max_logit_diff < 1e-4
    loaded = load_model_dir(tmp_path / "m")
    arrays = waveforms(seconds=(1.7, 0.5), seed=3)  # other lengths than the export traced and checked
    dec = np.array([[101, 2054, 2003]] * 2)
    with torch.no_grad():
        want = loaded.model(
            **featurize(loaded.feature_extractor, arrays, "cpu"), decoder_input_ids=torch.tensor(dec)
        ).logits.numpy()
    assert np.abs(OnnxSpeechModel(tmp_path / "onnx").logits(arrays, dec) - want).max() < 1e-4


def test_training_with_the_feature_cache_on_a_longest_padding_whisper(tmp_path) -> None:
    """A converted Whisper (`--pad longest`) trains with `data.feature_cache: true`: the cached features are
    (mel bins, frames) and padded along frames (the collator once padded axis 0, the mel bins, and failed)."""
    from helpers import tone_corpus, write_tiny_recipe

    from speeched.training.recipe import load_recipe
    from speeched.training.trainer import train

    _whisper_dir(tmp_path / "whisper", encoder_layers=1)
    WhisperFeatureExtractor(feature_size=80, chunk_length=2, speeched_padding="longest").save_pretrained(
        tmp_path / "whisper"
    )
    corpus = tone_corpus(tmp_path / "corpus", num=8, dev=2)
    recipe = write_tiny_recipe(
        tmp_path, corpus, model={"encoder": str(tmp_path / "whisper")}, data={"feature_cache": True},
        train={"max_steps": 3, "seed": 0}, eval={"every_steps": 3, "max_new_tokens": 3},
    )  # fmt: skip
    result = train(load_recipe(recipe, output_dir=tmp_path / "run"), progress=False)
    cached = list((tmp_path / "run" / "feature_cache").rglob("*.len.npy"))
    assert len(cached) == 8
    assert all(np.isfinite(h["loss"]) for h in result.history) and len(result.history) == 3
