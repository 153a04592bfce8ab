"""speeched.inference.decode: order, batching, digital silence and NaN never reaching generate(), and the
batch-size-1 diagnostic catching a model whose output depends on batching."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Speech2TextFeatureExtractor, Wav2Vec2FeatureExtractor

from speeched.data.audio import MISSING, NON_FINITE
from speeched.data.records import Utterance
from speeched.errors import UsageError
from speeched.evaluation.diagnostics import check_batching
from speeched.evaluation.evaluate import evaluate_utterances
from speeched.inference import DecodeOptions, InferenceModel, decode, is_silent
from speeched.inference.features import SILENCE
from speeched.inference.generate import NON_FINITE_FEATURES

SR = 16000


class LengthModel(torch.nn.Module):
    """'Recognises' each input as w<its length in 0.1 s>, from the attention mask: batching cannot matter.

    Records every batch it is given and fails on non-finite inputs (NaN must never reach decoding)."""

    def __init__(self, by_padded_length: bool = False) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.generation_config = SimpleNamespace(eos_token_id=2, decoder_start_token_id=1)
        self.config = SimpleNamespace(decoder=SimpleNamespace(max_position_embeddings=512))
        self.by_padded_length = by_padded_length
        self.calls: list[list[int]] = []

    def generate(self, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        x = kwargs.get("input_values", kwargs.get("input_features"))
        assert torch.isfinite(x).all(), "non-finite features reached generate()"
        lengths = attention_mask.sum(-1).tolist()
        self.calls.append([int(n) for n in lengths])
        if self.by_padded_length:  # a broken model: what it says depends on the padding of its batch
            lengths = [attention_mask.shape[-1]] * len(lengths)
        frames_per_tenth = SR // 10 if x.dim() == 2 else 10
        return torch.tensor([[1, 100 + int(n) // frames_per_tenth, 2] for n in lengths])


class WordTokenizer:
    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        return [" ".join(f"w{t - 100}" for t in list(seq) if t >= 100) for seq in sequences]


def _im(model: LengthModel | None = None, fe=None) -> InferenceModel:
    fe = fe or Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True)
    return InferenceModel(model or LengthModel(), WordTokenizer(), fe)


def _tone(tenths: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(tenths * SR // 10) / SR
    return (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_results_come_back_in_input_order_from_duration_batches() -> None:
    im = _im()
    lengths = [7, 3, 12, 5, 9, 4]
    out = decode(im, [_tone(n) for n in lengths], DecodeOptions(max_duration=1.5))
    assert [d.text for d in out] == [f"w{n}" for n in lengths]
    assert len(im.model.calls) > 1 and sorted(sum(im.model.calls, [])) == sorted(
        n * SR // 10 for n in lengths
    )
    assert all(d.batch >= 0 and d.skipped is None and d.error is None for d in out)


def test_digital_silence_gives_empty_text_without_decoding() -> None:
    im = _im()
    rng = np.random.default_rng(0)
    near_silent = (5e-5 * rng.uniform(-1, 1, SR)).astype(np.float32)
    inputs = [np.zeros(5 * SR, np.float32), _tone(8), near_silent, np.zeros(0, np.float32)]
    out = decode(im, inputs, DecodeOptions())
    assert [d.text for d in out] == ["", "w8", "", ""]
    assert [d.skipped for d in out] == [SILENCE, None, SILENCE, SILENCE]
    assert im.model.calls == [[8 * SR // 10]]  # only the tone reached generate()
    assert is_silent(np.zeros(10, np.float32)) and not is_silent(_tone(1))
    silent_only = _im()
    assert [d.text for d in decode(silent_only, [np.zeros(600 * SR, np.float32)])] == [""]
    assert silent_only.model.calls == []  # ten minutes of zeros cost nothing


def test_non_finite_features_and_samples_never_reach_generate() -> None:
    # Speech2Text's per-utterance CMVN divides by a zero variance: a constant (DC) input, loud enough not
    # to be silence, gives NaN features. Its row is taken out of the batch.
    fe = Speech2TextFeatureExtractor()
    im = _im(fe=fe)
    dc = np.full(SR, 0.5, np.float32)
    # the extractor really divides by zero here...
    with np.errstate(divide="raise", invalid="raise"), pytest.raises(FloatingPointError):
        fe([dc], sampling_rate=SR)
    out = decode(im, [_tone(10) * np.linspace(0.2, 1, SR).astype(np.float32), dc], DecodeOptions())
    assert out[1].text == "" and out[1].skipped == NON_FINITE_FEATURES
    assert out[0].skipped is None and out[0].text  # the other row was decoded
    assert len(im.model.calls) == 1 and len(im.model.calls[0]) == 1
    bad = _tone(5)
    bad[100] = np.nan
    out = decode(_im(), [bad, _tone(5)])
    assert out[0].error is not None and out[0].error.reason == NON_FINITE and out[1].text == "w5"


def test_utterances_are_read_batch_by_batch_and_unreadable_ones_reported(tmp_path: Path) -> None:
    utts = []
    for i, n in enumerate([6, 4]):
        sf.write(tmp_path / f"{i}.wav", _tone(n), SR)
        utts.append(Utterance(id=f"u{i}", audio=str(tmp_path / f"{i}.wav"), text=f"w{n}"))
    utts.insert(1, Utterance(id="gone", audio=str(tmp_path / "gone.wav"), text="x"))
    out = decode(_im(), utts, DecodeOptions())
    assert [d.text for d in out] == ["w6", "", "w4"]
    assert out[1].error is not None and out[1].error.reason == MISSING


def test_ctc_weight_without_a_ctc_head_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="CTC head"):
        decode(_im(), [_tone(5)], DecodeOptions(ctc_weight=0.5))


def _utterances(tmp_path: Path, tenths: list[int]) -> list[Utterance]:
    utts = []
    for i, n in enumerate(tenths):
        path = tmp_path / f"b{i}.wav"
        sf.write(path, _tone(n), SR)
        utts.append(Utterance(id=f"b{i}", audio=str(path), text=f"w{n}", duration=n / 10))
    return utts


def test_batching_check_reports_a_model_whose_output_depends_on_padding(tmp_path: Path) -> None:
    utts = _utterances(tmp_path, [3, 5, 8, 9])
    options = DecodeOptions(max_duration=100.0)  # one batch: everything padded to the longest
    for broken, expected in ((False, True), (True, False)):
        im = _im(LengthModel(by_padded_length=broken))
        result = evaluate_utterances(im, utts, "asr", options, "none")
        check = check_batching(im, utts, result.predictions, options)
        assert check["compared"] == 4
        assert check["identical"] is expected, check
        if broken:  # all but the longest were padded in their batch, so they change alone
            assert check["agree"] == 1 and {d["id"] for d in check["differences"]} == {"b0", "b1", "b2"}
            assert all(d["batch_size_1"] != d["batched"] for d in check["differences"])
        else:
            assert check["agree"] == 4 and check["differences"] == []


def test_eval_scores_silence_as_empty_and_counts_it(tmp_path: Path) -> None:
    utts = _utterances(tmp_path, [4, 6])
    sf.write(tmp_path / "zeros.wav", np.zeros(3 * SR, np.float32), SR)
    utts.append(Utterance(id="zeros", audio=str(tmp_path / "zeros.wav"), text="something", duration=3.0))
    im = _im()
    result = evaluate_utterances(im, utts, "asr", DecodeOptions(), "none")
    rows = {r["id"]: r for r in result.rows}
    assert rows["zeros"]["hypothesis"] == "" and rows["zeros"]["not_decoded"] == SILENCE
    assert result.metrics["diagnostics"]["not_decoded"] == 1
    assert result.metrics["wer"] == pytest.approx(1 / 3)  # the one reference word is deleted
    assert result.metrics["units"]["wer"].startswith("fraction")
    assert sum(len(c) for c in im.model.calls) == 2
