"""`transcribe_files`: the library behind `speeched transcribe` (inputs → transcripts on disk or stdout).

Order matters for the user: inputs are expanded and their headers read, output locations are created
and options validated before the model is loaded, so a typo costs nothing; then files are decoded and
each is written as soon as it is complete.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from speeched.errors import PartialFailure, UsageError
from speeched.inference import InferenceModel, load_inference_model
from speeched.inference.onnx_backend import OnnxSpeechModel, load_onnx_model
from speeched.inference.onnx_decode import check_onnx_options, onnx_model_config
from speeched.transcription.formats import Transcript, render
from speeched.transcription.inputs import FailedFile, expand_inputs, probe
from speeched.transcription.output import plan_outputs, write_atomic, write_stdout
from speeched.transcription.segment import SEGMENTATIONS, FixedSegmenter
from speeched.transcription.transcriber import TranscribeOptions, Transcriber

BACKENDS = ("torch", "onnx")


@dataclass
class TranscribeSummary:
    """What `transcribe_files` did: transcribed inputs (and where they went), failed inputs and why."""

    done: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    failed: list[FailedFile] = field(default_factory=list)


def check_options(options: TranscribeOptions) -> None:
    """Refuse segmentation settings that cannot work, before loading anything."""
    if options.segment not in SEGMENTATIONS:
        raise UsageError(f"--segment {options.segment!r} is not one of {', '.join(SEGMENTATIONS)}")
    if options.max_segment is not None and options.max_segment <= 1:
        raise UsageError(f"--max-segment {options.max_segment} must be more than 1 second")
    if options.segment == "fixed":  # --overlap only applies to fixed windows
        try:
            FixedSegmenter(16000, options.max_segment or 20.0, options.overlap)
        except ValueError as err:
            raise UsageError(f"--overlap: {err}") from err
    if options.backend not in BACKENDS:
        raise UsageError(f"--backend {options.backend!r} is not one of {', '.join(BACKENDS)}")
    if options.backend == "onnx":
        check_onnx_options(options.decode)
        if options.words:
            raise UsageError("--words needs the CTC head, which ONNX exports drop: use --backend torch")


def check_model_dir(model: str | Path | InferenceModel | OnnxSpeechModel, options: TranscribeOptions) -> None:
    """What a model directory's config.json already rules out, before the model is loaded."""
    if not isinstance(model, (str, Path)) or options.backend != "torch" or not options.words:
        return
    path = Path(model) / "config.json"
    try:
        config = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        config = None  # the loader reports a broken directory with its own message
    if config is not None and not config.get("ctc_vocab"):
        raise UsageError(f"--words needs a model with a CTC head; {path} has no ctc_vocab")


def transcribe_files(
    model: str | Path | InferenceModel | OnnxSpeechModel,
    inputs: Sequence[str],
    options: TranscribeOptions | None = None,
    output: Path | None = None,
    fmt: str = "txt",
    *,
    words: bool = False,
    stdout: TextIO | None = None,
    log: Callable[[str], None] | None = None,
) -> TranscribeSummary:
    """Transcribe files, directories and globs with a model directory (or a loaded `InferenceModel` /
    `OnnxSpeechModel`); `options.backend="onnx"` reads the directory as an ONNX export.

    Writes one `fmt` file per input under `output` (see `plan_outputs`) or to `stdout`; `log` gets one
    line per failed input and per warning. Raises UsageError when nothing can be transcribed or an
    option/location is wrong (before decoding), PartialFailure when some inputs failed (after the rest
    was written). `words=True` is `options.words` (word timestamps, and word cues for srt/vtt).
    """
    options = options or TranscribeOptions()
    if words and not options.words:
        options = dataclasses.replace(options, words=True)
    words = options.words
    say = log or (lambda _msg: None)
    stream = stdout if stdout is not None else sys.stdout
    check_options(options)
    check_model_dir(model, options)
    paths, failures = expand_inputs(inputs)
    for p in paths:
        _, error = probe(p)
        if error is not None:
            failures.append(FailedFile(p, error))
    bad = {f.path for f in failures}
    paths = [p for p in paths if p not in bad]
    if not paths:
        what = "; ".join(f"{f.path}: {f.message}" for f in failures) or "no inputs given"
        raise UsageError(f"nothing to transcribe ({what})")
    for f in failures:
        say(f"error: {f.path}: {f.message} (skipped; the other inputs are still transcribed)")
    targets = plan_outputs(paths, output, fmt)
    im = _load(model, options)
    transcriber = Transcriber(im, options)
    if (options.decode.src_lang or options.decode.tgt_lang) and not transcriber.prefix:
        say(
            "warning: this model has no language prefix (decoder_prompt: none), so --src-lang/--tgt-lang "
            "change nothing; see docs/languages.md"
        )
    if isinstance(im, OnnxSpeechModel):
        validated = onnx_model_config(im).get("decoding") or {}
        if validated.get("num_beams", 1) > 1 or validated.get("ctc_weight", 0.0):
            say(
                f"note: the ONNX backend decodes greedily; the model was validated with "
                f"{validated.get('num_beams', 1)} beams and ctc_weight {validated.get('ctc_weight', 0.0)} "
                "(--backend torch decodes that way)"
            )
    summary = TranscribeSummary(failed=list(failures))
    for result in transcriber.run(paths):
        if isinstance(result, FailedFile):
            summary.failed.append(result)
            say(f"error: {result.path}: {result.message}")
            continue
        _write(result, fmt, targets, stream, len(paths) > 1, words, summary, say)
    if summary.failed:
        n = len(summary.failed)
        raise PartialFailure(
            f"{n} of {n + len(summary.done)} inputs failed (see the errors above); the others were transcribed"
        )
    return summary


def _load(
    model: str | Path | InferenceModel | OnnxSpeechModel, options: TranscribeOptions
) -> InferenceModel | OnnxSpeechModel:
    if isinstance(model, (InferenceModel, OnnxSpeechModel)):
        return model
    if options.backend == "onnx":
        return load_onnx_model(model)
    return load_inference_model(model, options.decode.device)


def _write(
    t: Transcript,
    fmt: str,
    targets: dict[str, Path] | None,
    stream: TextIO,
    several: bool,
    words: bool,
    summary: TranscribeSummary,
    say: Callable[[str], None],
) -> None:
    if targets is not None:
        write_atomic(targets[t.path], render(t, fmt, words))
        summary.written.append(str(targets[t.path]))
        say(f"wrote {targets[t.path]}")
    else:
        write_stdout(t, fmt, stream, several, words)
    summary.done.append(t.path)
    seg = t.info.get("segmentation")
    if isinstance(seg, dict):  # what segmentation did for this file (speeched.transcription.segment)
        fallback = f" ({seg['fallback']})" if seg.get("fallback") else ""
        say(
            f"{t.path}: {seg['segments']} segment(s) by {seg['method']}{fallback}, "
            f"at most {seg['limit_seconds']:g} s ({seg['limit_source']}); {t.info['segments_silent']} silent"
        )
    aligned = t.info.get("word_alignment")
    if aligned and aligned["segments_proportional"]:
        say(
            f"warning: {t.path}: word times of {aligned['segments_proportional']} segment(s) are spread "
            f"in proportion to word length, not aligned ({'; '.join(aligned['fallback_reasons'])})"
        )
    if t.info.get("loops_truncated"):
        say(f"warning: {t.path}: {t.info['loops_truncated']} segment(s) looped and were cut")
