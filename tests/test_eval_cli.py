"""`speeched eval`: real generate() decoding, scores that jiwer/sacrebleu reproduce from predictions.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import jiwer
import numpy as np
import pytest
import sacrebleu
import soundfile as sf
import torch
from typer.testing import CliRunner

from speeched.cli import app
from speeched.data.records import Utterance
from speeched.evaluation.evaluate import evaluate_utterances
from speeched.evaluation.normalize import get_normalizer
from speeched.inference import DecodeOptions, InferenceModel

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "looked", "at", "the", "bird", "in", "the", "tree"]


def _write_corpus(root: Path, n: int, seed: int = 0) -> Path:
    """n noisy tone bursts (different lengths, one stereo 8 kHz file) and a JSONL manifest with targets."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        sr = 8000 if i == 1 else 16000
        dur = 0.6 + 0.35 * i
        t = np.arange(int(dur * sr)) / sr
        x = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.02 * rng.standard_normal(len(t))
        data = np.stack([x, 0.5 * x], axis=1) if i == 1 else x
        sf.write(root / f"utt{i}.wav", data.astype(np.float32), sr)
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 7))))
        rows.append(
            {"id": f"utt{i}", "audio": f"utt{i}.wav", "text": words.capitalize() + ".", "de": f"Die {words}"}
        )
    manifest = root / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def make_fast_model_dir(root: Path) -> Path:
    """`speeched init` of a tiny random wav2vec2 (3 conv layers: 50 frames/s like the real one) + 1-layer MiniLM.

    helpers.make_tiny_model_dir's encoder keeps 800 frames/s, which makes minute-long inputs slow to test.
    """
    from helpers import minilm_path, tiny_encoder_dir

    from speeched.modeling.compose import ComposeSpec, init_model

    enc = tiny_encoder_dir(
        root, "wav2vec2", conv_dim=(16, 16, 16), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8)
    )
    spec = ComposeSpec(encoder=str(enc), decoder=minilm_path(), decoder_options={"num_hidden_layers": 1})
    init_model(spec, root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fast_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("data"), 6)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- batching and mapping, with a known answer
