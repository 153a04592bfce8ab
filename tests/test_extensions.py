"""Every model extension on tiny configs: what it computes, that it trains, and that it survives save/load."""

from __future__ import annotations

import pytest
import torch
from extension_helpers import NO_DROPOUT, row, stable_encoder_dir, tiny_llama_dir, train_steps, waves
from helpers import tiny_bert_decoder_dir, tiny_encoder_dir

from speeched import SpeechEncoderDecoderModel
from speeched.modeling.adaptors import LengthAdaptor
from speeched.modeling.ctc import build_ctc_vocab
from speeched.modeling.model_dir import write_model_card

TEXTS = ["ab ba", "abc"]
LABELS = torch.tensor([[5, 6, 7, 102], [8, 102, -100, -100]])
SPEC = {"time_masks": 2, "time_width": 0.2, "freq_masks": 2, "freq_width": 20}


def _model(tmp_path, encoder: str = "wav2vec2", **ext) -> SpeechEncoderDecoderModel:
    torch.manual_seed(0)
    if encoder == "speech2text":
        enc = tiny_encoder_dir(
            tmp_path, "speech2text", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0
        )
    else:
        enc = stable_encoder_dir(tmp_path)
    return SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(enc),
        str(tiny_bert_decoder_dir(tmp_path, hidden_size=16)),
        decoder_hidden_dropout_prob=0.0,
        decoder_attention_probs_dropout_prob=0.0,
        **ext,
    ).eval()


