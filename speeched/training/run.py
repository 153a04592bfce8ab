"""`prepare_run(recipe) -> Run`: everything a training run needs, built once, for `train` and `--dry-run`.

Order matters: cheap checks come first, so a run that would be refused is refused in seconds and the
dry run refuses exactly what training refuses:
1. the output directory (a path under a file, unwritable, an earlier run's checkpoints without
   `--resume`) and the `--resume` argument;
2. the data: scan every source (`data.on_bad_audio: error` stops here, naming the file);
3. the model (built, fine-tuning setup applied) and its decoder prompt against every example's language;
4. collator (feature cache), sampler, loader, optimizer, scheduler.
Nothing here trains or writes checkpoints; with `dry_run=True` nothing is written at all.
"""

from __future__ import annotations

import errno
import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from speeched.data.dataset import SpeechDataset
from speeched.data.feature_cache import CachedFeatureDataset, FeatureCache
from speeched.data.records import Utterance
from speeched.data.sampler import DurationBucketSampler
from speeched.data.scan import write_report
from speeched.data.stream_loader import build_stream_loader
from speeched.data.stream_source import StreamSourceError
from speeched.data.text import build_normalizer
from speeched.errors import SpeechedError
from speeched.modeling.prompting import PromptError, decoder_prompt, describe
from speeched.training.allocator import ENV as ALLOCATOR_ENV
from speeched.training.allocator import active_allocator
from speeched.training.build import apply_finetune_recipe, build_model, training_collator
from speeched.training.checkpoint import (
    Checkpoint,
    CheckpointManager,
    check_checkpoint_fits,
    duration_summary,
)
from speeched.training.data_setup import DataSetupError, TrainData, load_train_data
from speeched.training.metrics_log import available_trackers
from speeched.training.optim import build_optimizer, build_param_groups, build_scheduler, unfreeze_stages
from speeched.training.recipe import LOWER_IS_BETTER, TASK_METRICS

logger = logging.getLogger("speeched")


class TrainingError(SpeechedError, RuntimeError):
    """Training cannot start or go on; the message says why and what to do (exit 2)."""


@dataclass
class Run:
    """What `prepare_run` built; the Trainer prepares model/optimizer/scheduler with accelerate and loops."""

    recipe: Any
    accelerator: Any
    output_dir: Path
    model: Any
    tokenizer: Any
    feature_extractor: Any
    collator: Any
    data: TrainData
    dev_sets: list[tuple[str, Sequence[Utterance]]]
    sampler: Any  # DurationBucketSampler, or the StreamLoader (set_epoch, len) when streamed
    loader: Any  # torch DataLoader, or the StreamLoader
    total_steps: int
    optimizer: Any
    scheduler: Any
    unfreeze: dict[str, int]
    trackers: list[str]
    training_durations: dict[str, float]
    resume_from: Checkpoint | None = None
    lines: list[str] = field(default_factory=list)  # what was printed, for the dry run's plan
    stream_state: Callable[[], dict[str, Any]] | None = None  # streamed: this rank's resume state
    stream_load: Callable[[dict[str, Any]], None] | None = None

    @property
    def train_utts(self) -> Sequence[Utterance] | None:
        return self.data.utts

    @property
    def streamed(self) -> bool:
        return self.data.streamed

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def best_metric(self) -> tuple[str, str]:
        """(metric name, "min"|"max") that selects `best/`."""
        c, r = self.recipe.checkpoint, self.recipe
        name = c.best_metric or (r.eval.metrics or TASK_METRICS[r.task])[0]
        return name, c.best_mode or ("min" if LOWER_IS_BETTER.get(name, True) else "max")

    def manager(self) -> CheckpointManager:
        return CheckpointManager(
            self.output_dir, keep_last=self.recipe.checkpoint.keep_last, best_mode=self.best_metric()[1]
        )