class _LengthModel(torch.nn.Module):
    """'Recognises' each input as the word w<number of 0.1 s>: the right answer is known for every utterance."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.generation_config = SimpleNamespace(eos_token_id=2, decoder_start_token_id=1)
        self.config = SimpleNamespace(decoder=SimpleNamespace(max_position_embeddings=512))
        self.batch_sizes: list[int] = []

    def generate(self, input_values: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        assert kwargs["max_new_tokens"] >= 10 and kwargs["num_beams"] == 1
        self.batch_sizes.append(len(input_values))
        return torch.tensor([[1, 100 + int(n) // 1600, 2] for n in attention_mask.sum(-1)])


class _WordTokenizer:
    def batch_decode(self, sequences: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        return [" ".join(f"w{t - 100}" for t in list(seq) if t >= 100) for seq in sequences]


def test_duration_batches_map_every_hypothesis_back_to_its_utterance(tmp_path: Path) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    fe = Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True)
    rng = np.random.default_rng(0)
    utts, expected = [], []
    for i, tenths in enumerate(rng.permutation(np.arange(3, 15))):
        path = tmp_path / f"{i}.wav"
        sf.write(path, 0.1 * rng.standard_normal(int(tenths) * 1600).astype(np.float32), 16000)
        ref = f"w{tenths}" if i % 4 else "a wrong reference"  # every 4th is a known error
        utts.append(Utterance(id=f"u{i}", audio=str(path), text=ref, duration=tenths / 10))
        expected.append(f"w{tenths}")
    model = _LengthModel()
    im = InferenceModel(model, _WordTokenizer(), fe)
    result = evaluate_utterances(im, utts, "asr", DecodeOptions(max_duration=3.0), get_normalizer("none"))
    assert [r["id"] for r in result.rows] == [u.id for u in utts]  # dataset order, not batch order
    assert [r["hypothesis"] for r in result.rows] == expected
    assert result.metrics["wer"] == pytest.approx(jiwer.wer([u.text for u in utts], expected))
    assert result.metrics["wer"] > 0 and result.metrics["diagnostics"]["identical_in_batch"] == 0
    assert len(model.batch_sizes) > 1 and sum(model.batch_sizes) == len(utts)
    batches = {}
    for p in result.predictions:
        batches.setdefault(p.batch, []).append(p.duration)
    assert all(sum(d) <= 3.0 or len(d) == 1 for d in batches.values())
    first, last = min(batches), max(batches)
    assert max(batches[first]) >= max(batches[last])  # longest first


# ---------------------------------------------------------------- the CLI with a real (tiny, random) model
def test_eval_asr_writes_predictions_whose_scores_jiwer_reproduces(
    model_dir: Path, manifest: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    res = CliRunner().invoke(
        app,
        [
            "eval",
            str(model_dir),
            "--data",
            str(manifest),
            "--out",
            str(out),
            "--max-duration",
            "3",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = _read_jsonl(out / "predictions.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_utterances"] == len(rows) == 6
    source = _read_jsonl(manifest)
    assert [r["id"] for r in rows] == [s["id"] for s in source]
    assert [r["reference"] for r in rows] == [s["text"] for s in source]
    refs, hyps = [r["reference"] for r in rows], [r["hypothesis"] for r in rows]
    nrefs, nhyps = [r["reference_normalized"] for r in rows], [r["hypothesis_normalized"] for r in rows]
    assert summary["wer"] == pytest.approx(jiwer.wer(nrefs, nhyps))
    assert summary["cer"] == pytest.approx(jiwer.cer(nrefs, nhyps))
    assert summary["raw_wer"] == pytest.approx(jiwer.wer(refs, hyps))
    assert summary["raw"]["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    norm = get_normalizer("english")
    assert nrefs == [norm(r) for r in refs] and summary["normalizer"]["name"] == norm.name
    assert sum(r["word_errors"] for r in rows) / sum(r["ref_words"] for r in rows) == pytest.approx(
        summary["wer"]
    )
    durations = [sf.info(manifest.parent / s["audio"]).duration for s in source]
    assert [r["duration"] for r in rows] == pytest.approx(durations, abs=1e-3)
    assert summary["audio_seconds"] == pytest.approx(sum(durations), abs=0.01)
    assert summary["decoding"]["num_beams"] == 1 and summary["decoding"]["num_batches"] >= 2
    assert summary["rtfx"] > 0 and summary["elapsed_seconds"] > 0
    assert summary["diagnostics"]["hit_token_cap"] == sum(r["hit_token_cap"] for r in rows)
    assert "WER" in res.stdout and summary["normalizer"]["name"] in res.stdout


def test_eval_st_bleu_chrf_reproduced_by_sacrebleu_with_the_chosen_tokenizer(
    model_dir: Path, manifest: Path, tmp_path: Path
) -> None:
    out = tmp_path / "st"
    args = ["eval", str(model_dir), "--data", str(manifest), "--task", "st", "--target-column", "de"]
    res = CliRunner().invoke(
        app, [*args, "--lang", "zh", "--out", str(out), "--limit", "4", "--num-beams", "2"]
    )
    assert res.exit_code == 0, res.output
    rows = _read_jsonl(out / "predictions.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert len(rows) == summary["num_utterances"] == 4
    refs, hyps = [r["reference"] for r in rows], [r["hypothesis"] for r in rows]
    assert refs[0].startswith("Die ")
    assert summary["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score)
    assert summary["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    nrefs, nhyps = [r["reference_normalized"] for r in rows], [r["hypothesis_normalized"] for r in rows]
    assert summary["normalized_bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(nhyps, [nrefs], tokenize="zh").score
    )
    assert "tok:zh" in summary["bleu_signature"] and "tok:zh" in res.stdout
    assert rows[0]["sentence_bleu"] == pytest.approx(
        sacrebleu.BLEU(tokenize="zh", effective_order=True).sentence_score(hyps[0], [refs[0]]).score
    )
    assert summary["decoding"]["num_beams"] == 2 and summary["normalizer"]["name"] == "basic"


def test_eval_attention_plots_and_batch_size_one_check(
    model_dir: Path, manifest: Path, tmp_path: Path
) -> None:
    out = tmp_path / "plots"
    res = CliRunner().invoke(
        app,
        ["eval", str(model_dir), "--data", str(manifest), "--out", str(out), "--limit", "3"]
        + ["--plot-attention", "2", "--check-batching", "--max-new-tokens", "8"],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    pngs = sorted((out / "attention").glob("*.png"))
    assert len(pngs) == 2 and [str(p) for p in pngs] == sorted(summary["attention_plots"])
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    check = summary["batching_check"]
    assert check["compared"] == 3 and len(check["differences"]) == 3 - check["agree"]
    assert check["identical"] == (check["agree"] == 3)
    rows = _read_jsonl(out / "predictions.jsonl")
    assert all(r["num_tokens"] <= 8 for r in rows)
    assert "batch size 1 vs batched" in res.stdout


def test_eval_reports_unusable_input_clearly(model_dir: Path, manifest: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app, ["eval", str(model_dir), "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "nope.jsonl" in res.output and "Traceback" not in res.output
    res = runner.invoke(
        app, ["eval", str(model_dir), "--data", str(manifest), "--task", "st", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "--target-column" in res.output
    res = runner.invoke(app, ["eval", str(tmp_path), "--data", str(manifest), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "config.json" in res.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = runner.invoke(app, ["eval", str(model_dir), "--data", str(empty), "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "bad_audio" not in res.output, res.output
    assert res.output.strip().splitlines()[-1].startswith("speeched eval: ")


def test_eval_and_transcribe_default_to_the_decoding_the_model_was_validated_with(
    model_dir: Path, manifest: Path, tmp_path: Path
) -> None:
    import shutil

    validated = tmp_path / "validated"
    shutil.copytree(model_dir, validated)
    cfg = json.loads((validated / "config.json").read_text())
    cfg["decoding"] = {"num_beams": 3, "ctc_weight": 0.0}
    (validated / "config.json").write_text(json.dumps(cfg))

    def decoding(*extra: str) -> dict:
        out = tmp_path / f"eval{len(extra)}"
        args = ["eval", str(validated), "--data", str(manifest), "--out", str(out), "--limit", "2", *extra]
        res = CliRunner().invoke(app, [*args, "--no-progress"])
        assert res.exit_code == 0, res.output
        return json.loads((out / "summary.json").read_text())["decoding"]

    assert decoding()["num_beams"] == 3  # from the model
    assert decoding("--num-beams", "1")["num_beams"] == 1  # an explicit flag wins

    from speeched.inference import resolve_options

    def resolved(model_cfg: dict, **asked) -> tuple:
        o = resolve_options(SimpleNamespace(config=SimpleNamespace(**model_cfg)), DecodeOptions(**asked))
        return o.num_beams, o.ctc_weight

    recorded = {"decoding": {"num_beams": 4, "ctc_weight": 0.8}}
    assert resolved({}) == (1, 0.0)
    assert resolved({**recorded, "ctc_vocab": ["<b>"]}) == (4, 0.8)
    assert resolved({**recorded, "ctc_vocab": None}) == (4, 0.0)  # a recorded λ without a CTC head
    assert resolved({**recorded, "ctc_vocab": None}, ctc_weight=0.0, num_beams=2) == (2, 0.0)
    ctc = {"ctc_vocab": ["<b>"]}
    assert resolved({**ctc, "coupling": "cross_attention"}, ctc_weight=0.5, num_beams=1) == (1, 0.5)
    # N-best rescoring
    assert resolved({**ctc, "coupling": "prefix"}, ctc_weight=0.5, num_beams=1) == (2, 0.5)
    assert resolved({**ctc, "coupling": "prefix"}, ctc_weight=1.0, num_beams=1) == (1, 1.0)  # CTC only


def test_eval_with_silent_and_missing_files_scores_the_rest_and_exits_1(
    model_dir: Path, manifest: Path, tmp_path: Path
) -> None:
    rows = _read_jsonl(manifest)[:2]
    sf.write(tmp_path / "zeros.wav", np.zeros(16000 * 30, np.float32), 16000)
    rows += [
        {"id": "zeros", "audio": str(tmp_path / "zeros.wav"), "text": "nothing said"},
        {"id": "gone", "audio": str(tmp_path / "gone.wav"), "text": "lost"},
    ]
    for r in rows[:2]:
        r["audio"] = str(manifest.parent / r["audio"])
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report"
    res = CliRunner().invoke(
        app,
        ["eval", str(model_dir), "--data-format", "jsonl", "-d", str(data), "-o", str(out), "--no-progress"],
    )
    assert res.exit_code == 1, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_utterances"] == 3 and summary["num_failed"] == 1
    assert summary["diagnostics"]["not_decoded"] == 1
    assert summary["units"] == {
        "wer": "fraction of reference words (0.05 = 5%)",
        "cer": "fraction of reference characters (0.05 = 5%)",
    }
    zeros = next(r for r in _read_jsonl(out / "predictions.jsonl") if r["id"] == "zeros")
    assert zeros["hypothesis"] == "" and zeros["num_tokens"] == 0
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("speeched eval: 1 of 4 utterances could not be used (1 missing file)")
    assert str(out / "bad_audio.jsonl") in last and "Traceback" not in res.output
    assert "WER %" in res.stdout


def test_eval_options_say_what_they_are() -> None:
    from speeched.commands.evaluate import EPILOG

    res = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "--data-format" in res.output and "--format " not in res.output  # --format is an output format
    assert "Exit codes" in res.output
    assert "speeched eval " in EPILOG and "Exit codes: 0 done; 1 some inputs failed" in EPILOG
    res = CliRunner().invoke(app, ["eval", "m", "--data", "x.jsonl", "--format", "jsonl"])
    assert res.exit_code == 2


def test_eval_warns_when_references_are_digit_strings(tmp_path: Path) -> None:
    import io

    from rich.console import Console
    from transformers import Wav2Vec2FeatureExtractor

    from speeched.evaluation.evaluate import EvalOptions, evaluate_model
    from speeched.evaluation.report import print_summary

    fe = Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True)
    im = InferenceModel(_LengthModel(), _WordTokenizer(), fe)
    rng = np.random.default_rng(0)

    def utterances(texts: list[str]) -> list[Utterance]:
        out = []
        for i, text in enumerate(texts):
            path = tmp_path / f"{len(text)}-{i}.wav"
            sf.write(path, 0.1 * rng.standard_normal(8000).astype(np.float32), 16000)
            out.append(Utterance(id=f"u{i}", audio=str(path), text=text, duration=0.5))
        return out

    digits = utterances(["one five seven", "two oh nine four", "eight eight", "call three six"])
    summary = evaluate_model(im, digits, EvalOptions(normalizer="english"))
    (warning,) = summary["warnings"]
    assert warning.startswith("92% of the reference words are number words")  # 11 of 12 words
    assert "--normalizer basic" in warning
    console = Console(file=io.StringIO(), width=300)
    print_summary(summary, console)
    assert "warning: 92% of the reference words are number words" in console.file.getvalue()
    # the advice is followed, or the references are words: nothing to warn about
    assert evaluate_model(im, digits, EvalOptions(normalizer="basic"))["warnings"] == []
    words = utterances(["the cat sat on one mat", "a bird in the tree"])
    assert evaluate_model(im, words, EvalOptions(normalizer="english"))["warnings"] == []
