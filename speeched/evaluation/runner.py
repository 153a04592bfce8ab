"""Decode utterances with `generate()` in duration-sorted batches and score them; write the eval report.

Two layers: `evaluate_utterances` takes an already-loaded model + a list of `Utterance` and returns
predictions and metrics without touching the disk (the training loop calls it for dev sets), and
`evaluate_model` adds reading the data source, writing predictions.jsonl / summary.json, attention
plots and the batch-size-1 check (what `speeched eval` runs).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speeched.data.audio import AudioError, load_audio
from speeched.data.config import DataSource, Filters
from speeched.data.records import Utterance
from speeched.evaluation import metrics as M
from speeched.evaluation.normalize import Normalizer, default_normalizer_name, get_normalizer

MAX_EXAMPLES = 5


@dataclass
class DecodeOptions:
    """How `generate()` is called and how utterances are grouped into batches.

    `max_new_tokens=None` bounds each batch by its longest audio: `tokens_per_second * seconds + 10`
    (never past the decoder's position limit), so a looping model cannot run away, while real speech
    (~3-5 tokens per second) is far below the cap.
    """

    num_beams: int = 1
    max_duration: float = 120.0
    max_batch_size: int | None = None
    max_new_tokens: int | None = None
    tokens_per_second: float = 25.0
    no_repeat_ngram_size: int = 0
    ctc_weight: float = 0.0  # > 0: rescore the beam's hypotheses with the CTC head (joint CTC/attention)
    device: str = "auto"
    progress: bool = False
    progress_desc: str = "decoding"


@dataclass(frozen=True)
class Decoded:
    """generate() output for one input: text, tokens before EOS, whether it ran into `token_cap`."""

    text: str
    num_tokens: int
    hit_cap: bool
    token_ids: list[int]
    token_cap: int


@dataclass
class Prediction:
    """One decoded utterance; `token_ids` is the generated sequence (for attention plots)."""

    id: str
    reference: str
    hypothesis: str
    duration: float
    num_tokens: int
    hit_token_cap: bool
    batch: int
    token_ids: list[int] = field(default_factory=list, repr=False)
    token_cap: int = 0


@dataclass
class EvalResult:
    """Predictions (dataset order), the per-utterance rows of predictions.jsonl and the metrics dict."""

    predictions: list[Prediction]
    rows: list[dict[str, Any]]
    metrics: dict[str, Any]
    decode_seconds: float
    failed: list[dict[str, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- loading
def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_inference_model(model_dir: str | Path, device: str = "auto") -> tuple[Any, Any, Any]:
    """(model in eval mode on `device`, tokenizer, feature extractor) from a `speeched init`/train output dir.

    Raises `ModelDirError` (a ValueError) naming the missing file when the directory is incomplete.
    """
    from speeched.modeling.model_dir import load_model_dir

    loaded = load_model_dir(model_dir, resolve_device(device))
    loaded.model.eval()
    return loaded.model, loaded.tokenizer, loaded.feature_extractor


# ---------------------------------------------------------------------------------------------- decoding
def model_inputs(feature_extractor: Any, arrays: Sequence[np.ndarray], device: Any) -> dict[str, Any]:
    """Pad a batch of waveforms with the feature extractor; keep only what the encoder takes.

    The attention mask is passed only when the extractor produces one by default: wav2vec2 checkpoints
    with group-norm feature encoders must see zero padding without a mask (as in transformers).
    """
    sr = feature_extractor.sampling_rate
    enc = feature_extractor(list(arrays), sampling_rate=sr, return_tensors="pt", padding=True)
    names = list(getattr(feature_extractor, "model_input_names", ["input_values"])) + ["attention_mask"]
    return {k: v.to(device) for k, v in enc.items() if k in names}


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None) or tokenizer.eos_token_id or tokenizer.sep_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}


def token_cap(model: Any, options: DecodeOptions, seconds: float) -> int:
    """max_new_tokens for a batch whose longest audio lasts `seconds`."""
    if options.max_new_tokens is not None:
        return options.max_new_tokens
    cap = math.ceil(options.tokens_per_second * seconds) + 10
    dec_cfg = getattr(model.config, "decoder", None)
    limit = getattr(dec_cfg, "max_position_embeddings", None) or getattr(dec_cfg, "n_positions", None)
    return max(1, min(cap, limit - 2)) if limit else max(1, cap)


def generate_batch(
    model: Any,
    tokenizer: Any,
    feature_extractor: Any,
    arrays: Sequence[np.ndarray],
    options: DecodeOptions,
    prefix: Sequence[int] | None = None,
) -> list[Decoded]:
    """Decode one batch (greedy or beam search, KV-cached); results in input order.

    `prefix`: the forced task/language tokens every input of the batch shares (from
    `speeched.modeling.prompting.DecoderPrompt`, exactly as the training collator built them). They are
    decoder inputs after the start token (cross-attention) or the prompt after the speech (prefix
    coupling), never part of the returned text.
    """
    import torch

    device = next(model.parameters()).device
    sr = feature_extractor.sampling_rate
    inputs = model_inputs(feature_extractor, arrays, device)
    cap = token_cap(model, options, max(len(a) for a in arrays) / sr)
    prefix = [int(t) for t in prefix or []]
    if options.ctc_weight > 0:
        return _generate_rescored(model, tokenizer, inputs, cap, options, prefix)
    kwargs: dict[str, Any] = {"max_new_tokens": cap, "num_beams": options.num_beams, "do_sample": False}
    start = getattr(model.generation_config, "decoder_start_token_id", None)
    if start is None:
        start = model.config.decoder_start_token_id
    cross = getattr(model.config, "coupling", "cross_attention") != "prefix"
    head = [start, *prefix] if cross else []
    if prefix and cross:
        kwargs["decoder_input_ids"] = torch.tensor([head] * len(arrays), dtype=torch.long, device=device)
    elif prefix:
        kwargs["prompt_ids"] = [prefix] * len(arrays)
    if options.num_beams > 1:
        kwargs["early_stopping"] = True
    if options.no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = options.no_repeat_ngram_size
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # generate() warns on every call that max_new_tokens beats max_length
    try:
        with torch.inference_mode():
            sequences = model.generate(**inputs, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    if not torch.is_tensor(sequences):
        sequences = sequences.sequences
    rows = sequences.tolist()
    bodies = [seq[len(head) :] if seq[: len(head)] == head else seq for seq in rows]
    texts = tokenizer.batch_decode(bodies, skip_special_tokens=True)
    eos = _eos_ids(model, tokenizer)
    out = []
    for seq, body, text in zip(rows, bodies, texts, strict=True):
        end = next((i for i, t in enumerate(body) if t in eos), None)
        n = len(body) if end is None else end
        ids = seq[: len(seq) - len(body) + n + (0 if end is None else 1)]
        out.append(Decoded(text.strip(), n, end is None and n >= cap, ids, cap))
    return out


def _generate_rescored(
    model: Any, tokenizer: Any, inputs: dict[str, Any], cap: int, options: DecodeOptions, prefix: list[int]
) -> list[Decoded]:
    """Joint CTC/attention decoding: (1-λ)·attention + λ·CTC prefix scores inside the beam search for
    cross-attention models; N-best rescoring for prefix-coupled LLMs."""
    import torch

    if not getattr(model.config, "ctc_vocab", None):
        raise ValueError(
            "--ctc-weight needs a model with a CTC head (compose it with ctc_weight / ctc_vocab)"
        )
    name = "input_values" if "input_values" in inputs else "input_features"
    beams = max(2, options.num_beams)
    if model.config.coupling == "cross_attention":
        from speeched.modeling.joint_decoding import joint_decode

        token_lists = joint_decode(
            model,
            tokenizer,
            inputs[name],
            inputs.get("attention_mask"),
            beams,
            options.ctc_weight,
            cap,
            prefix=prefix,
        )
        texts = tokenizer.batch_decode(token_lists, skip_special_tokens=True)
    else:
        from speeched.modeling.rescoring import rescore_beams

        with torch.inference_mode():
            scored = rescore_beams(
                model,
                tokenizer,
                inputs[name],
                attention_mask=inputs.get("attention_mask"),
                num_beams=beams,
                ctc_weight=options.ctc_weight,
                max_new_tokens=cap,
                do_sample=False,
                **({"prompt_ids": [prefix] * inputs[name].shape[0]} if prefix else {}),
            )
        token_lists = [list(scored.token_ids[b][i]) for b, i in enumerate(scored.best)]
        texts = [scored.texts[b][i] for b, i in enumerate(scored.best)]
    eos = _eos_ids(model, tokenizer)
    out = []
    for ids, text in zip(token_lists, texts, strict=True):
        n = next((i for i, t in enumerate(ids) if t in eos), len(ids))
        out.append(Decoded(text.strip(), n, n == len(ids) and n >= cap, list(ids), cap))
    return out


def duration_batches(durations: Sequence[float], options: DecodeOptions) -> list[list[int]]:
    """Deterministic batches cut from the duration-sorted order (longest first: memory errors come early)."""
    from speeched.data.sampler import DurationBucketSampler

    sampler = DurationBucketSampler(
        [max(d, 1e-3) for d in durations],
        max_duration=options.max_duration,
        max_batch_size=options.max_batch_size,
        shuffle=False,
        rank=0,
        world_size=1,
    )
    return list(reversed(sampler.global_batches()))


def _progress(total: float, options: DecodeOptions) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=options.progress_desc,
        unit="s",
        unit_scale=False,
        disable=not options.progress,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} audio-s [{elapsed}<{remaining}]",
    )


def decode_utterances(
    model: Any,
    tokenizer: Any,
    feature_extractor: Any,
    utterances: Sequence[Utterance],
    options: DecodeOptions | None = None,
    task: str = "asr",
) -> tuple[list[Prediction | None], list[dict[str, str]]]:
    """Decode every utterance; returns (predictions in input order, None where audio failed; failures)."""
    from speeched.modeling.prompting import decoder_prompt

    options = options or DecodeOptions()
    sr = feature_extractor.sampling_rate
    prompt = decoder_prompt(model, tokenizer)
    prompt.check(utterances)  # a missing/unknown language fails before any decoding
    durations = [_duration(u) for u in utterances]
    preds: list[Prediction | None] = [None] * len(utterances)
    failed: list[dict[str, str]] = []
    with _progress(sum(durations), options) as bar:
        for b, batch in enumerate(duration_batches(durations, options)):
            groups: dict[tuple[int, ...], tuple[list[int], list[np.ndarray]]] = {}
            for i in batch:
                try:
                    audio = load_audio(utterances[i], sr, check=False)
                except AudioError as err:
                    failed.append({"id": utterances[i].id, "reason": err.reason, "detail": str(err)})
                    continue
                keep, arrays = groups.setdefault(tuple(prompt.for_utterance(utterances[i])), ([], []))
                keep.append(i)
                arrays.append(audio)
            # One generate() per distinct prefix (e.g. per target language in a multi-target manifest).
            for prefix, (keep, arrays) in groups.items():
                decoded = generate_batch(model, tokenizer, feature_extractor, arrays, options, list(prefix))
                for i, x, d in zip(keep, arrays, decoded, strict=True):
                    u = utterances[i]
                    preds[i] = Prediction(
                        u.id,
                        u.target(task) or "",
                        d.text,
                        len(x) / sr,
                        d.num_tokens,
                        d.hit_cap,
                        b,
                        d.token_ids,
                        d.token_cap,
                    )
            bar.update(min(sum(durations[i] for i in batch), bar.total - bar.n))
    return preds, failed


def _duration(u: Utterance) -> float:
    if u.duration:
        return float(u.duration)
    from speeched.data.audio import audio_info

    try:
        u.duration = audio_info(u).duration
    except AudioError:
        return 1e-3  # decoded (and reported) as a failure later
    return u.duration


# ---------------------------------------------------------------------------------------------- scoring
def _examples(rows: list[dict[str, Any]], idx: Sequence[int]) -> list[dict[str, Any]]:
    return [{k: rows[i][k] for k in ("id", "reference", "hypothesis")} for i in list(idx)[:MAX_EXAMPLES]]


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
    rows: list[dict[str, Any]] = [
        {
            "id": p.id,
            "reference": p.reference,
            "hypothesis": p.hypothesis,
            "reference_normalized": nr,
            "hypothesis_normalized": nh,
            "duration": round(p.duration, 3),
            "num_tokens": p.num_tokens,
            "hit_token_cap": p.hit_token_cap,
        }
        for p, nr, nh in zip(predictions, nrefs, nhyps, strict=True)
    ]
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
        result["bleu_signature"], result["chrf_signature"] = (
            raw.get("bleu_signature"),
            raw.get("chrf_signature"),
        )
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
    result["normalized"], result["raw"] = norm, raw
    result["normalizer"] = {"name": normalizer.name, "description": normalizer.description}
    result["length_ratio"] = ratio
    result["diagnostics"] = diagnose(predictions, rows)
    return result, rows


def diagnose(predictions: Sequence[Prediction], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Count the ways decoding goes wrong that a single WER/BLEU hides; marks the rows too."""
    capped = [i for i, p in enumerate(predictions) if p.hit_token_cap]
    loops = []
    for i, p in enumerate(predictions):
        loop = M.find_loop(M.split_units(p.hypothesis))
        rows[i]["repetition_loop"] = loop is not None
        if loop is not None:
            loops.append(i)
    by_batch: dict[int, list[int]] = {}
    for i, p in enumerate(predictions):
        by_batch.setdefault(p.batch, []).append(i)
    same: list[int] = []
    for idx in by_batch.values():
        flagged = M.identical_across_batch(
            [predictions[i].hypothesis for i in idx], [predictions[i].reference for i in idx]
        )
        same.extend(idx[j] for j in flagged)
    for i in same:
        rows[i]["identical_in_batch"] = True
    empty = [i for i, p in enumerate(predictions) if not p.hypothesis.strip()]
    degenerate = sorted(set(loops) | set(same))
    return {
        "hit_token_cap": len(capped),
        "hit_token_cap_examples": _examples(rows, capped),
        "repetition_loops": len(loops),
        "repetition_loop_examples": _examples(rows, loops),
        "identical_in_batch": len(same),
        "identical_in_batch_examples": _examples(rows, same),
        "degenerate": len(degenerate),
        "empty_hypotheses": len(empty),
        "distinct_hypotheses": len({p.hypothesis for p in predictions}),
    }


def majority_lang(utterances: Sequence[Utterance], task: str) -> str | None:
    langs = Counter((u.tgt_lang if task == "st" else u.lang) for u in utterances)
    langs.pop(None, None)
    return langs.most_common(1)[0][0] if langs else None


BY_LANGUAGE_KEYS = ("num_utterances", "wer", "cer", "bleu", "chrf", "bleu_signature")


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


def evaluate_utterances(
    model: Any,
    tokenizer: Any,
    feature_extractor: Any,
    utterances: Sequence[Utterance],
    task: str = "asr",
    options: DecodeOptions | None = None,
    normalizer: Normalizer | str | None = None,
    lang: str | None = None,
) -> EvalResult:
    """Decode and score in memory (no files): the function the training loop calls on dev sets."""
    if task not in ("asr", "st"):
        raise ValueError(f"unknown task {task!r}: expected 'asr' or 'st'")
    lang = lang or majority_lang(utterances, task)
    if normalizer is None or isinstance(normalizer, str):
        normalizer = get_normalizer(normalizer or default_normalizer_name(task, lang))
    tokenize, note = M.bleu_tokenizer_for(lang)
    t0 = time.perf_counter()
    preds, failed = decode_utterances(model, tokenizer, feature_extractor, utterances, options, task)
    seconds = time.perf_counter() - t0
    done = [p for p in preds if p is not None]
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


# ---------------------------------------------------------------------------------------------- report
def read_data(
    data: DataSource | str | Sequence[Utterance],
    task: str,
    limit: int | None = None,
    report_dir: str | None = None,
) -> tuple[list[Utterance], dict[str, Any]]:
    """Utterances of a data source, with readable audio and a known duration; plus what was dropped.

    Nothing is filtered by length for evaluation: dropping hard (long) utterances flatters the score.
    """
    from speeched.data.scan import scan
    from speeched.data.sources import load_source

    if isinstance(data, (str, DataSource)):
        source = DataSource(path=data) if isinstance(data, str) else data
        if limit:
            source = source.model_copy(update={"limit": limit})
        utts = load_source(source)
    else:
        utts = list(data)[:limit] if limit else list(data)
    if not utts:
        raise ValueError(f"{_name(data)}: no utterances to evaluate")
    if task == "st" and all(u.translation is None for u in utts):
        raise ValueError(
            f"{_name(data)}: no translation targets (column 'translation' is empty or missing); "
            "pass --target-column NAME for the column that holds the translation, or use --task asr"
        )
    keep_all = Filters(min_duration=0.0, max_duration=float("inf"), drop_empty=False)
    result = scan(utts, keep_all, task=task, report_dir=report_dir, cache=False)
    dropped = {"total": result.total, "kept": len(result.kept), "dropped": dict(result.reasons)}
    if result.bad:
        dropped["examples"] = [b.describe() for b in result.bad[:MAX_EXAMPLES]]
    if not result.kept:
        raise ValueError(
            f"{_name(data)}: none of the {result.total} utterances has usable audio: {result.summary()}"
        )
    return result.kept, dropped


def _name(data: Any) -> str:
    if isinstance(data, DataSource):
        return data.path
    return data if isinstance(data, str) else "<utterances>"


def check_batching(
    model: Any,
    tokenizer: Any,
    feature_extractor: Any,
    utterances: Sequence[Utterance],
    batched: Sequence[Prediction],
    options: DecodeOptions,
) -> dict[str, Any]:
    """Decode again one utterance at a time, with the token cap each had in its batch.

    Padding must not change what the model says; when it does, the encoder mask or the feature
    extractor's padding is wrong (e.g. a group-norm wav2vec2 given an attention mask).
    """
    from tqdm import tqdm

    from speeched.modeling.prompting import decoder_prompt

    prompt = decoder_prompt(model, tokenizer)
    by_id = {u.id: u for u in utterances}
    sr = feature_extractor.sampling_rate
    diff = []
    for p in tqdm(batched, desc="batch-size-1 check", unit="utt", disable=not options.progress):
        single = DecodeOptions(**{**asdict(options), "max_new_tokens": p.token_cap, "max_batch_size": 1})
        audio = load_audio(by_id[p.id], sr, check=False)
        prefix = prompt.for_utterance(by_id[p.id])
        d = generate_batch(model, tokenizer, feature_extractor, [audio], single, prefix)[0]
        if d.text != p.hypothesis:
            diff.append({"id": p.id, "batched": p.hypothesis, "batch_size_1": d.text})
    return {
        "compared": len(batched),
        "agree": len(batched) - len(diff),
        "identical": not diff,
        "differences": diff[:MAX_EXAMPLES],
    }


def model_decoding(model: Any, num_beams: int | None, ctc_weight: float | None) -> tuple[int, float]:
    """(num_beams, ctc_weight): what the caller asked for, else what the model was validated with during
    training (`config.decoding`, written at export from the recipe's `eval` section), else greedy.

    A model whose dev WER was measured with joint CTC/attention decoding should not silently be decoded
    greedily by `eval` or `transcribe` (on the demo model that is 1% vs 65% WER)."""
    saved = getattr(model.config, "decoding", None) or {}
    beams = num_beams if num_beams is not None else int(saved.get("num_beams", 1))
    lam = ctc_weight if ctc_weight is not None else float(saved.get("ctc_weight", 0.0))
    if lam > 0 and not getattr(model.config, "ctc_vocab", None):
        lam = 0.0 if ctc_weight is None else lam  # an explicit --ctc-weight still gets its clear error
    return beams, lam


def evaluate_model(
    model: str | Path | tuple[Any, Any, Any],
    data: DataSource | str | Sequence[Utterance],
    task: str = "asr",
    out_dir: str | Path | None = None,
    num_beams: int | None = None,
    max_duration: float = 120.0,
    normalizer: str | None = None,
    limit: int | None = None,
    *,
    max_batch_size: int | None = None,
    max_new_tokens: int | None = None,
    lang: str | None = None,
    plot_attention: int = 0,
    check_batch: bool = False,
    device: str = "auto",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    ctc_weight: float | None = None,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
) -> dict[str, Any]:
    """Evaluate a model directory (or a loaded (model, tokenizer, feature_extractor)) on a data source.

    Writes out_dir/predictions.jsonl and out_dir/summary.json when out_dir is given; returns the summary.
    `src_lang` / `tgt_lang` fill in examples whose manifest names no `lang` / `tgt_lang` (they pick the
    decoder's language prefix, see speeched.modeling.prompting). `num_beams` / `ctc_weight` left as None
    use the decoding the model was validated with in training (`model_decoding`).
    """
    say = log or (lambda _msg: None)
    t_start = time.perf_counter()
    if isinstance(model, (str, Path)):
        model_name = str(model)
        say(f"loading model from {model_name}")
        loaded = load_inference_model(model, device)
    else:
        model_name, loaded = type(model[0]).__name__, model
    mdl, tokenizer, feature_extractor = loaded
    num_beams, ctc_weight = model_decoding(mdl, num_beams, ctc_weight)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    utts, data_report = read_data(data, task, limit, str(out) if out is not None else None)
    for u in utts:
        u.lang, u.tgt_lang = u.lang or src_lang, u.tgt_lang or tgt_lang
    say(f"evaluating {len(utts)} utterances ({sum(u.duration or 0 for u in utts) / 60:.1f} min of audio)")
    lang = lang or majority_lang(utts, task)
    search = [model_name] if isinstance(model, (str, Path)) else []
    norm = get_normalizer(normalizer or default_normalizer_name(task, lang), search)
    options = DecodeOptions(
        num_beams=num_beams,
        max_duration=max_duration,
        max_batch_size=max_batch_size,
        max_new_tokens=max_new_tokens,
        device=device,
        progress=progress,
        ctc_weight=ctc_weight,
    )
    result = evaluate_utterances(mdl, tokenizer, feature_extractor, utts, task, options, norm, lang)
    summary: dict[str, Any] = dict(result.metrics)
    summary["model"] = model_name
    summary["data"] = _name(data)
    summary["data_report"] = data_report
    summary["failed_audio"] = result.failed[:MAX_EXAMPLES]
    summary["decoding"] = {
        "strategy": (
            f"joint CTC/attention beam search (λ={ctc_weight}, {max(2, num_beams)} beams)"
            if ctc_weight > 0
            else ("greedy" if num_beams == 1 else f"beam search ({num_beams} beams)")
        ),
        "num_beams": num_beams,
        "max_duration": max_duration,
        "max_batch_size": max_batch_size,
        "max_new_tokens": max_new_tokens
        if max_new_tokens is not None
        else f"{options.tokens_per_second}/s + 10",
        "num_batches": 1 + max((p.batch for p in result.predictions), default=-1),
        "device": str(next(mdl.parameters()).device),
        "batching": "sorted by duration, longest first",
    }
    if check_batch:
        say("decoding again with batch size 1 (--check-batching)")
        summary["batching_check"] = check_batching(
            mdl, tokenizer, feature_extractor, utts, result.predictions, options
        )
    if plot_attention and out is not None:
        from speeched.evaluation.attention_plot import plot_predictions

        by_id = {u.id: u for u in utts}
        chosen = result.predictions[:plot_attention]
        summary["attention_plots"] = plot_predictions(
            mdl, tokenizer, feature_extractor, [by_id[p.id] for p in chosen], chosen, out / "attention"
        )
    summary["elapsed_seconds"] = round(time.perf_counter() - t_start, 3)
    if out is not None:
        with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
            for row in result.rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        (out / "summary.json").write_text(
            json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        summary["files"] = {
            "predictions": str(out / "predictions.jsonl"),
            "summary": str(out / "summary.json"),
        }
    return summary
