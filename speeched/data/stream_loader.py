"""The trainer's side of streaming: epochs of equal length on every rank, state save/restore, one builder.

`build_stream_loader(...)` turns `DataSource`s with `streaming: true` into a `StreamLoader` over a
torchdata `StatefulDataLoader` of `StreamingBatches` (see speeched/data/streaming.py for the pipeline
and why its resume is exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from torchdata.stateful_dataloader import StatefulDataLoader

from speeched.data.augment import AugmentConfig
from speeched.data.stream_source import ShardSet, StreamSourceError, resolve_stream_source
from speeched.data.streaming import STATE_VERSION, StreamingBatches, StreamStateError


def _identity(x: Any) -> Any:
    return x


class StreamLoader:
    """The trainer's view: `len()` = batches per epoch (the same on every rank), `iter()` = the rest of
    the current epoch, `state_dict()`/`load_state_dict()` = exact resume (per rank: save every rank's).

    Epochs are consecutive slices of one endless `StatefulDataLoader` iterator; its workers live for
    the whole run (no `persistent_workers` epoch restarts to get wrong)."""

    def __init__(self, dataset: StreamingBatches, batches_per_epoch: int, collate_fn: Callable | None = None):
        self.dataset = dataset
        self.batches_per_epoch = int(batches_per_epoch)
        self.loader = StatefulDataLoader(
            dataset,
            batch_size=None,
            num_workers=dataset.num_workers,
            collate_fn=collate_fn or _identity,
            snapshot_every_n_steps=1,
        )
        self.epoch = 0
        self.batches_in_epoch = 0
        self._it: Any = None
        self._loaded: dict[str, Any] | None = None

    def __len__(self) -> int:
        return self.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Kept for the sampler protocol; epochs advance by themselves when one is exhausted."""

    def __iter__(self):
        if self._it is None:
            self._it = iter(self.loader)
            self._loaded = None
        while self.batches_in_epoch < self.batches_per_epoch:
            batch = next(self._it)
            self.batches_in_epoch += 1
            yield batch
        self.epoch += 1
        self.batches_in_epoch = 0

    def state_dict(self) -> dict[str, Any]:
        loader = self._loaded if self._it is None and self._loaded is not None else self.loader.state_dict()
        return {
            "stream_version": STATE_VERSION,
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "batches_per_epoch": self.batches_per_epoch,
            "rank": self.dataset.rank,
            "world_size": self.dataset.world_size,
            "num_workers": self.dataset.num_workers,
            "sources": [s.name for s in self.dataset.sources],
            "augment": self._augment(),
            "loader": loader,
        }

    def _augment(self) -> dict[str, Any] | None:
        aug = self.dataset.augment
        return aug.model_dump(mode="json") if aug is not None else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        d = self.dataset
        saved = (state["world_size"], state["num_workers"], state["sources"], state["rank"])
        mine = (d.world_size, d.num_workers, [s.name for s in d.sources], d.rank)
        if saved != mine:
            raise StreamStateError(
                f"the data stream was saved by rank {saved[3]} of world_size={saved[0]} with num_workers="
                f"{saved[1]} over sources {saved[2]}; this is rank {mine[3]} of world_size={mine[0]} with "
                f"num_workers={mine[1]} over {mine[2]}. Resume with the same number of processes, "
                "data.batching.num_workers and training sources: shards are assigned per process × worker"
            )
        if state.get("augment") != self._augment():
            raise StreamStateError(
                "the data stream was saved with another data.augment than this run has; its batches and "
                "augmentations would differ: resume with the same data.augment"
            )
        self.loader.load_state_dict(state["loader"])
        self._loaded = state["loader"]
        self._it = None
        self.epoch, self.batches_in_epoch = int(state["epoch"]), int(state["batches_in_epoch"])


def batches_per_epoch(
    sources: Sequence[ShardSet],
    epoch_hours: Sequence[float | None],
    world_size: int,
    max_duration: float | None,
    max_batch_size: int | None,
) -> int:
    """One (virtual) epoch per rank: the sources' hours (given, or their index's total) in batches of
    `max_duration` seconds, divided by the world size. The same number on every rank by construction."""
    seconds, rows = 0.0, 0
    for s, h in zip(sources, epoch_hours, strict=True):
        if h is not None:
            seconds += h * 3600.0
            rows += int(h * 3600.0 / max(s.seconds / s.rows, 1e-3)) if s.seconds and s.rows else 0
        elif s.seconds is not None:
            seconds += s.seconds
            rows += s.rows or 0
        else:
            raise StreamSourceError(
                f"{s.name}: its size is unknown (no index.json), so an epoch is undefined: set `epoch_hours` "
                "on the source, or train.max_steps"
            )
    if max_duration is not None:
        return max(1, math.ceil(seconds / max_duration / world_size))
    return max(1, math.ceil(rows / max_batch_size / world_size))


def build_stream_loader(
    sources: Sequence[Any],
    *,
    sampling_rate: int,
    rank: int,
    world_size: int,
    num_workers: int,
    seed: int,
    max_duration: float | None = 120.0,
    max_batch_size: int | None = None,
    task: str = "asr",
    collate_fn: Callable | None = None,
    report_dir: str | None = None,
    base_dir: str | None = None,
    epoch_batches: int | None = None,
    augment: AugmentConfig | None = None,
) -> tuple[StreamLoader, Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None]]:
    """Build the streamed training loader from `DataSource`s with `streaming: true`.

    Returns `(loader, state_dict_fn, load_state_dict_fn)`. `loader` iterates one epoch per `iter()` (the
    rest of it after a resume) and has `len()`; every rank must save its own `state_dict_fn()` in a
    checkpoint and give it back to `load_state_dict_fn` before iterating. `augment` (training only):
    applied in the workers with an rng from (seed, pass, source, shard, row); concatenation partners come
    from the same pool and each batch still holds at most `max_duration` seconds before speed changes.
    """
    shard_sets = [resolve_stream_source(s, base_dir) for s in sources]
    dataset = StreamingBatches(
        shard_sets,
        sampling_rate=sampling_rate,
        weights=[s.weight for s in sources],
        filters=[s.filters for s in sources],
        task=task,
        max_duration=max_duration,
        max_batch_size=max_batch_size,
        buffer=max(getattr(s, "stream_buffer", 1000) for s in sources),
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
        report_dir=report_dir,
        augment=augment,
    )
    n = epoch_batches or batches_per_epoch(
        shard_sets,
        [getattr(s, "epoch_hours", None) for s in sources],
        world_size,
        max_duration,
        max_batch_size,
    )
    loader = StreamLoader(dataset, n, collate_fn)
    return loader, loader.state_dict, loader.load_state_dict


__all__ = ["StreamLoader", "StreamStateError", "batches_per_epoch", "build_stream_loader"]
