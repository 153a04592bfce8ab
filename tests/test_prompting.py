"""One prompt/language definition: family detection, language checks, and the same decoder prompt in train/eval/transcribe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from extension_helpers import row, stable_encoder_dir, tiny_llama_dir, waves
from helpers import minilm_path, tiny_encoder_dir, write_tiny_recipe
from typer.testing import CliRunner

from speeched import SpeechEncoderDecoderModel
from speeched.cli import app
from speeched.data.records import Utterance
from speeched.data.sources import load_source
from speeched.errors import SpeechedError
from speeched.modeling.prompting import (
    DecoderPrompt,
    PromptError,
    PromptSpec,
    detect_family,
    resolve_prompt,
)

MBART_CODES = ["ar_AR", "de_DE", "en_XX", "es_XX", "fr_XX", "zh_CN"]
WHISPER_TOKENS = [
    "<|startoftranscript|>",
    "<|en|>",
    "<|de|>",
    "<|transcribe|>",
    "<|translate|>",
    "<|notimestamps|>",
]
WORDS = ["<s>", "<pad>", "</s>", "<unk>", "ja", "nein", "oui", "non", "hallo", "salut"]


def _word_tokenizer(root: Path, extra: list[str], specials: dict[str, str] | None = None) -> Path:
    """A word-level fast tokenizer whose vocabulary holds `extra` special tokens (language codes...)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS + extra)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = specials or {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
    }
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, additional_special_tokens=extra, **specials)
    root.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(root)
    return root