def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def check_output_dir(out: Path, create: bool) -> None:
    """A usable output directory: no regular file on the way, writable (a probe file is created and removed
    in the nearest existing folder: `os.access` says yes to root on read-only places). `create` makes it."""
    existing = next(p for p in [out, *out.parents] if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == out else f"is under {existing}, which is a file"
        raise TrainingError(f"output_dir {out} {where}: choose another --output-dir")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        why = "no space left" if err.errno == errno.ENOSPC else (err.strerror or str(err)).lower()
        raise TrainingError(
            f"output_dir {out} cannot be written ({existing}: {why}): choose another --output-dir"
        ) from None
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrainingError(
                f"output_dir {out} cannot be created ({err.strerror}): choose another --output-dir"
            ) from None


def check_resume(
    manager: CheckpointManager, resume: str | None, overfit_batch: int | None
) -> Checkpoint | None:
    """Never train over an earlier run's checkpoints without --resume; resolve --resume (missing: an error)."""
    if not resume and not overfit_batch and manager.latest() is not None:
        raise TrainingError(
            f"{manager.root.parent} already holds checkpoints of an earlier run: continue it with --resume auto, "
            "or choose another --output-dir"
        )
    return manager.resolve_resume(resume) if resume else None


def prepare_run(
    recipe: Any,
    resume: str | None = None,
    overfit_batch: int | None = None,
    dry_run: bool = False,
) -> Run:
    """Build everything for a run, refusing (TrainingError/CheckpointError, one line) what cannot work."""
    r = recipe
    out = Path(r.output_dir)
    lines: list[str] = []
    trackers = [] if dry_run else available_trackers(r.log.trackers)
    acc = Accelerator(
        mixed_precision=resolve_precision(r.train.precision),
        cpu=not torch.cuda.is_available(),
        log_with=trackers or None,
        project_dir=str(out),
    )

    def say(line: str) -> None:
        lines.append(line)
        if not dry_run:
            acc.print(line)

    # 1. cheap checks
    check_output_dir(out, create=acc.is_main_process and not dry_run)
    manager = CheckpointManager(out, keep_last=r.checkpoint.keep_last)
    resume_from = check_resume(manager, resume, overfit_batch)

    # 2. data
    set_seed(r.train.seed)
    normalize = build_normalizer(r.data.target_normalization)
    try:
        data = load_train_data(r, normalize, say)
    except DataSetupError as err:
        raise TrainingError(str(err)) from None
    bad, dev_sets = data.bad, data.dev_sets
    if acc.is_main_process and not dry_run:
        write_report(bad, str(out))
        if bad:
            say(f"{len(bad)} unusable entries skipped: see {out / 'bad_audio.jsonl'}")
    if data.utts is not None and not len(data.utts):
        raise TrainingError("no usable training utterances: see the scan summary above (and bad_audio.jsonl)")

    # 3. model. The CTC vocabulary covers transcripts (the CTC head is trained on them, for st too).
    texts = [normalize(x) if normalize else x for x in data.texts]
    try:
        loaded = build_model(r, texts)
    except (ValueError, FileNotFoundError) as err:
        if isinstance(err, SpeechedError):
            raise
        raise TrainingError(str(err)) from None
    model, tokenizer, fe = loaded.model, loaded.tokenizer, loaded.feature_extractor
    random_init = set((getattr(model, "init_report", None) or {}).get("random_init_parameters", []))
    apply_finetune_recipe(model, r, acc.num_processes)
    if resume_from is not None:  # another model's checkpoint: refused here, in the dry run too
        check_checkpoint_fits(resume_from.path, model)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    say(f"parameters: {n_train / 1e6:.2f} M trainable of {n_all / 1e6:.2f} M ({r.finetune.method})")
    if acc.device.type == "cpu":
        say(f"memory allocator: {active_allocator()} ({ALLOCATOR_ENV}=auto|mimalloc|system chooses)")
    prompt = decoder_prompt(model, tokenizer)
    try:  # every example's language resolves to a prefix, or training stops before step 1
        prompt.check(data.examples)  # one utterance per distinct (lang, tgt_lang), dev sets included
    except PromptError as err:
        raise TrainingError(str(err)) from None
    say(describe(prompt.spec, tokenizer))

    # 4. data pipeline, optimizer, schedule
    collator = training_collator(model, tokenizer, fe, r.task, normalize)
    sr = int(fe.sampling_rate)
    report_dir = str(out) if acc.is_main_process and not dry_run else None
    if data.streamed:
        if r.data.feature_cache:
            say("feature cache off: streamed data is not cached (each pass reads the shards)")
        loader, stream_state, stream_load = stream_pipeline(
            r, acc, collator, sr, None if dry_run else str(out)
        )
        sampler: Any = loader
    else:
        sampler, loader = map_pipeline(r, acc, data, collator, fe, sr, report_dir, say)
        stream_state = stream_load = None
    if overfit_batch:
        total = overfit_batch
    elif r.train.max_steps:
        total = r.train.max_steps
    else:
        total = max(1, math.ceil(r.train.epochs * max(1, len(sampler) // r.train.grad_accum)))
    lrs = r.optim.group_lrs()
    groups = build_param_groups(model, lrs, r.optim.weight_decay, random_init)
    optimizer = build_optimizer(
        groups, r.optim.optimizer, tuple(r.optim.betas), r.optim.eps, r.optim.implementation
    )
    unfreeze = r.optim.unfreeze_starts(total)  # presets are fractions of the total, known only now
    scheduler = build_scheduler(
        optimizer,
        r.optim.scheduler,
        r.optim.warmup_steps,
        total,
        starts=unfreeze,
        rewarmup=r.optim.unfreeze_warmup,
    )
    if any(unfreeze.values()):
        stages = unfreeze_stages(unfreeze, lrs, r.optim.unfreeze_warmup, {g["name"] for g in groups})
        say("staged unfreezing: " + "; ".join(stages))
        late = [g for g, start in unfreeze.items() if start >= total]
        if late:
            logger.warning("optim.unfreeze: %s start after the last of %d steps", late, total)
    return Run(
        recipe=r,
        accelerator=acc,
        output_dir=out,
        model=model,
        tokenizer=tokenizer,
        feature_extractor=fe,
        collator=collator,
        data=data,
        dev_sets=dev_sets,
        sampler=sampler,
        loader=loader,
        total_steps=total,
        optimizer=optimizer,
        scheduler=scheduler,
        unfreeze=unfreeze,
        trackers=trackers,
        training_durations=duration_summary(data.durations),
        resume_from=resume_from,
        lines=lines,
        stream_state=stream_state,
        stream_load=stream_load,
    )


def stream_pipeline(r: Any, acc: Any, collator: Any, sr: int, report_dir: str | None) -> tuple[Any, Any, Any]:
    """The streamed loader (`speeched.data.stream_loader`): it shards by rank and worker itself and keeps
    its own resume state (not passed to accelerator.prepare); the collator runs in its workers."""
    b = r.data.batching
    aug = r.data.augment if r.data.augment.enabled else None
    try:
        return build_stream_loader(
            r.data.train, sampling_rate=sr, rank=acc.process_index, world_size=acc.num_processes,
            num_workers=b.num_workers, seed=r.train.seed, max_duration=b.max_duration,
            max_batch_size=b.max_batch_size, task=r.task, collate_fn=collator, report_dir=report_dir,
            augment=aug,
        )  # fmt: skip
    except StreamSourceError as err:
        raise TrainingError(f"data.train: {err}") from None


def map_pipeline(
    r: Any, acc: Any, data: TrainData, collator: Any, fe: Any, sr: int, report_dir: str | None, say: Any
) -> tuple[DurationBucketSampler, torch.utils.data.DataLoader]:
    """Dataset (augmentation on the train set only), feature cache, duration-bucket sampler, DataLoader."""
    aug = r.data.augment if r.data.augment.enabled else None
    dataset: Any = SpeechDataset(
        data.utts, sr, on_bad_audio=r.data.on_bad_audio, report_dir=report_dir, augment=aug, seed=r.train.seed
    )
    if r.data.feature_cache and aug is not None and aug.copies is None:
        say("feature cache off: data.augment changes the audio every epoch (set data.augment.copies to cache "
            "that many augmented versions of each utterance)")  # fmt: skip
    elif r.data.feature_cache:  # keyed by the augmented version (SpeechDataset.cache_variant)
        cache = FeatureCache(Path(r.output_dir) / "feature_cache", fe, collator.input_name)
        dataset = CachedFeatureDataset(dataset, cache)
    b = r.data.batching
    sampler = DurationBucketSampler(
        data.durations,  # the table's column (no Utterance built)
        max_duration=b.max_duration,
        max_batch_size=b.max_batch_size,
        shuffle=b.shuffle,
        drop_last=b.drop_last,
        seed=r.train.seed,
        rank=acc.process_index,
        world_size=acc.num_processes,
        source_ids=data.utts.source_ids,
        source_weights=[src.weight for src in r.data.train],
        augment=aug,
    )
    mix = sampler.source_mix([src.name or Path(src.path).stem for src in r.data.train])
    if len(mix) > 1 or sampler.weighted:  # what a (weighted) epoch is made of; `epochs:` counts these
        parts = [
            f"{m['source']} x{m['weight']:g} = {m['utterances_per_epoch']} utts ({m['share']:.0%}, "
            f"{m['hours_per_epoch']:.2f} h)"
            for m in mix
        ]
        say("train mix per epoch: " + ", ".join(parts))
    # Not passed to accelerator.prepare: the sampler already shards by rank (and resumes mid-epoch).
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collator, num_workers=b.num_workers
    )
    return sampler, loader
