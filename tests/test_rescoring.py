"""Joint CTC/attention rescoring picks what the formula says, and λ = 0 is the plain beam."""

from __future__ import annotations

import pytest
import torch
from extension_helpers import row, stable_encoder_dir, tiny_llama_dir, waves
from helpers import tiny_bert_decoder_dir
from transformers import AutoTokenizer

from speeched import SpeechEncoderDecoderModel
from speeched.inference.rescoring import generate_with_ctc_rescoring, rescore_beams
from speeched.modeling.ctc import build_ctc_vocab, ctc_scores

TEXTS = ["the quick brown fox", "jumps over the lazy dog"]


@pytest.fixture(scope="module")
def cross(tmp_path_factory):
    root = tmp_path_factory.mktemp("rescore")
    dec = tiny_bert_decoder_dir(root, hidden_size=16)
    torch.manual_seed(0)
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(stable_encoder_dir(root)), str(dec), ctc_vocab=build_ctc_vocab(TEXTS), ctc_weight=0.3
    ).eval()
    return model, AutoTokenizer.from_pretrained(dec)


class _LetterTokenizer:
    """Ids → letters, enough for batch_decode in prefix mode (the tiny Llama ships no tokenizer)."""

    def __init__(self, eos: int) -> None:
        self.eos = eos

    def batch_decode(self, seqs, skip_special_tokens=True, **_):
        return ["".join(chr(97 + i % 26) for i in s if i != self.eos) for s in seqs]


def test_zero_weight_returns_the_plain_beam_best(cross):
    model, tok = cross
    batch = waves()
    plain = model.generate(**batch, num_beams=3, max_new_tokens=4, length_penalty=0.0)
    got = generate_with_ctc_rescoring(model, tok, **batch, num_beams=3, ctc_weight=0.0, max_new_tokens=4)
    assert got == tok.batch_decode(plain, skip_special_tokens=True)


def test_best_maximises_the_joint_score(cross):
    model, tok = cross
    batch = waves()
    lam = 0.5
    scored = rescore_beams(model, tok, **batch, num_beams=3, ctc_weight=lam, max_new_tokens=4)
    for b in range(2):
        alone = row(batch, b)
        enc = model.encode(**alone)
        with torch.no_grad():
            ctc_logits = model.ctc_head(enc.raw_last_hidden_state)
        for k, (ids, text) in enumerate(zip(scored.token_ids[b], scored.texts[b], strict=True)):
            with torch.no_grad():
                out = model(**alone, labels=torch.tensor([ids]), loss_reduction="sum")
            att = -out.ce_loss_sum.item()
            ctc = ctc_scores(
                ctc_logits, model.ctc_frame_lengths(enc), [text], model.config.ctc_vocab, "char"
            ).item()
            assert scored.attention[b, k].item() == pytest.approx(att, abs=1e-3)
            assert scored.ctc[b, k].item() == pytest.approx(ctc, abs=1e-2)
            assert scored.combined[b, k].item() == pytest.approx((1 - lam) * att + lam * ctc, abs=1e-2)
        assert scored.best[b] == int(scored.combined[b].argmax())
    got = generate_with_ctc_rescoring(model, tok, **batch, num_beams=3, ctc_weight=lam, max_new_tokens=4)
    assert got == [scored.texts[b][scored.best[b]] for b in range(2)]


def test_prefix_model_is_rescored_too(tmp_path):
    torch.manual_seed(0)
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(stable_encoder_dir(tmp_path)),
        str(tiny_llama_dir(tmp_path)),
        coupling="prefix",
        ctc_vocab=build_ctc_vocab(["abc xyz"]),
        ctc_weight=0.3,
    ).eval()
    tok = _LetterTokenizer(model.config.eos_token_id)
    scored = rescore_beams(model, tok, **waves(), num_beams=2, ctc_weight=0.3, max_new_tokens=3)
    assert scored.combined.shape == (2, 2) and torch.isfinite(scored.attention).all()
    # Prefix sequences hold generated tokens only: nothing is dropped from the front.
    plain = model.generate(**waves(), num_beams=2, max_new_tokens=3, length_penalty=0.0)
    assert scored.token_ids[0][0][: plain.shape[1]] == plain[0].tolist()[: len(scored.token_ids[0][0])]


def test_needs_a_ctc_head(tmp_path):
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(stable_encoder_dir(tmp_path)), str(tiny_bert_decoder_dir(tmp_path, hidden_size=16))
    )
    with pytest.raises(ValueError, match="CTC head"):
        rescore_beams(model, None, **waves(), num_beams=2)
