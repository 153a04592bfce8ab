"""`speeched transcribe`: many inputs, long files, any rate/channels, broken files, every output format."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from speeched.cli import app
from speeched.inference import DecodeOptions, InferenceModel
from speeched.transcription.formats import parse_subtitles
from speeched.transcription.inputs import expand_inputs
from speeched.transcription.segment import FixedSegmenter, SilenceSegmenter, stream_audio
from speeched.transcription.transcriber import TranscribeOptions, Transcriber


def _bursts(
    path: Path, seconds: float, sr: int, seed: int, stereo: bool = False, long_run: float = 0.0
) -> list:
    """Tone bursts separated by silences (plus one `long_run`-second burst); returns the bursts' (start, end)."""
    rng = np.random.default_rng(seed)
    parts, spans, t = [], [], 0.0
    while t < seconds - long_run - 10:
        gap, dur = rng.uniform(0.4, 2.0), rng.uniform(0.5, 8.0)
        tt = np.arange(int(dur * sr)) / sr
        parts += [np.zeros(int(gap * sr)), 0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * tt)]
        spans.append((t + gap, t + gap + dur))
        t += gap + dur
    if long_run:
        tt = np.arange(int(long_run * sr)) / sr
        parts += [np.zeros(sr), 0.2 * np.sin(2 * np.pi * 300 * tt) * (1.2 + np.sin(2 * np.pi * 0.4 * tt))]
        spans.append((t + 1, t + 1 + long_run))
    parts.append(np.zeros(int(max(1.0, seconds - sum(len(p) for p in parts) / sr) * sr)))
    x = np.concatenate(parts).astype(np.float32) + 0.001 * rng.standard_normal(sum(map(len, parts))).astype(
        np.float32
    )
    sf.write(path, np.stack([x, 0.5 * x], axis=1) if stereo else x, sr)
    return spans


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_eval_cli import make_fast_model_dir

    return make_fast_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio")
    files = {"short": root / "short.wav", "stereo": root / "stereo44k.flac", "long": root / "long.wav"}
    _bursts(files["short"], 12, 16000, 0)
    _bursts(files["stereo"], 14, 44100, 1, stereo=True)
    files["long_spans"] = _bursts(files["long"], 330, 8000, 2, long_run=45)  # type: ignore[assignment]
    (root / "notaudio.wav").write_text("this is not audio\n")
    files["notaudio"] = root / "notaudio.wav"
    return files


def _cli(*args: str):
    """Tone bursts are not speech: a voice-activity detector would find nothing, so energy segmentation
    (a later --segment wins)."""
    return CliRunner().invoke(
        app, ["transcribe", "--segment", "energy", *args, "--tokens-per-second", "1", "--no-progress"]
    )


