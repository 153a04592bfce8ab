"""`decode_onnx`: the `decode` entry point for an ONNX export (`speeched export --to onnx`).

The same contract as `speeched.inference.decode` on waveforms: one `Decoded` per input, in input order;
inputs are cut into duration-sorted batches (`duration_batches`), digital silence is never decoded and
non-finite samples are an error. Decoding itself is `OnnxSpeechModel.generate_batch`: greedy search
only, because the exported graphs have no CTC head and the runner has no beam search. Options that ask
for more are refused (`check_onnx_options`) instead of being silently ignored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from speeched.errors import UsageError
from speeched.inference.batching import duration_batches
from speeched.inference.features import screen
from speeched.inference.onnx_backend import OnnxSpeechModel
from speeched.inference.options import Decoded, DecodeOptions


def check_onnx_options(options: DecodeOptions) -> None:
    """Refuse what the ONNX runner cannot do (it decodes greedily, attention only)."""
    if options.num_beams is not None and options.num_beams > 1:
        raise UsageError(
            f"--backend onnx decodes greedily: --num-beams {options.num_beams} needs --backend torch "
            "(or pass --num-beams 1)"
        )
    if options.ctc_weight:
        raise UsageError(
            "--backend onnx has no CTC head (the export drops it): --ctc-weight needs --backend torch"
        )
    if options.src_lang or options.tgt_lang:
        raise UsageError(
            "--backend onnx decodes with the prompt the model was exported with: --src-lang/--tgt-lang "
            "need --backend torch"
        )


def onnx_model_config(model: OnnxSpeechModel) -> dict[str, Any]:
    """The config.json of the model the graphs were made from (the export copies it), else {}."""
    path = model.path / "config.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def decode_onnx(
    model: OnnxSpeechModel, arrays: Sequence[np.ndarray], options: DecodeOptions | None = None
) -> list[Decoded]:
    """Greedy-decode waveforms (at the export's sampling rate) with onnxruntime; one `Decoded` per input."""
    options = options or DecodeOptions()
    check_onnx_options(options)
    sr = int(model.feature_extractor.sampling_rate)
    durations = [len(a) / sr for a in arrays]
    results: list[Decoded | None] = [None] * len(arrays)
    for b, batch in enumerate(duration_batches(durations, options)):
        keep: list[int] = []
        for i in batch:
            audio = np.asarray(arrays[i], dtype=np.float32)
            screened = screen(audio, i, b)
            if screened is not None:
                results[i] = screened
            else:
                keep.append(i)
        if not keep:
            continue
        decoded = model.generate_batch(
            [np.asarray(arrays[i], dtype=np.float32) for i in keep],
            max_new_tokens=options.max_new_tokens,
            tokens_per_second=options.tokens_per_second,
        )
        for i, d in zip(keep, decoded, strict=True):
            results[i] = d.in_batch(b)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]
