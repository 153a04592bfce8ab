"""Self-describing model directories: what `speeched init` writes and what train/eval/transcribe read.

A model directory holds config.json, model.safetensors, generation_config.json, the tokenizer's files,
the feature extractor's preprocessor_config.json and a README.md model card, so that
`AutoTokenizer`, `AutoFeatureExtractor` and `SpeechEncoderDecoderModel.from_pretrained` all load it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import (
    AutoFeatureExtractor,
    AutoTokenizer,
    Speech2TextFeatureExtractor,
    Wav2Vec2FeatureExtractor,
    WhisperFeatureExtractor,
)

from speeched.errors import SpeechedError
from speeched.modeling.fbank import vectorised
from speeched.modeling.model import SpeechEncoderDecoderModel

logger = logging.getLogger("speeched")


INIT_REPORT = "init_report.json"  # which parameters were randomly initialised when the model was composed


def current_umask() -> int:
    """The process umask (read by setting and restoring it: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def match_umask(*paths: str | os.PathLike) -> None:
    """Give each file (and every file under each directory) the mode a plain `open()` would: 0666 minus the umask.

    safetensors (0.8) writes through a private temporary file, so `model.safetensors` comes out 0600
    while every other file is 0644: others on a shared machine could read the config but not the
    weights. Call this on what you wrote; only permission bits change.
    """
    mode = 0o666 & ~current_umask()
    files: list[str] = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            files += [os.path.join(d, name) for d, _, names in os.walk(path) for name in names]
        else:
            files.append(path)
    for path in files:
        if not os.path.islink(path) and (os.stat(path).st_mode & 0o777) != mode:
            os.chmod(path, mode)


class ModelDirError(SpeechedError, ValueError):
    """A model directory that is missing, incomplete or cannot be written; the message says what to do. Exit 2."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    feature_extractor: Any
    path: Path


def default_feature_extractor(encoder_config: Any) -> Any:
    """A feature extractor matching an encoder config, for config-only encoder dirs that ship none.

    Waveform encoders get normalised raw audio at 16 kHz; log-mel encoders get as many mel bins as
    their first layer expects. Real checkpoints ship their own preprocessor_config.json, which wins.
    """
    model_type = getattr(encoder_config, "model_type", "")
    if model_type == "whisper":
        return WhisperFeatureExtractor(feature_size=encoder_config.num_mel_bins)
    if model_type == "speech_to_text":
        bins = int(encoder_config.input_feat_per_channel)
        return Speech2TextFeatureExtractor(feature_size=bins, num_mel_bins=bins, return_attention_mask=True)
    if hasattr(encoder_config, "conv_dim"):  # wav2vec2 family: a CNN over raw samples
        return Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=16000,
            padding_value=0.0,
            do_normalize=True,
            return_attention_mask=True,
        )
    raise ModelDirError(
        f"no feature extractor found for encoder type {model_type!r}: pass --feature-extractor DIR "
        "(a folder with preprocessor_config.json)"
    )


def load_feature_extractor(source: str, encoder_config: Any | None = None) -> Any:
    try:
        return vectorised(AutoFeatureExtractor.from_pretrained(source))
    except (OSError, ValueError) as err:
        if encoder_config is None:
            raise ModelDirError(f"cannot load a feature extractor from {source!r}: {err}") from err
        fe = default_feature_extractor(encoder_config)
        logger.warning(
            "%s has no preprocessor_config.json; using a default %s for a %s encoder",
            source,
            type(fe).__name__,
            getattr(encoder_config, "model_type", "?"),
        )
        return fe


def load_model_dir(path: str | os.PathLike, device: str | None = None) -> LoadedModel:
    """Load model, tokenizer and feature extractor from a model directory, with errors that say what is missing."""
    root = Path(path)
    if not root.is_dir():
        raise ModelDirError(
            f"model directory {root} does not exist: make one with `speeched init` or `speeched train`"
        )
    for name in ("config.json", "preprocessor_config.json"):
        if not (root / name).is_file():
            raise ModelDirError(
                f"{root} has no {name}: is it a model directory written by `speeched init`/`train`?"
            )
    if not (root / "model.safetensors").is_file() and not (root / "model.safetensors.index.json").is_file():
        raise ModelDirError(f"{root} has no model.safetensors: the checkpoint is missing or incomplete")
    model = SpeechEncoderDecoderModel.from_pretrained(str(root))
    model.eval()
    if device:
        model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(str(root))
    feature_extractor = vectorised(AutoFeatureExtractor.from_pretrained(str(root)))
    report = root / INIT_REPORT
    if report.is_file():
        model.init_report = json.loads(report.read_text())
    return LoadedModel(model=model, tokenizer=tokenizer, feature_extractor=feature_extractor, path=root)


def write_model_card(out: Path, model: Any, composed_from: dict[str, Any]) -> None:
    cfg = model.config
    lines = [
        "# speeched model",
        "",
        f"Speech encoder: `{composed_from.get('encoder', cfg.encoder.model_type)}` ({cfg.encoder.model_type})  ",
        f"Text decoder: `{composed_from.get('decoder', cfg.decoder.model_type)}` ({cfg.decoder.model_type})  ",
        f"Coupling: {cfg.coupling}; parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M",
        "",
    ]
    if cfg.uses_extensions:
        lines += [
            "This model uses speeched extensions "
            f"(adaptor_layers={cfg.adaptor_layers}, projector={cfg.projector}, layer_weighting={cfg.layer_weighting}, "
            f"ctc={'yes' if cfg.ctc_vocab else 'no'}, coupling={cfg.coupling}), so transformers' own "
            "`SpeechEncoderDecoderModel` cannot load it faithfully: load it with "
            "`speeched.SpeechEncoderDecoderModel.from_pretrained`.",
        ]
    else:
        lines += [
            "A plain composition: both `speeched.SpeechEncoderDecoderModel` and transformers' "
            "`SpeechEncoderDecoderModel` load it with identical outputs.",
        ]
    if composed_from:
        lines += [
            "",
            "Composed with:",
            "",
            "```json",
            json.dumps(composed_from, indent=2, default=str),
            "```",
        ]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def save_model_dir(
    out: str | os.PathLike,
    model: Any,
    tokenizer: Any,
    feature_extractor: Any,
    composed_from: dict[str, Any] | None = None,
) -> Path:
    """Write everything a model directory needs (weights as safetensors)."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    if model.config.uses_extensions:
        logger.warning(
            "%s uses speeched extensions: transformers' SpeechEncoderDecoderModel cannot load it faithfully; "
            "use speeched.SpeechEncoderDecoderModel.from_pretrained",
            root,
        )
    model.save_pretrained(str(root), safe_serialization=True)
    tokenizer.save_pretrained(str(root))
    feature_extractor.save_pretrained(str(root))
    write_model_card(root, model, composed_from or {})
    if getattr(model, "init_report", None):
        (root / INIT_REPORT).write_text(json.dumps(model.init_report, indent=1))
    match_umask(root)
    return root
