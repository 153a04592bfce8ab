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
from speeched.data.scan import BadAudioError, scan, write_report
from speeched.data.sources import load_source
from speeched.data.text import build_normalizer
from speeched.errors import SpeechedError
from speeched.modeling.prompting import PromptError, decoder_prompt, describe
from speeched.training.build import apply_finetune_recipe, build_model, target_texts, training_collator
from speeched.training.checkpoint import (
    Checkpoint,
    CheckpointManager,
    check_checkpoint_fits,
    duration_summary,
)
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
    train_utts: list[Utterance]
    dev_sets: list[tuple[str, list[Utterance]]]
    sampler: DurationBucketSampler
    loader: torch.utils.data.DataLoader
    total_steps: int
    optimizer: Any
    scheduler: Any
    unfreeze: dict[str, int]
    trackers: list[str]
    training_durations: dict[str, float]
    resume_from: Checkpoint | None = None
    lines: list[str] = field(default_factory=list)  # what was printed, for the dry run's plan

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


def scan_data(r: Any, normalize: Any, say: Any) -> tuple[list[Utterance], list[int], list[Any], list]:
    """Scan every train/dev source: (train utterances, source index of each, dev sets, unusable entries)."""
    train_utts: list[Utterance] = []
    source_ids: list[int] = []  # which data.train entry each kept utterance came from (for the weights)
    bad = []  # every source's unusable entries, written once (scans must not overwrite each other)
    for k, src in enumerate(r.data.train):
        try:
            res = scan(
                load_source(src),
                src.filters,
                task=r.task,
                on_bad_audio=r.data.on_bad_audio,
                normalize_target=normalize,
            )
        except BadAudioError as err:  # one line: the scan's own message names the files
            text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
            raise TrainingError(f"data.train[{k}] {src.path}: {text}") from None
        bad.extend(res.bad)
        say(f"train {src.name or src.path}: {res.summary()}")
        source_ids.extend([k] * len(res.kept))
        train_utts.extend(res.kept)
    dev_sets = []
    for src in r.data.dev:
        res = scan(load_source(src), src.filters, task=r.task, on_bad_audio="skip")
        bad.extend(res.bad)
        say(f"dev {src.name or src.path}: {res.summary()}")
        dev_sets.append(
            (src.name or Path(src.path).stem, res.kept[: r.eval.limit] if r.eval.limit else res.kept)
        )
    return train_utts, source_ids, dev_sets, bad


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
    train_utts, source_ids, dev_sets, bad = scan_data(r, normalize, say)
    if acc.is_main_process and not dry_run:
        write_report(bad, str(out))
        if bad:
            say(f"{len(bad)} unusable entries skipped: see {out / 'bad_audio.jsonl'}")
    if not train_utts:
        raise TrainingError("no usable training utterances: see the scan summary above (and bad_audio.jsonl)")

    # 3. model. The CTC vocabulary covers transcripts (the CTC head is trained on them, for st too).
    texts = [normalize(x) if normalize else x for x in target_texts(train_utts, "asr")]
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
    prompt = decoder_prompt(model, tokenizer)
    try:  # every example's language resolves to a prefix, or training stops before step 1
        prompt.check([*train_utts, *(u for _, utts in dev_sets for u in utts)])
    except PromptError as err:
        raise TrainingError(str(err)) from None
    say(describe(prompt.spec, tokenizer))

    # 4. data pipeline, optimizer, schedule
    collator = training_collator(model, tokenizer, fe, r.task, normalize)
    sr = int(fe.sampling_rate)
    report_dir = str(out) if acc.is_main_process and not dry_run else None
    dataset: Any = SpeechDataset(train_utts, sr, on_bad_audio=r.data.on_bad_audio, report_dir=report_dir)
    if r.data.feature_cache:
        dataset = CachedFeatureDataset(dataset, FeatureCache(out / "feature_cache", fe, collator.input_name))
    b = r.data.batching
    sampler = DurationBucketSampler(
        [u.duration or 0.0 for u in train_utts],
        max_duration=b.max_duration,
        max_batch_size=b.max_batch_size,
        shuffle=b.shuffle,
        drop_last=b.drop_last,
        seed=r.train.seed,
        rank=acc.process_index,
        world_size=acc.num_processes,
        source_ids=source_ids,
        source_weights=[src.weight for src in r.data.train],
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
    if overfit_batch:
        total = overfit_batch
    elif r.train.max_steps:
        total = r.train.max_steps
    else:
        total = max(1, math.ceil(r.train.epochs * max(1, len(sampler) // r.train.grad_accum)))
    lrs = r.optim.group_lrs()
    groups = build_param_groups(model, lrs, r.optim.weight_decay, random_init)
    optimizer = build_optimizer(groups, r.optim.optimizer, tuple(r.optim.betas), r.optim.eps)
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
        train_utts=train_utts,
        dev_sets=dev_sets,
        sampler=sampler,
        loader=loader,
        total_steps=total,
        optimizer=optimizer,
        scheduler=scheduler,
        unfreeze=unfreeze,
        trackers=trackers,
        training_durations=duration_summary([u.duration or 0.0 for u in train_utts]),
        resume_from=resume_from,
        lines=lines,
    )
