"""A model directory loaded for inference: model (eval mode, on its device), tokenizer, feature extractor.

`InferenceModel` keeps the three together with the decoder's language-prefix builder, so every decoding
call (eval, transcribe, the training loop's dev evaluation) gets them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from speeched.errors import UsageError
from speeched.modeling.model_dir import ModelDirError, load_model_dir
from speeched.modeling.prompting import DecoderPrompt, PromptError, decoder_prompt


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class InferenceModel:
    """A model ready to decode. `name` says where it came from (a directory, or the class name)."""

    model: Any
    tokenizer: Any
    feature_extractor: Any
    name: str = ""
    _prompt: DecoderPrompt | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = type(self.model).__name__

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def prompt(self) -> DecoderPrompt:
        """The decoder's task/language prefix builder (the training collator's, exactly)."""
        if self._prompt is None:
            self._prompt = decoder_prompt(self.model, self.tokenizer)
        return self._prompt

    def prefix_ids(self, src_lang: str | None, tgt_lang: str | None, where: str = "") -> list[int]:
        """The decoder prefix for speech in `src_lang` → text in `tgt_lang` (None: the model's default);
        an unknown or missing language is a UsageError naming the valid codes."""
        try:
            return self.prompt.ids(src_lang, tgt_lang, where=where)
        except PromptError as err:
            raise UsageError(str(err)) from err


def load_inference_model(model_dir: str | Path, device: str = "auto") -> InferenceModel:
    """Load a `speeched init` / `speeched train` output directory in eval mode on `device`.

    Raises `UsageError` naming the missing file when the directory is incomplete.
    """
    try:
        loaded = load_model_dir(model_dir, resolve_device(device))
    except ModelDirError as err:
        raise UsageError(str(err)) from err
    loaded.model.eval()
    return InferenceModel(loaded.model, loaded.tokenizer, loaded.feature_extractor, str(model_dir))
