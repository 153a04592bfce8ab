"""In-loop dev evaluation: the same decoding + scoring function `speeched eval` calls, on every dev set."""

from __future__ import annotations

from typing import Any

from speeched.evaluation.evaluate import evaluate_utterances
from speeched.inference.loading import InferenceModel
from speeched.inference.options import DecodeOptions


def evaluate_dev_sets(
    model: Any,
    tokenizer: Any,
    feature_extractor: Any,
    dev_sets: list[tuple[str, list[Any]]],
    recipe: Any,
    device: Any,
    ctc_weight: float | None = None,
) -> dict[str, dict[str, Any]]:
    """{dev name: metrics} with the recipe's `eval` decoding (`ctc_weight` overrides its CTC weight); the
    model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    e = recipe.eval
    opts = DecodeOptions(
        num_beams=e.num_beams,
        ctc_weight=e.ctc_weight if ctc_weight is None else ctc_weight,
        max_duration=e.max_duration,
        max_new_tokens=e.max_new_tokens,
        device=str(device),
    )
    im = InferenceModel(model, tokenizer, feature_extractor)
    try:
        return {
            name: evaluate_utterances(im, utts, recipe.task, opts, e.normalizer).metrics
            for name, utts in dev_sets
        }
    finally:
        model.train(was_training)


def improves(best: dict[str, Any], value: float, mode: str) -> bool:
    """Is `value` better than the recorded best (none recorded: yes)?"""
    return not best or (value < best["value"] if mode == "min" else value > best["value"])


def best_record(best: dict[str, Any]) -> dict[str, Any]:
    """best.json: error rates in percent, named so (as `speeched eval` prints them), the rest as is."""
    if best.get("metric") in ("wer", "cer"):
        return {**best, "metric": f"{best['metric']}_percent", "value": 100.0 * best["value"]}
    return dict(best)