def _features(lengths=(60, 44)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    feats = torch.zeros(len(lengths), max(lengths), 80)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        feats[i, :n] = torch.randn(n, 80, generator=g)
        mask[i, :n] = 1
    return {"input_features": feats, "attention_mask": mask}


def test_adaptor_cuts_length_and_mask_by_two_to_the_n(tmp_path):
    plain, adapted = _model(tmp_path), _model(tmp_path, adaptor_layers=2)
    batch = waves()
    raw = plain.encode(**batch)
    out = adapted.encode(**batch)
    frames = raw.attention_mask.sum(-1)
    assert out.last_hidden_state.shape[1] == -(-raw.last_hidden_state.shape[1] // 4)
    assert out.attention_mask.sum(-1).tolist() == [-(-int(n) // 4) for n in frames]  # ceil(n / 2^2)
    # Batched frames equal each example's own (the mask is re-applied between the adaptor's layers).
    for i in range(2):
        alone = adapted.encode(**row(batch, i)).last_hidden_state[0]
        assert (alone - out.last_hidden_state[i, : alone.shape[0]]).abs().max().item() < 1e-5


def test_length_adaptor_masks_padding_between_layers():
    torch.manual_seed(0)
    adaptor = LengthAdaptor(8, num_layers=3)
    x = torch.randn(1, 21, 8)
    padded = torch.cat([x, torch.randn(1, 11, 8)], dim=1)  # garbage in the padding
    mask = torch.cat([torch.ones(1, 21), torch.zeros(1, 11)], dim=1).long()
    alone, _ = adaptor(x, torch.ones(1, 21, dtype=torch.long))
    batched, new_mask = adaptor(padded, mask)
    n = int(new_mask.sum())
    assert n == alone.shape[1] == 3
    assert torch.allclose(batched[0, :n], alone[0], atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_projector_shapes(tmp_path, kind):
    model = _model(tmp_path, projector=kind)
    proj = model.enc_to_dec_proj
    assert isinstance(proj, torch.nn.Linear if kind == "linear" else torch.nn.Sequential)
    out = model.encode(**waves())
    assert out.raw_last_hidden_state.shape[-1] == 32 and out.last_hidden_state.shape[-1] == 16
    if kind == "mlp":
        assert proj[0].out_features == 32 and proj[-1].out_features == 16


def test_layer_weighting_is_inspectable_and_trained(tmp_path):
    model = _model(tmp_path, layer_weighting=True)
    w = model.layer_weights()
    assert w.shape == (3,) and w.sum().item() == pytest.approx(1.0)  # 2 layers + the embeddings
    assert torch.allclose(w, torch.full((3,), 1 / 3))
    train_steps(model, {**waves(), "labels": LABELS}, steps=2, lr=1e-2)
    after = model.layer_weights()
    assert after.sum().item() == pytest.approx(1.0) and not torch.allclose(after, w)


def test_ctc_loss_mixes_and_vocab_is_saved(tmp_path):
    vocab = build_ctc_vocab(TEXTS)
    assert vocab[:2] == ["<blank>", "<unk>"] and set(vocab[2:]) == {"a", "b", "c", "|"}
    model = _model(tmp_path, ctc_vocab=vocab, ctc_weight=0.4)
    with torch.no_grad():
        out = model(**waves(), labels=LABELS, ctc_labels=TEXTS)
    ce = out.ce_loss_sum / out.num_target_tokens
    ctc = out.ctc_loss_sum / out.num_ctc_utterances
    assert out.loss.item() == pytest.approx((0.6 * ce + 0.4 * ctc).item(), rel=1e-5)
    model.save_pretrained(tmp_path / "m")
    again = SpeechEncoderDecoderModel.from_pretrained(tmp_path / "m")
    assert again.config.ctc_vocab == vocab and again.ctc_head.proj.out_features == len(vocab)


def test_spec_augment_only_in_training(tmp_path):
    model = _model(tmp_path, "speech2text", spec_augment=SPEC)
    feats = _features()
    with torch.no_grad():
        first = model.encode(**feats).raw_last_hidden_state
        assert torch.equal(model.encode(**feats).raw_last_hidden_state, first)  # eval: no masking
        assert torch.equal(model(**feats, labels=LABELS).logits, model(**feats, labels=LABELS).logits)
        model.train()  # the encoder has no dropout here: only SpecAugment can change its output
        torch.manual_seed(3)
        trained = model.encode(**feats).raw_last_hidden_state
    assert (trained - first).abs().max() > 1e-2


EXTENSIONS = {
    "adaptor": ("wav2vec2", {"adaptor_layers": 2}),
    "projector": ("wav2vec2", {"projector": "mlp"}),
    "layer_weighting": ("wav2vec2", {"layer_weighting": True}),
    "ctc": ("wav2vec2", {"ctc_vocab": build_ctc_vocab(TEXTS), "ctc_weight": 0.3}),
    "spec_augment": ("speech2text", {"spec_augment": SPEC}),
}


@pytest.mark.parametrize("name", list(EXTENSIONS))
def test_extension_composes_trains_and_round_trips(tmp_path, name):
    encoder, ext = EXTENSIONS[name]
    model = _model(tmp_path, encoder, **ext)
    assert model.config.uses_extensions
    inputs = _features() if encoder == "speech2text" else waves()
    extra = {"ctc_labels": TEXTS} if "ctc_vocab" in ext else {}
    losses = train_steps(model, {**inputs, "labels": LABELS}, steps=30, lr=1e-2, **extra)
    assert losses[-1] < 0.5 * losses[0], losses[::5]
    model.save_pretrained(tmp_path / "m")
    again = SpeechEncoderDecoderModel.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs, labels=LABELS).logits, again(**inputs, labels=LABELS).logits)
        assert torch.equal(
            model.generate(**inputs, max_new_tokens=3), again.generate(**inputs, max_new_tokens=3)
        )
    write_model_card(tmp_path / "m", again, {})
    card = (tmp_path / "m" / "README.md").read_text()
    assert "speeched extensions" in card and "cannot load it faithfully" in card


def test_prefix_coupling_card_and_flag(tmp_path):
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(tiny_encoder_dir(tmp_path, "wav2vec2", **NO_DROPOUT)),
        str(tiny_llama_dir(tmp_path)),
        coupling="prefix",
    )
    assert model.config.uses_extensions
    write_model_card(tmp_path, model, {})
    assert "coupling=prefix" in (tmp_path / "README.md").read_text()


def test_plain_composition_is_not_flagged(tmp_path):
    model = _model(tmp_path)
    assert not model.config.uses_extensions
    write_model_card(tmp_path, model, {})
    assert "A plain composition" in (tmp_path / "README.md").read_text()
