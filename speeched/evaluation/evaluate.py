"""Evaluate a model on a data set: decode (speeched.inference), score, diagnose, write the report.

Two layers: `evaluate_utterances` takes a loaded model + a list of `Utterance` and returns predictions
and metrics without touching the disk (the training loop calls it for dev sets), and `evaluate_model`
adds reading the data source, writing predictions.jsonl / summary.json, attention plots and the
batch-size-1 check (what `speeched eval` runs).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speeched.data.config import DataSource, Filters
from speeched.data.records import Utterance
from speeched.data.scan import scan
from speeched.data.sources import ManifestError, load_source
from speeched.errors import UsageError
from speeched.evaluation import metrics as M
from speeched.evaluation.attention_plot import plot_predictions
from speeched.evaluation.diagnostics import MAX_EXAMPLES, check_batching
from speeched.evaluation.normalize import (
    Normalizer,
    default_normalizer_name,
    get_normalizer,
    number_words_warning,
)
from speeched.evaluation.scoring import Prediction, majority_lang, score_by_language, score_predictions
from speeched.inference import DecodeOptions, InferenceModel, decode, load_inference_model, resolve_options

TASKS = ("asr", "st")


@dataclass
class EvalOptions:
    """What `speeched eval` does besides decoding: task, normaliser, subset, diagnostics."""

    task: str = "asr"
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    normalizer: str | None = None  # None: english for English targets, else basic
    limit: int | None = None
    lang: str | None = None  # output language (normaliser, BLEU tokenizer); None: the data's majority
    plot_attention: int = 0
    check_batching: bool = False


@dataclass
class EvalResult:
    """Predictions (dataset order), the per-utterance rows of predictions.jsonl and the metrics dict."""

    predictions: list[Prediction]
    rows: list[dict[str, Any]]
    metrics: dict[str, Any]
    decode_seconds: float
    failed: list[dict[str, str]] = field(default_factory=list)


def evaluate_utterances(
    im: InferenceModel,
    utterances: Sequence[Utterance],
    task: str = "asr",
    options: DecodeOptions | None = None,
    normalizer: Normalizer | str | None = None,
    lang: str | None = None,
) -> EvalResult:
    """Decode and score in memory (no files): the function the training loop calls on dev sets."""
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}: expected 'asr' or 'st'")
    lang = lang or majority_lang(utterances, task)
    if normalizer is None or isinstance(normalizer, str):
        normalizer = get_normalizer(normalizer or default_normalizer_name(task, lang))
    tokenize, note = M.bleu_tokenizer_for(lang)
    t0 = time.perf_counter()
    decoded = decode(im, utterances, options)
    seconds = time.perf_counter() - t0
    done, failed = [], []
    for u, d in zip(utterances, decoded, strict=True):
        if d.error is not None:
            failed.append({"id": u.id, "reason": getattr(d.error, "reason", "error"), "detail": str(d.error)})
            continue
        dur = u.duration or 0.0
        done.append(
            Prediction(
                u.id, u.target(task) or "", d.text, dur, d.num_tokens, d.hit_token_cap, d.batch,
                d.token_ids, d.token_cap, d.skipped,
            )
        )  # fmt: skip
    metrics, rows = score_predictions(done, task, normalizer, tokenize)
    if task == "st" and note:
        metrics["bleu_tokenizer_note"] = note
    metrics["target_lang"] = lang
    by_language = score_by_language(done, utterances, task, normalizer)
    if by_language:
        metrics["by_language"] = by_language
    audio = sum(p.duration for p in done)
    metrics["audio_seconds"] = round(audio, 3)
    metrics["decode_seconds"] = round(seconds, 3)
    metrics["rtfx"] = round(audio / seconds, 2) if seconds > 0 else None
    metrics["num_failed_audio"] = len(failed)
    return EvalResult(done, rows, metrics, seconds, failed)


def read_data(
    data: DataSource | str | Sequence[Utterance],
    task: str,
    limit: int | None = None,
    report_dir: str | None = None,
) -> tuple[list[Utterance], dict[str, Any]]:
    """Utterances of a data source with readable audio headers and a known duration; plus what was dropped.

    Nothing is filtered by length for evaluation: dropping hard (long) utterances flatters the score.
    Raises UsageError when the source is missing, malformed, empty or wholly unusable.
    """
    name = _name(data)
    if isinstance(data, (str, DataSource)):
        source = DataSource(path=data) if isinstance(data, str) else data
        if limit:
            source = source.model_copy(update={"limit": limit})
        try:
            utts = load_source(source)
        except (FileNotFoundError, ManifestError) as err:
            raise UsageError(str(err)) from err
    else:
        utts = list(data)[:limit] if limit else list(data)
    if not utts:
        raise UsageError(f"{name}: has no entries, nothing to evaluate; check the path and the manifest")
    if task == "st" and all(u.translation is None for u in utts):
        raise UsageError(
            f"{name}: no translation targets (column 'translation' is empty or missing); "
            "pass --target-column NAME for the column that holds the translation, or use --task asr"
        )
    keep_all = Filters(min_duration=0.0, max_duration=float("inf"), drop_empty=False)
    result = scan(utts, keep_all, task=task, report_dir=report_dir, cache=False)
    dropped: dict[str, Any] = {
        "total": result.total,
        "kept": len(result.kept),
        "dropped": dict(result.reasons),
    }
    if result.bad:
        dropped["examples"] = [b.describe() for b in result.bad[:MAX_EXAMPLES]]
        if result.report_path:
            dropped["report"] = result.report_path
    if not result.kept:
        raise UsageError(
            f"{name}: none of the {result.total} utterances has usable audio: {result.summary()}"
        )
    return result.kept, dropped


def _name(data: Any) -> str:
    if isinstance(data, DataSource):
        return data.path
    return data if isinstance(data, str) else "<utterances>"


def evaluate_model(
    model: str | Path | InferenceModel,
    data: DataSource | str | Sequence[Utterance],
    options: EvalOptions | None = None,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a model directory (or a loaded `InferenceModel`) on a data source; returns the summary.

    Writes out_dir/predictions.jsonl, out_dir/summary.json (and bad_audio.jsonl when entries were
    unusable) when out_dir is given. `summary["num_failed"]` counts utterances that could not be scored.
    """
    opts = options or EvalOptions()
    say = log or (lambda _msg: None)
    t_start = time.perf_counter()
    if opts.task not in TASKS:
        raise UsageError(f"unknown task {opts.task!r}: expected 'asr' or 'st'")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file: give a directory for the report")
        out.mkdir(parents=True, exist_ok=True)
    utts, data_report = read_data(data, opts.task, opts.limit, str(out) if out is not None else None)
    if isinstance(model, InferenceModel):
        im = model
    else:
        say(f"loading model from {model}")
        im = load_inference_model(model, opts.decode.device)
    decoding = resolve_options(im.model, opts.decode)
    say(f"evaluating {len(utts)} utterances ({sum(u.duration or 0 for u in utts) / 60:.1f} min of audio)")
    lang = opts.lang or majority_lang(utts, opts.task) or _default_lang(opts.decode, opts.task)
    search = [im.name] if Path(im.name).is_dir() else []
    norm = get_normalizer(opts.normalizer or default_normalizer_name(opts.task, lang), search)
    warnings = [w for w in [number_words_warning((u.target(opts.task) or "" for u in utts), norm.name)] if w]
    result = evaluate_utterances(im, utts, opts.task, decoding, norm, lang)
    summary: dict[str, Any] = dict(result.metrics)
    summary["warnings"] = warnings
    summary["model"] = im.name
    summary["data"] = _name(data)
    summary["data_report"] = data_report
    summary["failed_audio"] = result.failed[:MAX_EXAMPLES]
    summary["failed_reasons"] = dict(Counter(f["reason"] for f in result.failed))
    summary["num_failed"] = len(result.failed) + data_report["total"] - data_report["kept"]
    summary["decoding"] = _decoding_summary(decoding, result, im)
    if opts.check_batching:
        say("decoding again with batch size 1 (--check-batching)")
        summary["batching_check"] = check_batching(im, utts, result.predictions, decoding)
    if opts.plot_attention and out is not None:
        by_id = {u.id: u for u in utts}
        chosen = [p for p in result.predictions if not p.skipped][: opts.plot_attention]
        summary["attention_plots"] = plot_predictions(
            im.model,
            im.tokenizer,
            im.feature_extractor,
            [by_id[p.id] for p in chosen],
            chosen,
            out / "attention",
        )
    summary["elapsed_seconds"] = round(time.perf_counter() - t_start, 3)
    if out is not None:
        write_report(out, result.rows, summary)
    return summary


def _default_lang(options: DecodeOptions, task: str) -> str | None:
    return options.tgt_lang if task == "st" else options.src_lang


def _decoding_summary(decoding: DecodeOptions, result: EvalResult, im: InferenceModel) -> dict[str, Any]:
    cap = decoding.max_new_tokens
    return {
        "strategy": decoding.strategy(),
        "num_beams": decoding.num_beams,
        "ctc_weight": decoding.ctc_weight,
        "max_duration": decoding.max_duration,
        "max_batch_size": decoding.max_batch_size,
        "max_new_tokens": cap if cap is not None else f"{decoding.tokens_per_second}/s + 10",
        "num_batches": 1 + max((p.batch for p in result.predictions), default=-1),
        "device": str(im.device),
        "batching": "sorted by duration, longest first",
    }


def write_report(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """predictions.jsonl (one row per utterance) and summary.json; adds their paths to `summary`."""
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary["files"] = {"predictions": str(out / "predictions.jsonl"), "summary": str(out / "summary.json")}
    (out / "summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