def _load(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def mbart_tok_dir(tmp_path_factory) -> Path:
    return _word_tokenizer(tmp_path_factory.mktemp("mbart-tok"), MBART_CODES)


@pytest.fixture(scope="module")
def mbart_decoder_dir(tmp_path_factory, mbart_tok_dir) -> Path:
    """A config-only tiny mBART decoder (mBART-50 conventions: decoder start = </s>, then the language code)."""
    from transformers import MBartConfig

    root = tmp_path_factory.mktemp("mbart-dec")
    MBartConfig(
        vocab_size=32,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
    ).save_pretrained(root)
    return root


def _init(tmp_path: Path, mbart_decoder_dir: Path, mbart_tok_dir: Path, *extra: str):
    enc = tiny_encoder_dir(tmp_path, "wav2vec2")
    out = tmp_path / "model"
    args = [
        "init",
        "--encoder",
        str(enc),
        "--decoder",
        str(mbart_decoder_dir),
        "--tokenizer",
        str(mbart_tok_dir),
    ]
    return CliRunner().invoke(app, [*args, "--out", str(out), *extra]), out


# ------------------------------------------------------------------------------------------ families
def test_family_detection_from_the_tokenizer_vocabulary(tmp_path, mbart_tok_dir):
    whisper = WHISPER_TOKENS
    m2m = ["__en__", "__de__", "__fr__"]
    nllb = ["eng_Latn", "deu_Latn"]
    found = {
        "mbart": detect_family(_load(mbart_tok_dir)),
        "whisper": detect_family(_load(_word_tokenizer(tmp_path / "w", whisper))),
        "m2m": detect_family(_load(_word_tokenizer(tmp_path / "m", m2m))),
        "nllb": detect_family(_load(_word_tokenizer(tmp_path / "n", nllb))),
        "bert": detect_family(_load(minilm_path())),
    }
    assert found["mbart"][:3] == ("lang_token", "mBART-50", "{lang}") and "de_DE" in found["mbart"][3]
    assert found["whisper"][:3] == ("whisper", "Whisper", "<|{lang}|>") and found["whisper"][3] == (
        "de",
        "en",
    )
    assert found["m2m"][2] == "__{lang}__" and found["m2m"][3] == ("de", "en", "fr")
    assert found["nllb"][1] == "NLLB" and found["nllb"][3] == ("deu_Latn", "eng_Latn")
    assert found["bert"] is None


def test_language_codes_are_checked_and_normalised(mbart_tok_dir):
    tok = _load(mbart_tok_dir)
    spec = resolve_prompt(tok, task="st", tgt_lang="de")
    assert spec.style == "lang_token" and spec.tgt_lang == "de_DE"  # short ISO code → the token's spelling
    assert spec.canonical("zh") == "zh_CN" and spec.canonical("FR_xx") == "fr_XX"
    prompt = DecoderPrompt(spec, tok)
    assert prompt.ids() == [tok.convert_tokens_to_ids("de_DE")]
    assert prompt.ids(tgt_lang="fr") == [tok.convert_tokens_to_ids("fr_XX")]
    with pytest.raises(PromptError, match="'xx' has no language token in the mBART-50 tokenizer"):
        resolve_prompt(tok, task="st", tgt_lang="xx")
    with pytest.raises(PromptError, match="did you mean de_DE"):
        prompt.ids(tgt_lang="de_XX")
    # asr: the output language is the speech's own
    assert DecoderPrompt(resolve_prompt(tok, task="asr", src_lang="en"), tok).ids() == [
        tok.convert_tokens_to_ids("en_XX")
    ]


def test_a_family_language_token_cannot_be_left_out(mbart_tok_dir):
    prompt = DecoderPrompt(resolve_prompt(_load(mbart_tok_dir), task="st"), _load(mbart_tok_dir))
    utt = Utterance(id="u1", audio=None, text="x", translation="y", origin="train.jsonl:7")
    with pytest.raises(
        PromptError, match=r"train.jsonl:7: the mBART-50 decoder needs a language token.*tgt_lang"
    ):
        prompt.for_utterance(utt)


def test_whisper_style_tokens_and_start_token(tmp_path):
    toks = WHISPER_TOKENS
    tok = _load(_word_tokenizer(tmp_path, toks))
    vocab = tok.get_vocab()
    asr = DecoderPrompt(resolve_prompt(tok, task="asr", src_lang="de"), tok)
    assert asr.ids() == [vocab["<|de|>"], vocab["<|transcribe|>"], vocab["<|notimestamps|>"]]
    st = DecoderPrompt(resolve_prompt(tok, task="st", src_lang="de", tgt_lang="en"), tok)
    assert st.ids()[1] == vocab["<|translate|>"]
    with pytest.raises(PromptError, match="into English"):
        resolve_prompt(tok, task="st", src_lang="en", tgt_lang="de")
    from speeched.modeling.prompting import apply_prompt

    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(tiny_encoder_dir(tmp_path, "wav2vec2")), str(_tiny_bert_dir(tmp_path, len(tok))), tokenizer=tok
    )
    apply_prompt(model, tok, resolve_prompt(tok, task="asr", src_lang="en"))
    assert model.config.decoder_start_token_id == vocab["<|startoftranscript|>"]
    assert model.generation_config.decoder_start_token_id == vocab["<|startoftranscript|>"]


def _tiny_bert_dir(root: Path, vocab_size: int) -> Path:
    from transformers import BertConfig

    out = root / "tiny-bert"
    BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        is_decoder=True,
        add_cross_attention=True,
    ).save_pretrained(out)
    return out


def test_template_prompt_for_a_decoder_without_language_tokens():
    tok = _load(minilm_path())
    spec = resolve_prompt(tok, task="st", template="{tgt_lang} :", tgt_lang="de")
    assert spec.style == "template"
    prompt = DecoderPrompt(spec, tok)
    assert prompt.ids() == tok("de :", add_special_tokens=False)["input_ids"]
    assert prompt.ids(tgt_lang="fr") == tok("fr :", add_special_tokens=False)["input_ids"]
    no_default = DecoderPrompt(resolve_prompt(tok, task="st", template="{tgt_lang} :"), tok)
    with pytest.raises(PromptError, match="needs tgt_lang.*`tgt_lang` column.*languages.tgt_lang"):
        no_default.ids()
    with pytest.raises(PromptError, match="fields are"):
        resolve_prompt(tok, template="{target}")
    with pytest.raises(PromptError, match="needs a tokenizer with lang_token"):
        resolve_prompt(tok, style="lang_token")
    assert resolve_prompt(tok).style == "none" and DecoderPrompt(PromptSpec(), tok).ids() == []


