"""Pydantic schemas for where data comes from and how it is filtered and batched.

These are the shared contract between the data pipeline, the recipe schema (which embeds them)
and `eval`. Defaults are documented here, once.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a recipe must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Columns(StrictModel):
    """Which manifest column holds what (so ST data can name its target `translation`, `de`, ...)."""

    id: str = "id"
    audio: str = "audio"
    text: str = "text"
    translation: str = "translation"
    duration: str = "duration"
    lang: str = "lang"
    tgt_lang: str = "tgt_lang"


class Filters(StrictModel):
    """Which utterances are kept. Every drop is counted and reported, never silent."""

    min_duration: float = Field(0.1, ge=0, description="seconds; shorter utterances are dropped")
    max_duration: float = Field(30.0, gt=0, description="seconds; longer utterances are dropped")
    max_target_tokens: int | None = Field(None, gt=0, description="drop targets longer than this (tokens)")
    drop_empty: bool = Field(True, description="drop utterances whose target text is empty")


class DataSource(StrictModel):
    """One data source: a JSONL/CSV/TSV manifest, an audiofolder directory, or a `datasets` spec.

    `path` is resolved relative to the recipe file. `format: auto` picks by extension/layout;
    `datasets` means `datasets.load_dataset(path, config, split=split)` with the audio column
    decoded by speeched itself (soundfile + soxr), never through torchcodec/ffmpeg.
    """

    path: str
    name: str | None = Field(None, description="label used in logs and per-dev-set metrics")
    format: Literal["auto", "jsonl", "csv", "tsv", "audiofolder", "datasets"] = "auto"
    config: str | None = Field(None, description="`datasets` config name")
    split: str | None = Field(None, description="`datasets` split")
    columns: Columns = Field(default_factory=Columns)
    filters: Filters = Field(default_factory=Filters)
    weight: float = Field(
        1.0,
        gt=0,
        description=(
            "training sources only: upsampling factor per epoch. Each epoch takes floor(weight) copies of "
            "every utterance plus a fresh random round(frac(weight) × N) of them (0.2 = a new 20% each "
            "epoch, 3 = every utterance 3 times); `train.epochs` counts these weighted epochs"
        ),
    )
    limit: int | None = Field(None, gt=0, description="use only the first N utterances (debugging)")
    durations: Literal["auto", "probe"] = Field(
        "auto",
        description=(
            "auto: a duration column (`columns.duration`) is used as given, spot-checked on a few random "
            "rows; rows without one are probed (cached by file identity / dataset fingerprint). "
            "probe: ignore the column and probe every file"
        ),
    )
    streaming: bool = Field(
        False,
        description=(
            "read the source as a stream of shards (a `speeched data shard` folder, parquet/tar files or "
            "globs, local or fsspec URLs such as s3://, or a hub dataset with format: datasets), never "
            "materialising it. With streaming, `weight` is the sampling probability (weights are normalised)"
        ),
    )
    stream_buffer: int = Field(
        1000,
        ge=1,
        description=(
            "streaming: utterances held per reader (per DataLoader worker), shuffled and sorted by duration "
            "into batches. Memory ≈ buffer × mean encoded utterance size per worker; larger = less padding "
            "and more randomness"
        ),
    )
    epoch_hours: float | None = Field(
        None,
        gt=0,
        description=(
            "streaming: hours of this source that make one (virtual) epoch; default: the total in the "
            "shard folder's index.json. Required for sources without an index unless train.max_steps is set"
        ),
    )


class Batching(StrictModel):
    """Duration-bucketed batching: batches hold up to `max_duration` seconds of audio in total."""

    max_duration: float | None = Field(120.0, gt=0, description="seconds of audio per batch (before padding)")
    max_batch_size: int | None = Field(None, gt=0, description="cap on utterances per batch")
    num_buckets: int = Field(30, ge=1, description="duration buckets; more buckets = less padding")
    shuffle: bool = True
    drop_last: bool = False
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
