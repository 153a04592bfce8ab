"""`decode`: the one entry point that `eval`, `transcribe` and the training loop's dev evaluation call.

Inputs are waveforms (at the feature extractor's sampling rate) or `Utterance`s (read batch by batch, so
a large test set is never all in memory). They are cut into duration-sorted batches, each batch is split
by decoder prefix (e.g. per target language of a multi-target manifest), and one `generate_batch` runs
per group. Before that, every input is checked: unreadable audio gives a `Decoded` with `error`, NaN/inf
samples too, and digital silence gives empty text without decoding (`skipped`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from speeched.data.audio import AudioError, audio_info, load_audio
from speeched.data.records import Utterance
from speeched.errors import UsageError
from speeched.inference.batching import duration_batches
from speeched.inference.features import screen
from speeched.inference.generate import generate_batch
from speeched.inference.loading import InferenceModel
from speeched.inference.options import Decoded, DecodeOptions, resolve_options
from speeched.modeling.attention_backends import speech_attention


def decode(
    im: InferenceModel,
    inputs: Sequence[np.ndarray] | Sequence[Utterance],
    options: DecodeOptions | None = None,
) -> list[Decoded]:
    """Decode every input; one `Decoded` per input, in input order.

    Arrays share the prefix of `options.src_lang` / `options.tgt_lang`; an utterance's own `lang` /
    `tgt_lang` win over them. A bad or missing language fails (UsageError) before anything is decoded.
    """
    options = resolve_options(im.model, options or DecodeOptions())
    if options.ctc_weight and not getattr(im.model.config, "ctc_vocab", None):
        raise UsageError(
            "--ctc-weight needs a model with a CTC head (compose it with ctc_weight / ctc_vocab)"
        )
    prefixes, durations, load = _plan(im, inputs, options)
    with speech_attention(im.device):
        return _decode_batches(im, durations, load, prefixes, options)


def _plan(
    im: InferenceModel, inputs: Sequence[np.ndarray] | Sequence[Utterance], options: DecodeOptions
) -> tuple[list[tuple[int, ...]], list[float], Callable[[int], np.ndarray]]:
    """Per input: its decoder prefix and duration, and how to read its audio."""
    sr = im.sampling_rate
    if inputs and isinstance(inputs[0], Utterance):
        utts: Sequence[Utterance] = inputs  # type: ignore[assignment]
        src, tgt = options.src_lang, options.tgt_lang
        prefixes = [tuple(im.prefix_ids(u.lang or src, u.tgt_lang or tgt, u.origin or u.id)) for u in utts]
        durations = [_duration(u) for u in utts]

        def load(i: int) -> np.ndarray:
            return load_audio(utts[i], sr, check=False)

    else:
        arrays: Sequence[np.ndarray] = inputs  # type: ignore[assignment]
        shared = tuple(im.prefix_ids(options.src_lang, options.tgt_lang))
        prefixes = [shared] * len(arrays)
        durations = [len(a) / sr for a in arrays]

        def load(i: int) -> np.ndarray:
            return np.asarray(arrays[i], dtype=np.float32)

    return prefixes, durations, load


def _decode_batches(
    im: InferenceModel,
    durations: list[float],
    load: Callable[[int], np.ndarray],
    prefixes: list[tuple[int, ...]],
    options: DecodeOptions,
) -> list[Decoded]:
    results: list[Decoded | None] = [None] * len(durations)
    with _progress(sum(durations), options) as bar:
        for b, batch in enumerate(duration_batches(durations, options)):
            groups: dict[tuple[int, ...], tuple[list[int], list[np.ndarray]]] = {}
            for i in batch:
                try:
                    audio = load(i)
                except AudioError as err:
                    results[i] = Decoded("", batch=b, error=err)
                    continue
                screened = screen(audio, i, b)
                if screened is not None:
                    results[i] = screened
                else:
                    keep, arrays = groups.setdefault(prefixes[i], ([], []))
                    keep.append(i)
                    arrays.append(audio)
            for prefix, (keep, arrays) in groups.items():
                for i, d in zip(keep, generate_batch(im, arrays, options, prefix), strict=True):
                    results[i] = d.in_batch(b)
            bar.update(min(sum(durations[i] for i in batch), bar.total - bar.n))
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _duration(u: Utterance) -> float:
    if u.duration:
        return float(u.duration)
    try:
        u.duration = audio_info(u).duration
    except AudioError:
        return 1e-3  # read (and reported) as a failure when its batch comes
    return u.duration


def _progress(total: float, options: DecodeOptions) -> Any:
    return tqdm(
        total=total,
        desc=options.progress_desc,
        unit="s",
        unit_scale=False,
        disable=not options.progress,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} audio-s [{elapsed}<{remaining}]",
    )
