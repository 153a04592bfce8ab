"""The ways decoding goes wrong that a single WER/BLEU hides, and the batch-size-1 check.

`diagnose` counts hypotheses that hit the token cap, loop, repeat verbatim across a batch of different
audio (a collapsed decoder), are empty, or were not decoded at all (digital silence). `check_batching`
decodes again one utterance at a time: padding must not change what the model says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from speeched.data.records import Utterance
from speeched.evaluation import metrics as M
from speeched.inference import DecodeOptions, InferenceModel, decode
from speeched.inference.loops import find_loop, split_units

MAX_EXAMPLES = 5


def examples(rows: list[dict[str, Any]], idx: Sequence[int]) -> list[dict[str, Any]]:
    return [{k: rows[i][k] for k in ("id", "reference", "hypothesis")} for i in list(idx)[:MAX_EXAMPLES]]


def diagnose(predictions: Sequence[Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Count decoding failures over `predictions` (scoring.Prediction) and mark the matching `rows`."""
    capped = [i for i, p in enumerate(predictions) if p.hit_token_cap]
    loops = []
    for i, p in enumerate(predictions):
        loop = find_loop(split_units(p.hypothesis))
        rows[i]["repetition_loop"] = loop is not None
        if loop is not None:
            loops.append(i)
    by_batch: dict[int, list[int]] = {}
    for i, p in enumerate(predictions):
        if not p.skipped:
            by_batch.setdefault(p.batch, []).append(i)
    same: list[int] = []
    for idx in by_batch.values():
        flagged = M.identical_across_batch(
            [rows[i].get("hypothesis_normalized", predictions[i].hypothesis) for i in idx],
            [rows[i].get("reference_normalized", predictions[i].reference) for i in idx],
        )
        same.extend(idx[j] for j in flagged)
    for i in same:
        rows[i]["identical_in_batch"] = True
    empty = [i for i, p in enumerate(predictions) if not p.hypothesis.strip()]
    silent = [i for i, p in enumerate(predictions) if p.skipped]
    degenerate = sorted(set(loops) | set(same))
    return {
        "hit_token_cap": len(capped),
        "hit_token_cap_examples": examples(rows, capped),
        "repetition_loops": len(loops),
        "repetition_loop_examples": examples(rows, loops),
        "identical_in_batch": len(same),
        "identical_in_batch_examples": examples(rows, same),
        "degenerate": len(degenerate),
        "empty_hypotheses": len(empty),
        "not_decoded": len(silent),
        "not_decoded_examples": [
            {"id": predictions[i].id, "why": predictions[i].skipped} for i in silent[:MAX_EXAMPLES]
        ],
        "distinct_hypotheses": len({p.hypothesis for p in predictions}),
    }


def check_batching(
    im: InferenceModel,
    utterances: Sequence[Utterance],
    batched: Sequence[Any],
    options: DecodeOptions,
) -> dict[str, Any]:
    """Decode each of `batched` (scoring.Prediction) again alone, with the token cap it had in its batch,
    and compare the texts.

    Padding must not change what the model says; when it does, the encoder mask or the feature
    extractor's padding is wrong (e.g. a group-norm wav2vec2 given an attention mask).
    """
    by_id = {u.id: u for u in utterances}
    diff = []
    for p in tqdm(batched, desc="batch-size-1 check", unit="utt", disable=not options.progress):
        single = options.replace(max_new_tokens=p.token_cap or None, max_batch_size=1, progress=False)
        (d,) = decode(im, [by_id[p.id]], single)
        if d.text != p.hypothesis:
            diff.append({"id": p.id, "batched": p.hypothesis, "batch_size_1": d.text})
    return {
        "compared": len(batched),
        "agree": len(batched) - len(diff),
        "identical": not diff,
        "differences": diff[:MAX_EXAMPLES],
    }
