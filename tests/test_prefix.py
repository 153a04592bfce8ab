""" "prefix" coupling of decoder-only LLMs (tiny Llama, tiny GPT-2 without cross-attention)."""

from __future__ import annotations

import pytest
import torch
from extension_helpers import row, stable_encoder_dir, tiny_gpt2_dir, tiny_llama_dir, train_steps, waves

from speeched import SpeechEncoderDecoderModel
from speeched.modeling.ctc import build_ctc_vocab
from speeched.modeling.halves import has_cross_attention
from speeched.modeling.prefix import build_prefix, set_prompt

DECODERS = {"llama": tiny_llama_dir, "gpt2": tiny_gpt2_dir}
LABELS = torch.tensor([[5, 6, 7, 2], [8, 2, -100, -100]])


def _model(tmp_path, decoder: str = "llama", **kw) -> SpeechEncoderDecoderModel:
    torch.manual_seed(0)
    dec_dir = DECODERS[decoder](tmp_path)
    kw.setdefault("adaptor_layers", 1)
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(stable_encoder_dir(tmp_path)), str(dec_dir), coupling="prefix", **kw
    )
    return model.eval()


def _labels(model) -> torch.Tensor:
    eos = model.config.eos_token_id
    return LABELS.masked_fill(LABELS == 2, eos)


class _CharTokenizer:
    """Enough of a tokenizer for set_prompt: one id per character."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [10 + (ord(c) % 80) for c in text]}


@pytest.mark.parametrize("decoder", ["llama", "gpt2"])
def test_compose_special_tokens_and_generate(tmp_path, decoder):
    model = _model(tmp_path, decoder)
    assert not has_cross_attention(model.decoder)
    cfg = model.config
    # LLM tokens: pad falls back to EOS (labels are padded with -100, never with pad); BOS leads the prefix.
    assert cfg.pad_token_id == cfg.eos_token_id and cfg.bos_token_id is not None
    batch = waves()
    greedy = model.generate(**batch, max_new_tokens=5)
    assert greedy.shape == (2, 5)  # generated tokens only, no decoder_start
    beams = model.generate(
        **batch,
        max_new_tokens=4,
        num_beams=3,
        num_return_sequences=3,
        return_dict_in_generate=True,
        output_scores=True,
    )
    assert beams.sequences.shape[0] == 6 and beams.sequences_scores.shape == (6,)


@pytest.mark.parametrize("decoder", ["llama", "gpt2"])
def test_batch_equals_each_example_alone(tmp_path, decoder):
    """Padding must not change an example's numbers: left-padded prefixes + positions from the mask."""
    model = _model(tmp_path, decoder, adaptor_layers=2)
    model.config.prompt_ids = [11, 12, 13]
    batch, labels = waves(), _labels(model)
    with torch.no_grad():
        both = model(**batch, labels=labels).logits
        gen = model.generate(**batch, max_new_tokens=6)
        for i in range(2):
            n = int((labels[i] != -100).sum())
            alone = model(**row(batch, i), labels=labels[i : i + 1, :n]).logits
            assert (alone[0] - both[i, :n]).abs().max().item() < 1e-4
            assert torch.equal(model.generate(**row(batch, i), max_new_tokens=6)[0], gen[i])
    embeds, mask = build_prefix(model, model.encode(**batch))
    assert mask[:, -1].all() and not mask[1, 0]  # left padding: every prefix ends at the last position


@pytest.mark.parametrize("decoder", ["llama", "gpt2"])
def test_generation_positions_match_training(tmp_path, decoder):
    """Greedy tokens are the argmax of the teacher-forced logits on those same tokens (same position ids)."""
    model = _model(tmp_path, decoder)
    batch = waves()
    with torch.no_grad():
        gen = model.generate(**batch, max_new_tokens=5, eos_token_id=None)
        forced = model(**batch, labels=gen).logits
        first = model(**batch).logits
    assert torch.equal(forced.argmax(-1), gen)  # logits[:, i] predicts labels[:, i]
    assert torch.equal(first[:, 0].argmax(-1), gen[:, 0])


def test_loss_counts_target_tokens_only(tmp_path):
    model = _model(tmp_path, "llama")
    model.config.prompt_ids = [11, 12]
    batch, labels = waves(), _labels(model)
    with torch.no_grad():
        out = model(**batch, labels=labels, loss_reduction="sum")
        mean = model(**batch, labels=labels)
    assert int(out.num_target_tokens) == int((labels != -100).sum()) == 6
    ref = torch.nn.functional.cross_entropy(
        out.logits.reshape(-1, out.logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert mean.loss.item() == pytest.approx(out.loss.item() / 6, rel=1e-5)
    assert out.logits.shape[:2] == labels.shape  # aligned with the labels, not with prefix positions


def test_prompt_ids_are_used_saved_and_required(tmp_path):
    model = _model(tmp_path, "llama", prompt="hi")
    with pytest.raises(ValueError, match="set_prompt"):
        model(**waves())
    ids = set_prompt(model, _CharTokenizer(), "hi")
    assert model.config.prompt_ids == ids and len(ids) == 2
    embeds, mask = build_prefix(model, model.encode(**waves()))
    frames = model.encode(**waves()).attention_mask.sum(-1)
    assert mask.sum(-1).tolist() == (frames + 1 + 2).tolist()  # bos + speech + prompt
    model.save_pretrained(tmp_path / "m")
    again = SpeechEncoderDecoderModel.from_pretrained(tmp_path / "m")
    assert again.config.prompt_ids == ids and again.config.prompt == "hi"


@pytest.mark.parametrize("decoder", ["llama", "gpt2"])
def test_overfits_a_batch(tmp_path, decoder):
    model = _model(tmp_path, decoder)
    # Tiny random halves learn slowly at 1e-3; at 1e-2 the loss falls ~99% in 40 steps.
    losses = train_steps(model, {**waves(), "labels": _labels(model)}, steps=40, lr=1e-2)
    assert losses[-1] < 0.4 * losses[0], losses[::10]


def test_save_load_identical(tmp_path):
    model = _model(tmp_path, "gpt2", projector="mlp")
    model.config.prompt_ids = [7, 8]
    model.save_pretrained(tmp_path / "m")
    again = SpeechEncoderDecoderModel.from_pretrained(tmp_path / "m").eval()
    assert again.config.coupling == "prefix" and again.config.uses_extensions
    batch, labels = waves(), _labels(model)
    with torch.no_grad():
        assert torch.equal(model(**batch, labels=labels).logits, again(**batch, labels=labels).logits)
        assert torch.equal(
            model.generate(**batch, max_new_tokens=4), again.generate(**batch, max_new_tokens=4)
        )


def test_ctc_auxiliary_loss_in_prefix_mode(tmp_path):
    texts = ["ab c", "ba"]
    model = _model(tmp_path, "llama", ctc_vocab=build_ctc_vocab(texts), ctc_weight=0.25)
    batch, labels = waves(), _labels(model)
    with torch.no_grad():
        out = model(**batch, labels=labels, ctc_labels=texts)
    ce = out.ce_loss_sum / out.num_target_tokens
    ctc = out.ctc_loss_sum / out.num_ctc_utterances
    assert out.loss.item() == pytest.approx((0.75 * ce + 0.25 * ctc).item(), rel=1e-5)
    assert out.ctc_logits.shape[-1] == len(model.config.ctc_vocab)
