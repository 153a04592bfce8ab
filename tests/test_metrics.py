"""Metrics equal jiwer/sacrebleu exactly; failure detectors flag loops and collapsed batches; normalisers."""

from __future__ import annotations

import jiwer
import pytest
import sacrebleu

from speeched.evaluation import metrics as M
from speeched.evaluation.normalize import default_normalizer_name, get_normalizer
from speeched.evaluation.scoring import Prediction, score_predictions
from speeched.inference import loops

REFS = ["the cat sat on the mat", "hello world", "a b c d e", "one more sentence here"]
HYPS = ["the cat sat on mat", "hello there world", "a x c d e f", ""]


def test_asr_scores_equal_jiwer_and_counts_add_up() -> None:
    s = M.asr_scores(REFS, HYPS)
    assert s["wer"] == pytest.approx(jiwer.wer(REFS, HYPS))
    assert s["cer"] == pytest.approx(jiwer.cer(REFS, HYPS))
    assert s["ref_words"] == sum(len(r.split()) for r in REFS)
    errors = s["substitutions"] + s["deletions"] + s["insertions"]
    assert errors / s["ref_words"] == pytest.approx(s["wer"])
    rows = M.utterance_word_errors(REFS, HYPS)
    assert [r["ref_words"] for r in rows] == [len(r.split()) for r in REFS]
    assert sum(r["word_errors"] for r in rows) == errors
    assert rows[0]["word_errors"] == 1 and rows[3]["deletions"] == 4


def test_asr_scores_without_reference_words_do_not_crash() -> None:
    s = M.asr_scores([""], ["something"])
    assert s["wer"] is None and s["insertions"] == 1
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        M.asr_scores(["a", "b"], ["a"])


def test_st_scores_equal_sacrebleu_and_tokenizer_per_language() -> None:
    refs = ["Die Katze sitzt auf der Matte.", "Hallo Welt!", "Das ist ein Test."]
    hyps = ["Die Katze sitzt auf Matte.", "Hallo, Welt!", "Dies ist ein Test."]
    s = M.st_scores(refs, hyps, "13a")
    assert s["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert s["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert "tok:13a" in s["bleu_signature"]
    assert M.bleu_tokenizer_for("zh")[0] == "zh"
    assert M.bleu_tokenizer_for("zh-CN")[0] == "zh"
    assert M.bleu_tokenizer_for("de") == ("13a", None)
    ja, note = M.bleu_tokenizer_for("ja")
    assert ja == "ja-mecab" or (ja == "char" and "ja-mecab unavailable" in note)
    zh_refs, zh_hyps = ["我喜欢猫。", "今天天气很好"], ["我喜欢狗。", "今天天气好"]
    zh = M.st_scores(zh_refs, zh_hyps, "zh")
    assert "tok:zh" in zh["bleu_signature"]
    assert zh["bleu"] == pytest.approx(sacrebleu.corpus_bleu(zh_hyps, [zh_refs], tokenize="zh").score)
    sent = M.sentence_bleus(refs, hyps)
    assert sent[0] == pytest.approx(sacrebleu.sentence_bleu(hyps[0], [refs[0]]).score)


def test_loops_are_found_and_cut_but_natural_repetition_is_not() -> None:
    looping = "so we went to the the park and then " + "i said i said " * 4 + "end"
    loop = loops.find_loop(loops.split_units(looping))
    assert loop is not None and loop.ngram == ("i", "said") and loop.repeats == 8
    cut, was_cut = loops.truncate_loop(looping)
    assert was_cut and cut.endswith("and then i said")
    assert loops.find_loop(["no", "no", "no", "I", "do", "not", "want", "that"]) is None
    assert loops.truncate_loop("a perfectly normal sentence") == ("a perfectly normal sentence", False)
    assert loops.find_loop(loops.split_units("哈" * 12)) is not None  # text without spaces: characters


def test_identical_hypotheses_across_a_batch() -> None:
    hyps = ["the same", "the same", "different", "the same"]
    assert M.identical_across_batch(hyps) == [0, 1, 3]
    # identical references (same sentence read twice) are not a collapse
    assert M.identical_across_batch(["yes", "yes"], ["yes", "yes"]) == []
    assert M.identical_across_batch(["", ""]) == []


def test_normalizers_are_named_and_do_their_job() -> None:
    english = get_normalizer("english")
    assert english.name.startswith("english")
    assert english("Mr. Smith won't pay!") == "mister smith will not pay"
    if english.name == "english-nospelling":
        assert "spelling mapping" in english.description
    basic = get_normalizer("basic")
    assert basic("Hello, WORLD!  ") == "hello world"
    assert get_normalizer("none")("Keep It.") == "Keep It."
    with pytest.raises(ValueError, match="english, basic, none"):
        get_normalizer("klingon")
    assert default_normalizer_name("asr", None) == "english"
    assert default_normalizer_name("st", "de") == "basic"
    assert default_normalizer_name("st", "en-US") == "english"


def _pred(i: int, ref: str, hyp: str, batch: int = 0, capped: bool = False) -> Prediction:
    return Prediction(f"u{i}", ref, hyp, 1.0 + i, len(hyp.split()), capped, batch)


def test_score_predictions_reports_normalised_raw_and_diagnostics() -> None:
    preds = [
        _pred(0, "Hello, World.", "hello world"),
        _pred(1, "The cat sat.", "the mat " * 6, capped=True),
        _pred(2, "Good morning.", "same thing", batch=1),
        _pred(3, "Good night.", "same thing", batch=1),
    ]
    metrics, rows = score_predictions(preds, "asr", get_normalizer("basic"))
    nrefs = [r["reference_normalized"] for r in rows]
    nhyps = [r["hypothesis_normalized"] for r in rows]
    assert metrics["wer"] == pytest.approx(jiwer.wer(nrefs, nhyps))
    assert metrics["raw_wer"] == pytest.approx(
        jiwer.wer([p.reference for p in preds], [p.hypothesis for p in preds])
    )
    assert metrics["raw_wer"] > metrics["wer"]  # casing/punctuation count as errors only in raw
    assert rows[0]["word_errors"] == 0 and rows[0]["raw_word_errors"] == 2
    d = metrics["diagnostics"]
    assert d["hit_token_cap"] == 1 and d["repetition_loops"] == 1 and d["identical_in_batch"] == 2
    assert d["degenerate"] == 3 and {e["id"] for e in d["identical_in_batch_examples"]} == {"u2", "u3"}
    assert metrics["length_ratio"] == pytest.approx(
        sum(len(h.split()) for h in nhyps) / sum(len(r.split()) for r in nrefs)
    )
    assert metrics["normalizer"]["name"] == "basic"


def test_identical_hypotheses_are_flagged_only_when_references_differ() -> None:
    # two recordings of the same sentence, both decoded right: no collapse
    assert M.identical_across_batch(["one two", "one two"], ["one two", "one two"]) == []
    # same references, same wrong hypothesis: could be the same audio; not a collapse either
    assert M.identical_across_batch(["x", "x"], ["one two", "one two"]) == []
    # different references, one hypothesis for all: the wrong ones are flagged, the right one is not
    assert M.identical_across_batch(["one two"] * 3, ["one two", "three", "four five"]) == [1, 2]
    preds = [_pred(0, "One two.", "one two"), _pred(1, "One two!", "one two")]
    metrics, rows = score_predictions(preds, "asr", get_normalizer("basic"))
    assert metrics["diagnostics"]["identical_in_batch"] == 0 and metrics["diagnostics"]["degenerate"] == 0
    assert not any(r.get("identical_in_batch") for r in rows)
