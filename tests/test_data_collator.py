"""SpeechDataset + SpeechCollator with a real BERT tokenizer and waveform / log-mel extractors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoTokenizer, Speech2TextFeatureExtractor, Wav2Vec2FeatureExtractor

from speeched.data.collator import SpeechCollator
from speeched.data.dataset import SpeechDataset
from speeched.data.records import Utterance
from speeched.data.sampler import DurationBucketSampler
from speeched.data.text import build_normalizer


def _tone(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture()
def utts(tmp_path):
    out = []
    for i, (sec, text) in enumerate(
        [(0.5, "Hello World"), (1.0, "a much longer sentence here"), (0.75, "yes")]
    ):
        path = str(tmp_path / f"u{i}.wav")
        sf.write(path, _tone(sec, 22050), 22050)  # resampled to 16 kHz by the dataset
        out.append(
            Utterance(id=f"u{i}", audio=path, text=text, translation=f"hallo {i}", duration=sec, lang="de")
        )
    return out


def wav2vec2_fe():
    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )


def test_waveform_extractor_batch(utts, tok):
    ds = SpeechDataset(utts, 16000)
    coll = SpeechCollator(wav2vec2_fe(), tok)
    batch = coll([ds[i] for i in range(3)])
    assert batch["input_values"].shape == (3, 16000)
    mask = batch["attention_mask"]
    assert mask.sum(1).tolist() == [8000, 16000, 12000]
    assert batch["input_values"][0, 8000:].abs().max() == 0  # padded region
    assert abs(float(batch["input_values"][1].mean())) < 1e-3  # normalised
    labels = batch["labels"]
    want0 = tok("Hello World", add_special_tokens=False).input_ids + [102]
    assert labels[0, : len(want0)].tolist() == want0 and (labels[0, len(want0) :] == -100).all()
    lens = (labels != -100).sum(1)
    assert all(labels[i, lens[i] - 1] == 102 for i in range(3))  # EOS is the last label
    assert batch["num_target_tokens"] == int(lens.sum())
    assert batch["ids"] == ["u0", "u1", "u2"]
    assert batch["audio_seconds"] == pytest.approx(2.25, abs=1e-3)


def test_logmel_extractor_batch_and_prefix(utts, tok):
    fe = Speech2TextFeatureExtractor(feature_size=80, num_mel_bins=80)
    lang_id = tok.convert_tokens_to_ids("german")
    coll = SpeechCollator(
        fe,
        tok,
        task="st",
        decoder_prompt=lambda u: [lang_id] if u.lang == "de" else [],
        normalize_target=str.upper,
        decoder_start_token_id=101,
        pad_token_id=0,
    )
    ds = SpeechDataset(utts, fe.sampling_rate)
    batch = coll([ds[0], ds[1]])
    feats = batch["input_features"]
    assert feats.ndim == 3 and feats.shape[0] == 2 and feats.shape[2] == 80
    assert batch["attention_mask"].shape == feats.shape[:2]
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum() == feats.shape[1]
    # The language token is a forced decoder input, never a predicted label.
    body = tok("HALLO 0", add_special_tokens=False).input_ids
    labels, dec = batch["labels"], batch["decoder_input_ids"]
    assert labels[0, 0] == -100 and labels[0, 1 : 1 + len(body)].tolist() == body
    assert dec[0, :2].tolist() == [101, lang_id] and dec[0, 2 : 2 + len(body)].tolist() == body[:]
    # an example without a prefix: plain shift-right of its labels
    utts[1].lang = None
    plain = coll([ds[0], ds[1]])
    n1 = int((plain["labels"][1] != -100).sum())
    assert plain["labels"][1, 0] != -100
    assert plain["decoder_input_ids"][1, 0] == 101
    assert plain["decoder_input_ids"][1, 1:n1].tolist() == plain["labels"][1, : n1 - 1].tolist()
    assert batch["num_target_tokens"] == int((labels != -100).sum())


def test_pad_equals_eos_keeps_final_eos(utts, tok):
    # GPT-2 style: pad == eos. Labels must still end with eos and pad with -100.
    coll = SpeechCollator(wav2vec2_fe(), tok, eos_token_id=tok.pad_token_id)
    ds = SpeechDataset(utts, 16000)
    labels = coll([ds[0], ds[1]])["labels"]
    n0 = len(tok("Hello World", add_special_tokens=False).input_ids) + 1
    assert labels[0, n0 - 1] == tok.pad_token_id and (labels[0, n0:] == -100).all()


def test_attention_mask_follows_extractor(utts, tok):
    fe = wav2vec2_fe()
    fe.return_attention_mask = False  # group-norm wav2vec2 checkpoints are used without a mask
    batch = SpeechCollator(fe, tok)([SpeechDataset(utts, 16000)[0]])
    assert "attention_mask" not in batch


def test_wrong_sampling_rate_is_explained(utts, tok):
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        SpeechCollator(wav2vec2_fe(), tok)([SpeechDataset(utts, 8000)[0]])


def test_missing_translation_names_origin(tok):
    u = Utterance(
        id="x", audio=None, text="a", array=np.ones(1600, np.float32), sampling_rate=16000, origin="m.tsv:4"
    )
    with pytest.raises(ValueError, match="m.tsv:4: no translation"):
        SpeechCollator(wav2vec2_fe(), tok, task="st")([SpeechDataset([u], 16000)[0]])


def test_normalizer_from_config_in_collator(utts, tok):
    coll = SpeechCollator(
        wav2vec2_fe(), tok, normalize_target=build_normalizer(["lowercase", "strip_punctuation"])
    )
    assert coll.targets([Utterance(id="x", audio=None, text="Hello,  World!")]) == ["hello world"]


def test_dataset_replaces_file_broken_mid_epoch(utts, tmp_path, caplog):
    report = tmp_path / "report"
    ds = SpeechDataset(utts, 16000, report_dir=str(report))
    os.remove(utts[1].audio)  # disappears after the scan
    item = ds[1]
    assert item["id"] == "u2" and item["replaces"] == "u1"
    assert "missing file" in caplog.text and "u1.wav" in caplog.text
    assert "missing file" in (report / "bad_audio.jsonl").read_text()
    strict = SpeechDataset(utts, 16000, on_bad_audio="error")
    with pytest.raises(Exception, match="u1.wav.*missing file"):
        strict[1]


def test_cache_audio_preload(utts):
    ds = SpeechDataset(utts, 16000, cache_audio=True)
    ds.preload()
    os.remove(utts[0].audio)
    assert ds[0]["id"] == "u0" and len(ds[0]["array"]) == 8000


def test_dataloader_with_worker_and_sampler(utts, tok):
    ds = SpeechDataset(utts, 16000)
    sampler = DurationBucketSampler(ds.durations, max_duration=1.6, world_size=1)
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=sampler, collate_fn=SpeechCollator(wav2vec2_fe(), tok), num_workers=1
    )
    ids = sorted(i for b in loader for i in b["ids"])
    assert ids == ["u0", "u1", "u2"]


def test_fixed_window_extractor_is_padded_to_its_window(utts, tok):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=2)  # 2 s window keeps the test fast
    batch = SpeechCollator(fe, tok)([SpeechDataset(utts, fe.sampling_rate)[0]])
    assert batch["input_features"].shape == (1, 80, fe.nb_max_frames)
    assert "attention_mask" not in batch  # Whisper's model_input_names has none


def test_window_extractor_padding_to_the_longest_is_cut_at_the_window(utts, tok):
    from transformers import WhisperFeatureExtractor

    ds = SpeechDataset(utts, 16000)
    items = [ds[i] for i in range(len(utts))]
    longest = max(len(it["array"]) for it in items)
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=2, speeched_padding="longest")
    assert longest < fe.n_samples
    batch = SpeechCollator(fe, tok)(items)
    assert batch["input_features"].shape == (len(items), 80, longest // fe.hop_length)
    short = WhisperFeatureExtractor(feature_size=80, chunk_length=1, speeched_padding="longest")
    short.n_samples, short.nb_max_frames = 8000, 50  # a 0.5 s window (chunk_length takes whole seconds)
    assert longest > short.n_samples  # cut at the window, as transformers cuts a 30 s one
    assert SpeechCollator(short, tok)(items)["input_features"].shape[-1] == short.nb_max_frames
