"""Fine-tuning methods freeze exactly what they claim; LoRA starts as a no-op and merges exactly."""

from __future__ import annotations

import pytest
import torch
from extension_helpers import stable_encoder_dir, tiny_gpt2_dir, tiny_llama_dir, train_steps, waves
from helpers import tiny_bert_decoder_dir

from speeched import SpeechEncoderDecoderModel
from speeched.modeling.finetune import (
    apply_finetune,
    counts_summary,
    is_cross_attention,
    load_lora_adapters,
    merge_lora,
    parameter_counts,
    save_lora_adapters,
)

NEW_PARTS = ("length_adaptor.", "enc_to_dec_proj.", "layer_weighting.", "ctc_head.")
LABELS = torch.tensor([[5, 6, 102], [7, 102, -100]])


def _cross_model(tmp_path) -> SpeechEncoderDecoderModel:
    torch.manual_seed(0)
    return SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(stable_encoder_dir(tmp_path)),
        str(tiny_bert_decoder_dir(tmp_path, hidden_size=16)),
        adaptor_layers=1,
        layer_weighting=True,
        decoder_hidden_dropout_prob=0.0,
        decoder_attention_probs_dropout_prob=0.0,
    ).eval()


def _prefix_model(tmp_path, decoder: str) -> SpeechEncoderDecoderModel:
    torch.manual_seed(0)
    dec = {"llama": tiny_llama_dir, "gpt2": tiny_gpt2_dir}[decoder](tmp_path)
    return SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(stable_encoder_dir(tmp_path)), str(dec), coupling="prefix"
    ).eval()


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _is_norm(name: str) -> bool:
    return "layer_norm" in name or "LayerNorm" in name


def test_full_and_freeze_encoder(tmp_path):
    model = _cross_model(tmp_path)
    names = {n for n, _ in model.named_parameters()}
    counts = apply_finetune(model, "full")
    assert _trainable(model) == names and counts["frozen"] == 0
    counts = apply_finetune(model, "freeze_encoder")
    assert _trainable(model) == {n for n in names if not n.startswith("encoder.")}
    assert counts["by_part"]["encoder"]["trainable"] == 0 and counts["by_part"]["encoder"]["frozen"] > 0
    assert counts["trainable"] + counts["frozen"] == sum(p.numel() for p in model.parameters())


def test_lna_trains_layer_norms_cross_attention_and_new_parts(tmp_path):
    model = _cross_model(tmp_path)
    apply_finetune(model, "lna")
    expected = {
        n
        for n, _ in model.named_parameters()
        if n.startswith(NEW_PARTS)
        or (n.startswith(("encoder.", "decoder.")) and _is_norm(n))
        or (n.startswith("decoder.") and is_cross_attention(n))
    }
    assert _trainable(model) == expected
    assert "decoder.bert.encoder.layer.0.crossattention.self.query.weight" in expected
    assert "encoder.encoder.layers.0.layer_norm.weight" in expected
    assert "decoder.bert.encoder.layer.0.attention.self.query.weight" not in expected
    assert "decoder.bert.embeddings.word_embeddings.weight" not in expected


def test_lna_on_llama_trains_rms_norms(tmp_path):
    model = _prefix_model(tmp_path, "llama")
    apply_finetune(model, "lna")
    trainable = _trainable(model)
    assert "decoder.model.layers.0.input_layernorm.weight" in trainable
    assert "decoder.model.layers.0.self_attn.q_proj.weight" not in trainable
    assert "enc_to_dec_proj.weight" in trainable  # the projector is new: always trains


def test_lora_cross_attention(tmp_path):
    model = _cross_model(tmp_path)
    batch = {**waves(), "labels": LABELS}
    with torch.no_grad():
        before = model(**batch).logits
    original_names = set(model.state_dict())
    counts = apply_finetune(model, "lora", {"parts": ("encoder", "decoder"), "r": 4, "dropout": 0.0})
    for name in _trainable(model):
        assert "lora_" in name or name.startswith(NEW_PARTS) or is_cross_attention(name), name
    assert any("encoder.encoder.layers.0.attention.q_proj.lora_A" in n for n in _trainable(model))
    assert any("decoder.bert.encoder.layer.0.attention.self.value.lora_B" in n for n in _trainable(model))
    assert counts["by_part"]["lora"]["trainable"] > 0 and "trainable" in counts_summary(counts)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)  # B = 0: LoRA starts as a no-op
    train_steps(model, batch, steps=3, lr=1e-2)
    with torch.no_grad():
        unmerged = model(**batch).logits
    assert (unmerged - before).abs().max() > 1e-3  # it trained
    save_lora_adapters(model, tmp_path / "adapters")
    assert (tmp_path / "adapters" / "adapter_model.safetensors").is_file()
    assert merge_lora(model) == 8  # q, v × 2 layers × 2 halves
    assert set(model.state_dict()) == original_names
    with torch.no_grad():
        assert (model(**batch).logits - unmerged).abs().max().item() < 1e-5
    # The adapters file alone restores the trained model on a fresh composition.
    fresh = _cross_model(tmp_path)
    load_lora_adapters(fresh, tmp_path / "adapters")
    with torch.no_grad():
        assert (fresh.eval()(**batch).logits - unmerged).abs().max().item() < 1e-5


@pytest.mark.parametrize("decoder", ["llama", "gpt2"])
def test_lora_on_llm_decoders_merges_exactly(tmp_path, decoder):
    model = _prefix_model(tmp_path, decoder)
    eos = model.config.eos_token_id
    batch = {**waves(), "labels": torch.tensor([[5, 6, eos], [7, eos, -100]])}
    apply_finetune(model, "lora", {"r": 2, "dropout": 0.0})
    target = "c_attn" if decoder == "gpt2" else "q_proj"
    assert any(target in n and "lora_A" in n for n in _trainable(model))
    assert not any(n.startswith("encoder.") for n in _trainable(model))  # default: decoder only
    train_steps(model, batch, steps=3, lr=1e-2)
    with torch.no_grad():
        unmerged = model(**batch).logits
    merge_lora(model)
    with torch.no_grad():
        assert (model(**batch).logits - unmerged).abs().max().item() < 1e-5


def test_bad_method_and_counts(tmp_path):
    model = _cross_model(tmp_path)
    with pytest.raises(ValueError, match="choose one of"):
        apply_finetune(model, "adapters")
    with pytest.raises(ValueError, match="method='lora'"):
        apply_finetune(model, "full", lora={"r": 4})
    counts = parameter_counts(model)
    assert sum(v["trainable"] + v["frozen"] for v in counts["by_part"].values()) == sum(
        p.numel() for p in model.parameters()
    )
    assert {"encoder", "decoder", "cross_attention", "length_adaptor", "layer_weighting"} <= set(
        counts["by_part"]
    )
