"""Duration-bucketed batch sampler: little padding, fresh batches every epoch, exact mid-epoch resume.

Why our own and not lhotse's DynamicBucketingSampler (the reference design): lhotse wants its own
CutSet records and a heavy dependency, while we only need a list of durations. This sampler keeps the
two properties that matter: (1) batches are cut from a duration-sorted order, so each batch holds
utterances of nearly the same length (padding ≈ 1%), and (2) the order is re-randomised every epoch: the
sort key is the log-duration plus seeded noise (`jitter`), which swaps near-equal utterances between
neighbouring batches, the packing starts at a random offset, and the batch order is shuffled.
Everything is a pure function of (seed, epoch), so every rank computes the same global batch list
without communication, and resuming only needs the number of batches already taken.

Weighted sources (fairseq/NeMo "upsampling factor" semantics): with `source_ids` (which source each
utterance came from) and `source_weights`, an epoch packs a multiset of indices instead of every index
once. A source of n utterances with weight w contributes floor(w) full copies of every utterance plus a
random subset of round(frac(w) * n) utterances drawn without replacement, fresh each epoch: 0.2 = a new
random 20% per epoch (replay against forgetting), 3 = every utterance three times (up-sampling). The
per-source counts are the same every epoch (round(w * n)); the subset is a pure function of (seed,
epoch), so ranks still agree without communication and resume stays exact. All weights 1.0 is exactly
the unweighted sampler. Copies are packed like any other utterance, so in a small data set two copies
may share a batch (same expected gradient, a little more variance).

Augmentation (`augment=AugmentConfig`, pass the same object to `SpeechDataset`): the sampler then yields
`SampleKey(index, epoch, partners, copy)` instead of ints, so the epoch reaches the dataset inside the
DataLoader workers (persistent ones too) and the augmentation is a pure function of (seed, epoch, key):
identical with any `num_workers` and after a resume. Concatenation is decided here, not in the dataset:
an epoch's utterances are grouped into units (`augment.concat_groups`: with probability p a unit joins
2..max_items utterances of the same source), every utterance still exactly once per epoch, and units are
packed by their budgeted duration (utterances + the longest pause per gap), so a batch's audio stays
within `max_duration` and a joined item within min(concat.max_duration, max_duration). Speed
perturbation is the one stage that lengthens audio after packing: with factors < 1 a batch may exceed
`max_duration` by at most a factor 1 / min(speed.factors) (0.9 -> 11%).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist

from speeched.data.augment import AugmentConfig, SampleKey, concat_groups, unit_seconds


def _resolve_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit args, then env RANK/WORLD_SIZE (torchrun/accelerate), then torch.distributed, else 0/1."""
    if world_size is None and "WORLD_SIZE" in os.environ:
        world_size = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    if world_size is None and dist.is_available() and dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank() if rank is None else rank
    world_size = world_size or 1
    rank = rank or 0
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return rank, world_size


_CONCAT_STREAM = 0xC0CA7  # the concatenation grouping's stream: default_rng([seed, version, _CONCAT_STREAM])
_SUBSET_STREAM = 0x5EED  # separates the subset draws from the batch-order stream default_rng([seed, epoch])


