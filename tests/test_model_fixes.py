"""What the reference gets wrong and ours must get right (see ../shared/README.md), plus core features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import minilm_path, tiny_bert_decoder_dir, tiny_encoder_dir
from transformers import (
    AutoConfig,
    LlamaConfig,
    WhisperConfig,
    WhisperModel,
)

from speeched import SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel
from speeched.modeling.tokens import SpecialTokenError


def _wave(n: int = 8000):
    g = torch.Generator().manual_seed(1)
    return {
        "input_values": torch.randn(2, n, generator=g),
        "attention_mask": torch.ones(2, n, dtype=torch.long),
    }


def test_wav2vec2_adapter_with_other_width_works(tmp_path):
    """Reference sizes enc_to_dec_proj from hidden_size and crashes on the first forward; ours works."""
    enc = tiny_encoder_dir(
        tmp_path, "wav2vec2", add_adapter=True, output_hidden_size=24, adapter_stride=2, num_adapter_layers=1
    )
    dec = tiny_bert_decoder_dir(tmp_path, hidden_size=32)
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(str(enc), str(dec))
    assert model.enc_to_dec_proj.in_features == 24
    out = model(**_wave(), labels=torch.tensor([[5, 102], [6, 102]]))
    assert out.logits.shape == (2, 2, 30522)
    assert torch.isfinite(out.loss)


def test_encoder_taken_from_whisper_checkpoint(tmp_path):
    config = WhisperConfig(
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        num_mel_bins=80,
        max_source_positions=50,
        vocab_size=100,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=2,
        decoder_start_token_id=3,
    )
    whisper = WhisperModel(config)
    whisper.save_pretrained(tmp_path / "whisper")
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(tmp_path / "whisper"), str(tiny_bert_decoder_dir(tmp_path))
    )
    # transformers' WhisperEncoder, as speeched's subclass that also takes inputs shorter than the window
    assert type(model.encoder).__name__ == "AnyLengthWhisperEncoder"
    assert type(model.encoder).__mro__[1].__name__ == "WhisperEncoder"
    assert torch.equal(model.encoder.conv1.weight, whisper.encoder.conv1.weight)
    feats = torch.randn(1, 80, 100)  # whisper expects 2 × max_source_positions frames
    ids = model.generate(input_features=feats, max_new_tokens=3)
    assert ids.shape[0] == 1
    # Round trip: a config-built model takes the encoder half again.
    model.save_pretrained(tmp_path / "m")
    again = SpeechEncoderDecoderModel.from_pretrained(tmp_path / "m")
    assert torch.equal(again.encoder.conv1.weight, whisper.encoder.conv1.weight)


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "wavlm", "data2vec-audio"])
def test_freeze_feature_encoder_every_cnn_family(tmp_path, kind):
    enc = tiny_encoder_dir(tmp_path, kind)
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(enc), str(tiny_bert_decoder_dir(tmp_path))
    )
    assert model.freeze_feature_encoder() is True
    cnn = model.encoder.feature_extractor
    assert all(not p.requires_grad for p in cnn.parameters())
    assert any(p.requires_grad for p in model.encoder.encoder.parameters())


def test_freeze_feature_encoder_is_a_clear_noop_for_log_mel(tmp_path, caplog):
    enc = tiny_encoder_dir(tmp_path, "speech2text")
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(enc), str(tiny_bert_decoder_dir(tmp_path))
    )
    with caplog.at_level("INFO", logger="speeched"):
        assert model.freeze_feature_encoder() is False
    assert "nothing to freeze" in caplog.text
    assert all(p.requires_grad for p in model.parameters())


def test_decoder_without_cross_attention_is_refused(tmp_path):
    llama = tmp_path / "llama"
    LlamaConfig(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        bos_token_id=1,
        eos_token_id=2,
    ).save_pretrained(llama)
    enc = tiny_encoder_dir(tmp_path, "wav2vec2")
    with pytest.raises(ValueError, match="no cross-attention layers") as err:
        SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(str(enc), str(llama))
    assert "add_cross_attention" in str(err.value) and "prefix" in str(err.value)
    # Building from a config is refused the same way (never a silent run that ignores the audio).
    cfg = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
        AutoConfig.from_pretrained(enc), LlamaConfig.from_pretrained(llama)
    )
    with pytest.raises(ValueError, match="no cross-attention layers"):
        SpeechEncoderDecoderModel(cfg)


def test_special_tokens_from_bert_tokenizer_and_generation_kwargs(tmp_path):
    enc = tiny_encoder_dir(tmp_path, "wav2vec2")
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(enc), minilm_path(), decoder_num_hidden_layers=1, num_beams=3, max_new_tokens=7
    )
    assert (model.config.decoder_start_token_id, model.config.pad_token_id, model.config.eos_token_id) == (
        101,
        0,
        102,
    )
    gen = model.generation_config
    assert (gen.decoder_start_token_id, gen.pad_token_id, gen.eos_token_id) == (101, 0, 102)
    assert gen.num_beams == 3 and gen.max_new_tokens == 7
    assert model.config.decoder.num_hidden_layers == 1 and len(model.decoder.bert.encoder.layer) == 1
    model.save_pretrained(tmp_path / "m")
    again = SpeechEncoderDecoderModel.from_pretrained(tmp_path / "m")
    assert again.generation_config.num_beams == 3 and again.config.eos_token_id == 102


def test_unresolvable_special_tokens_fail_clearly(tmp_path):
    enc = tiny_encoder_dir(tmp_path, "wav2vec2")
    dec = tmp_path / "bare-bert"
    from transformers import BertConfig

    BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    ).save_pretrained(dec)
    with pytest.raises(SpecialTokenError, match="eos_token_id"):
        SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(str(enc), str(dec))


def test_missing_hub_id_offline_says_pass_a_local_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="not found locally.*pass a local directory"):
        SpeechEncoderDecoderModel.from_encoder_decoder_pretrained("nobody/no-such-encoder", minilm_path())


def _small_model(tmp_path: Path, **kw) -> SpeechEncoderDecoderModel:
    enc = tiny_encoder_dir(
        tmp_path,
        "wav2vec2",
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        mask_time_prob=0.0,
        layerdrop=0.0,
    )
    return SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(enc),
        str(tiny_bert_decoder_dir(tmp_path)),
        decoder_hidden_dropout_prob=0.0,
        decoder_attention_probs_dropout_prob=0.0,
        **kw,
    )


def test_loss_sum_and_count_for_exact_accumulation(tmp_path):
    model = _small_model(tmp_path).eval()
    labels = torch.tensor([[5, 6, 102], [7, 102, -100]])
    mean = model(**_wave(), labels=labels)
    summed = model(**_wave(), labels=labels, loss_reduction="sum")
    assert int(summed.num_target_tokens) == 5
    assert summed.loss.item() == pytest.approx(mean.loss.item() * 5, rel=1e-6)
    ref = torch.nn.functional.cross_entropy(
        mean.logits.reshape(-1, 30522), labels.reshape(-1), ignore_index=-100
    )
    assert mean.loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_gradient_checkpointing_gives_same_gradients(tmp_path):
    torch.manual_seed(0)
    model = _small_model(tmp_path)
    model.config.encoder.layerdrop = 0.0
    model.train()
    labels = torch.tensor([[5, 6, 102], [7, 102, -100]])
    model(**_wave(), labels=labels).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model(**_wave(), labels=labels).loss.backward()
    for name, grad in plain.items():
        assert torch.allclose(model.get_parameter(name).grad, grad, atol=1e-6, rtol=1e-4), name


def test_sdpa_and_eager_agree(tmp_path):
    enc = tiny_encoder_dir(tmp_path, "wav2vec2")
    dec = tiny_bert_decoder_dir(tmp_path)
    outs = []
    for impl in ("eager", "sdpa"):
        torch.manual_seed(0)
        m = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
            str(enc), str(dec), encoder_attn_implementation=impl, decoder_attn_implementation=impl
        ).eval()
        if outs:
            m.load_state_dict(outs[0][0])
        with torch.no_grad():
            outs.append(
                (m.state_dict(), m(**_wave(), decoder_input_ids=torch.tensor([[101, 5], [101, 6]])).logits)
            )
    assert (outs[0][1] - outs[1][1]).abs().max().item() < 1e-5


# ------------------------------------------------------------------ layer weighting with layerdrop (issue 15.7)
def _layer_weighted(tmp_path: Path, layerdrop: float, caplog) -> SpeechEncoderDecoderModel:
    """wav2vec2-base's released training settings (Wav2Vec2Config defaults: layerdrop, dropouts,
    mask_time_prob 0.05) at a tiny size, composed with layer weighting, in train mode."""
    enc = tiny_encoder_dir(tmp_path, "wav2vec2", num_hidden_layers=3, layerdrop=layerdrop)
    assert AutoConfig.from_pretrained(enc).layerdrop == layerdrop
    with caplog.at_level("WARNING", logger="speeched"):
        model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
            str(enc), str(tiny_bert_decoder_dir(tmp_path)), layer_weighting=True
        )
    return model.train()


@pytest.mark.parametrize("layerdrop", [0.1, 0.5])
def test_layer_weighting_switches_encoder_layerdrop_off_and_trains(tmp_path, caplog, layerdrop):
    torch.manual_seed(0)
    model = _layer_weighted(tmp_path, layerdrop, caplog)
    assert f"encoder layerdrop={layerdrop} switched off" in caplog.text
    inner = model.encoder.encoder  # the module that draws the random layer skips
    assert model.config.encoder.layerdrop == 0.0 and inner.config.layerdrop == 0.0
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    labels = torch.tensor([[5, 6, 102], [7, 102, -100]])
    for _ in range(12):  # with layerdrop 0.5 and 3 layers, 12 forwards all keeping every layer: p ≈ 1e-11
        out = model(**_wave(), labels=labels)
        out.loss.backward()
        assert model.layer_weighting.logits.grad is not None
        assert torch.count_nonzero(model.layer_weighting.logits.grad) > 0
        opt.step()
        opt.zero_grad()
    assert not torch.equal(model.layer_weights(), torch.full((4,), 0.25))  # the weights did learn
    model.save_pretrained(tmp_path / "saved")
    assert SpeechEncoderDecoderConfig.from_pretrained(tmp_path / "saved").encoder.layerdrop == 0.0


def test_layerdrop_set_back_on_is_a_clear_error_not_a_count_mismatch(tmp_path, caplog):
    """The composite config reaches the encoder's submodules, so turning layerdrop on again takes effect
    (the reference only rebinds the top module's config); the error then says what to do."""
    torch.manual_seed(0)
    model = _layer_weighted(tmp_path, 0.5, caplog)
    model.config.encoder.layerdrop = 0.5
    assert model.encoder.encoder.config.layerdrop == 0.5
    with pytest.raises(ValueError, match=r"encoder layerdrop > 0 skips layers in training; set it to 0"):
        for _ in range(12):
            model(**_wave(), labels=torch.tensor([[5, 102], [6, 102]]))
    model.eval()  # no layer is skipped in eval mode: every hidden state is there
    with torch.no_grad():
        assert torch.isfinite(model(**_wave(), labels=torch.tensor([[5, 102], [6, 102]])).loss)


def test_layerdrop_is_kept_without_layer_weighting(tmp_path):
    enc = tiny_encoder_dir(tmp_path, "wav2vec2", layerdrop=0.1)
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(enc), str(tiny_bert_decoder_dir(tmp_path))
    )
    assert model.config.encoder.layerdrop == 0.1 and model.encoder.encoder.config.layerdrop == 0.1