def test_broken_inputs_are_reported_and_the_rest_still_transcribed(
    model_dir: Path, audio: dict, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.wav"
    res = _cli(
        str(audio["short"]), str(missing), str(audio["notaudio"]), str(audio["stereo"]), "-m", str(model_dir)
    )
    assert res.exit_code == 1
    out = res.stdout.splitlines()
    for name in ("short.wav", "stereo44k.flac"):
        header = next(i for i, line in enumerate(out) if line.startswith("==> ") and name in line)
        assert out[header + 1].strip(), f"no text printed for {name}"
    assert not any("missing.wav" in line or "notaudio" in line for line in out)
    assert f"{missing}: no such file" in res.stderr
    assert "notaudio.wav: not audio" in res.stderr and "2 of 4 inputs failed" in res.stderr
    assert "short.wav: " in res.stderr and "segment(s) by energy, at most 20 s" in res.stderr
    assert "Traceback" not in res.output


def test_long_file_to_srt_files_with_monotonic_cues(model_dir: Path, audio: dict, tmp_path: Path) -> None:
    out = tmp_path / "subs"
    res = _cli(str(audio["long"]), str(audio["short"]), "-m", str(model_dir), "-f", "srt", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["long.srt", "short.srt"]
    cues = parse_subtitles((out / "long.srt").read_text())
    duration = sf.info(audio["long"]).duration
    assert duration >= 300 and len(cues) >= 15
    assert all(
        c.start < c.end <= d.start for c, d in zip(cues, cues[1:], strict=False)
    )  # monotonic, never overlapping
    assert cues[-1].end <= duration + 1e-3
    assert max(c.end - c.start for c in cues) <= 20.0 + 1e-3  # the 45 s burst was split
    for start, end in audio["long_spans"]:  # every burst of sound lies in some cue
        mid = (start + end) / 2
        assert any(c.start <= mid <= c.end for c in cues), (start, end)
    assert parse_subtitles((out / "short.srt").read_text())


def test_fixed_windows_json_and_vtt(model_dir: Path, audio: dict, tmp_path: Path) -> None:
    target = tmp_path / "stereo.json"
    args = ["-f", "json", "-o", str(target), "--segment", "fixed", "--max-segment", "6", "--overlap", "1"]
    res = _cli(str(audio["stereo"]), "-m", str(model_dir), *args)
    assert res.exit_code == 0, res.output
    data = json.loads(target.read_text())
    segs = data["segments"]
    assert data["duration"] == pytest.approx(sf.info(audio["stereo"]).duration, abs=1e-3)
    assert data["segments_decoded"] == 3  # 14 s: windows at 0, 5 and 10 s (the last one shorter)
    assert segs and all(s["start"] < s["end"] for s in segs)
    assert all(a["end"] <= b["start"] for a, b in zip(segs, segs[1:], strict=False))
    assert data["text"] == " ".join(" ".join(s["text"] for s in segs).split())
    args = ["-f", "vtt", "--segment", "fixed", "--max-segment", "5", "--overlap", "2"]
    res = _cli(str(audio["short"]), "-m", str(model_dir), *args)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("WEBVTT")
    cues = parse_subtitles(res.stdout)
    # 12 s in 5 s windows every 3 s; a window whose words all repeat its neighbour's may stitch to nothing
    assert 1 <= len(cues) <= 4 and all(
        a.start < a.end <= b.start for a, b in zip(cues, cues[1:], strict=False)
    )
    assert cues[0].start == 0.0 and cues[-1].end <= 12.0 + 1e-3


def test_inputs_expand_directories_and_globs_without_a_shell(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.wav", "sub/b.flac", "sub/c.WAV"):
        sf.write(tmp_path / name, np.zeros(160, dtype=np.float32), 16000)
    (tmp_path / "notes.txt").write_text("x")
    paths, failed = expand_inputs([str(tmp_path), str(tmp_path / "*.wav"), str(tmp_path / "*.mp3")])
    assert [Path(p).name for p in paths] == ["a.wav", "b.flac", "c.WAV"]  # duplicates from the glob dropped
    assert len(failed) == 1 and failed[0].message == "no file matches this pattern"
    paths, failed = expand_inputs([str(tmp_path / "sub" / "missing.wav")])
    assert paths == [str(tmp_path / "sub" / "missing.wav")] and not failed  # reported when opened


def test_segmenters_hold_a_bounded_window_of_a_long_stream() -> None:
    sr, block = 16000, 16000 * 10
    rng = np.random.default_rng(0)
    silence_seg, fixed_seg = (
        SilenceSegmenter(sr, max_segment=15),
        FixedSegmenter(sr, max_segment=15, overlap=1),
    )
    segs: dict[str, list] = {"silence": [], "fixed": []}
    biggest = 0
    for k in range(90):  # 15 minutes, one block at a time
        voiced = rng.random() < 0.7 or k == 89
        x = (0.3 * np.sin(np.arange(block) * 0.05) * voiced).astype(np.float32)
        x[: block // 5] = 0.0  # a pause in every block
        segs["silence"] += silence_seg.feed(x)
        segs["fixed"] += fixed_seg.feed(x)
        biggest = max(biggest, len(silence_seg._buf), len(fixed_seg._buf))
    segs["silence"] += silence_seg.finish()
    segs["fixed"] += fixed_seg.finish()
    assert biggest <= silence_seg.window + block  # never the whole stream
    for kind, found in segs.items():
        assert found and max(s.duration for s in found) <= 15 + 1e-6
        if kind == "silence":
            assert all(a.end <= b.start for a, b in zip(found, found[1:], strict=False))
        assert all(abs(len(s.audio) / sr - s.duration) < 1e-6 for s in found)
    assert segs["fixed"][-1].end == pytest.approx(900.0)


def test_stream_audio_resamples_and_mixes_stereo_block_by_block(audio: dict) -> None:
    blocks = list(stream_audio(str(audio["stereo"]), 16000, block_seconds=3))
    info = sf.info(audio["stereo"])
    assert info.samplerate == 44100 and info.channels == 2
    assert len(blocks) >= 4 and all(b.ndim == 1 and b.dtype == np.float32 for b in blocks)
    assert max(len(b) for b in blocks) <= 3 * 16000 + 200
    assert sum(map(len, blocks)) == pytest.approx(info.duration * 16000, abs=2)


class _LoopingModel(torch.nn.Module):
    """A decoder stuck in a loop: "w5 w6 w5 w6 ..." until the token cap, for every input."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.generation_config = SimpleNamespace(eos_token_id=2, decoder_start_token_id=1)
        self.config = SimpleNamespace(decoder=SimpleNamespace(max_position_embeddings=4096))
        self.caps: list[tuple[int, float]] = []

    def generate(self, input_values: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, **kw):
        self.caps.append((max_new_tokens, float(attention_mask.sum(-1).max()) / 16000))
        return torch.tensor(
            [[1] + [5, 6] * (max_new_tokens // 2) + [6] * (max_new_tokens % 2)] * len(input_values)
        )


class _Tok:
    def batch_decode(self, sequences: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        return [" ".join(f"w{t}" for t in list(seq) if t > 2) for seq in sequences]


def test_runaway_decoding_is_capped_by_duration_and_loops_are_cut(audio: dict) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    model = _LoopingModel()
    options = TranscribeOptions(DecodeOptions(tokens_per_second=4.0), segment="energy", max_segment=10)
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    results = list(Transcriber(InferenceModel(model, _Tok(), fe), options).run([str(audio["short"])]))
    (t,) = results
    assert all(cap <= 4.0 * seconds + 11 for cap, seconds in model.caps)
    assert t.info["hit_token_cap"] == t.info["segments_decoded"] == t.info["loops_truncated"] > 0
    assert all(s.text == "w5 w6" for s in t.segments)


# ---------------------------------------------------------------- transcribe_files: outputs, failures, silence
def _fake(tmp_path: Path):
    from test_inference import LengthModel, WordTokenizer
    from transformers import Wav2Vec2FeatureExtractor

    fe = Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True)
    return InferenceModel(LengthModel(), WordTokenizer(), fe)


def _tones(tmp_path: Path, *tenths: int) -> list[str]:
    paths = []
    for i, n in enumerate(tenths):
        x = np.concatenate([np.zeros(8000), 0.3 * np.sin(np.arange(n * 1600) * 0.1), np.zeros(8000)])
        sf.write(tmp_path / f"t{i}.wav", x.astype(np.float32), 16000)
        paths.append(str(tmp_path / f"t{i}.wav"))
    return paths


def _energy(**kw) -> TranscribeOptions:
    return TranscribeOptions(segment="energy", **kw)


def test_output_locations_are_made_or_refused_before_decoding(tmp_path: Path) -> None:
    from speeched.errors import UsageError
    from speeched.transcription.transcribe import transcribe_files

    im = _fake(tmp_path)
    (a,) = _tones(tmp_path, 12)
    target = tmp_path / "missing" / "dir" / "out.txt"
    transcribe_files(im, [a], _energy(), target)
    assert target.read_text().strip() and oct(target.stat().st_mode & 0o777) == "0o644"
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path / "afile" / "out.txt", tmp_path / "afile" / "sub" / "out.txt"):
        calls = len(im.model.calls)
        with pytest.raises(UsageError, match="is a file"):
            transcribe_files(im, [a], _energy(), bad)
        assert len(im.model.calls) == calls  # nothing was decoded
    res = _cli(
        str(tmp_path / "t0.wav"), "-m", str(tmp_path / "no-model"), "-o", str(tmp_path / "afile" / "o")
    )
    assert res.exit_code == 2 and "is a file" in res.output and "Traceback" not in res.output


def test_each_file_is_written_when_done_so_an_interruption_keeps_it(tmp_path: Path) -> None:
    from speeched.transcription.transcribe import transcribe_files

    im = _fake(tmp_path)
    inner = im.model.generate

    def generate(**kw):
        if im.model.calls:
            raise KeyboardInterrupt  # Ctrl-C while the second file decodes
        return inner(**kw)

    im.model.generate = generate
    paths = _tones(tmp_path, 10, 14)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        transcribe_files(im, paths, _energy(pool_seconds=0.5), out)
    assert sorted(p.name for p in out.iterdir()) == ["t0.txt"]  # the finished file, and no half file
    assert re.fullmatch(r"w1\d\n", (out / "t0.txt").read_text())  # ~1 s of tone (plus segment padding)


def test_json_on_stdout_is_json_lines(tmp_path: Path) -> None:
    import io

    from speeched.transcription.transcribe import transcribe_files

    paths = _tones(tmp_path, 8, 11)
    stream = io.StringIO()
    transcribe_files(_fake(tmp_path), paths, _energy(), None, "json", stdout=stream)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "==>" not in stream.getvalue()
    objs = [json.loads(line) for line in lines]
    assert [o["path"] for o in objs] == paths and all(re.fullmatch(r"w\d+", o["text"]) for o in objs)


def test_a_lone_missing_input_is_a_usage_error_without_false_comfort(tmp_path: Path) -> None:
    res = _cli(str(tmp_path / "nope.wav"), "-m", str(tmp_path / "model"))
    assert res.exit_code == 2, res.output
    assert "nope.wav: no such file" in res.output and "still transcribed" not in res.output
    assert "Traceback" not in res.output


def test_overlap_is_checked_only_for_fixed_windows() -> None:
    from speeched.errors import UsageError
    from speeched.transcription.transcribe import check_options

    check_options(TranscribeOptions(segment="energy", max_segment=4))  # default overlap 2 is irrelevant here
    check_options(TranscribeOptions(segment="vad", max_segment=3))
    with pytest.raises(UsageError, match="overlap"):
        check_options(TranscribeOptions(segment="fixed", max_segment=4))
    with pytest.raises(UsageError, match="--segment"):
        check_options(TranscribeOptions(segment="words"))


def test_digital_silence_transcribes_to_nothing_at_no_cost(tmp_path: Path) -> None:
    from speeched.transcription.transcribe import transcribe_files

    sf.write(tmp_path / "zeros.wav", np.zeros(16000 * 60, np.float32), 16000)
    for kind in ("fixed", "energy", "vad"):
        im = _fake(tmp_path)
        out = tmp_path / f"z-{kind}.json"
        transcribe_files(im, [str(tmp_path / "zeros.wav")], TranscribeOptions(segment=kind), out, "json")
        data = json.loads(out.read_text())
        assert data["text"] == "" and im.model.calls == []
