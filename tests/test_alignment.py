"""CTC forced alignment for word timestamps: exact recovery on synthetic posteriors, edge cases, a model."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from speeched.inference.alignment import align_words, forced_align, word_timestamps
from speeched.modeling.ctc import BLANK, SPACE, UNK, build_ctc_vocab, decode_ctc_ids

CHAR_VOCAB = build_ctc_vocab(["one two three four five six seven eight nine zero"], "char")
WORD_VOCAB = build_ctc_vocab(["one two three four five six seven eight nine zero"], "word")


def _posteriors(path: list[int], vocab_size: int, peak: float = 0.9, seed: int = 0) -> np.ndarray:
    """Log-probs where each frame's true unit has probability `peak`, the rest is spread at random."""
    rng = np.random.default_rng(seed)
    rest = rng.dirichlet(np.ones(vocab_size - 1), size=len(path)) * (1 - peak)
    probs = np.zeros((len(path), vocab_size))
    for t, unit in enumerate(path):
        probs[t, unit] = peak
        probs[t, [v for v in range(vocab_size) if v != unit]] = rest[t]
    return np.log(probs)


def _frames_for(words: list[tuple[str, float, float]], vocab: list[str], units: str, fps: int, total: float):
    """A frame path spelling `words` at known times: each word's units spread evenly over its span,
    blanks in pauses; "|" frames at the ends of words for char units (as trained CTC heads often do)."""
    index = {u: i for i, u in enumerate(vocab)}
    path = [0] * int(round(total * fps))
    for k, (word, start, end) in enumerate(words):
        ids = [index[word]] if units == "word" else [index[c] for c in word]
        a, b = int(round(start * fps)), int(round(end * fps))
        for j, unit in enumerate(ids):
            lo = a + (b - a) * j // len(ids)
            hi = a + (b - a) * (j + 1) // len(ids)
            for t in range(lo, hi - 1 if hi - lo > 1 else hi):  # last frame of each unit blank: repeats ok
                path[t] = unit
        if units == "char" and k + 1 < len(words):
            path[b - 1] = index[SPACE]  # the blank frame that ends the word
    return path


@pytest.mark.parametrize("units", ["char", "word"])
def test_forced_alignment_recovers_known_word_times(units: str) -> None:
    vocab = CHAR_VOCAB if units == "char" else WORD_VOCAB
    fps = 50
    truth = [("seven", 0.30, 0.80), ("two", 0.80, 1.10), ("two", 1.10, 1.40), ("nine", 2.10, 2.60)]
    path = _frames_for(truth, vocab, units, fps, 3.0)
    lp = _posteriors(path, len(vocab))
    assert decode_ctc_ids(lp.argmax(-1).tolist(), vocab, units) == "seven two two nine"
    result = align_words(lp, "seven two two nine", vocab, units, 1 / fps, offset=10.0)
    assert result.method == "ctc" and [w["word"] for w in result.words] == ["seven", "two", "two", "nine"]
    for got, (_, start, end) in zip(result.words, truth, strict=True):
        assert got["start"] == pytest.approx(10.0 + start, abs=1e-9)
        # the last frame of a unit is blank in the synthetic path: the word ends one frame early
        assert got["end"] == pytest.approx(10.0 + end - 1 / fps, abs=1e-9)


def test_viterbi_path_is_the_best_valid_ctc_path_by_brute_force() -> None:
    rng = np.random.default_rng(1)
    vocab_size, frames = 3, 6
    for targets in ([1, 2], [1, 1], [2, 1, 2]):
        lp = np.log(rng.dirichlet(np.ones(vocab_size), size=frames))
        best, best_score = None, -np.inf
        for seq in itertools.product(range(vocab_size), repeat=frames):
            collapsed = [u for k, u in enumerate(seq) if u != 0 and (k == 0 or seq[k - 1] != u)]
            if collapsed == targets:
                score = sum(lp[t, u] for t, u in enumerate(seq))
                if score > best_score:
                    best, best_score = seq, score
        path = forced_align(lp, targets)
        assert path is not None
        units = [targets[j] if j >= 0 else 0 for j in path]
        assert sum(lp[t, u] for t, u in enumerate(units)) == pytest.approx(best_score)
        assert tuple(units) == best
        # Viterbi (best path) never beats the full CTC likelihood over all paths (torch's ctc_loss).
        nll = torch.nn.functional.ctc_loss(
            torch.tensor(lp).unsqueeze(1),
            torch.tensor([targets]),
            torch.tensor([frames]),
            torch.tensor([len(targets)]),
            reduction="sum",
        )
        assert best_score <= -float(nll) + 1e-9