# ------------------------------------------------------------------------------------------ the CLI
def test_init_refuses_a_wrong_mbart_language_and_saves_the_right_one(
    tmp_path, mbart_decoder_dir, mbart_tok_dir
):
    bad, _ = _init(tmp_path / "a", mbart_decoder_dir, mbart_tok_dir, "--task", "st", "--tgt-lang", "xx")
    assert bad.exit_code == 2
    assert "'xx' has no language token in the mBART-50 tokenizer" in bad.output
    good, out = _init(tmp_path / "b", mbart_decoder_dir, mbart_tok_dir, "--task", "st", "--tgt-lang", "de")
    assert good.exit_code == 0, good.output
    assert "decoder prompt: lang_token (mBART-50)" in good.output and "de_DE" in good.output
    saved = json.loads((out / "config.json").read_text())["decoder_prompt"]
    assert saved["tgt_lang"] == "de_DE" and saved["task"] == "st" and "fr_XX" in saved["languages"]


def _corpus(root: Path, rows: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for r in rows:
        path = root / f"{r['id']}.wav"
        if not path.exists():
            sf.write(
                path, 0.1 * rng.standard_normal(int(16000 * r.pop("seconds", 1.0))).astype(np.float32), 16000
            )
        r["audio"] = path.name
    manifest = root / "data.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


class _Recorder:
    """Wraps model.generate to record the forced decoder prompt of every call."""

    def __init__(self, model) -> None:
        self.model, self.calls, self.inner = model, [], model.generate
        model.generate = self

    def __call__(self, *args, **kwargs):
        self.calls.append([tuple(r) for r in kwargs["decoder_input_ids"].tolist()])
        return self.inner(*args, **kwargs)


def test_train_eval_and_transcribe_build_the_same_decoder_prompt(tmp_path, mbart_decoder_dir, mbart_tok_dir):
    from speeched.evaluation.evaluate import evaluate_utterances
    from speeched.inference import DecodeOptions, InferenceModel
    from speeched.modeling.model_dir import load_model_dir
    from speeched.training.build import training_collator
    from speeched.transcription.transcriber import TranscribeOptions, Transcriber

    res, out = _init(tmp_path, mbart_decoder_dir, mbart_tok_dir, "--task", "st", "--tgt-lang", "de")
    assert res.exit_code == 0, res.output
    loaded = load_model_dir(out)
    model, tok, fe = loaded.model.eval(), loaded.tokenizer, loaded.feature_extractor
    manifest = _corpus(
        tmp_path / "data",
        [
            {"id": "a", "text": "yes", "translation": "oui", "tgt_lang": "fr"},
            {"id": "b", "text": "yes", "translation": "ja"},  # no tgt_lang: the model's default (de_DE)
        ],
    )
    utts = load_source(str(manifest))
    start, de, fr = (
        model.config.decoder_start_token_id,
        tok.convert_tokens_to_ids("de_DE"),
        tok.convert_tokens_to_ids("fr_XX"),
    )
    assert start == 2  # mBART-50: </s> starts, the language code is the forced BOS

    # train: the collator's decoder inputs
    from speeched.data.dataset import SpeechDataset

    batch = training_collator(model, tok, fe, "st")(list(SpeechDataset(utts, 16000)))
    train_prompt = {u.id: tuple(batch["decoder_input_ids"][i, :2].tolist()) for i, u in enumerate(utts)}
    assert batch["labels"][:, 0].tolist() == [-100, -100]  # the language token is given, not predicted
    # eval: what generate() is called with
    rec = _Recorder(model)
    im = InferenceModel(model, tok, fe)
    evaluate_utterances(im, utts, "st", DecodeOptions(max_new_tokens=2), "none")
    eval_prompts = {p for call in rec.calls for p in call}
    # transcribe --tgt-lang fr
    rec.calls.clear()
    audio = str(manifest.parent / "a.wav")
    options = TranscribeOptions(decode=DecodeOptions(tgt_lang="fr", max_new_tokens=2), segment="fixed")
    list(Transcriber(im, options).run([audio]))
    transcribe_prompt = rec.calls[0][0]

    assert train_prompt == {"a": (start, fr), "b": (start, de)}
    assert eval_prompts == {(start, fr), (start, de)}
    assert transcribe_prompt == train_prompt["a"]
    with pytest.raises(SpeechedError, match="'klingon'"):
        Transcriber(im, TranscribeOptions(decode=DecodeOptions(tgt_lang="klingon")))


def test_a_wrong_language_in_a_manifest_stops_training_before_step_one(
    tmp_path, mbart_decoder_dir, mbart_tok_dir
):
    import yaml

    res, out = _init(tmp_path, mbart_decoder_dir, mbart_tok_dir, "--task", "st")
    assert res.exit_code == 0, res.output
    manifest = _corpus(
        tmp_path / "data",
        [
            {"id": "a", "text": "yes", "translation": "oui", "tgt_lang": "fr"},
            {"id": "b", "text": "yes", "translation": "ja", "tgt_lang": "german"},
        ],
    )
    recipe = {
        "task": "st",
        "model": {"path": str(out)},
        "data": {"train": [{"path": str(manifest)}]},
        "train": {"max_steps": 1},
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    for extra in (["--dry-run"], []):
        result = CliRunner().invoke(app, ["train", str(path), *extra])
        assert result.exit_code != 0
        assert "data.jsonl:2" in result.output and "'german'" in result.output and "de_DE" in result.output
    assert not (tmp_path / "run" / "checkpoints").exists()
    evaluated = CliRunner().invoke(
        app, ["eval", str(out), "--data", str(manifest), "--task", "st", "--out", str(tmp_path / "eval")]
    )
    assert evaluated.exit_code != 0 and "data.jsonl:2" in evaluated.output and "'german'" in evaluated.output


# ------------------------------------------------------------------------------------------ prefix coupling
def test_prefix_coupled_llm_takes_a_prompt_per_example(tmp_path):
    torch.manual_seed(0)
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(stable_encoder_dir(tmp_path)), str(tiny_llama_dir(tmp_path)), coupling="prefix", adaptor_layers=1
    ).eval()
    batch, prompts = waves(), [[11, 12, 13], [14]]
    eos = model.config.eos_token_id
    labels = torch.tensor([[5, 6, eos], [8, eos, -100]])
    with torch.no_grad():
        both = model(**batch, labels=labels, prompt_ids=prompts).logits
        gen = model.generate(**batch, max_new_tokens=4, prompt_ids=prompts)
        for i in range(2):
            n = int((labels[i] != -100).sum())
            alone = model(**row(batch, i), labels=labels[i : i + 1, :n], prompt_ids=[prompts[i]]).logits
            assert (alone[0] - both[i, :n]).abs().max().item() < 1e-4
            assert torch.equal(
                model.generate(**row(batch, i), max_new_tokens=4, prompt_ids=[prompts[i]])[0], gen[i]
            )
        other = model(**batch, labels=labels, prompt_ids=[[14], [11, 12, 13]]).logits
    assert (other - both).abs().max().item() > 1e-3  # the prompt reaches the decoder


# ------------------------------------------------------------------------------------------ multi-target
def test_one_model_translates_into_several_languages_from_one_manifest(tmp_path):
    """Same audio, two target languages, different targets: only the decoder prompt can tell them apart."""
    from speeched.evaluation.evaluate import evaluate_utterances
    from speeched.inference import DecodeOptions, InferenceModel
    from speeched.modeling.model_dir import load_model_dir
    from speeched.training.recipe import load_recipe
    from speeched.training.trainer import train

    rows = []
    for audio, seconds, (de, fr) in (("a", 0.6, ("ja", "oui")), ("b", 1.2, ("nein", "non"))):
        rows.append({"id": f"{audio}", "seconds": seconds, "text": "x", "translation": de, "tgt_lang": "de"})
        rows.append({"id": f"{audio}", "text": "x", "translation": fr, "tgt_lang": "fr"})
    manifest = _corpus(tmp_path / "data", rows)
    lines = manifest.read_text().splitlines()
    manifest.write_text(
        "".join(json.dumps({**json.loads(x), "id": f"u{i}"}) + "\n" for i, x in enumerate(lines))
    )
    path = write_tiny_recipe(
        tmp_path,
        manifest.parent,
        task="st",
        languages={"prompt_template": "{tgt_lang} :"},
        data={
            "train": [{"path": str(manifest)}],
            "dev": [],
            "batching": {"max_duration": 100, "shuffle": False},
        },
        optim={"lr": 2e-3},
        train={"max_steps": 60, "log_every": 20},
        eval={"every_steps": None, "max_new_tokens": 4},
        checkpoint={"every_steps": 1000},
        output_dir=str(tmp_path / "run"),
    )
    result = train(load_recipe(path))
    loaded = load_model_dir(result.best_dir)
    assert loaded.model.config.decoder_prompt["template"] == "{tgt_lang} :"
    utts = load_source(str(manifest))
    im = InferenceModel(loaded.model.eval(), loaded.tokenizer, loaded.feature_extractor)
    res = evaluate_utterances(im, utts, "st", DecodeOptions(), "none")
    hyps = {r["id"]: r["hypothesis"] for r in res.rows}
    assert hyps == {"u0": "ja", "u1": "oui", "u2": "nein", "u3": "non"}
    assert set(res.metrics["by_language"]) == {"de", "fr"}
    assert res.metrics["by_language"]["fr"]["num_utterances"] == 2


def test_joint_ctc_attention_decoding_keeps_the_decoder_prompt(tmp_path, mbart_decoder_dir, mbart_tok_dir):
    from speeched.evaluation.evaluate import evaluate_utterances
    from speeched.inference import DecodeOptions, InferenceModel
    from speeched.modeling.model_dir import load_model_dir

    res, out = _init(
        tmp_path,
        mbart_decoder_dir,
        mbart_tok_dir,
        *("--task", "st", "--tgt-lang", "fr", "--model-option", "ctc_weight=0.3"),
        *("--model-option", "ctc_vocab=['<blank>', '<unk>', 'j', 'a']"),
    )
    assert res.exit_code == 0, res.output
    loaded = load_model_dir(out)
    model, tok = loaded.model.eval(), loaded.tokenizer
    seen: list[tuple[list[int], bool]] = []  # (first row's input ids, whether a KV cache came with them)
    model.decoder.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(
            (kwargs["input_ids"][0].tolist(), kwargs.get("cache") is not None)
        ),
        with_kwargs=True,
    )
    manifest = _corpus(tmp_path / "data", [{"id": "a", "text": "ja", "translation": "oui"}])
    evaluate_utterances(
        InferenceModel(model, tok, loaded.feature_extractor), load_source(str(manifest)), "st",
        DecodeOptions(ctc_weight=0.5, num_beams=2, max_new_tokens=2), "none",
    )  # fmt: skip
    fr = tok.convert_tokens_to_ids("fr_XX")
    # the first step feeds the prompt; later steps feed one new token and carry the prompt in the KV cache
    assert seen and seen[0] == ([model.config.decoder_start_token_id, fr], False)
    assert len(seen) >= 2 and all(cached and len(ids) == 1 for ids, cached in seen[1:])


def test_code_like_llm_tokens_are_not_a_language_family(tmp_path):
    tok = _load(_word_tokenizer(tmp_path, ["__eq__", "__ne__", "__lt__", "ab_CD", "xy_ZW"]))
    assert detect_family(tok) is None and resolve_prompt(tok).style == "none"
