"""Every source kind resolves to the same Utterances; malformed manifests fail with file:line."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import soundfile as sf

from speeched.data.audio import load_audio
from speeched.data.config import Columns, DataSource
from speeched.data.sources import ManifestError, detect_format, load_source


def _wav(path: str, seconds: float = 0.5, sr: int = 16000) -> str:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


@pytest.fixture()
def corpus(tmp_path):
    os.makedirs(tmp_path / "wavs")
    for i in range(3):
        _wav(str(tmp_path / "wavs" / f"u{i}.wav"), 0.5 + i * 0.25)
    return tmp_path


def test_jsonl_relative_paths_and_origin(corpus):
    lines = [{"id": f"u{i}", "audio": f"wavs/u{i}.wav", "text": f"hello {i}", "spk": "a"} for i in range(3)]
    (corpus / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    utts = load_source(str(corpus / "m.jsonl"))
    assert [u.id for u in utts] == ["u0", "u1", "u2"]
    assert utts[1].audio == str(corpus / "wavs" / "u1.wav")
    assert utts[2].origin.endswith("m.jsonl:3")
    assert utts[0].extra == {"spk": "a"}
    assert utts[0].duration is None


@pytest.mark.parametrize("ext,delim", [("csv", ","), ("tsv", "\t")])
def test_csv_and_tsv(corpus, ext, delim):
    rows = [delim.join(["id", "audio", "text", "duration"])]
    rows += [delim.join([f"u{i}", f"wavs/u{i}.wav", f"text {i}", "0.5"]) for i in range(3)]
    (corpus / f"m.{ext}").write_text("\n".join(rows) + "\n")
    utts = load_source(str(corpus / f"m.{ext}"))
    assert len(utts) == 3 and utts[0].duration == 0.5 and utts[2].text == "text 2"
    assert utts[1].origin.endswith(f"m.{ext}:3")


def test_custom_columns_and_limit(corpus):
    (corpus / "m.jsonl").write_text(
        "\n".join(json.dumps({"key": f"u{i}", "wav": f"wavs/u{i}.wav", "de": "hallo"}) for i in range(3))
    )
    src = DataSource(
        path=str(corpus / "m.jsonl"), columns=Columns(id="key", audio="wav", translation="de"), limit=2
    )
    utts = load_source(src)
    assert len(utts) == 2 and utts[0].id == "u0" and utts[0].target("st") == "hallo"


@pytest.mark.parametrize("meta", ["metadata.csv", "metadata.jsonl"])
def test_audiofolder(corpus, meta):
    d = corpus / "wavs"
    if meta.endswith(".csv"):
        (d / meta).write_text("file_name,text\n" + "".join(f"u{i}.wav,word {i}\n" for i in range(3)))
    else:
        (d / meta).write_text(
            "".join(json.dumps({"file_name": f"u{i}.wav", "text": "w"}) + "\n" for i in range(3))
        )
    assert detect_format(str(d)) == "audiofolder"
    utts = load_source(str(d))
    assert [u.id for u in utts] == ["u0", "u1", "u2"]
    assert os.path.isfile(utts[0].audio)


def test_datasets_save_to_disk_bytes_and_paths(corpus):
    datasets = pytest.importorskip("datasets")
    buf = io.BytesIO()
    sf.write(buf, np.full(8000, 0.1, np.float32), 8000, format="WAV")
    ds = datasets.Dataset.from_dict(
        {
            "audio": [
                {"bytes": buf.getvalue(), "path": None},
                {"bytes": None, "path": str(corpus / "wavs/u0.wav")},
            ],
            "text": ["from bytes", "from path"],
        }
    ).cast_column("audio", datasets.Audio(decode=False))
    ds.save_to_disk(str(corpus / "saved"))
    utts = load_source(DataSource(path=str(corpus / "saved"), format="datasets"))
    assert utts[0].audio is None and utts[0].audio_bytes() == buf.getvalue()
    assert "audio_bytes" not in utts[0].extra  # read from the mapped table on demand, never copied up front
    x = load_audio(utts[0], 16000)  # decoded by soundfile from bytes, resampled 8k -> 16k
    assert x.dtype == np.float32 and abs(len(x) - 16000) <= 2
    # save_to_disk may embed the file's bytes; either way the name survives for reports
    assert (utts[1].audio or utts[1].extra["audio_name"]).endswith("u0.wav") and utts[1].text == "from path"
    assert load_audio(utts[1], 16000).shape == (8000,)


def test_datasets_load_dataset_parquet_folder(corpus):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"audio": [str(corpus / "wavs/u1.wav")], "text": ["x"], "id": ["k"]})
    os.makedirs(corpus / "pq")
    ds.cast_column("audio", datasets.Audio(decode=False)).to_parquet(str(corpus / "pq" / "train.parquet"))
    utts = load_source(DataSource(path=str(corpus / "pq"), format="datasets", split="train"))
    assert utts[0].id == "k" and load_audio(utts[0], 16000).shape == (12000,)


def test_bad_json_names_file_and_line(corpus):
    (corpus / "m.jsonl").write_text('{"audio": "wavs/u0.wav", "text": "a"}\n{"audio": "x.wav", "text": \n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: invalid JSON"):
        load_source(str(corpus / "m.jsonl"))


def test_missing_column_lists_available_keys(corpus):
    (corpus / "m.jsonl").write_text('{"path": "wavs/u0.wav", "text": "a"}\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: missing column 'audio' \(available: path, text\)"):
        load_source(str(corpus / "m.jsonl"))


def test_csv_wrong_field_count(corpus):
    (corpus / "m.csv").write_text("audio,text\nwavs/u0.wav,hello,extra\n")
    with pytest.raises(ManifestError, match=r"m\.csv:2: 3 fields but the header has 2"):
        load_source(str(corpus / "m.csv"))


def test_non_utf8_line_is_flagged_not_fatal(corpus):
    good = json.dumps({"audio": "wavs/u0.wav", "text": "ok"}).encode()
    bad = b'{"audio": "wavs/u1.wav", "text": "caf\xe9"}'
    (corpus / "m.jsonl").write_bytes(good + b"\n" + bad + b"\n")
    utts = load_source(str(corpus / "m.jsonl"))
    assert "text_error" not in utts[0].extra
    assert "column" in utts[1].extra["text_error"]


def test_missing_path_and_unknown_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_source(str(tmp_path / "nope.jsonl"))
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ManifestError, match="cannot tell the format"):
        load_source(str(tmp_path / "m.txt"))
