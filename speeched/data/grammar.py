"""Text generators for synthetic corpora: spoken digit strings and English sentences with German.

Why a grammar and not a word list: the German side must need real modelling (verb-second after a
fronted adverb, verb-final subordinate clauses and modal infinitives, `nicht` at the end, gendered
articles, case and adjective endings), so a model that only transliterates word by word fails.

The German vocabulary deliberately has NO umlauts and no sharp s (no a/o/u-umlaut, no `ß`): the
decoder's tokenizer is uncased and strips accents, so such words would not round-trip exactly.
Everything here is deterministic given the `random.Random` passed in (stdlib only: cheap import).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

KINDS: tuple[str, ...] = ("digits", "sentences")

DIGIT_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)


@dataclass(frozen=True)
class Prompt:
    """What to say (`text`, also the transcript) and, for speech translation, its German."""

    text: str
    translation: str | None = None


def digits(rng: random.Random, min_len: int = 3, max_len: int = 7) -> Prompt:
    """A digit string read digit by digit: "three five nine" (0 is "zero", never "oh")."""
    n = rng.randint(min_len, max_len)
    return Prompt(" ".join(DIGIT_WORDS[rng.randrange(10)] for _ in range(n)))


@dataclass(frozen=True)
class Noun:
    en: str
    de: str
    gender: str  # "m", "f" or "n"


@dataclass(frozen=True)
class Verb:
    en_base: str  # "see" (after "does not", "can")
    en_3sg: str  # "sees"
    de_3sg: str  # "sieht"
    de_inf: str  # "sehen"


# Subjects are people and animals; objects may be anything.
SUBJECTS: tuple[Noun, ...] = (
    Noun("dog", "Hund", "m"),
    Noun("cat", "Katze", "f"),
    Noun("man", "Mann", "m"),
    Noun("woman", "Frau", "f"),
    Noun("child", "Kind", "n"),
    Noun("bird", "Vogel", "m"),
    Noun("horse", "Pferd", "n"),
    Noun("teacher", "Lehrer", "m"),
    Noun("friend", "Freund", "m"),
)
OBJECTS: tuple[Noun, ...] = (
    Noun("car", "Auto", "n"),
    Noun("house", "Haus", "n"),
    Noun("ball", "Ball", "m"),
    Noun("book", "Buch", "n"),
    Noun("table", "Tisch", "m"),
    Noun("boat", "Boot", "n"),
    Noun("flower", "Blume", "f"),
    Noun("lamp", "Lampe", "f"),
    Noun("cup", "Tasse", "f"),
    Noun("chair", "Stuhl", "m"),
    Noun("apple", "Apfel", "m"),
    Noun("fish", "Fisch", "m"),
    Noun("tree", "Baum", "m"),
    Noun("hat", "Hut", "m"),
    Noun("bag", "Tasche", "f"),
    Noun("letter", "Brief", "m"),
    Noun("picture", "Bild", "n"),
    Noun("cake", "Kuchen", "m"),
    Noun("box", "Kiste", "f"),
    Noun("dog", "Hund", "m"),
    Noun("cat", "Katze", "f"),
    Noun("horse", "Pferd", "n"),
)
# (english, german stem); German endings are added by agreement.
ADJECTIVES: tuple[tuple[str, str], ...] = (
    ("small", "klein"),
    ("old", "alt"),
    ("new", "neu"),
    ("young", "jung"),
    ("red", "rot"),
    ("blue", "blau"),
    ("black", "schwarz"),
    ("yellow", "gelb"),
    ("brown", "braun"),
    ("fast", "schnell"),
    ("good", "gut"),
    ("cold", "kalt"),
    ("long", "lang"),
    ("quiet", "leise"),
)
VERBS: tuple[Verb, ...] = (
    Verb("see", "sees", "sieht", "sehen"),
    Verb("find", "finds", "findet", "finden"),
    Verb("buy", "buys", "kauft", "kaufen"),
    Verb("pull", "pulls", "zieht", "ziehen"),
    Verb("paint", "paints", "malt", "malen"),
    Verb("fetch", "fetches", "holt", "holen"),
    Verb("build", "builds", "baut", "bauen"),
    Verb("love", "loves", "liebt", "lieben"),
    Verb("know", "knows", "kennt", "kennen"),
    Verb("need", "needs", "braucht", "brauchen"),
    Verb("have", "has", "hat", "haben"),
    Verb("visit", "visits", "besucht", "besuchen"),
    Verb("draw", "draws", "zeichnet", "zeichnen"),
)
ADVERBS: tuple[tuple[str, str], ...] = (
    ("today", "heute"),
    ("now", "jetzt"),
    ("often", "oft"),
    ("tomorrow", "morgen"),
)
PLACES: tuple[tuple[str, str], ...] = (
    ("in the garden", "im Garten"),
    ("in the park", "im Park"),
    ("in the city", "in der Stadt"),
    ("at school", "in der Schule"),
    ("by the river", "am Fluss"),
    ("on the street", "auf der Strasse"),
)
MODALS: tuple[tuple[str, str], ...] = (("can", "kann"), ("wants to", "will"), ("must", "muss"))
MATRIX: tuple[tuple[str, str], ...] = (
    ("i think", "ich glaube"),
    ("we know", "wir wissen"),
    ("he says", "er sagt"),
)

# German determiners: (nominative, accusative) stems per gender; ending classes pick adjective endings.
_DER = {"m": ("der", "den"), "f": ("die", "die"), "n": ("das", "das")}
_DIESER = {"m": ("dieser", "diesen"), "f": ("diese", "diese"), "n": ("dieses", "dieses")}
_EIN = {"m": ("ein", "einen"), "f": ("eine", "eine"), "n": ("ein", "ein")}
_MEIN = {"m": ("mein", "meinen"), "f": ("meine", "meine"), "n": ("mein", "mein")}
_KEIN = {"m": ("kein", "keinen"), "f": ("keine", "keine"), "n": ("kein", "kein")}
# Adjective endings after der-words (weak) and after ein-words (mixed), by gender and case.
_WEAK = {"m": ("e", "en"), "f": ("e", "e"), "n": ("e", "e")}
_MIXED = {"m": ("er", "en"), "f": ("e", "e"), "n": ("es", "es")}
# english determiner -> (german table, ending table, definite?)
_DETERMINERS = {"the": (_DER, _WEAK, True), "this": (_DIESER, _WEAK, True), "a": (_EIN, _MIXED, False)}
_DETERMINERS["my"] = (_MEIN, _MIXED, True)


def _english_np(det: str, adj: str | None, noun: Noun) -> str:
    words = [adj, noun.en] if adj else [noun.en]
    if det == "a" and words[0][0] in "aeiou":
        det = "an"
    return " ".join([det, *words])


def _german_np(det_table: dict, endings: dict, adj: str | None, noun: Noun, case: int) -> str:
    """`case` 0 = nominative, 1 = accusative: article and adjective agree with gender and case."""
    article = det_table[noun.gender][case]
    if adj is None:
        return f"{article} {noun.de}"
    stem = adj[:-1] if adj.endswith("e") else adj  # leise -> leise/leiser, not leisee
    return f"{article} {stem}{endings[noun.gender][case]} {noun.de}"


def _noun_phrase(rng: random.Random, nouns: tuple[Noun, ...], case: int, dets: tuple[str, ...]) -> tuple:
    """(english NP, german NP, english determiner, noun)."""
    noun = rng.choice(nouns)
    det = rng.choice(dets)
    adj_en, adj_de = rng.choice(ADJECTIVES) if rng.random() < 0.6 else (None, None)
    table, endings, _ = _DETERMINERS[det]
    return _english_np(det, adj_en, noun), _german_np(table, endings, adj_de, noun, case), det, noun


def sentences(rng: random.Random) -> Prompt:
    """One short English sentence and its German translation (lowercase English, German nouns capitalised).

    Constructions: plain SVO, fronted adverb (German verb-second inversion), negation with `kein` or with
    `nicht` at the end, modal + infinitive at the end, and a subordinate clause (German verb-final).
    """
    subj_en, subj_de, _, _ = _noun_phrase(rng, SUBJECTS, 0, ("the", "a", "my", "this"))
    verb = rng.choice(VERBS)
    construction = rng.choices(("plain", "adverb", "negation", "modal", "subordinate"), (3, 2, 2, 2, 2))[0]
    place = rng.choice(PLACES) if rng.random() < 0.3 and construction != "negation" else None
    pp_en, pp_de = (f" {place[0]}", f" {place[1]}") if place else ("", "")

    if construction == "negation":
        obj_en, obj_de, det, noun = _noun_phrase(rng, OBJECTS, 1, ("the", "a", "my", "this"))
        if det == "a":  # "does not see a car" -> "sieht kein Auto"
            adj = obj_de.split()[1:-1]
            obj_de = " ".join([_KEIN[noun.gender][1], *adj, noun.de])
            return Prompt(f"{subj_en} does not {verb.en_base} {obj_en}", f"{subj_de} {verb.de_3sg} {obj_de}")
        # "does not see the car" -> "sieht das Auto nicht"
        return Prompt(
            f"{subj_en} does not {verb.en_base} {obj_en}", f"{subj_de} {verb.de_3sg} {obj_de} nicht"
        )

    obj_en, obj_de, _, _ = _noun_phrase(rng, OBJECTS, 1, ("the", "a", "my", "this"))
    if construction == "plain":
        return Prompt(f"{subj_en} {verb.en_3sg} {obj_en}{pp_en}", f"{subj_de} {verb.de_3sg} {obj_de}{pp_de}")
    if construction == "adverb":  # "today the dog sees a car" -> "heute sieht der Hund ein Auto"
        adv_en, adv_de = rng.choice(ADVERBS)
        return Prompt(
            f"{adv_en} {subj_en} {verb.en_3sg} {obj_en}{pp_en}",
            f"{adv_de} {verb.de_3sg} {subj_de} {obj_de}{pp_de}",
        )
    if construction == "modal":  # "the dog can see a car" -> "der Hund kann ein Auto sehen"
        modal_en, modal_de = rng.choice(MODALS)
        return Prompt(
            f"{subj_en} {modal_en} {verb.en_base} {obj_en}{pp_en}",
            f"{subj_de} {modal_de} {obj_de}{pp_de} {verb.de_inf}",
        )
    # subordinate: "i think that the dog sees a car" -> "ich glaube dass der Hund ein Auto sieht"
    matrix_en, matrix_de = rng.choice(MATRIX)
    return Prompt(
        f"{matrix_en} that {subj_en} {verb.en_3sg} {obj_en}{pp_en}",
        f"{matrix_de} dass {subj_de} {obj_de}{pp_de} {verb.de_3sg}",
    )


GENERATORS: dict[str, Callable[[random.Random], Prompt]] = {"digits": digits, "sentences": sentences}
