"""Corpus and per-utterance scores computed only by jiwer and sacrebleu, plus decoding-failure detectors.

Loop detection (a diagnostic too) lives in speeched.inference.loops, where transcribe uses it.

No metric is re-implemented here: the numbers in summary.json must be exactly what anyone gets by
feeding predictions.jsonl to jiwer or sacrebleu themselves (tests/test_metrics.py checks this).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import jiwer
import sacrebleu


def asr_scores(references: list[str], hypotheses: list[str]) -> dict[str, Any]:
    """Corpus WER/CER with error counts (jiwer's default transforms: split on whitespace; CER counts spaces)."""
    _check_lengths(references, hypotheses)
    if not references:
        return {"wer": None, "cer": None, "ref_words": 0, "ref_chars": 0}
    words = jiwer.process_words(references, hypotheses)
    chars = jiwer.process_characters(references, hypotheses)
    ref_words = words.hits + words.substitutions + words.deletions
    ref_chars = chars.hits + chars.substitutions + chars.deletions
    return {
        # jiwer divides by zero when no reference has a word; report None instead of crashing.
        "wer": words.wer if ref_words else None,
        "cer": chars.cer if ref_chars else None,
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
        "hits": words.hits,
        "ref_words": ref_words,
        "hyp_words": words.hits + words.substitutions + words.insertions,
        "char_substitutions": chars.substitutions,
        "char_deletions": chars.deletions,
        "char_insertions": chars.insertions,
        "char_hits": chars.hits,
        "ref_chars": ref_chars,
    }


def utterance_word_errors(references: list[str], hypotheses: list[str]) -> list[dict[str, int]]:
    """Per-utterance S/D/I and reference word counts, from one jiwer alignment of the whole corpus."""
    _check_lengths(references, hypotheses)
    if not references:
        return []
    out = jiwer.process_words(references, hypotheses)
    rows = []
    for chunks in out.alignments:
        count = Counter()
        for c in chunks:
            if c.type == "insert":
                count["insertions"] += c.hyp_end_idx - c.hyp_start_idx
            else:
                key = {"equal": "hits", "substitute": "substitutions", "delete": "deletions"}[c.type]
                count[key] += c.ref_end_idx - c.ref_start_idx
        s, d, i = count["substitutions"], count["deletions"], count["insertions"]
        rows.append(
            {
                "word_errors": s + d + i,
                "ref_words": count["hits"] + s + d,
                "substitutions": s,
                "deletions": d,
                "insertions": i,
            }
        )
    return rows


def bleu_tokenizer_for(lang: str | None) -> tuple[str, str | None]:
    """sacreBLEU tokenizer for a target language, and a note when the ideal one is unavailable."""
    base = (lang or "").lower().replace("_", "-").split("-")[0]
    if base in ("zh", "zho", "chi", "cmn", "yue"):
        return "zh", None
    if base in ("ja", "jpn"):
        try:
            sacrebleu.BLEU(tokenize="ja-mecab")
            return "ja-mecab", None
        except Exception as err:  # noqa: BLE001 - missing mecab-python3/ipadic raises various errors
            return (
                "char",
                f"ja-mecab unavailable ({type(err).__name__}); using 'char' tokenisation for Japanese",
            )
    if base in ("ko", "kor"):
        try:
            sacrebleu.BLEU(tokenize="ko-mecab")
            return "ko-mecab", None
        except Exception:  # noqa: BLE001
            return "13a", "ko-mecab unavailable; using 13a"
    if base in ("th", "lo", "km", "my"):
        return "char", None  # scripts without spaces between words
    return "13a", None


def st_scores(references: list[str], hypotheses: list[str], tokenize: str = "13a") -> dict[str, Any]:
    """Corpus BLEU and chrF with their sacreBLEU signatures (one reference per hypothesis)."""
    _check_lengths(references, hypotheses)
    if not references:
        return {"bleu": None, "chrf": None}
    bleu = sacrebleu.BLEU(tokenize=tokenize)
    chrf = sacrebleu.CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": b.score,
        "chrf": c.score,
        "bleu_precisions": list(b.precisions),
        "bleu_brevity_penalty": b.bp,
        "bleu_sys_len": b.sys_len,
        "bleu_ref_len": b.ref_len,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def sentence_bleus(references: list[str], hypotheses: list[str], tokenize: str = "13a") -> list[float]:
    """Per-utterance BLEU (sacreBLEU's effective-order sentence BLEU): for finding the worst sentences."""
    _check_lengths(references, hypotheses)
    bleu = sacrebleu.BLEU(tokenize=tokenize, effective_order=True)
    return [bleu.sentence_score(h, [r]).score for r, h in zip(references, hypotheses, strict=True)]


def identical_across_batch(hypotheses: list[str], references: list[str] | None = None) -> list[int]:
    """Indices of hypotheses that repeat verbatim inside one batch of different audio and are wrong.

    A healthy model does not give the same sentence for different recordings; a collapsed one (ignoring
    the encoder) does. With references, a group of identical hypotheses is suspicious only when their
    references differ, and then only its members whose reference is not that hypothesis are flagged:
    two recordings of the same sentence decoded right are not a collapse. Pass normalised texts.
    """
    groups: dict[str, list[int]] = {}
    for i, hyp in enumerate(hypotheses):
        if hyp.strip():
            groups.setdefault(hyp, []).append(i)
    flagged: list[int] = []
    for hyp, idx in groups.items():
        if len(idx) < 2:
            continue
        if references is None:
            flagged.extend(idx)
        elif len({references[i] for i in idx}) >= 2:
            flagged.extend(i for i in idx if references[i] != hyp)
    return sorted(flagged)


def _check_lengths(references: list[str], hypotheses: list[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
