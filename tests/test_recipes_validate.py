"""The shipped real-world recipes validate: `speeched train RECIPE --dry-run` with their hub models and
datasets swapped (through `--set`) for tiny local models of the same families and a synthesized corpus.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import minilm_path, tiny_encoder_dir
from transformers import BartConfig, GPT2Config, MBartConfig, Qwen2Config, WhisperConfig
from typer.testing import CliRunner

from speeched.cli import app
from speeched.training.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "asr/librispeech-100h-wav2vec2-bart.yaml": ("wav2vec2", "bart"),
    "asr/librispeech-960h-wavlm-llm-lora.yaml": ("wavlm", "qwen2"),
    "st/covost2-en-de-xlsr-mbart.yaml": ("wav2vec2", "mbart"),
    "asr/common-voice-whisper-encoder-gpt2.yaml": ("whisper", "gpt2"),
}
VOCAB = 30522  # MiniLM's tokenizer stands in for each decoder's own


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    from speeched.data.synth import synthesize_corpus

    out = {}
    for kind in ("digits", "sentences"):
        root = tmp_path_factory.mktemp(kind)
        synthesize_corpus(
            root, kind=kind, num=8, seed=1, dev_fraction=0.25, test_fraction=0.0, progress=False
        )
        out[kind] = root
    return out


def _decoder_dir(root: Path, kind: str) -> Path:
    path = root / f"dec-{kind}"
    small = dict(vocab_size=VOCAB, max_position_embeddings=256)
    if kind == "bart":
        cfg = BartConfig(
            d_model=16, decoder_layers=1, encoder_layers=1, decoder_attention_heads=2, encoder_attention_heads=2,
            decoder_ffn_dim=32, encoder_ffn_dim=32, **small,
        )  # fmt: skip
    elif kind == "mbart":
        cfg = MBartConfig(
            d_model=16, decoder_layers=1, encoder_layers=1, decoder_attention_heads=2, encoder_attention_heads=2,
            decoder_ffn_dim=32, encoder_ffn_dim=32, **small,
        )  # fmt: skip
    elif kind == "qwen2":
        cfg = Qwen2Config(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, **small,
        )  # fmt: skip
    elif kind == "gpt2":
        cfg = GPT2Config(
            vocab_size=VOCAB,
            n_embd=16,
            n_layer=1,
            n_head=2,
            n_positions=256,
            bos_token_id=101,
            eos_token_id=102,
        )
    else:
        raise ValueError(kind)
    cfg.save_pretrained(path)
    return path


def _encoder_dir(root: Path, kind: str) -> Path:
    if kind == "whisper":
        path = root / "enc-whisper"
        WhisperConfig(
            d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500,
        ).save_pretrained(path)  # fmt: skip
        return path
    return tiny_encoder_dir(root, kind)


def _overrides(recipe_file: Path, root: Path, corpus: Path, enc: str, dec: str) -> list[str]:
    """--set arguments replacing hub models with tiny local ones and every data source with the corpus."""
    recipe = load_recipe(recipe_file, check_paths=False)
    sets = [
        f"model.encoder={_encoder_dir(root, enc)}",
        f"model.decoder={_decoder_dir(root, dec)}",
        f"model.tokenizer={minilm_path()}",
    ]
    for split, file in (("train", "train.jsonl"), ("dev", "dev.jsonl")):
        for i, _ in enumerate(getattr(recipe.data, split)):
            key = f"data.{split}.{i}"
            sets += [f"{key}.path={corpus / file}", f"{key}.format=jsonl", f"{key}.config=null"]
            sets += [f"{key}.split=null", f"{key}.columns.text=text", f"{key}.limit=4"]
            sets += [f"{key}.streaming=false", f"{key}.epoch_hours=null"]  # the jsonl corpus is not sharded
    return [arg for s in sets for arg in ("--set", s)]


def test_every_recipe_is_covered():
    shipped = {str(p.relative_to(ROOT / "recipes")) for p in (ROOT / "recipes").glob("[!d]*/*.yaml")}
    assert shipped == set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_header_and_hub_ids(name):
    text = (ROOT / "recipes" / name).read_text()
    assert text.splitlines()[0] == f"# speeched train recipes/{name}"
    assert "Expected result" in text and "Reproduces" in text
    recipe = load_recipe(ROOT / "recipes" / name, check_paths=False)
    assert "/" in recipe.model.encoder and not Path(recipe.model.encoder).exists()  # a hub ID
    assert recipe.model.trust_remote_code is False


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_dry_run_with_tiny_local_models(tmp_path, corpora, name):
    enc, dec = RECIPES[name]
    recipe_file = ROOT / "recipes" / name
    corpus = corpora["sentences" if name.startswith("st/") else "digits"]
    args = ["train", str(recipe_file), "--dry-run", "--output-dir", str(tmp_path / "run")]
    res = CliRunner().invoke(app, [*args, *_overrides(recipe_file, tmp_path, corpus, enc, dec)])
    assert res.exit_code == 0, res.output
    assert "dry run OK" in res.output
    assert f"{'whisper' if enc == 'whisper' else enc} encoder + {dec} decoder" in res.output, res.output
    if dec == "qwen2":
        assert "coupling=prefix" in res.output


def test_llm_recipe_builds_and_takes_lora(tmp_path, corpora):
    """Beyond the dry run: the prefix-coupled model of the LLM recipe accepts its LoRA settings."""
    from speeched.modeling.finetune import apply_finetune
    from speeched.training.build import build_model

    name = "asr/librispeech-960h-wavlm-llm-lora.yaml"
    recipe_file = ROOT / "recipes" / name
    sets = _overrides(recipe_file, tmp_path, corpora["digits"], *RECIPES[name])[1::2]
    recipe = load_recipe(recipe_file, overrides=sets, output_dir=tmp_path / "run")
    model = build_model(recipe, ["one two"]).model
    before = sum(p.numel() for p in model.decoder.parameters() if p.requires_grad)
    # The recipe's schema -> finetune.apply_finetune's options (see the report: Trainer.setup passes
    # lora.model_dump() unchanged, whose apply_to/merge_on_export keys apply_finetune rejects).
    lora = recipe.finetune.lora
    parts = ("encoder", "decoder") if lora.apply_to == "both" else (lora.apply_to,)
    opts = {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout, "parts": parts}
    apply_finetune(model, recipe.finetune.method, {**opts, "target_modules": lora.target_modules})
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora" in n for n in names)
    assert sum(p.numel() for n, p in model.decoder.named_parameters() if p.requires_grad) < before
