"""Long-form transcription vs. the same utterances one by one, clean and at 10 dB SNR; word-time accuracy.

Builds a ~3-minute recording of eSpeak digit strings in held-out accents/synthesiser variants (the demo's
`test_unseen` ones by default: en-029, f4, klatt3) separated by 0.4-1.0 s pauses, and the same recording
with white noise at `--snr` dB (relative to the speech's power), and the same recording with a quiet noise
floor (`--floor-db`, dBFS): eSpeak's pauses are exact zeros, which no microphone produces and which shift
per-utterance feature normalisation of a segment with padded pauses. Transcribes each long-form
(`speeched.transcription` Transcriber: VAD segmentation within the model's training range) and the
utterances one by one (`speeched.inference.decode`), prints WER of both and their ratio (targets:
<= 1.5x clean, <= 2x at 10 dB), and, for a model with a CTC head, the median word-boundary error of the
CTC forced alignment (`transcribe --words`: `TranscribeOptions(words=True)`) against the known
utterance boundaries (target <= 0.1 s). Writes a JSON result.

    .venv/bin/python bench/bench_longform.py --model runs/demo/best --out runs/bench/longform.json
    .venv/bin/python bench/bench_longform.py --model runs/demo/best runs/demo-seed*/best   # a table, medians

The library calls live in `load`, `transcribe_longform` and `decode_one_by_one`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from speeched.data.espeak import SAMPLE_RATE, Espeak
from speeched.data.grammar import digits

DEFAULT_VOICES = ("en-029", "en-us+f4", "en-us+klatt3", "en-029+klatt3", "en-gb-x-rp+f4")


# ---- library calls (adapt here if the transcription/inference API changes) --------------------------
def load(model_dir: str):
    from speeched.inference import load_inference_model

    return load_inference_model(model_dir, device="cpu")


def transcribe_longform(
    im, wav: Path, segment: str, max_segment: float | None
) -> tuple[list, dict, list[dict] | None]:
    """[(start, end, text)] per decoded segment, the transcript's info (segmentation report), and the
    word times over the whole recording (None for a model without a CTC head)."""
    from speeched.transcription.transcriber import TranscribeOptions, Transcriber

    words = bool(getattr(im.model.config, "ctc_vocab", None))
    opts = TranscribeOptions(segment=segment, max_segment=max_segment, words=words)
    (t,) = list(Transcriber(im, opts).run([str(wav)]))
    if not hasattr(t, "segments"):
        raise RuntimeError(f"transcription failed: {t}")
    timed = [{"word": w.word, "start": w.start, "end": w.end} for s in t.segments for w in s.words or []]
    return [(s.start, s.end, s.text) for s in t.segments], t.info, (timed if words else None)


def decode_one_by_one(im, arrays: list[np.ndarray]) -> list[str]:
    from speeched.inference import decode

    return [d.text for d in decode(im, arrays)]


# ---- the recording -----------------------------------------------------------------------------------
def build_recording(seconds: float, seed: int, voices: list[str]) -> tuple[np.ndarray, list[dict]]:
    """Utterances with 0.4-1.0 s pauses until `seconds`; each utterance's speech start/end is known.

    Each utterance goes in as eSpeak wrote it (the pause is counted from the end of its own few ms of
    edge silence); `file_start`/`file_end` delimit that file, `start`/`end` its speech (the truth for word
    times). One-by-one decoding reads exactly the files, as `speeched eval` would: an earlier version cut
    each utterance to its speech and padded 0.1 s of digital silence, which the demo model misread
    (45% vs 10% WER on the same words), so the ratios compared long-form against an unusual baseline.
    """
    engine, rng = Espeak(), random.Random(seed)
    parts, utts, t = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)], [], int(0.5 * SAMPLE_RATE)
    while t < seconds * SAMPLE_RATE:
        text = digits(rng).text
        voice = voices[len(utts) % len(voices)]
        audio = engine.synthesize(
            text,
            voice,
            rate=rng.randint(130, 200),
            pitch=rng.randint(30, 70),
            pitch_range=rng.randint(30, 80),
        )
        loud = np.nonzero(np.abs(audio) > 0.01)[0]
        utts.append(
            {
                "text": text,
                "voice": voice,
                "start": (t + loud[0]) / SAMPLE_RATE,
                "end": (t + loud[-1] + 1) / SAMPLE_RATE,
                "file_start": t / SAMPLE_RATE,
                "file_end": (t + len(audio)) / SAMPLE_RATE,
            }
        )
        pause = int(rng.uniform(0.4, 1.0) * SAMPLE_RATE)
        parts += [audio, np.zeros(pause, np.float32)]
        t += len(audio) + pause
    return np.concatenate(parts), utts


def add_noise(audio: np.ndarray, utts: list[dict], snr_db: float, seed: int) -> np.ndarray:
    speech = np.concatenate(
        [audio[int(u["start"] * SAMPLE_RATE) : int(u["end"] * SAMPLE_RATE)] for u in utts]
    )
    noise_power = float(np.mean(speech.astype(np.float64) ** 2)) / 10 ** (snr_db / 10)
    noise = np.random.default_rng(seed).standard_normal(len(audio)) * np.sqrt(noise_power)
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def slices(audio: np.ndarray, utts: list[dict]) -> list[np.ndarray]:
    """Each utterance's own file (from the clean or the noisy recording)."""
    return [
        audio[int(round(u["file_start"] * SAMPLE_RATE)) : int(round(u["file_end"] * SAMPLE_RATE))]
        for u in utts
    ]


