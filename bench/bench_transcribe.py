"""Transcription on a trained model: `speeched transcribe` vs transformers' ASR pipeline, WER next to RTFx.

    .venv/bin/python bench/bench_transcribe.py [--model runs/demo/best --data data/digits/test.jsonl]
        [--files 8 --per-file 16 --chunks auto --beams 2 --repeats 3]

The audio: long-form files made of the held-out test utterances (voices never heard in training), joined
with 0.4–1.0 s pauses; each file's reference is its utterances' texts in order. Both sides get the same
list of files (the pipeline as arrays: it reads files through ffmpeg, absent here; reading is timed on
both sides) and are scored with the same normaliser ("basic") and jiwer, over all files.

- transformers' pipeline("automatic-speech-recognition") is given the LIST of files with batch_size=8,
  so it batches chunks across files; it cuts fixed windows (`chunk_length_s`, stride = its default
  chunk/6 on each side), so each chunk length is tried and reported: 2, 4 and 8 s by default; for an
  encoder with a fixed window (Whisper's: the pipeline pads every chunk to it) 2, 4 s, half the window and
  the window (`--chunks auto`). Its model: the `speeched export --to
  transformers` directory when the model can be exported; the demo's log-mel (Speech2Text) encoder cannot
  be represented by transformers' SpeechEncoderDecoderModel, and then the pipeline is handed speeched's own
  model object (its class name is SpeechEncoderDecoderModel, so the pipeline runs it as "seq2seq": the same
  weights and `generate`). Either way the pipeline decodes attention-only (it cannot run a CTC head).
- speeched transcribe (VAD segmentation, segments of all files batched by duration) with the model's
  recorded decoding (for the demo: joint CTC/attention, λ=0.8, 4 beams) and attention-only with the same
  beams (ctc_weight 0): the second row does the same kind of search as the pipeline.
- For a model with a CTC head, also speeched with `ctc_weight 1`: the CTC head's best path, no decoder
  (the pipeline cannot run a CTC head: transformers' SpeechEncoderDecoderModel has none).
- Beam widths: the model's own and each of `--beams` (default 2), on both sides (speeched's joint search,
  the pipeline at every chunk length). Two comparisons are printed: the same beams and the pipeline's
  best chunk; and iso-quality, the target's own terms: the pipeline's lowest-WER setting of all against
  speeched's fastest setting whose WER is no worse.
- Token caps are equal: 15 tokens per second of the longest input in a batch + 10 (speeched's transcribe
  default) for both; the pipeline gets it per chunk as max_new_tokens.

Runs are interleaved (each side once per round), median and range of RTFx over the rounds. Without a
trained model the bench prints one "skipped" line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, fmt_range, load_average, log, machine_lines, tiny_model  # noqa: E402

TOKENS_PER_SECOND = 15.0


def build_model(root: Path) -> Path:
    """The small random-init composition other benches (bench_onnx.py) build: common.tiny_model."""
    return tiny_model(root)


def make_files(
    data: Path, root: Path, files: int, per_file: int, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Long-form files of held-out utterances separated by pauses; (paths, references)."""
    rows = [json.loads(x) for x in data.read_text().splitlines() if x.strip()]
    rng = np.random.default_rng(seed)
    need = files * per_file
    if len(rows) < need:
        per_file = max(1, len(rows) // files)
    paths, refs = [], []
    for f in range(files):
        parts, texts, sr = [], [], None
        for r in rows[f * per_file : (f + 1) * per_file]:
            x, sr_ = sf.read(data.parent / r["audio"], dtype="float32")
            sr = sr or sr_
            if x.ndim > 1:
                x = x.mean(axis=1)
            parts += [x, np.zeros(int(rng.uniform(0.4, 1.0) * sr_), dtype=np.float32)]
            texts.append(r["text"])
        if not parts:
            break
        audio = np.concatenate([np.zeros(int(0.3 * sr), dtype=np.float32), *parts])
        audio = audio + 1e-4 * rng.standard_normal(len(audio)).astype(np.float32)  # no digital silence
        paths.append(str(root / f"long{f:02d}.wav"))
        sf.write(paths[-1], audio, sr)
        refs.append(" ".join(texts))
    return paths, refs


def score(refs: list[str], hyps: list[str]) -> float:
    from speeched.evaluation.normalize import get_normalizer

    norm = get_normalizer("basic")
    r, h = [norm(x) for x in refs], [norm(x) for x in hyps]
    return jiwer.wer(r, h)


def run_speeched(
    model_dir: Path, paths: list[str], num_beams: int | None, ctc_weight: float | None
) -> tuple[float, list[str]]:
    from speeched.inference import DecodeOptions, load_inference_model
    from speeched.transcription.transcriber import TranscribeOptions, Transcriber

    im = load_inference_model(model_dir, "cpu")
    opts = TranscribeOptions(decode=DecodeOptions(max_duration=240.0, tokens_per_second=TOKENS_PER_SECOND,
                                                  num_beams=num_beams, ctc_weight=ctc_weight))  # fmt: skip
    t0 = time.perf_counter()
    results = list(Transcriber(im, opts).run(paths))
    took = time.perf_counter() - t0
    texts = []
    for r in results:
        if not hasattr(r, "text"):
            raise RuntimeError(f"speeched transcribe failed on a file: {r}")
        texts.append(r.text)
    return took, texts


def pipeline_model(model_dir: Path, work: Path) -> tuple[object, str]:
    """(model for the pipeline, how it was obtained)."""
    from speeched.export.common import ExportError
    from speeched.export.transformers_export import export_transformers

    out = work / "exported"
    try:
        export_transformers(model_dir, out)
        from transformers import SpeechEncoderDecoderModel

        return SpeechEncoderDecoderModel.from_pretrained(
            out
        ).eval(), f"`speeched export --to transformers` ({out.name})"
    except ExportError as err:
        from speeched.inference import load_inference_model

        why = " ".join(str(err).split())[:160]
        im = load_inference_model(model_dir, "cpu")
        return (
            im.model.eval(),
            f"speeched's own model object, the same weights (`speeched export` refused: {why} ...)",
        )


def run_pipeline(
    asr, paths: list[str], chunk: float, batch_size: int, num_beams: int
) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    inputs = []
    for p in paths:
        x, sr = sf.read(p, dtype="float32")
        inputs.append({"raw": x, "sampling_rate": sr})  # the pipeline pops these keys: fresh dicts per run
    tokens = int(math.ceil(TOKENS_PER_SECOND * chunk)) + 10
    kwargs = {"batch_size": batch_size, "generate_kwargs": {"max_new_tokens": tokens, "num_beams": num_beams}}
    if chunk:
        kwargs["chunk_length_s"] = chunk
    out = asr(inputs, **kwargs)
    return time.perf_counter() - t0, [o["text"] for o in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "runs/demo/best")
    ap.add_argument("--data", type=Path, default=ROOT / "data/digits/test.jsonl", help="held-out utterances")
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--per-file", type=int, default=16, help="utterances per long-form file")
    ap.add_argument(
        "--chunks", default="auto", help="pipeline chunk_length_s values to try (auto: see above)"
    )
    ap.add_argument("--beams", default="2", help="beam widths tried on both sides besides the model's own")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="2 files, one chunk length, one round")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if not (a.model / "config.json").exists() or not a.data.exists():
        print(f"skipped: needs a trained model ({a.model}) and held-out data ({a.data}); run `make demo` first, "
              "or pass --model/--data")  # fmt: skip
        return
    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    from speeched.inference import load_inference_model

    hf_logging.set_verbosity_error()
    if a.threads:
        torch.set_num_threads(a.threads)
    im = load_inference_model(a.model, "cpu")
    if a.chunks == "auto":
        window = getattr(im.feature_extractor, "n_samples", 0) / im.feature_extractor.sampling_rate
        # A fixed window (Whisper's) pads every chunk to it, so shorter chunks cost more encoder time; they
        # are tried anyway, since they are nearer the utterance lengths a model was trained on.
        grid = {2.0, 4.0, window / 2, window} if window else {2.0, 4.0, 8.0}
        a.chunks = ",".join(f"{c:g}" for c in sorted(grid))
    if a.quick:
        a.files, a.per_file, a.repeats, a.chunks = 2, 4, 1, a.chunks.split(",")[-1]
    recorded = dict(getattr(im.model.config, "decoding", None) or {})
    beams = int(recorded.get("num_beams", 1) or 1)
    lam = float(recorded.get("ctc_weight", 0.0) or 0.0)
    chunks = [float(c) for c in a.chunks.split(",") if c]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths, refs = make_files(a.data, work, a.files, a.per_file)
        audio = sum(sf.info(p).duration for p in paths)
        model, how = pipeline_model(a.model, work)
        asr = pipeline("automatic-speech-recognition", model=model, tokenizer=im.tokenizer,
                       feature_extractor=im.feature_extractor, device="cpu")  # fmt: skip
        sides: dict[str, object] = {}
        widths = sorted({beams, *(int(b) for b in a.beams.split(",") if b)}, reverse=True)
        for w in widths:
            if lam > 0:
                what = "model's decoding" if w == beams else "model's decoding, fewer beams"
                sides[f"speeched transcribe, {what} (joint CTC/attention λ={lam}, {w} beams)"] = lambda w=w: (
                    run_speeched(a.model, paths, None if w == beams else w, None)
                )
        if lam > 0:
            sides["speeched transcribe, CTC only (ctc_weight 1: the CTC head's best path, no decoder)"] = (
                lambda: run_speeched(a.model, paths, 1, 1.0)
            )
        sides[f"speeched transcribe, attention-only ({beams} beams, ctc_weight 0)"] = lambda: run_speeched(
            a.model, paths, beams, 0.0
        )
        for w in widths:
            for c in chunks:
                sides[f"pipeline, chunk_length_s={c:g}, batch_size={a.batch_size}, {w} beams"] = (
                    lambda c=c, w=w: run_pipeline(asr, paths, c, a.batch_size, w)
                )
        times: dict[str, list[float]] = {k: [] for k in sides}
        wers: dict[str, float] = {}
        for r in range(a.repeats):
            for name, fn in sides.items():
                took, hyps = fn()
                times[name].append(took)
                wers[name] = score(refs, hyps)  # deterministic decoding: the same text every round
                log(f"round {r + 1}/{a.repeats} {name}: {took:.1f} s, WER {100 * wers[name]:.2f}%")
    lines = [
        f"{len(paths)} long-form files, {audio:.0f} s of audio ({a.per_file} held-out utterances per file from "
        f"{a.data.name}, 0.4–1.0 s pauses); model {a.model}; {a.repeats} interleaved rounds, RTFx = audio-s / "
        f"wall-s, median (min–max, n). Pipeline model: {how}.",
        "",
        *machine_lines(),
        "",
        "| system | WER | RTFx | wall s |",
        "|---|---:|---:|---:|",
    ]
    for name in sides:
        rtfx = [audio / t for t in times[name]]
        lines.append(f"| {name} | {100 * wers[name]:.2f}% | {fmt_range(rtfx)} | {fmt_range(times[name])} |")
    pipes = [n for n in sides if n.startswith("pipeline")]
    ours_all = [n for n in sides if n.startswith("speeched")]
    best = min(pipes, key=lambda n: (wers[n], np.median(times[n])))
    ours = next(iter(sides))  # the model's own decoding
    same = f"pipeline, chunk_length_s={float(best.split('=')[1].split(',')[0]):g}, batch_size={a.batch_size}, {beams} beams"
    # iso-quality: speeched's fastest setting whose WER is at least as good as the pipeline's best
    good = [n for n in ours_all if wers[n] <= wers[best]]
    fastest = min(good, key=lambda n: np.median(times[n])) if good else ours
    ratio = np.median(times[best]) / np.median(times[fastest])
    verdict = "met" if ratio >= 2 and wers[fastest] <= wers[best] else "not met"
    # and against the pipeline's fastest setting, whatever its WER
    quick = min(pipes, key=lambda n: np.median(times[n]))
    good_q = [n for n in ours_all if wers[n] <= wers[quick]]
    fastest_q = min(good_q, key=lambda n: np.median(times[n])) if good_q else ours
    lines += [
        "",
        f"- best pipeline setting (lowest WER over every chunk length and beam width tried): {best}",
        f"- speeched with the model's decoding ({beams} beams) vs the pipeline at {beams} beams and that chunk: "
        f"**{np.median(times[same]) / np.median(times[ours]):.2f}× RTFx** at WER {100 * wers[ours]:.2f}% vs "
        f"{100 * wers[same]:.2f}%",
        f"- iso-quality (speeched's fastest setting with WER ≤ the pipeline's best): {fastest.split(', ', 1)[1]}: "
        f"**{ratio:.2f}× RTFx** at WER {100 * wers[fastest]:.2f}% vs {100 * wers[best]:.2f}%; target ≥ 2× at equal "
        f"or better WER: **{verdict}**",
        f"- against the pipeline's fastest setting ({quick.split(', ', 1)[1]}, WER {100 * wers[quick]:.2f}%): "
        f"speeched's fastest with WER no worse, {fastest_q.split(', ', 1)[1]}: "
        f"**{np.median(times[quick]) / np.median(times[fastest_q]):.2f}× RTFx** at WER "
        f"{100 * wers[fastest_q]:.2f}%",
        f"- load average at end: {load_average()}",
    ]
    print("\n".join(lines))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(
            json.dumps({"audio_s": audio, "times": times, "wer": wers, "pipeline_model": how})
        )


if __name__ == "__main__":
    main()
