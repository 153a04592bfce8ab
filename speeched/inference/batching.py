"""Deterministic duration batches for decoding, and the token cap each batch gets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from speeched.data.sampler import DurationBucketSampler
from speeched.inference.options import DecodeOptions


def duration_batches(durations: Sequence[float], options: DecodeOptions) -> list[list[int]]:
    """Batches cut from the duration-sorted order, longest first (memory errors come early)."""
    if not durations:
        return []
    sampler = DurationBucketSampler(
        [max(d, 1e-3) for d in durations],
        max_duration=options.max_duration,
        max_batch_size=options.max_batch_size,
        shuffle=False,
        rank=0,
        world_size=1,
    )
    return list(reversed(sampler.global_batches()))


def token_cap(model: Any, options: DecodeOptions, seconds: float) -> int:
    """max_new_tokens for a batch whose longest audio lasts `seconds`."""
    if options.max_new_tokens is not None:
        return options.max_new_tokens
    cap = math.ceil(options.tokens_per_second * seconds) + 10
    dec_cfg = getattr(model.config, "decoder", None)
    limit = getattr(dec_cfg, "max_position_embeddings", None) or getattr(dec_cfg, "n_positions", None)
    return max(1, min(cap, limit - 2)) if limit else max(1, cap)
