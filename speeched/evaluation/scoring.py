"""Score decoded utterances: WER/CER (ASR) or BLEU/chrF (ST) on normalised and raw text, per language too.

Units: WER and CER are fractions (0.05 = 5%), as jiwer returns them; BLEU and chrF are sacreBLEU's 0-100
scores. `UNITS` is written into every summary so no number is read in the wrong unit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from speeched.data.records import Utterance
from speeched.evaluation import metrics as M
from speeched.evaluation.diagnostics import diagnose
from speeched.evaluation.normalize import Normalizer

UNITS = {
    "wer": "fraction of reference words (0.05 = 5%)",
    "cer": "fraction of reference characters (0.05 = 5%)",
    "bleu": "sacreBLEU score, 0-100",
    "chrf": "sacreBLEU chrF score, 0-100",
}
BY_LANGUAGE_KEYS = ("num_utterances", "wer", "cer", "bleu", "chrf", "bleu_signature")


@dataclass
class Prediction:
    """One decoded utterance; `token_ids` is the generated sequence (for attention plots); `skipped` says
    why it was not decoded (digital silence: empty hypothesis)."""

    id: str
    reference: str
    hypothesis: str
    duration: float
    num_tokens: int
    hit_token_cap: bool
    batch: int
    token_ids: list[int] = field(default_factory=list, repr=False)
    token_cap: int = 0
    skipped: str | None = None


def score_predictions(
    predictions: Sequence[Prediction],
    task: str,
    normalizer: Normalizer,
    bleu_tokenize: str = "13a",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics on normalised and raw text, diagnostics of decoding failures, and per-utterance rows."""
    refs = [p.reference for p in predictions]
    hyps = [p.hypothesis for p in predictions]
    nrefs = [normalizer(r) for r in refs]
    nhyps = [normalizer(h) for h in hyps]
    rows: list[dict[str, Any]] = []
    for p, nr, nh in zip(predictions, nrefs, nhyps, strict=True):
        row = {
            "id": p.id,
            "reference": p.reference,
            "hypothesis": p.hypothesis,
            "reference_normalized": nr,
            "hypothesis_normalized": nh,
            "duration": round(p.duration, 3),
            "num_tokens": p.num_tokens,
            "hit_token_cap": p.hit_token_cap,
        }
        if p.skipped:
            row["not_decoded"] = p.skipped
        rows.append(row)
    result: dict[str, Any] = {"task": task, "num_utterances": len(predictions)}
    if task == "asr":
        norm, raw = M.asr_scores(nrefs, nhyps), M.asr_scores(refs, hyps)
        result.update(wer=norm["wer"], cer=norm["cer"], raw_wer=raw["wer"], raw_cer=raw["cer"])
        result["primary"] = "normalized"
        for row, e in zip(rows, M.utterance_word_errors(nrefs, nhyps), strict=True):
            row.update(e)
        for row, e in zip(rows, M.utterance_word_errors(refs, hyps), strict=True):
            row["raw_word_errors"] = e["word_errors"]
        ratio = norm["hyp_words"] / norm["ref_words"] if norm.get("ref_words") else None
    elif task == "st":
        raw, norm = M.st_scores(refs, hyps, bleu_tokenize), M.st_scores(nrefs, nhyps, bleu_tokenize)
        result.update(
            bleu=raw["bleu"], chrf=raw["chrf"], normalized_bleu=norm["bleu"], normalized_chrf=norm["chrf"]
        )
        result["bleu_signature"] = raw.get("bleu_signature")
        result["chrf_signature"] = raw.get("chrf_signature")
        result["primary"] = "raw"
        for row, s, ns in zip(
            rows,
            M.sentence_bleus(refs, hyps, bleu_tokenize),
            M.sentence_bleus(nrefs, nhyps, bleu_tokenize),
            strict=True,
        ):
            row["sentence_bleu"], row["sentence_bleu_normalized"] = s, ns
        ratio = raw["bleu_sys_len"] / raw["bleu_ref_len"] if raw.get("bleu_ref_len") else None
    else:
        raise ValueError(f"unknown task {task!r}: expected 'asr' or 'st'")
    result["units"] = {k: v for k, v in UNITS.items() if k in result}
    result["normalized"], result["raw"] = norm, raw
    result["normalizer"] = {"name": normalizer.name, "description": normalizer.description}
    result["length_ratio"] = ratio
    result["diagnostics"] = diagnose(predictions, rows)
    return result, rows


def majority_lang(utterances: Sequence[Utterance], task: str) -> str | None:
    langs = Counter((u.tgt_lang if task == "st" else u.lang) for u in utterances)
    langs.pop(None, None)
    return langs.most_common(1)[0][0] if langs else None


def score_by_language(
    predictions: Sequence[Prediction], utterances: Sequence[Utterance], task: str, normalizer: Normalizer
) -> dict[str, dict[str, Any]]:
    """Scores per output language when a set mixes several (a multi-target ST model): one corpus BLEU
    over German and French together says little, and each language gets its own BLEU tokenizer."""
    output = {u.id: (u.tgt_lang if task == "st" else u.lang) for u in utterances}
    langs = sorted({output.get(p.id) or "?" for p in predictions})
    if len(langs) < 2:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for lang in langs:
        subset = [p for p in predictions if (output.get(p.id) or "?") == lang]
        scores, _ = score_predictions(subset, task, normalizer, M.bleu_tokenizer_for(lang)[0])
        out[lang] = {k: scores[k] for k in BY_LANGUAGE_KEYS if k in scores}
    return out
