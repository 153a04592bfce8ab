"""`speeched data synth`: grammar, the eSpeak NG wrapper and whole corpora through the real CLI."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speeched.cli import app
from speeched.data import grammar
from speeched.data.espeak import (
    BROAD_VARIANTS,
    CLEAR_VARIANTS,
    SAMPLE_RATE,
    Espeak,
    english_accents,
    parse_voice,
)
from speeched.data.synth import _plan, split_combos
from speeched.errors import UsageError

DIGIT_SET = set(grammar.DIGIT_WORDS)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _synth(out: Path, *extra: str) -> None:
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    assert "utterances" in result.output and "real time" in result.output


# ---------------------------------------------------------------- grammar


def test_digits_are_words_3_to_7_and_deterministic() -> None:
    first = [grammar.digits(random.Random(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    rng = random.Random(0)
    prompts = [grammar.digits(rng) for _ in range(300)]
    lengths = {len(p.text.split()) for p in prompts}
    assert lengths == {3, 4, 5, 6, 7}
    assert all(set(p.text.split()) <= DIGIT_SET and p.translation is None for p in prompts)
    assert "zero" in " ".join(p.text for p in prompts) and "oh" not in " ".join(p.text for p in prompts)


def _sample_sentences(n: int = 1500, seed: int = 0) -> list[grammar.Prompt]:
    rng = random.Random(seed)
    return [grammar.sentences(rng) for _ in range(n)]


def test_sentences_deterministic_lowercase_english_and_no_umlauts() -> None:
    prompts = _sample_sentences()
    assert prompts == _sample_sentences()
    assert prompts != _sample_sentences(seed=1)
    assert len({p.text for p in prompts}) > 1000  # varied
    for p in prompts:
        assert p.text == p.text.lower() and p.translation
        assert p.translation.isascii(), f"umlaut or sharp s in {p.translation!r}"
        assert " a a" not in f" {p.text}" and " a o" not in f" {p.text}"  # "an old", never "a old"


def test_german_word_order_differs_from_english() -> None:
    verbs_3sg = {v.de_3sg for v in grammar.VERBS}
    verbs_inf = {v.de_inf for v in grammar.VERBS}
    adverbs = {en: de for en, de in grammar.ADVERBS}
    seen = set()
    for p in _sample_sentences():
        en, de = p.text.split(), p.translation.split()
        if en[0] in adverbs:  # verb-second: "heute sieht der Hund ..."
            assert de[0] == adverbs[en[0]] and de[1] in verbs_3sg, (p.text, p.translation)
            seen.add("v2")
        elif "that" in en:  # verb-final subordinate clause
            assert de[2] == "dass" and de[-1] in verbs_3sg, (p.text, p.translation)
            seen.add("final")
        elif {"can", "must", "wants"} & set(en):  # modal: the infinitive goes to the end
            assert de[-1] in verbs_inf, (p.text, p.translation)
            seen.add("modal")
        elif "not" in en and de[-1] == "nicht":
            seen.add("nicht")
    assert seen == {"v2", "final", "modal", "nicht"}


_ARTICLE = {  # article -> {gender it may precede: the adjective ending it demands}
    "der": {"m": "e"},
    "den": {"m": "en"},
    "die": {"f": "e"},
    "das": {"n": "e"},
    "dieser": {"m": "e"},
    "diesen": {"m": "en"},
    "diese": {"f": "e"},
    "dieses": {"n": "e"},
    "ein": {"m": "er", "n": "es"},
    "einen": {"m": "en"},
    "eine": {"f": "e"},
}
for _stem in ("mein", "kein"):
    _ARTICLE[_stem] = _ARTICLE["ein"]
    _ARTICLE[_stem + "en"] = _ARTICLE["einen"]
    _ARTICLE[_stem + "e"] = _ARTICLE["eine"]


def test_german_articles_and_adjectives_agree_with_gender_and_case() -> None:
    genders = {n.de: n.gender for n in grammar.SUBJECTS + grammar.OBJECTS}
    stems = {de for _, de in grammar.ADJECTIVES}
    checked = {"ein rotes Auto": False, "einen": False, "keine": False}
    for p in _sample_sentences():
        text = p.translation
        for _, place in grammar.PLACES:  # dative prepositional phrases are fixed strings
            text = text.replace(place, "")
        words = text.split()
        for i, word in enumerate(words):
            if word not in genders:
                continue
            gender = genders[word]
            article, adjective = (
                (words[i - 2], words[i - 1]) if words[i - 1] not in _ARTICLE else (words[i - 1], None)
            )
            assert gender in _ARTICLE[article], (
                f"{article!r} does not fit {gender} {word!r} in {p.translation!r}"
            )
            if adjective is not None:
                ending = _ARTICLE[article][gender]
                assert adjective.endswith(ending), f"{adjective!r} after {article!r} in {p.translation!r}"
                assert any(adjective in (s + ending, s[:-1] + ending) for s in stems), p.translation
        checked["ein rotes Auto"] |= "ein rotes Auto" in p.translation
        checked["einen"] |= "einen" in words
        checked["keine"] |= "keine" in words
    assert all(checked.values()), checked


# ---------------------------------------------------------------- espeak


def test_espeak_speaks_16khz_and_longer_text_takes_longer() -> None:
    engine = Espeak()
    short = engine.synthesize("three five", "en-us", rate=170, pitch=50)
    long = engine.synthesize("three five nine one seven two eight", "en-us", rate=170, pitch=50)
    for audio in (short, long):
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert float(np.sqrt(np.mean(audio**2))) > 0.01  # not silence
        assert np.abs(audio).max() <= 1.0
    assert 0.3 < len(short) / SAMPLE_RATE < 3.0
    assert len(long) > 1.8 * len(short)
    faster = engine.synthesize("three five nine one seven two eight", "en-us", rate=300, pitch=50)
    assert len(faster) < 0.8 * len(long)
    assert all(engine.has_voice(v) for v in engine.list_voices())
    with pytest.raises(ValueError, match="no voice 'nosuchvoice'"):
        engine.synthesize("hello", "nosuchvoice")
    with pytest.raises(ValueError, match="rate=20"):
        engine.synthesize("hello", "en", rate=20)


def test_english_accents_and_voice_parsing() -> None:
    accents = english_accents()
    assert {"en", "en-us", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbcwmd"} <= set(accents)
    assert "en-shaw" not in accents
    engine = Espeak()
    assert all(engine.has_voice(f"{a}+{v}" if v else a) for a in accents for v in CLEAR_VARIANTS)
    assert parse_voice("en-GB-x-rp+klatt2") == ("en-gb-x-rp", "klatt2")
    assert parse_voice("en-us+default") == ("en-us", "")
    # eSpeak itself accepts "klingon" (it falls back to a default voice): we must not.
    assert engine.has_voice("klingon")
    with pytest.raises(ValueError, match="unknown English eSpeak accent 'klingon'.*valid accents: en, "):
        parse_voice("klingon")
    with pytest.raises(ValueError, match="unknown eSpeak variant 'nosuch'"):
        parse_voice("en+nosuch")


def test_split_combos_holds_out_combinations_and_whole_accents() -> None:
    grid = [(a, v) for a in english_accents() for v in CLEAR_VARIANTS]
    needed = {"train": 100, "dev": 5, "test": 10, "test_unseen": 10}
    split = split_combos(grid, random.Random(0), needed, ("en-029",), ("f4", "klatt3"))
    sets = {name: set(combos) for name, combos in split.items()}
    names = list(sets)
    for i, a in enumerate(names):  # no (accent, variant) combination in two splits
        for b in names[i + 1 :]:
            assert not sets[a] & sets[b], (a, b)
    assert set().union(*sets.values()) == set(grid)
    train_accents, train_variants = {a for a, _ in sets["train"]}, {v for _, v in sets["train"]}
    assert "en-029" not in train_accents and not {"f4", "klatt3"} & train_variants
    assert {a for a, _ in sets["test_unseen"]} >= {"en-029"}
    assert all(a == "en-029" or v in ("f4", "klatt3") for a, v in sets["test_unseen"])
    for name in ("dev", "test"):  # new combinations of accents and variants that train does hear
        assert sets[name]
        assert {a for a, _ in sets[name]} <= train_accents and {v for _, v in sets[name]} <= train_variants
    assert len(sets["test"]) == round(0.2 * (7 * 14)) and len(sets["dev"]) == round(0.1 * (7 * 14))
    assert split == split_combos(grid, random.Random(0), needed, ("en-029",), ("f4", "klatt3"))
    with pytest.raises(UsageError, match="pass at least 3"):
        split_combos([("en", ""), ("en-us", "")], random.Random(0), {"train": 10, "dev": 1, "test": 1})
    with pytest.raises(UsageError, match="test_unseen would be empty"):
        split_combos(grid[:5], random.Random(0), needed, ("en-029",), ())


# ---------------------------------------------------------------- corpora via the CLI


SPLITS = ("train", "dev", "test", "test_unseen")


def test_cli_digits_corpus_is_complete_voice_disjoint_and_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _synth(a, "--num", "40")
    _synth(b, "--num", "40", "--no-progress", "--workers", "2")
    rows = {split: _read(a / f"{split}.jsonl") for split in SPLITS}
    assert {s: len(r) for s, r in rows.items()} == {"train": 30, "dev": 2, "test": 4, "test_unseen": 4}
    for row in sum(rows.values(), []):
        assert set(row) >= {"id", "audio", "text", "duration", "voice", "accent", "variant", "rate", "pitch"}
        assert parse_voice(row["voice"]) == (
            row["accent"],
            "" if row["variant"] == "default" else row["variant"],
        )
        assert set(row["text"].split()) <= DIGIT_SET and 3 <= len(row["text"].split()) <= 7
        assert 130 <= row["rate"] <= 200 and 30 <= row["pitch"] <= 70
        info = sf.info(str(a / row["audio"]))
        assert info.samplerate == SAMPLE_RATE and info.subtype == "PCM_16" and info.channels == 1
        assert abs(info.frames / SAMPLE_RATE - row["duration"]) < 1e-3
    audio, _ = sf.read(str(a / rows["test"][0]["audio"]))
    assert np.abs(audio).max() > 0.05
    combos = {split: {(row["accent"], row["variant"]) for row in r} for split, r in rows.items()}
    for i, x in enumerate(SPLITS):
        for y in SPLITS[i + 1 :]:
            assert not combos[x] & combos[y], (x, y)
    train_accents = {accent for accent, _ in combos["train"]}
    train_variants = {variant for _, variant in combos["train"]}
    assert "en-029" not in train_accents and not {"f4", "klatt3"} & train_variants
    assert all(
        (row["accent"] == "en-029") + (row["variant"] in ("f4", "klatt3")) >= 1
        and row["unseen"] in ("accent", "variant", "both")
        for row in rows["test_unseen"]
    )
    assert len(train_accents) >= 5 and len(train_variants) >= 8  # broad coverage even in 30 utterances
    assert len({row["rate"] for row in rows["train"]}) > 5  # rate varies per utterance
    meta = json.loads((a / "corpus.json").read_text())
    assert meta["counts"] == {s: len(r) for s, r in rows.items()}
    for split in SPLITS:
        assert set(meta["splits"][split]["voices"]) == {row["voice"] for row in rows[split]}
        assert set(meta["splits"][split]["voices"]) <= set(meta["splits"][split]["voice_pool"])
    assert meta["unseen_accents"] == ["en-029"] and meta["noise"] is None
    # Same seed -> identical manifests and identical audio bytes, whatever the number of workers.
    for name in [f"{split}.jsonl" for split in rows] + ["corpus.json"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for row in sum(rows.values(), []):
        assert (a / row["audio"]).read_bytes() == (b / row["audio"]).read_bytes(), row["id"]


def test_cli_noise_adds_noise_and_reverb(tmp_path: Path) -> None:
    args = ("--num", "12", "--no-progress", "--seed", "5", "--dev-fraction", "0", "--test-fraction", "0")
    clean, noisy = tmp_path / "clean", tmp_path / "noisy"
    _synth(clean, *args)
    _synth(noisy, *args, "--noise")
    assert (clean / "train.jsonl").read_text() == (noisy / "train.jsonl").read_text()  # same plan
    snrs = []
    for row in _read(noisy / "train.jsonl"):
        x, _ = sf.read(str(clean / row["audio"]), dtype="float32")
        y, _ = sf.read(str(noisy / row["audio"]), dtype="float32")
        assert x.shape == y.shape and not np.allclose(x, y, atol=1e-3)
        scale = float(np.dot(x, y) / np.dot(x, x))  # remove any peak rescaling before measuring noise
        snrs.append(10 * np.log10(np.mean(x**2) / np.mean((y / scale - x) ** 2)))
    # Utterances without reverberation have exactly the added noise left: 5-25 dB. (With reverberation
    # the residual also holds the reverb, so its "SNR" is lower.)
    assert sum(4.5 <= snr <= 25.5 for snr in snrs) >= 3 and max(snrs) <= 25.5, snrs
    meta = json.loads((noisy / "corpus.json").read_text())
    assert meta["noise"]["noise"]["snr_db"] == [5.0, 25.0] and meta["noise"]["reverb"]["p"] == 0.5


def test_cli_sentences_have_translations_and_other_seed_differs(tmp_path: Path) -> None:
    _synth(tmp_path / "s3", "--num", "20", "--kind", "sentences", "--seed", "3", "--no-progress")
    rows = _read(tmp_path / "s3" / "train.jsonl") + _read(tmp_path / "s3" / "test.jsonl")
    assert len(rows) == 17
    for row in rows:
        assert row["lang"] == "en" and row["tgt_lang"] == "de"
        assert row["translation"] and row["translation"] != row["text"]
        assert sf.info(str(tmp_path / "s3" / row["audio"])).frames > 0
    _synth(tmp_path / "seed0", "--num", "20", "--kind", "sentences", "--no-progress")
    assert (tmp_path / "s3" / "train.jsonl").read_text() != (tmp_path / "seed0" / "train.jsonl").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "poems"], "--kind 'poems' is not supported; use one of: digits, sentences"),
        (
            ["--voices", "klingon"],
            "unknown English eSpeak accent 'klingon' in voice 'klingon'; valid accents: en,",
        ),
        (["--voices", "en,en+nosuch"], "unknown eSpeak variant 'nosuch'"),
        (["--accents", "en-xx"], "unknown English eSpeak accent 'en-xx'"),
        (["--voices", "en"], "pass at least 3 (accent, variant) combinations"),
        (["--voices", "en,en-us,en-gb-x-rp"], "test_unseen would be empty"),
        (["--num", "5"], "--num 5 gives no dev utterances"),
        (["--num", "3", "--dev-fraction", "0"], "--num 3 gives no test and no test_unseen utterances"),
        (["--variants", "m1,nosuch"], "unknown eSpeak variant 'nosuch'; e.g. default, m1"),
        (["--unseen-accents", "klingon"], "unknown English eSpeak accent 'klingon'"),
        (["--dev-fraction", "0.5", "--test-fraction", "0.4"], "fractions sum to 1: they must leave a share"),
    ],
)
def test_cli_rejects_bad_input_with_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "c"), "--num", "40", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_cli_out_must_be_a_new_folder_unless_force(tmp_path: Path) -> None:
    runner = CliRunner()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    result = runner.invoke(app, ["data", "synth", "--out", str(a_file), "--num", "40"])
    assert result.exit_code == 2 and "is a file: give a folder" in result.output
    assert "Traceback" not in result.output and a_file.read_text() == "x"

    corpus = tmp_path / "corpus"
    _synth(corpus, "--num", "20", "--no-progress")
    stale = corpus / "wavs" / "train" / "stale.wav"
    stale.write_bytes(b"old")
    before = (corpus / "train.jsonl").read_text()
    result = runner.invoke(app, ["data", "synth", "--out", str(corpus), "--num", "20", "--seed", "1"])
    assert result.exit_code == 2 and "is not empty: pass --force" in result.output
    assert "Traceback" not in result.output
    assert (corpus / "train.jsonl").read_text() == before and stale.exists()  # nothing touched
    _synth(corpus, "--num", "20", "--seed", "1", "--no-progress", "--force")
    assert (corpus / "train.jsonl").read_text() != before and not stale.exists()  # cleared, then written

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["data", "synth", "--out", str(other), "--num", "20", "--force"])
    assert result.exit_code == 2 and "not a speeched corpus" in result.output
    assert (other / "notes.txt").read_text() == "mine"


def test_default_grid_is_broad_and_test_unseen_is_balanced_over_held_out_groups() -> None:
    """Training covers 50 voice variants per accent; test_unseen draws each held-out group (an unseen
    accent, each unseen variant, the unseen pairs) about equally, so en-029 x 48 variants does not
    drown the two unseen variants."""
    assert set(CLEAR_VARIANTS) < set(BROAD_VARIANTS) and len(BROAD_VARIANTS) >= 48
    engine = Espeak()
    assert all(engine.has_voice(f"en-us+{v}") for v in BROAD_VARIANTS if v)
    grid = [(a, v) for a in english_accents() for v in BROAD_VARIANTS]
    fractions = {"dev": 0.025, "test": 0.05, "test_unseen": 0.05}
    jobs, counts, _ = _plan("digits", 4000, 0, grid, fractions, ("en-029",), ("f4", "klatt3"), False)
    assert counts["test_unseen"] == 200
    unseen = [j for j in jobs if j.split == "test_unseen"]
    groups = Counter(
        (j.accent if j.accent == "en-029" else "", j.variant if j.variant in ("f4", "klatt3") else "*")
        for j in unseen
    )
    assert set(groups) == {
        ("en-029", "*"),
        ("", "f4"),
        ("", "klatt3"),
        ("en-029", "f4"),
        ("en-029", "klatt3"),
    }
    assert min(groups.values()) >= 25 and max(groups.values()) <= 60  # ~40 each, not 78% en-029
    train_variants = {j.variant for j in jobs if j.split == "train"}
    assert len(train_variants) >= 45 and not {"f4", "klatt3"} & train_variants
