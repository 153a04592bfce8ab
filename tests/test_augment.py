"""Waveform augmentation: determinism per Generator, achieved SNR, speed, reverb, gain, concatenation."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from speeched.data.augment import (
    AugmentConfig,
    Augmenter,
    apply_rir,
    concatenate,
    item_rng,
    simulated_rir,
)
from speeched.errors import UsageError

SR = 16_000


def _speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a syllable-rate envelope: non-stationary like speech, exactly reproducible."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / k for k, f in enumerate((140, 280, 420), 1))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.2 * tone * envelope).astype(np.float32)


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy - clean
    return float(10 * np.log10(np.mean(clean**2) / np.mean(noise**2)))


ALL_ON = {"speed": {"p": 1}, "reverb": {"p": 1, "num_rooms": 4}, "noise": {"p": 1}, "gain": {"p": 1}}


def test_default_config_is_off_and_identity() -> None:
    config = AugmentConfig()
    assert not config.enabled
    x = _speechlike()
    assert np.array_equal(Augmenter(config, SR)(x, np.random.default_rng(0)), x)


def test_same_seed_same_output_other_seed_differs_and_globals_untouched() -> None:
    augmenter = Augmenter(AugmentConfig(**ALL_ON), SR)
    x = _speechlike()
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.random())
    random.seed(123)
    np.random.seed(123)
    a = augmenter(x, np.random.default_rng([7, 0, 42]))
    b = augmenter(x, np.random.default_rng([7, 0, 42]))
    assert np.array_equal(a, b)
    # A fresh Augmenter (another worker process) gives the same result for the same (seed, epoch, index).
    assert np.array_equal(Augmenter(AugmentConfig(**ALL_ON), SR)(x, np.random.default_rng([7, 0, 42])), a)
    outputs = [augmenter(x, np.random.default_rng([7, 0, i])) for i in range(6)]
    assert len({o.tobytes() for o in outputs}) == 6
    # audiomentations' use of the global generators is scoped: the caller's streams continue unchanged.
    assert (random.random(), np.random.random()) == before


@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_generated_noise_reaches_the_requested_snr(colour: str, snr: float) -> None:
    config = AugmentConfig(noise={"p": 1, "snr_db": (snr, snr), "colours": [colour]})
    x = _speechlike()
    y = Augmenter(config, SR)(x, np.random.default_rng(1))
    assert abs(_snr_db(x, y) - snr) < 0.5


def test_noise_colours_differ_in_spectrum() -> None:
    x = np.zeros(SR * 2, dtype=np.float32)
    x[::100] = 0.5  # clicks: non-silent, spectrally flat
    low_share = {}
    for colour in ("white", "brown"):
        y = Augmenter(AugmentConfig(noise={"p": 1, "colours": [colour]}), SR)(x, np.random.default_rng(3))
        spectrum = np.abs(np.fft.rfft(y - x)) ** 2
        low_share[colour] = spectrum[: len(spectrum) // 8].sum() / spectrum.sum()
    assert low_share["brown"] > 2 * low_share["white"]


def test_noise_from_a_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(tmp_path / f"n{i}.wav", (0.1 * rng.standard_normal(SR * 3)).astype(np.float32), SR)
    config = AugmentConfig(noise={"p": 1, "snr_db": (5, 5), "folder": str(tmp_path)})
    x = _speechlike()
    augmenter = Augmenter(config, SR)
    y = augmenter(x, np.random.default_rng(2))
    assert abs(_snr_db(x, y) - 5.0) < 0.5
    assert np.array_equal(y, augmenter(x, np.random.default_rng(2)))


@pytest.mark.parametrize("factor", [0.9, 1.1, 1.25])
def test_speed_changes_length_by_the_factor(factor: float) -> None:
    x = _speechlike(2.0)
    y = Augmenter(AugmentConfig(speed={"p": 1, "factors": [factor]}), SR)(x, np.random.default_rng(0))
    assert abs(len(y) - len(x) / factor) <= 1
    # pitch moves with speed: the dominant frequency scales by the factor
    peak = np.argmax(np.abs(np.fft.rfft(y))) * SR / len(y)
    assert abs(peak - 140 * factor) < 3


def test_reverb_keeps_length_and_loudness_and_is_not_identity() -> None:
    x = _speechlike()
    y = Augmenter(AugmentConfig(reverb={"p": 1, "num_rooms": 3}), SR)(x, np.random.default_rng(0))
    assert y.shape == x.shape
    assert not np.allclose(y, x, atol=1e-3)
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-3)
    # no added delay: the output is most similar to the input at lag 0
    lags = range(-40, 41)
    corr = [float(np.dot(np.roll(x, lag), y)) for lag in lags]
    assert abs(list(lags)[int(np.argmax(corr))]) <= 2


def test_simulated_rooms_are_fixed_per_index_and_reverberant() -> None:
    a = simulated_rir(0, SR, (0.5, 0.5), (5.0, 5.0))
    simulated_rir.cache_clear()
    assert np.array_equal(a, simulated_rir(0, SR, (0.5, 0.5), (5.0, 5.0)))
    assert not np.array_equal(a, simulated_rir(1, SR, (0.5, 0.5), (5.0, 5.0)))
    # energy decays: the tail after the direct path holds a real share of the energy (RT60 0.5 s)
    tail = a[int(np.argmax(np.abs(a))) + int(0.05 * SR) :]
    assert 0.05 < (tail**2).sum() / (a**2).sum() < 0.95
    # a unit impulse as RIR is the identity
    x = _speechlike()
    assert np.allclose(apply_rir(x, np.array([0.0, 0.0, 1.0], dtype=np.float32)), x, atol=1e-6)


def test_rir_folder(tmp_path: Path) -> None:
    rir = np.zeros(800, dtype=np.float32)
    rir[10], rir[400] = 1.0, 0.5
    sf.write(tmp_path / "room.wav", rir, SR)
    x = _speechlike()
    y = Augmenter(AugmentConfig(reverb={"p": 1, "folder": str(tmp_path)}), SR)(x, np.random.default_rng(0))
    expected = x.copy()
    expected[390:] += 0.5 * x[:-390]
    expected *= np.sqrt(np.mean(x**2)) / np.sqrt(np.mean(expected**2))
    assert np.allclose(y, expected, atol=1e-4)


def test_gain_within_range() -> None:
    x = _speechlike()
    augmenter = Augmenter(AugmentConfig(gain={"p": 1, "gain_db": (-6, 6)}), SR)
    gains = []
    for i in range(20):
        y = augmenter(x, np.random.default_rng(i))
        ratio = y / np.where(x == 0, 1, x)
        assert np.allclose(ratio[x != 0], ratio[x != 0][0], rtol=1e-4)  # one gain for the whole item
        gains.append(20 * np.log10(ratio[x != 0][0]))
    assert min(gains) >= -6.01 and max(gains) <= 6.01 and max(gains) - min(gains) > 3


def test_probability_is_respected() -> None:
    augmenter = Augmenter(AugmentConfig(gain={"p": 0.3}), SR)
    x = _speechlike(0.5)
    changed = sum(not np.array_equal(augmenter(x, np.random.default_rng(i)), x) for i in range(200))
    assert 40 <= changed <= 80


def test_silence_pads_both_ends_and_adds_a_floor_at_the_requested_level() -> None:
    x = _speechlike(1.0)
    cfg = AugmentConfig(silence={"p": 1, "seconds": (0.1, 0.3), "floor_db": (-70, -50)})
    augmenter = Augmenter(cfg, SR)
    for i in range(10):
        y = augmenter(x, np.random.default_rng(i))
        extra = (y.size - x.size) / SR
        assert 0.2 - 1e-3 <= extra <= 0.6 + 1e-3
        # the item itself sits somewhere after a 0.1-0.3 s lead, under a small noise floor
        lead = next(
            k for k in range(int(0.1 * SR), int(0.3 * SR) + 2) if np.allclose(y[k : k + x.size], x, atol=0.02)
        )
        head = y[: lead - 1]
        floor = 20 * np.log10(np.sqrt(np.mean(head.astype(np.float64) ** 2)))
        assert -71 <= floor <= -49  # never digital silence, never louder than asked
    assert np.array_equal(augmenter(x, np.random.default_rng(3)), augmenter(x, np.random.default_rng(3)))


def test_digital_silence_pads_with_exact_zeros_and_leaves_the_item_untouched() -> None:
    x = _speechlike(1.0)
    cfg = AugmentConfig(silence={"p": 1, "seconds": (0.1, 0.3), "floor_db": (-70, -50), "digital_p": 0.5})
    augmenter = Augmenter(cfg, SR)
    digital = 0
    for i in range(40):
        y = augmenter(x, np.random.default_rng(i))
        nonzero = np.flatnonzero(y)
        lead = int(nonzero[0]) - int(np.flatnonzero(x)[0])
        if (
            np.array_equal(y[lead : lead + x.size], x)
            and not np.any(y[:lead])
            and not np.any(y[lead + x.size :])
        ):
            digital += 1
    assert 10 <= digital <= 30  # about half exact zeros around the untouched item, the rest with a floor


def test_adding_the_silence_stage_leaves_the_other_stages_draws_unchanged() -> None:
    x = _speechlike(1.0)
    base = Augmenter(AugmentConfig(**ALL_ON), SR)(x, np.random.default_rng(5))
    with_silence = Augmenter(
        AugmentConfig(**ALL_ON, silence={"p": 1, "seconds": (0.0, 0.0), "floor_db": (-300, -300)}), SR
    )
    assert np.allclose(with_silence(x, np.random.default_rng(5)), base, atol=1e-7)


def test_concatenate_joins_audio_and_text_with_pauses() -> None:
    a, b, c = _speechlike(1.0, 0), _speechlike(0.5, 1), _speechlike(0.8, 2)
    audio, text = concatenate([(a, "one two"), (b, " three"), (c, "four")], np.random.default_rng(0))
    assert text == "one two three four"
    pause = len(audio) - len(a) - len(b) - len(c)
    assert 2 * 0.2 * SR <= pause <= 2 * 1.0 * SR
    assert np.array_equal(audio[: len(a)], a) and np.array_equal(audio[-len(c) :], c)
    assert not np.any(audio[len(a) : len(a) + int(0.2 * SR)])  # silence after the first
    same = concatenate([(a, "one two"), (b, " three"), (c, "four")], np.random.default_rng(0))
    assert np.array_equal(same[0], audio)
    # the duration cap leaves out what does not fit, text included
    capped, capped_text = concatenate(
        [(a, "x"), (b, "y"), (c, "z")], np.random.default_rng(0), max_duration=1.6
    )
    assert len(capped) <= 1.6 * SR and capped_text in ("x y", "x z", "x")


def test_concat_count_probability_and_range() -> None:
    augmenter = Augmenter(AugmentConfig(concat={"p": 0.5, "max_items": 3}), SR)
    counts = [augmenter.concat_count(np.random.default_rng(i)) for i in range(300)]
    assert set(counts) == {1, 2, 3}
    assert 110 <= counts.count(1) <= 190
    assert all(Augmenter(AugmentConfig(), SR).concat_count(np.random.default_rng(i)) == 1 for i in range(20))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"noise": {"p": 1.5}}, "less than or equal to 1"),
        ({"noise": {"snr_db": (30, 10)}}, "lower bound 30.0 is above"),
        ({"speed": {"factors": [0.1]}}, "speed factors must lie in"),
        ({"speed": {"factors": []}}, "at least 1 item"),
        ({"noise": {"colours": ["purple"]}}, "white"),
        ({"reverb": {"rt60": (0.0, 0.5)}}, "rt60 must be > 0.05"),
        ({"gain": {"db": (1, 2)}}, "Extra inputs are not permitted"),
        ({"concat": {"pause": (-1, 1)}}, "pause must be >= 0"),
        ({"silence": {"seconds": (-0.1, 0.2)}}, "seconds must be >= 0"),
        ({"silence": {"floor_db": (-40, -60)}}, "lower bound -40.0 is above"),
    ],
)
def test_config_validation(config: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AugmentConfig(**config)


def test_missing_or_empty_folders_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="noise folder .*does not exist"):
        Augmenter(AugmentConfig(noise={"p": 1, "folder": str(tmp_path / "nope")}), SR)
    with pytest.raises(UsageError, match="RIR folder .*holds no audio"):
        Augmenter(AugmentConfig(reverb={"p": 1, "folder": str(tmp_path)}), SR)


def test_cost_per_second_of_audio_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """Reported, not asserted: the machine is shared."""
    x = _speechlike(3.0)
    report = []
    for name, config in [
        ("speed", {"speed": {"p": 1}}),
        ("noise", {"noise": {"p": 1}}),
        ("gain", {"gain": {"p": 1}}),
        ("reverb (4 rooms, cached)", {"reverb": {"p": 1, "num_rooms": 4}}),
        ("all", ALL_ON),
    ]:
        augmenter = Augmenter(AugmentConfig(**config), SR)
        for i in range(4):  # warm the room cache
            augmenter(x, np.random.default_rng(i))
        start = time.perf_counter()
        for i in range(10):
            augmenter(x, np.random.default_rng(i))
        per_second = (time.perf_counter() - start) / (10 * 3.0)
        report.append(f"{name}: {1000 * per_second:.2f} ms per audio second")
    start = time.perf_counter()
    simulated_rir(999, SR, (0.2, 0.8), (3.0, 10.0))
    report.append(f"simulating one room: {1000 * (time.perf_counter() - start):.0f} ms")
    with capsys.disabled():
        print("\naugmentation cost: " + "; ".join(report))


def test_item_rng_is_per_sample_and_epoch_and_copies_repeat() -> None:
    augmenter = Augmenter(AugmentConfig(noise={"p": 1}, gain={"p": 1}), SR)
    x = _speechlike(0.5)

    def out(epoch: int, index: int, copies: int | None = None) -> bytes:
        return augmenter(x, item_rng(0, epoch, index, copies)).tobytes()

    assert out(0, 3) == out(0, 3) and out(0, 3) != out(1, 3) and out(0, 3) != out(0, 4)
    assert out(0, 3, copies=2) == out(2, 3, copies=2) != out(1, 3, copies=2)
    assert item_rng(5, 1, 2).random() == np.random.default_rng([5, 1, 2]).random()
    with pytest.raises(ValidationError):
        AugmentConfig(copies=0)