# ---- scoring -----------------------------------------------------------------------------------------
def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    return float(jiwer.wer(" ".join(_norm(r) for r in refs), " ".join(_norm(h) for h in hyps) or "<empty>"))


def boundary_errors(words: list[dict], utts: list[dict]) -> list[float]:
    """first word start - utterance start and last word end - utterance end (signed) for each utterance, its
    words being those whose middle falls between the middles of the pauses around it."""
    errors = []
    for k, u in enumerate(utts):
        lo = (utts[k - 1]["end"] + u["start"]) / 2 if k else 0.0
        hi = (u["end"] + utts[k + 1]["start"]) / 2 if k + 1 < len(utts) else float("inf")
        mine = [w for w in words if lo <= (w["start"] + w["end"]) / 2 < hi]
        if mine:
            errors += [mine[0]["start"] - u["start"], mine[-1]["end"] - u["end"]]
    return errors


def recordings(args: argparse.Namespace) -> tuple[list[str], dict[str, np.ndarray], list[dict]]:
    """(voices, {copy name: audio}, utterances). Built once per process and scored by every model:
    eSpeak NG keeps state between calls (a second synthesis of the same text in one process can differ
    by a few samples), so rebuilding it per model would score each model on slightly different audio."""
    engine = Espeak()
    voices = [v for v in args.voices if engine.has_voice(v)]
    if not voices:
        raise SystemExit(f"none of the voices {args.voices} exists in this eSpeak NG")
    clean, utts = build_recording(args.seconds, args.seed, voices)
    noisy = add_noise(clean, utts, args.snr, args.seed)
    floor = clean + 10 ** (args.floor_db / 20) * np.random.default_rng(args.seed + 1).standard_normal(
        len(clean)
    )
    floor = np.clip(floor, -1.0, 1.0).astype(np.float32)
    copies = {"clean": clean, _floor_name(args): floor, f"snr{args.snr:g}": noisy}
    return voices, copies, utts


