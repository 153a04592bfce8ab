"""Parity with transformers' SpeechEncoderDecoderModel on five encoder/decoder pairs.

A mixin of checks, one thin class per pair (as in transformers' own tests). Save/load checks compare
against the *reloaded* model, never the model with itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import minilm_path, tiny_bert_decoder_dir, tiny_encoder_config, tiny_encoder_dir
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    BartConfig,
    BertConfig,
    GPT2Config,
)
from transformers import SpeechEncoderDecoderModel as RefModel

from speeched import SpeechEncoderDecoderModel
from speeched.modeling.halves import encoder_from_config

ATOL = 1e-5


def _waveform_batch(batch: int = 2, seconds: float = 1.0):
    g = torch.Generator().manual_seed(0)
    n = int(16000 * seconds)
    x = torch.randn(batch, n, generator=g)
    mask = torch.ones(batch, n, dtype=torch.long)
    mask[1, int(n * 0.6) :] = 0
    x[1, int(n * 0.6) :] = 0.0
    return {"input_values": x, "attention_mask": mask}


def _feature_batch(batch: int = 2, frames: int = 120):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, frames, 80, generator=g)
    mask = torch.ones(batch, frames, dtype=torch.long)
    mask[1, 80:] = 0
    return {"input_features": x, "attention_mask": mask}


class ParityChecks:
    """Subclasses build (ours, reference, inputs) for one pair."""

    inputs_fn = staticmethod(_waveform_batch)

    def build(self, tmp_path: Path) -> tuple[SpeechEncoderDecoderModel, RefModel]:
        raise NotImplementedError

    def _pair(self, tmp_path):
        ours, ref = self.build(tmp_path)
        ref.load_state_dict(ours.state_dict(), strict=True)  # same parameter names, both directions
        for name in ("decoder_start_token_id", "pad_token_id", "eos_token_id"):
            setattr(ref.config, name, getattr(ours.config, name))
        ref.generation_config = ours.generation_config
        return ours.eval(), ref.eval()

    def _labels(self, ours):
        eos = ours.config.eos_token_id
        return torch.tensor([[5, 6, 7, eos], [8, 9, eos, -100]])

    def test_logits_and_loss_match(self, tmp_path):
        ours, ref = self._pair(tmp_path)
        inputs = self.inputs_fn()
        labels = self._labels(ours)
        with torch.no_grad():
            a = ours(**inputs, labels=labels)
            b = ref(**inputs, labels=labels)
        assert (a.logits - b.logits).abs().max().item() <= ATOL
        assert a.loss.item() == pytest.approx(b.loss.item(), abs=1e-5)

    def test_generate_matches(self, tmp_path):
        ours, ref = self._pair(tmp_path)
        inputs = self.inputs_fn()
        for kwargs in ({"num_beams": 1}, {"num_beams": 4}):
            a = ours.generate(**inputs, max_new_tokens=6, do_sample=False, **kwargs)
            b = ref.generate(**inputs, max_new_tokens=6, do_sample=False, **kwargs)
            assert torch.equal(a, b), kwargs

    def test_checkpoints_load_both_ways(self, tmp_path):
        ours, ref = self._pair(tmp_path)
        inputs = self.inputs_fn()
        labels = self._labels(ours)
        ours.save_pretrained(tmp_path / "ours")
        ref.save_pretrained(tmp_path / "ref")
        ref_from_ours = RefModel.from_pretrained(tmp_path / "ours").eval()
        ours_from_ref = SpeechEncoderDecoderModel.from_pretrained(tmp_path / "ref").eval()
        with torch.no_grad():
            expected = ours(**inputs, labels=labels).logits
            for reloaded in (ref_from_ours, ours_from_ref):
                got = reloaded(**inputs, labels=labels).logits
                assert (got - expected).abs().max().item() <= ATOL


class TestWav2Vec2MiniLM(ParityChecks):
    """Pair 1: Wav2Vec2Model + BertLMHeadModel with the real MiniLM weights."""

    def build(self, tmp_path):
        enc = tiny_encoder_dir(tmp_path, "wav2vec2", with_weights=True)
        ours = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(str(enc), minilm_path())
        ref = RefModel.from_encoder_decoder_pretrained(str(enc), minilm_path())
        return ours, ref

    def test_real_decoder_weights_loaded(self, tmp_path):
        ours, _ = self.build(tmp_path)
        from safetensors.torch import load_file

        real = load_file(Path(minilm_path()) / "model.safetensors")
        got = ours.decoder.bert.embeddings.word_embeddings.weight
        assert torch.equal(got, real["embeddings.word_embeddings.weight"])
        assert torch.equal(
            ours.decoder.bert.encoder.layer[0].attention.self.query.weight,
            real["encoder.layer.0.attention.self.query.weight"],
        )
        assert (ours.config.decoder_start_token_id, ours.config.pad_token_id, ours.config.eos_token_id) == (
            101,
            0,
            102,
        )


class TestSpeech2TextMiniLM(ParityChecks):
    """Pair 2: Speech2TextEncoder (log-mel) + BertLMHeadModel.

    The reference can only be built from ready modules here: from a config it builds a whole
    Speech2TextModel as "encoder", so its `from_pretrained` cannot read a Speech2Text-encoder checkpoint
    (its own or ours). Ours takes the encoder half in both cases; that direction is what we check.
    """

    inputs_fn = staticmethod(_feature_batch)

    def build(self, tmp_path):
        encoder = encoder_from_config(tiny_encoder_config("speech2text"))
        dec_cfg = BertConfig.from_pretrained(minilm_path(), is_decoder=True, add_cross_attention=True)
        decoder = AutoModelForCausalLM.from_pretrained(minilm_path(), config=dec_cfg)
        ours = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
            encoder_model=encoder,
            decoder_model=decoder,
            tokenizer=None,
            decoder_start_token_id=101,
            eos_token_id=102,
        )
        ref = RefModel(encoder=encoder_from_config(tiny_encoder_config("speech2text")), decoder=decoder)
        return ours, ref

    def test_checkpoints_load_both_ways(self, tmp_path):
        ours, ref = self._pair(tmp_path)
        inputs = self.inputs_fn()
        ref.save_pretrained(tmp_path / "ref")
        ours.save_pretrained(tmp_path / "ours")
        with torch.no_grad():
            expected = ref(**inputs, decoder_input_ids=torch.tensor([[101, 5], [101, 6]])).logits
            for path in ("ref", "ours"):
                reloaded = SpeechEncoderDecoderModel.from_pretrained(tmp_path / path).eval()
                got = reloaded(**inputs, decoder_input_ids=torch.tensor([[101, 5], [101, 6]])).logits
                assert (got - expected).abs().max().item() <= ATOL


def _gpt2_dir(tmp_path: Path) -> Path:
    path = tmp_path / "gpt2"
    GPT2Config(
        vocab_size=99, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=98, eos_token_id=98
    ).save_pretrained(path)
    return path


class TestHubertGPT2(ParityChecks):
    """Pair 3: HubertModel + GPT2LMHeadModel with cross-attention (reference built via its constructor)."""

    def build(self, tmp_path):
        enc = tiny_encoder_dir(tmp_path, "hubert", with_weights=True)
        ours = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(str(enc), str(_gpt2_dir(tmp_path)))
        dec_cfg = GPT2Config.from_pretrained(_gpt2_dir(tmp_path), add_cross_attention=True)
        ref = RefModel(
            encoder=AutoModel.from_pretrained(enc), decoder=AutoModelForCausalLM.from_config(dec_cfg)
        )
        return ours, ref

    def test_gpt2_composes_with_cross_attention(self, tmp_path):
        ours, _ = self.build(tmp_path)
        assert ours.config.decoder.add_cross_attention is True
        assert any("crossattention" in n for n, _ in ours.decoder.named_modules())
        assert ours.config.decoder_start_token_id == 98 and ours.config.eos_token_id == 98


class TestWavLMBart(ParityChecks):
    """Pair 4: WavLMModel + BartForCausalLM."""

    def build(self, tmp_path):
        enc = tiny_encoder_dir(tmp_path, "wavlm", with_weights=True)
        dec_path = tmp_path / "bart"
        BartConfig(
            vocab_size=99,
            d_model=32,
            encoder_layers=2,  # BartForCausalLM sizes its cache from encoder_layers
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=37,
            decoder_ffn_dim=37,
            max_position_embeddings=64,
        ).save_pretrained(dec_path)
        ours = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(str(enc), str(dec_path))
        dec_cfg = BartConfig.from_pretrained(dec_path, is_decoder=True, add_cross_attention=True)
        ref = RefModel(
            encoder=AutoModel.from_pretrained(enc), decoder=AutoModelForCausalLM.from_config(dec_cfg)
        )
        return ours, ref


class TestData2VecProjection(ParityChecks):
    """Pair 5: Data2VecAudioModel (width 48) + a BERT decoder of width 32: the enc_to_dec_proj path."""

    def build(self, tmp_path):
        enc = tiny_encoder_dir(tmp_path, "data2vec-audio", with_weights=True)
        dec = tiny_bert_decoder_dir(tmp_path, hidden_size=32)
        ours = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(str(enc), str(dec))
        # The reference needs decoder weights on disk: save ours's decoder for it.
        ours.decoder.save_pretrained(tmp_path / "dec-weights")
        for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
            if (dec / f).exists():
                shutil.copy(dec / f, tmp_path / "dec-weights" / f)
        ref = RefModel.from_encoder_decoder_pretrained(str(enc), str(tmp_path / "dec-weights"))
        assert hasattr(ours, "enc_to_dec_proj")
        return ours, ref
