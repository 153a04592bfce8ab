"""Decoding, shared by `eval`, `transcribe` and the training loop's dev evaluation.

    im = load_inference_model("runs/demo/best")            # model + tokenizer + feature extractor
    results = decode(im, arrays_or_utterances, DecodeOptions(num_beams=4))   # list[Decoded], input order

Modules, one concern each: `options` (DecodeOptions, Decoded, the model's recorded decoding defaults),
`loading` (InferenceModel), `features` (featurize, silence/NaN checks), `batching` (duration batches,
token caps), `generate` (one batch: generate / joint CTC-attention / rescoring), `joint_decoding`,
`rescoring`, `loops` (loop detection and truncation), `decode` (the entry point).
"""

from speeched.inference.decode import decode
from speeched.inference.features import featurize, is_silent
from speeched.inference.loading import InferenceModel, load_inference_model
from speeched.inference.loops import truncate_loop
from speeched.inference.options import Decoded, DecodeOptions, resolve_options

__all__ = [
    "DecodeOptions",
    "Decoded",
    "InferenceModel",
    "decode",
    "featurize",
    "is_silent",
    "load_inference_model",
    "resolve_options",
    "truncate_loop",
]
