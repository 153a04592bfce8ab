"""Word start/end times from a CTC forced alignment of the final hypothesis.

The decoder writes the text; the CTC head (on the raw encoder output, before any length adaptor: see
`SpeechEncoderDecoderModel.add_ctc_loss`) says *when* each unit was spoken. Forced alignment finds the
most likely frame-level CTC path that spells exactly the hypothesis (Viterbi over the usual CTC trellis:
blank / unit / blank / unit ... / blank, a state either stays, moves one on, or skips a blank between
two different units), then each word spans the frames of its units.

Why hand-written: `torchaudio.functional.forced_align` does exactly this, but the torchaudio wheels on
the index (2.11) do not match our torch (2.13) and cannot be installed next to it. The trellis below is
vectorised over states with numpy, one step per frame (O(T·S)); a 10 s segment at 50 frames/s with 100
units takes ~ms.

Units: the CTC vocabulary is characters (`ctc_units="char"`, "|" between words) or whole words
(`"word"`); see `speeched.modeling.ctc`. Characters the CTC vocabulary lacks (punctuation, digits
written as numerals...) are skipped; a word with no alignable unit at all gets the gap between its
neighbours. When the units cannot fit the frames (more units + repeats than frames) or nothing is
alignable, times fall back to spreading the words over the segment in proportion to their length, and
`WordAlignment.method` says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from speeched.data.feature_cache import padding_kwargs
from speeched.modeling.ctc import BLANK, SPACE, UNK

NEG_INF = -1e30


@dataclass
class WordAlignment:
    """`words`: [{"word", "start", "end"}] in seconds; `method`: "ctc" or "proportional" (+ `reason`)."""

    words: list[dict] = field(default_factory=list)
    method: str = "ctc"
    reason: str | None = None


def forced_align(log_probs: np.ndarray, targets: Sequence[int], blank: int = 0) -> list[int] | None:
    """Best CTC path spelling `targets`: for each frame, the index into `targets` it emits, or -1 (blank).

    `log_probs`: (frames, vocab) log-softmax output. None when the targets cannot fit the frames.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    frames = lp.shape[0]
    n = len(targets)
    repeats = sum(1 for a, b in zip(targets, targets[1:], strict=False) if a == b)
    if n == 0 or frames < n + repeats:
        return None
    states = np.full(2 * n + 1, blank, dtype=np.int64)
    states[1::2] = np.asarray(targets, dtype=np.int64)
    num_states = len(states)
    # A skip (s-2 -> s) is allowed into a unit state whose unit differs from the unit two states back.
    can_skip = np.zeros(num_states, dtype=bool)
    can_skip[3::2] = states[3::2] != states[1:-2:2]
    score = np.full(num_states, NEG_INF)
    score[0] = lp[0, blank]
    score[1] = lp[0, states[1]]
    back = np.zeros((frames, num_states), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, frames):
        stay = score
        step = np.concatenate([[NEG_INF], score[:-1]])
        skip = np.where(can_skip, np.concatenate([[NEG_INF, NEG_INF], score[:-2]]), NEG_INF)
        cand = np.stack([stay, step, skip])
        choice = np.argmax(cand, axis=0)
        score = cand[choice, np.arange(num_states)] + lp[t, states]
        back[t] = choice
    # The path ends in the last unit or the final blank.
    s = num_states - 1 if score[-1] >= score[-2] else num_states - 2
    if score[s] <= NEG_INF / 2:
        return None
    path = [0] * frames
    for t in range(frames - 1, -1, -1):
        path[t] = (s - 1) // 2 if s % 2 == 1 else -1
        s -= int(back[t, s])
    return path


def _word_units(word: str, index: dict[str, int], units: str) -> list[int]:
    word = word.lower()
    if units == "word":
        key = "".join(ch for ch in word if ch.isalnum() or ch in "'-") if word not in index else word
        return [index[key]] if key in index and key not in (BLANK, UNK) else []
    return [index[ch] for ch in word if ch in index and ch not in (BLANK, UNK, SPACE)]


def proportional_times(words: Sequence[str], start: float, end: float) -> list[dict]:
    """Words spread over [start, end] in proportion to their length (the fallback)."""
    weights = np.array([max(1, len(w)) for w in words], dtype=np.float64)
    edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights) / max(weights.sum(), 1.0)])
    return [
        {"word": w, "start": round(float(edges[k]), 3), "end": round(float(edges[k + 1]), 3)}
        for k, w in enumerate(words)
    ]


