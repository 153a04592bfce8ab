"""How to decode (`DecodeOptions`, the one definition) and what one decoded input gives back (`Decoded`).

`eval`, `transcribe` and the training loop's dev evaluation all build a `DecodeOptions` and hand it to
`speeched.inference.decode`. `num_beams` / `ctc_weight` left as None mean "what the model was validated
with in training" (`config.decoding`, written at export), resolved by `resolve_options`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DecodeOptions:
    """How `generate()` is called and how inputs are grouped into batches.

    `max_new_tokens=None` bounds each batch by its longest audio: `tokens_per_second * seconds + 10`
    (never past the decoder's position limit), so a looping model cannot run away, while real speech
    (~3-5 tokens per second) is far below the cap. `src_lang` / `tgt_lang` pick the decoder's language
    prefix for inputs that name none (see speeched.modeling.prompting).
    """

    num_beams: int | None = None  # None: the model's recorded default, else 1 (greedy)
    ctc_weight: float | None = None  # > 0: joint CTC/attention; 1: CTC head only; None: model default
    max_duration: float = 120.0
    max_batch_size: int | None = None
    max_new_tokens: int | None = None
    tokens_per_second: float = 25.0
    no_repeat_ngram_size: int = 0
    src_lang: str | None = None
    tgt_lang: str | None = None
    device: str = "auto"
    progress: bool = False
    progress_desc: str = "decoding"

    def replace(self, **changes: Any) -> DecodeOptions:
        return dataclasses.replace(self, **changes)

    def strategy(self) -> str:
        """A human-readable name of the search (resolved options only)."""
        beams, lam = self.num_beams or 1, self.ctc_weight or 0.0
        if lam >= 1:
            return "CTC only (the CTC head's best path; the decoder is not run)"
        if lam > 0:
            return f"joint CTC/attention beam search (λ={lam}, {beams} beam{'s' if beams > 1 else ''})"
        return "greedy" if beams == 1 else f"beam search ({beams} beams)"


def resolve_options(model: Any, options: DecodeOptions) -> DecodeOptions:
    """`options` with `num_beams` / `ctc_weight` filled in: what the caller asked for, else what the model
    was validated with during training (`config.decoding`), else greedy without CTC.

    A model whose dev WER was measured with joint CTC/attention decoding should not silently be decoded
    greedily by `eval` or `transcribe` (on the demo model that is 1% vs 65% WER).
    """
    saved = getattr(model.config, "decoding", None) or {}
    beams = options.num_beams if options.num_beams is not None else int(saved.get("num_beams", 1))
    lam = options.ctc_weight if options.ctc_weight is not None else float(saved.get("ctc_weight", 0.0))
    if lam > 0 and options.ctc_weight is None and not getattr(model.config, "ctc_vocab", None):
        lam = 0.0  # a recorded λ without a CTC head cannot apply; an explicit one gets its clear error
    if 0 < lam < 1 and getattr(model.config, "coupling", "cross_attention") != "cross_attention":
        beams = max(2, beams)  # prefix models rescore an N-best list: it needs two hypotheses at least
    return options.replace(num_beams=beams, ctc_weight=lam)


@dataclass(frozen=True)
class Decoded:
    """What decoding one input gave.

    `token_ids`: the generated sequence (start/prefix tokens included, up to EOS) for attention plots;
    `num_tokens`: tokens before EOS; `hit_token_cap`: it ran into `token_cap` without ending; `batch`: the
    index of the batch it was decoded in (within one `decode` call). `skipped` says why `generate()` was
    not run at all (digital silence, features that are not finite): the text is then empty. `error` is
    set when the audio could not be read (an `AudioError`); the text is empty too.
    """

    text: str
    num_tokens: int = 0
    hit_token_cap: bool = False
    token_ids: list[int] = field(default_factory=list)
    token_cap: int = 0
    batch: int = -1
    skipped: str | None = None
    error: Exception | None = None

    def in_batch(self, batch: int) -> Decoded:
        return dataclasses.replace(self, batch=batch)
