"""Special tokens resolved in one place: decoder start, padding, end of sequence.

Wrong special tokens are the commonest silent failure of warm-started models (generation that never
stops, labels whose EOS is masked as padding). Every part of speeched reads them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from speeched.errors import SpeechedError


class SpecialTokenError(SpeechedError, ValueError):
    """Special token ids that cannot be resolved from the tokenizer or config; the message says how to pass them."""


@dataclass(frozen=True)
class SpecialTokens:
    decoder_start_token_id: int
    pad_token_id: int
    eos_token_id: int
    bos_token_id: int | None = None


def _first(*values: Any) -> int | None:
    for v in values:
        if isinstance(v, (list, tuple)):
            v = v[0] if v else None
        if v is not None:
            return int(v)
    return None


def resolve_special_tokens(
    tokenizer: Any | None = None,
    decoder_config: Any | None = None,
    overrides: dict[str, int | None] | None = None,
) -> SpecialTokens:
    """Explicit overrides first, then the tokenizer, then the decoder's config.

    BERT-style tokenizers have no BOS/EOS: their [CLS] starts and [SEP] ends a sequence. Tokenizers with
    no pad token (GPT-2, Llama) pad with EOS — safe because labels are padded with -100, never with EOS.
    """
    overrides = overrides or {}
    tok = tokenizer
    cfg = decoder_config
    start = _first(
        overrides.get("decoder_start_token_id"),
        getattr(cfg, "decoder_start_token_id", None),
        getattr(tok, "bos_token_id", None),
        getattr(tok, "cls_token_id", None),
        getattr(cfg, "bos_token_id", None),
    )
    eos = _first(
        overrides.get("eos_token_id"),
        getattr(tok, "eos_token_id", None),
        getattr(tok, "sep_token_id", None),
        getattr(cfg, "eos_token_id", None),
        getattr(cfg, "sep_token_id", None),
    )
    pad = _first(
        overrides.get("pad_token_id"),
        getattr(tok, "pad_token_id", None),
        getattr(cfg, "pad_token_id", None),
        eos,
    )
    bos = _first(
        overrides.get("bos_token_id"), getattr(tok, "bos_token_id", None), getattr(cfg, "bos_token_id", None)
    )
    missing = [
        name
        for name, value in (("decoder_start_token_id", start), ("eos_token_id", eos), ("pad_token_id", pad))
        if value is None
    ]
    if missing:
        raise SpecialTokenError(
            f"cannot resolve {', '.join(missing)} from the decoder's tokenizer or config; pass them explicitly "
            "(e.g. `speeched init ... --decoder-option eos_token_id=2` or "
            "from_encoder_decoder_pretrained(..., decoder_start_token_id=..., eos_token_id=..., pad_token_id=...))"
        )
    return SpecialTokens(decoder_start_token_id=start, pad_token_id=pad, eos_token_id=eos, bos_token_id=bos)