def align_words(
    log_probs: np.ndarray,
    text: str,
    vocab: Sequence[str],
    units: str,
    frame_seconds: float,
    offset: float = 0.0,
    voiced: np.ndarray | None = None,
) -> WordAlignment:
    """Word times (seconds, `offset` added) for `text` against one utterance's CTC log-probs (frames, vocab).

    `frame_seconds`: the CTC head's frame stride (see `ctc_frame_seconds`). A word spans from the first
    frame of its first unit to the end of its last unit's frames; with `voiced` (one bool per frame, see
    `voiced_frames`) it then grows over the voiced frames around them (`extend_over_voiced`).
    """
    words = text.split()
    frames = int(np.asarray(log_probs).shape[0])
    duration = frames * frame_seconds
    if not words:
        return WordAlignment([])
    index = {u: i for i, u in enumerate(vocab)}
    per_word = [_word_units(w, index, units) for w in words]
    targets: list[int] = []
    owner: list[int] = []  # word index of each target
    space = index.get(SPACE) if units == "char" else None
    for k, ids in enumerate(per_word):
        if not ids:
            continue
        if space is not None and targets:
            targets.append(space)
            owner.append(-1)
        targets.extend(ids)
        owner.extend([k] * len(ids))

    def fallback(reason: str) -> WordAlignment:
        return WordAlignment(proportional_times(words, offset, offset + duration), "proportional", reason)

    if not targets:
        return fallback("no word of the hypothesis is in the CTC vocabulary")
    path = forced_align(log_probs, targets, blank=index.get(BLANK, 0))
    if path is None:
        return fallback(f"{len(targets)} CTC units (with repeats) do not fit {frames} frames")
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t, j in enumerate(path):
        if j >= 0 and owner[j] >= 0:
            first.setdefault(owner[j], t)
            last[owner[j]] = t
    if voiced is not None and len(voiced) >= frames:
        first, last = extend_over_voiced(first, last, np.asarray(voiced[:frames], dtype=bool))
    times: list[tuple[float, float] | None] = [
        (first[k] * frame_seconds, (last[k] + 1) * frame_seconds) if k in first else None
        for k in range(len(words))
    ]
    # Words without alignable units take the gap between their aligned neighbours (shared if several).
    k = 0
    while k < len(words):
        if times[k] is not None:
            k += 1
            continue
        j = k
        while j < len(words) and times[j] is None:
            j += 1
        lo = times[k - 1][1] if k > 0 else 0.0  # type: ignore[index]
        hi = times[j][0] if j < len(words) else duration  # type: ignore[index]
        for m, item in enumerate(proportional_times(words[k:j], lo, max(lo, hi))):
            times[k + m] = (item["start"], item["end"])
        k = j
    return WordAlignment(
        [
            {"word": w, "start": round(offset + s, 3), "end": round(offset + e, 3)}
            for w, (s, e) in zip(words, times, strict=True)  # type: ignore[misc]
        ]
    )


def extend_over_voiced(
    first: dict[int, int], last: dict[int, int], voiced: np.ndarray
) -> tuple[dict[int, int], dict[int, int]]:
    """Grow each word's frames [first, last] over the voiced frames next to them.

    A CTC head emits a unit on one or a few frames somewhere inside it (a word-unit head: one spike per
    word), so the aligned frames start late and end early. The word is taken to extend over the
    contiguous voiced frames around them, never past the middle of the gap to a neighbouring word, and
    never across an unvoiced frame (a pause).
    """
    order = sorted(first)
    new_first, new_last = dict(first), dict(last)
    for i, k in enumerate(order):
        lo = (last[order[i - 1]] + first[k] + 1) // 2 if i else 0
        hi = (last[k] + first[order[i + 1]] - 1) // 2 if i + 1 < len(order) else len(voiced) - 1
        s, e = first[k], last[k]
        while s - 1 >= lo and voiced[s - 1]:
            s -= 1
        while e + 1 <= hi and voiced[e + 1]:
            e += 1
        new_first[k], new_last[k] = s, e
    return new_first, new_last