def run(args: argparse.Namespace, recs: tuple[list[str], dict[str, np.ndarray], list[dict]]) -> dict:
    voices, copies, utts = recs
    clean = copies["clean"]
    t0 = time.perf_counter()
    refs = [u["text"] for u in utts]
    im = load(args.model)
    result: dict = {
        "model": args.model,
        "voices": voices,
        "utterances": len(utts),
        "recording_seconds": round(len(clean) / SAMPLE_RATE, 1),
        "snr_db": args.snr,
        "segment": args.segment,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, audio in copies.items():
            wav = Path(tmp) / f"{name}.wav"
            sf.write(wav, audio, SAMPLE_RATE)
            t = time.perf_counter()
            segments, info, words = transcribe_longform(im, wav, args.segment, args.max_segment)
            long_s = time.perf_counter() - t
            one = decode_one_by_one(im, slices(audio, utts))
            long_wer = wer(refs, [s[2] for s in segments])
            one_wer = wer(refs, one)
            signed = boundary_errors(words, utts) if words else []
            errors = [abs(e) for e in signed]
            result[name] = {
                "wer_longform": round(long_wer, 4),
                "wer_one_by_one": round(one_wer, 4),
                "ratio": round(long_wer / one_wer, 2) if one_wer > 0 else (1.0 if long_wer == 0 else None),
                "longform_seconds": round(long_s, 1),
                "segmentation": info.get("segmentation"),
                "utterances_whole_in_one_segment": sum(
                    1 for u in utts if any(a <= u["start"] and b >= u["end"] for a, b, _ in segments)
                ),
                "word_boundary_median_error_s": round(float(np.median(errors)), 3) if errors else None,
                "word_boundaries_measured": len(errors),
                # signed (word - truth): negative = early
                "word_start_median_signed_s": round(float(np.median(signed[0::2])), 3) if signed else None,
                "word_end_median_signed_s": round(float(np.median(signed[1::2])), 3) if signed else None,
                "word_alignment": info.get("word_alignment"),
            }
            if name == "clean":
                clean_one = one_wer
            else:
                result[name]["ratio_to_clean_one_by_one"] = (
                    round(long_wer / clean_one, 2) if clean_one > 0 else None
                )
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _floor_name(args: argparse.Namespace) -> str:
    return f"floor{args.floor_db:g}dBFS"


def _lines(args: argparse.Namespace, result: dict) -> list[str]:
    out = []
    for name in ("clean", _floor_name(args), f"snr{args.snr:g}"):
        r = result[name]
        seg = r["segmentation"] if isinstance(r["segmentation"], dict) else {}
        out.append(
            f"{name:>8}: WER long-form {100 * r['wer_longform']:.1f}% vs one-by-one "
            f"{100 * r['wer_one_by_one']:.1f}% (ratio {r['ratio']}); {seg.get('segments')} segments "
            f"(limit {seg.get('limit_seconds')} s, {seg.get('method')}); word-boundary median error "
            f"{r['word_boundary_median_error_s']} s over {r['word_boundaries_measured']} boundaries"
        )
    return out


def _summary(args: argparse.Namespace, results: list[dict]) -> list[str]:
    """One row per model and the median (min-max) over them: the seeds of one recipe, say."""
    names = ("clean", _floor_name(args), f"snr{args.snr:g}")

    def cell(values: list[float | None], digits: int = 2) -> str:
        """Median (min–max) of the defined values: a ratio is undefined (None) where one-by-one WER is 0 and
        long-form WER is not; those models are counted, not dropped silently."""
        defined = [v for v in values if v is not None]
        if not defined:
            return "n/a"
        out = f"{statistics.median(defined):.{digits}f} ({min(defined):.{digits}f}–{max(defined):.{digits}f})"
        return (
            out
            if len(defined) == len(values)
            else f"{out} of {len(defined)}; {len(values) - len(defined)} n/a"
        )

    rows = [
        "| model | " + " | ".join(f"{n} ratio" for n in names) + " | word-boundary error clean / noisy (s) |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for r in results:
        rows.append(
            f"| {r['model']} | "
            + " | ".join(
                f"{'n/a' if r[n]['ratio'] is None else r[n]['ratio']} "
                f"({100 * r[n]['wer_longform']:.1f}% / {100 * r[n]['wer_one_by_one']:.1f}%)"
                for n in names
            )
            + f" | {r['clean']['word_boundary_median_error_s']} / {r[names[2]]['word_boundary_median_error_s']} |"
        )
    rows.append(
        f"| **median (min–max), n={len(results)}** | "
        + " | ".join(f"**{cell([r[n]['ratio'] for r in results])}**" for n in names)
        + f" | {cell([r['clean']['word_boundary_median_error_s'] for r in results], 3)} / "
        f"{cell([r[names[2]]['word_boundary_median_error_s'] for r in results], 3)} |"
    )
    return [
        "Ratio = long-form WER / one-by-one WER of the same utterances (long-form % / one-by-one %). "
        "Targets: ≤ 1.5 clean, ≤ 2 at 10 dB SNR; word boundaries ≤ 0.1 s.",
        "",
        *rows,
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", required=True, nargs="+", help="model directories (several: a table and medians)"
    )
    p.add_argument("--seconds", type=float, default=180.0, help="length of the recording")
    p.add_argument("--snr", type=float, default=10.0, help="SNR (dB) of the noisy copy")
    p.add_argument("--floor-db", type=float, default=-60.0, help="noise floor (dBFS) of the third copy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--voices", nargs="+", default=list(DEFAULT_VOICES))
    p.add_argument("--segment", default="vad", help="vad, energy or fixed")
    p.add_argument("--max-segment", type=float, default=None, help="default: the model's training range")
    p.add_argument("--out", default=None, help="write the JSON result here")
    args = p.parse_args(argv)
    models = list(args.model)
    recs = recordings(args)
    results = []
    for model in models:
        args.model = model
        results.append(run(args, recs))
        print(f"{model}:" if len(models) > 1 else "", *_lines(args, results[-1]), sep="\n")
    if len(results) > 1:
        print("", *_summary(args, results), sep="\n")
    else:
        print(json.dumps(results[0], indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        payload = results[0] if len(results) == 1 else {"runs": results}
        Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