def _check_sources(
    n: int, source_ids: Sequence[int] | None, source_weights: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (ids, weights); no ids means one source, no weights means all 1.0."""
    ids = np.zeros(n, dtype=np.int64) if source_ids is None else np.asarray(source_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(
            f"source_ids has {ids.size} entries for {n} utterances: give one source id per utterance"
        )
    if source_weights is None:
        weights = np.ones(int(ids.max()) + 1 if n else 1, dtype=np.float64)
    else:
        weights = np.asarray(source_weights, dtype=np.float64)
    if weights.ndim != 1 or len(weights) == 0:
        raise ValueError("source_weights must be a non-empty list, one weight per source")
    if not np.isfinite(weights).all() or (weights <= 0).any():
        raise ValueError(f"source weights must be positive and finite, got {weights.tolist()}")
    if n and (ids.min() < 0 or ids.max() >= len(weights)):
        raise ValueError(f"source ids must lie in [0, {len(weights)}) for {len(weights)} source weights")
    return ids, weights


def source_counts(source_ids: np.ndarray, source_weights: np.ndarray) -> list[tuple[int, int, int]]:
    """(n_s, full copies, subset size) per source. Depends on the weights only, never on the epoch."""
    out = []
    for s, w in enumerate(source_weights.tolist()):
        n_s = int((source_ids == s).sum())
        copies = math.floor(w)
        total = math.floor(w * n_s + 0.5)  # round half up; = copies * n_s + round(frac(w) * n_s)
        out.append((n_s, copies, total - copies * n_s))
    return out


def epoch_indices(
    source_ids: Sequence[int], source_weights: Sequence[float], seed: int, epoch: int
) -> np.ndarray:
    """The multiset of utterance indices that epoch `epoch` trains on, sorted (a pure function of its args).

    Source s with weight w gives floor(w) copies of each of its utterances plus round(frac(w) * n_s) of
    them drawn without replacement from default_rng([seed, epoch, _SUBSET_STREAM, s]): a different subset
    every epoch, the same one on every rank and after a resume."""
    ids, weights = _check_sources(len(source_ids), source_ids, source_weights)
    parts = []
    for s, (_, copies, extra) in enumerate(source_counts(ids, weights)):
        members = np.flatnonzero(ids == s)
        parts.extend([members] * copies)
        if extra:
            rng = np.random.default_rng([seed, epoch, _SUBSET_STREAM, s])
            parts.append(rng.choice(members, size=extra, replace=False))
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def source_mix(
    durations: Sequence[float],
    source_ids: Sequence[int] | None = None,
    source_weights: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """What each source contributes to one epoch, for the training log: utterances (exact), hours
    (expected: the subset's hours vary a little) and share of the epoch's utterances."""
    d = np.asarray(durations, dtype=np.float64)
    ids, weights = _check_sources(len(d), source_ids, source_weights)
    counts = source_counts(ids, weights)
    total = sum(c * n + e for n, c, e in counts) or 1
    rows = []
    for s, (n_s, copies, extra) in enumerate(counts):
        per_epoch = copies * n_s + extra
        hours = float(d[ids == s].sum()) / 3600.0
        rows.append(
            {
                "source": names[s] if names else str(s),
                "weight": float(weights[s]),
                "utterances": n_s,
                "utterances_per_epoch": per_epoch,
                "hours_per_epoch": hours * per_epoch / n_s if n_s else 0.0,
                "share": per_epoch / total,
            }
        )
    return rows


class DurationBucketSampler:
    """Yield lists of dataset indices whose audio adds up to at most `max_duration` seconds.

    Multi-GPU: every rank builds the same global batch list and takes batches `rank::world_size`. To
    give every rank the same number of batches, the list is padded by repeating its first batches (so
    a few utterances are seen twice in that epoch) unless `drop_last`, which instead drops the last
    incomplete round. Call `set_epoch(e)` before each epoch, like `DistributedSampler`.
    `state_dict()`/`load_state_dict()` resume mid-epoch with the identical remaining batches.

    Weighted sources: `source_ids[i]` is the source of utterance i, `source_weights[s]` its upsampling
    factor. Each epoch packs `epoch_indices(...)`: floor(w) copies of every utterance of a source plus a
    fresh random round(frac(w) * n_s) of them (see the module docstring), so `len()` counts the batches of
    the current epoch. All weights 1.0 (or none given) gives exactly the unweighted batches.
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_duration: float | None = 120.0,
        max_batch_size: int | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        jitter: float = 0.01,
        rank: int | None = None,
        world_size: int | None = None,
        num_buckets: int | None = None,
        source_ids: Sequence[int] | None = None,
        source_weights: Sequence[float] | None = None,
        augment: AugmentConfig | None = None,
    ) -> None:
        if max_duration is None and max_batch_size is None:
            raise ValueError("set max_duration (seconds per batch) and/or max_batch_size")
        d = np.asarray(durations, dtype=np.float64)
        if d.ndim != 1 or len(d) == 0:
            raise ValueError("durations must be a non-empty list of seconds (run scan() to fill them)")
        if not np.isfinite(d).all() or (d <= 0).any():
            bad = int(np.flatnonzero(~np.isfinite(d) | (d <= 0))[0])
            raise ValueError(f"duration[{bad}] = {d[bad]!r}: every utterance needs a positive duration")
        self.durations = d
        self.source_ids, self.source_weights = _check_sources(len(d), source_ids, source_weights)
        self.weighted = bool((self.source_weights != 1.0).any())
        per_epoch = sum(c * n + e for n, c, e in source_counts(self.source_ids, self.source_weights))
        if per_epoch == 0:
            raise ValueError(
                f"source weights {self.source_weights.tolist()} leave no utterance in an epoch: raise a weight"
            )
        self.max_duration = max_duration
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.jitter = jitter
        # num_buckets is accepted for Batching-config compatibility: a sorted order is the limit of
        # infinitely many buckets, and `jitter` controls the randomness that coarse buckets would give.
        self.num_buckets = num_buckets
        self.rank, self.world_size = _resolve_world(rank, world_size)
        # Enabled augmentation: yield SampleKeys (the epoch reaches the workers). A config with every
        # stage off is no augmentation: plain indices and the same state as before, so checkpoints of
        # runs without `data.augment` still resume.
        self.augment = augment if augment is not None and augment.enabled else None
        self.concat = augment.concat if augment is not None and augment.concat.p > 0 else None
        self.epoch = 0
        self._skip = 0  # batches of this rank's list already consumed (resume)
        self._yielded = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    # ---- batch construction -------------------------------------------------------------------
    def _pack(
        self, order: np.ndarray, first_fill: float = 1.0, seconds: np.ndarray | None = None
    ) -> list[list[int]]:
        """Greedy packing of `order`; the first batch gets only `first_fill` of the limits.
        `seconds` (default: the utterances' durations) is what each entry of `order` costs."""
        batches: list[list[int]] = []
        cur: list[int] = []
        total = 0.0
        full_cap = self.max_duration if self.max_duration is not None else math.inf
        full_size = self.max_batch_size or math.inf
        cap = full_cap * first_fill
        size_cap = full_size if math.isinf(full_size) else max(1, math.ceil(full_size * first_fill))
        # Python floats: indexing a numpy array per item costs ~10x more on a 281k-utterance epoch.
        costs = (self.durations if seconds is None else seconds)[order]
        for i, d in zip(order.tolist(), costs.tolist(), strict=True):
            if cur and (total + d > cap or len(cur) >= size_cap):
                cap, size_cap = full_cap, full_size
                batches.append(cur)
                cur, total = [], 0.0
            cur.append(i)
            total += d
        if cur:
            batches.append(cur)
        return batches

    def _units(self, members: np.ndarray, epoch: int) -> list[list[int]]:
        """Concatenation units of this epoch's members (positions into `members`)."""
        assert self.concat is not None and self.augment is not None
        copies = self.augment.copies
        version = epoch if copies is None else epoch % copies  # K distinct groupings with `copies`
        rng = np.random.default_rng([self.seed, version, _CONCAT_STREAM])
        return concat_groups(
            self.durations[members], self.source_ids[members], self.concat, rng, self.max_duration
        )

    def global_batches(self, epoch: int | None = None) -> list[list[Any]]:
        """All batches of `epoch` for all ranks, in the order they are dealt out: lists of indices, or
        of `SampleKey`s when the sampler was given `augment`."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        if self.weighted:
            members = epoch_indices(self.source_ids, self.source_weights, self.seed, epoch)
        else:
            members = np.arange(len(self.durations))  # exactly the unweighted sampler's draws
        units: list[list[int]] | None = None
        if self.concat is not None:  # pack units (positions into members) by their budgeted seconds
            units = self._units(members, epoch)
            dm = self.durations[members]
            seconds = np.array([unit_seconds(u, dm, self.concat) for u in units], dtype=np.float64)
            entries = np.arange(len(units))
        else:
            seconds, entries = self.durations, members
        key = np.log(seconds[entries])
        if self.shuffle and self.jitter > 0:
            key = key + rng.uniform(-self.jitter, self.jitter, size=len(key))
        order = entries[np.argsort(key, kind="stable")]
        if self.shuffle and len(order) > 1:
            # A random-size first batch moves every batch boundary each epoch (costs one small batch).
            batches = self._pack(order, float(rng.uniform(0.05, 1.0)), seconds)
            perm = rng.permutation(len(batches))
            batches = [batches[j] for j in perm]
        else:
            batches = self._pack(order, seconds=seconds)
        if self.augment is not None:
            batches = self._keys(batches, members, units, epoch)
        if self.world_size > 1:
            rem = len(batches) % self.world_size
            if rem and self.drop_last:
                batches = batches[: len(batches) - rem]
            elif rem:
                need = self.world_size - rem
                batches = batches + [batches[j % len(batches)] for j in range(need)]
        elif self.drop_last and self.max_batch_size and len(batches[-1]) < self.max_batch_size:
            batches = batches[:-1]
        return batches

    @staticmethod
    def _keys(
        batches: list[list[int]], members: np.ndarray, units: list[list[int]] | None, epoch: int
    ) -> list[list[Any]]:
        """Batches of indices (or of unit numbers) -> batches of SampleKeys."""
        # copy number: members is sorted, so the k-th repeat of an index sits k places after its first
        copy = (np.arange(len(members)) - np.searchsorted(members, members, side="left")).tolist()
        mem = members.tolist()
        if units is None:
            pos = {}  # index -> positions in members, consumed in order (copies of the same index)
            for p, i in enumerate(mem):
                pos.setdefault(i, []).append(p)
            out = []
            for b in batches:
                keys = []
                for i in b:
                    p = pos[i].pop(0) if len(pos[i]) > 1 else pos[i][0]
                    keys.append(SampleKey(int(i), epoch, (), int(copy[p])))
                out.append(keys)
            return out
        return [
            [
                SampleKey(
                    mem[units[u][0]], epoch, tuple(mem[p] for p in units[u][1:]), int(copy[units[u][0]])
                )
                for u in b
            ]
            for b in batches
        ]

    def source_mix(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Utterances/hours/share per source in one epoch (see `source_mix`)."""
        return source_mix(self.durations, self.source_ids, self.source_weights, names)

    def _rank_batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self.global_batches()[self.rank :: self.world_size])
        return self._cache[1]

    # ---- Sampler protocol ---------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for `epoch`; a pending resume for this same epoch is kept."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._skip = 0
            self._yielded = 0

    def __len__(self) -> int:
        return len(self._rank_batches())

    def __iter__(self) -> Iterator[list[Any]]:
        batches = self._rank_batches()
        start, self._skip = self._skip, 0
        self._yielded = start
        for b in batches[start:]:
            self._yielded += 1
            yield list(b)

    # ---- resume -------------------------------------------------------------------------------
    def state_dict(self, batches_consumed: int | None = None) -> dict[str, Any]:
        """Where this epoch stands. With DataLoader prefetching the sampler runs ahead of training:
        pass the number of batches the training loop actually consumed this epoch as `batches_consumed`."""
        state = {
            "epoch": self.epoch,
            "seed": self.seed,
            "batches_yielded": self._yielded if batches_consumed is None else batches_consumed,
            "world_size": self.world_size,
            "num_utterances": len(self.durations),
        }
        if self.weighted:  # unweighted state stays as before, so older checkpoints still load
            state["source_weights"] = self.source_weights.tolist()
        if self.augment is not None:  # the batches (concatenation) and the keys depend on it
            state["augment"] = self.augment.model_dump(mode="json")
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next `__iter__` yields exactly the batches not yet taken in `state['epoch']`."""
        if state["world_size"] != self.world_size:
            raise ValueError(
                f"sampler state was saved with world_size={state['world_size']} but this run has "
                f"{self.world_size}; resume on the same number of processes (or restart the epoch)"
            )
        if state.get("num_utterances", len(self.durations)) != len(self.durations):
            raise ValueError(
                f"sampler state is for {state['num_utterances']} utterances, this data has {len(self.durations)}; "
                "the training data changed since the checkpoint"
            )
        saved = state.get("source_weights")
        mine = self.source_weights.tolist() if self.weighted else None
        if saved != mine:
            raise ValueError(
                f"sampler state was saved with source weights {saved or 'all 1.0'} but this run has "
                f"{mine or 'all 1.0'}; the epoch's utterances would differ: resume with the same weights "
                "(or restart the epoch)"
            )
        saved_aug = state.get("augment")
        mine_aug = self.augment.model_dump(mode="json") if self.augment is not None else None
        if saved_aug != mine_aug:
            raise ValueError(
                "sampler state was saved with another data.augment than this run has; the epoch's batches "
                "and augmentations would differ: resume with the same data.augment (or restart the epoch)"
            )
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])
        self._skip = self._yielded = int(state["batches_yielded"])
        self._cache = None


def padding_fraction(batches: Sequence[Sequence[int]], durations: Sequence[float]) -> float:
    """Share of padded audio: sum over batches of (len(b) * max - sum) / total padded size."""
    d = np.asarray(durations, dtype=np.float64)
    padded = real = 0.0
    for b in batches:
        x = d[list(b)]
        padded += len(x) * x.max()
        real += x.sum()
    return 0.0 if padded == 0 else (padded - real) / padded
