"""`speeched data synth`: grammar, the eSpeak NG wrapper and whole corpora through the real CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speeched.cli import app
from speeched.data import grammar
from speeched.data.espeak import SAMPLE_RATE, Espeak
from speeched.data.synth import split_voices

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


def test_split_voices_needs_enough_voices() -> None:
    split = split_voices(["a", "b", "c", "d", "e"], random.Random(0), {"train": 10, "dev": 1, "test": 1})
    assert all(split[s] for s in ("train", "dev", "test"))
    assert sorted(sum(split.values(), [])) == ["a", "b", "c", "d", "e"]
    with pytest.raises(ValueError, match="at least 3"):
        split_voices(["en", "en-us"], random.Random(0), {"train": 10, "dev": 1, "test": 1})


# ---------------------------------------------------------------- corpora via the CLI


def test_cli_digits_corpus_is_complete_voice_disjoint_and_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _synth(a, "--num", "40")
    _synth(b, "--num", "40", "--no-progress", "--workers", "2")
    rows = {split: _read(a / f"{split}.jsonl") for split in ("train", "dev", "test")}
    assert {s: len(r) for s, r in rows.items()} == {"train": 34, "dev": 2, "test": 4}
    for row in sum(rows.values(), []):
        assert set(row) >= {"id", "audio", "text", "duration", "voice", "rate", "pitch"}
        assert set(row["text"].split()) <= DIGIT_SET and 3 <= len(row["text"].split()) <= 7
        assert 130 <= row["rate"] <= 200 and 30 <= row["pitch"] <= 70
        info = sf.info(str(a / row["audio"]))
        assert info.samplerate == SAMPLE_RATE and info.subtype == "PCM_16" and info.channels == 1
        assert abs(info.frames / SAMPLE_RATE - row["duration"]) < 1e-3
    audio, _ = sf.read(str(a / rows["test"][0]["audio"]))
    assert np.abs(audio).max() > 0.05
    voices = {split: {row["voice"] for row in r} for split, r in rows.items()}
    assert not voices["test"] & voices["train"] and not voices["dev"] & voices["train"]
    assert len({row["rate"] for row in rows["train"]}) > 5  # rate varies per utterance
    # Same seed -> identical manifests and identical audio bytes, whatever the number of workers.
    for split in rows:
        assert (a / f"{split}.jsonl").read_bytes() == (b / f"{split}.jsonl").read_bytes()
    for row in sum(rows.values(), []):
        assert (a / row["audio"]).read_bytes() == (b / row["audio"]).read_bytes(), row["id"]


def test_cli_sentences_have_translations_and_other_seed_differs(tmp_path: Path) -> None:
    _synth(tmp_path, "--num", "20", "--kind", "sentences", "--seed", "3", "--no-progress")
    rows = _read(tmp_path / "train.jsonl") + _read(tmp_path / "test.jsonl")
    assert len(rows) == 19
    for row in rows:
        assert row["lang"] == "en" and row["tgt_lang"] == "de"
        assert row["translation"] and row["translation"] != row["text"]
        assert sf.info(str(tmp_path / row["audio"])).frames > 0
    _synth(tmp_path / "seed0", "--num", "20", "--kind", "sentences", "--no-progress")
    assert (tmp_path / "train.jsonl").read_text() != (tmp_path / "seed0" / "train.jsonl").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "poems"], "--kind 'poems' is not supported; use one of: digits, sentences"),
        (["--voices", "en,nosuch"], "unknown eSpeak voice(s) nosuch"),
        (["--voices", "en"], "pass at least 3 with --voices"),
    ],
)
def test_cli_rejects_bad_input_with_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path), "--num", "40", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "train.jsonl").exists()