def test_words_outside_the_ctc_vocabulary_take_the_gap_between_neighbours() -> None:
    fps = 50
    truth = [("one", 0.2, 0.6), ("nine", 1.4, 1.8)]
    path = _frames_for(truth, WORD_VOCAB, "word", fps, 2.0)
    lp = _posteriors(path, len(WORD_VOCAB))
    result = align_words(lp, "one Hello, nine", WORD_VOCAB, "word", 1 / fps)
    one, hello, nine = result.words
    assert result.method == "ctc" and hello["word"] == "Hello,"
    assert hello["start"] == one["end"] and hello["end"] == nine["start"]
    assert one["start"] == pytest.approx(0.2) and nine["start"] == pytest.approx(1.4)
    # punctuation and case of the hypothesis are kept in the output but ignored for alignment (chars)
    path = _frames_for([("two", 0.2, 0.6), ("six", 1.0, 1.5)], CHAR_VOCAB, "char", fps, 2.0)
    result = align_words(_posteriors(path, len(CHAR_VOCAB)), "Two, six.", CHAR_VOCAB, "char", 1 / fps)
    assert [w["word"] for w in result.words] == ["Two,", "six."]
    assert [w["start"] for w in result.words] == pytest.approx([0.2, 1.0])


def test_edge_cases_fall_back_clearly() -> None:
    lp = _posteriors([0] * 10, len(CHAR_VOCAB))
    assert align_words(lp, "", CHAR_VOCAB, "char", 0.02).words == []
    assert align_words(lp, "   ", CHAR_VOCAB, "char", 0.02).words == []
    nothing = align_words(lp, "hello, world!", WORD_VOCAB, "word", 0.02, offset=5.0)
    assert nothing.method == "proportional" and "no word" in (nothing.reason or "")
    assert nothing.words[0]["start"] == 5.0 and nothing.words[-1]["end"] == pytest.approx(5.2)
    # "seven seven" needs 5 + 1 + 5 units (with the "|"): more than 10 frames
    too_many = align_words(lp, "seven seven", CHAR_VOCAB, "char", 0.02)
    assert too_many.method == "proportional" and "do not fit 10 frames" in (too_many.reason or "")
    assert [w["end"] for w in too_many.words] == pytest.approx([0.1, 0.2])
    assert forced_align(lp, [3, 3], blank=0) is not None  # 3 frames are enough for a repeat
    assert forced_align(lp[:2], [3, 3], blank=0) is None
    assert CHAR_VOCAB[0] == BLANK and CHAR_VOCAB[1] == UNK


def test_word_timestamps_from_a_model_with_a_ctc_head(tmp_path: Path) -> None:
    from test_eval_cli import make_fast_model_dir

    from speeched.modeling.model_dir import load_model_dir

    loaded = load_model_dir(make_fast_model_dir(tmp_path))
    model, fe = loaded.model, loaded.feature_extractor
    audio = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1
    with pytest.raises(ValueError, match="CTC head"):
        word_timestamps(model, fe, audio, "one two")
    model.add_ctc_head(CHAR_VOCAB)
    model.config.ctc_units = "char"
    model.eval()
    result = word_timestamps(model, fe, audio, "one two three", offset=2.0)
    assert result.method == "ctc" and [w["word"] for w in result.words] == ["one", "two", "three"]
    ends = [w["end"] for w in result.words]
    starts = [w["start"] for w in result.words]
    assert starts[0] >= 2.0 and ends[-1] <= 2.0 + 3.0 + 1e-6
    assert all(s < e for s, e in zip(starts, ends, strict=True))
    assert all(e <= s for e, s in zip(ends, starts[1:], strict=False))
    # frames are the encoder's 320-sample stride (20 ms at 16 kHz): every time is on that grid
    assert all(abs((t - 2.0) / 0.02 - round((t - 2.0) / 0.02)) < 1e-6 for t in starts + ends)


@pytest.mark.parametrize("noise_db", [-60.0, -10.0])
def test_word_spikes_grow_over_the_voiced_audio_around_them(noise_db: float) -> None:
    """A word-unit CTC head spikes once inside each word: the word's extent comes from the audio around
    the spike, up to pauses, and never into a neighbour (clean, and with noise 10 dB below the speech)."""
    from speeched.inference.alignment import voiced_frames

    sr, fps = 16000, 25
    truth = [("seven", 0.40, 0.92), ("two", 0.92, 1.40), ("nine", 2.00, 2.60)]
    rng = np.random.default_rng(3)
    audio = 0.3 * 10 ** (noise_db / 20) * rng.standard_normal(3 * sr)
    for _, a, b in truth:
        audio[int(a * sr) : int(b * sr)] += 0.3 * rng.standard_normal(int(b * sr) - int(a * sr))
    index = {u: i for i, u in enumerate(WORD_VOCAB)}
    path = [0] * (3 * fps)
    for word, a, b in truth:
        path[int((a + b) / 2 * fps)] = index[word]  # one spike, in the middle of the word
    lp = _posteriors(path, len(WORD_VOCAB))
    spikes = align_words(lp, "seven two nine", WORD_VOCAB, "word", 1 / fps)
    assert all(w["end"] - w["start"] == pytest.approx(1 / fps) for w in spikes.words)
    voiced = voiced_frames(audio, sr / fps, len(lp))
    grown = align_words(lp, "seven two nine", WORD_VOCAB, "word", 1 / fps, voiced=voiced)
    for got, (_, a, b) in zip(grown.words, truth, strict=True):
        assert abs(got["start"] - a) <= 1 / fps + 1e-9 and abs(got["end"] - b) <= 1 / fps + 1e-9, got
    seven, two, _ = grown.words
    assert seven["end"] <= two["start"]  # touching words split between their spikes, never overlapping