def voiced_frames(audio: np.ndarray, samples_per_frame: float, frames: int) -> np.ndarray:
    """One bool per CTC frame: is the frame's audio well above the segment's noise floor?

    Frame level in dB; the floor is the 5th percentile of the frames (the segment's pauses and padding),
    and a frame is voiced when it is more than a quarter of the floor-to-peak range (at least 6 dB) above
    the floor: clean audio keeps quiet consonants, noisy audio (e.g. 10 dB SNR) does not turn all voiced.
    """
    x = np.asarray(audio, dtype=np.float64)
    bounds = np.minimum(np.round(np.arange(frames + 1) * samples_per_frame).astype(np.int64), len(x))
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    counts = np.maximum(bounds[1:] - bounds[:-1], 1)
    power = np.maximum((c[bounds[1:]] - c[bounds[:-1]]) / counts, 0.0)
    db = 10.0 * np.log10(np.maximum(power, 1e-10))
    if not len(db):
        return np.zeros(0, dtype=bool)
    floor, peak = float(np.percentile(db, 5)), float(db.max())
    return db > floor + max(6.0, 0.25 * (peak - floor))


def ctc_frame_seconds(model: object, sampling_rate: int, num_samples: int, num_frames: int) -> float:
    """Seconds per CTC frame (the CTC head reads the raw encoder output, before any length adaptor).

    Exact where the encoder's config says it: wav2vec2-style `inputs_to_logits_ratio` (product of the
    conv strides, in samples), a Speech2Text log-mel encoder (10 ms feature shift, each of its
    `num_conv_layers` halves the rate) or Whisper's (10 ms shift, its second conv halves it: 20 ms; the
    ratio of lengths would be wrong there, since an input padded to Whisper's window is longer than the audio).
    Otherwise the measured ratio of input to output length.
    """
    enc = getattr(getattr(model, "config", None), "encoder", None)
    ratio = getattr(enc, "inputs_to_logits_ratio", None)
    if isinstance(ratio, int | float) and ratio > 0:
        return float(ratio) / sampling_rate
    if getattr(enc, "model_type", None) == "speech_to_text":
        return 0.010 * 2 ** int(getattr(enc, "num_conv_layers", 2))
    if getattr(enc, "model_type", None) == "whisper":
        return 0.020
    return num_samples / sampling_rate / max(1, num_frames)


def ctc_log_probs(model: object, feature_extractor: object, audio: np.ndarray) -> tuple[np.ndarray, float]:
    """(frames, vocab) CTC log-probs of one utterance from the model's CTC head, and seconds per frame."""
    sr = int(feature_extractor.sampling_rate)  # type: ignore[attr-defined]
    # padded as everywhere else (a fixed-window extractor to its window, unless it pads to the longest)
    inputs = feature_extractor(  # type: ignore[operator]
        [audio],
        sampling_rate=sr,
        return_tensors="pt",
        return_attention_mask=True,
        **padding_kwargs(feature_extractor),
    )
    device = next(model.parameters()).device  # type: ignore[attr-defined]
    main = inputs.get("input_values", inputs.get("input_features"))
    mask = inputs.get("attention_mask")
    with torch.no_grad():
        enc = model.encode(main.to(device), attention_mask=None if mask is None else mask.to(device))  # type: ignore[attr-defined]
        logits = model.ctc_head(enc.raw_last_hidden_state)  # type: ignore[attr-defined]
        n = int(model.ctc_frame_lengths(enc)[0])  # type: ignore[attr-defined]
        seconds = ctc_frame_seconds(model, sr, len(audio), n)
        # frames past the audio (a window's padding, which no mask marks) are not the utterance's
        n = min(n, max(1, math.ceil(len(audio) / sr / seconds - 1e-6)))
        lp = torch.log_softmax(logits[0, :n].float(), dim=-1).cpu().numpy()
    return lp, seconds


def word_timestamps(
    model: object,
    feature_extractor: object,
    audio: np.ndarray,
    text: str,
    offset: float = 0.0,
    extend: bool = True,
) -> WordAlignment:
    """Word times for `text` (the final hypothesis of `audio`) from `model`'s CTC head.

    `extend`: grow words from their CTC frames over the voiced audio around them (`extend_over_voiced`).
    Raises ValueError when the model has no CTC head (callers should check `config.ctc_vocab` first).
    """
    config = model.config  # type: ignore[attr-defined]
    if not getattr(config, "ctc_vocab", None):
        raise ValueError("word timestamps need a model trained with a CTC head (config.ctc_vocab is empty)")
    lp, frame_seconds = ctc_log_probs(model, feature_extractor, audio)
    sr = int(feature_extractor.sampling_rate)  # type: ignore[attr-defined]
    voiced = voiced_frames(audio, frame_seconds * sr, len(lp)) if extend else None
    return align_words(lp, text, config.ctc_vocab, config.ctc_units, frame_seconds, offset, voiced)
