"""The training loop: one Accelerate script that runs on a CPU, a GPU, or many under `accelerate launch`.

Shape follows accelerate's `examples/nlp_example.py`: one `prepare`, a plain loop, `save_state`-style
checkpoints (ours are atomic, see checkpoint.py), `accelerator.print` only on the main process.

Two deliberate departures, each for correctness:
- The DataLoader is *not* passed to `prepare`: our DurationBucketSampler already shards by rank
  (and resumes mid-epoch); accelerate would shard it a second time.
- Gradient accumulation is done by hand so the loss is normalised by the number of target tokens of
  the whole update (all micro-batches on all processes): batch 8 × accum 1, 4 × accum 2 and
  2 processes × 4 give the same update.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("speeched")


class TrainingError(RuntimeError):
    pass


@dataclass
class TrainResult:
    output_dir: Path
    step: int
    best_dir: Path | None
    best_metric: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- helpers
def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    keys = ("input_values", "input_features", "attention_mask", "labels", "decoder_input_ids", "prompt_ids")
    return {k: batch[k] for k in keys if k in batch}


def atomic_export(out: Path, write: Any) -> Path:
    """Write a model directory next to `out`, then swap it in: a crash never leaves a half-written model."""
    tmp = out.with_name(f".tmp-{out.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    old = out.with_name(f".old-{out.name}")
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)
    return out


class Trainer:
    """Builds everything from a recipe, then `fit()`s. Library entry point: `train(recipe, ...)`."""

    def __init__(self, recipe: Any, resume: str | None = None, overfit_batch: int | None = None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.recipe = recipe
        self.resume = resume
        self.overfit_batch = overfit_batch
        t = recipe.train
        self.trackers = available_trackers(recipe.log.trackers)
        self.accelerator = Accelerator(
            mixed_precision=resolve_precision(t.precision),
            cpu=not torch.cuda.is_available(),
            log_with=self.trackers or None,
            project_dir=str(recipe.output_dir),
        )
        set_seed(t.seed)
        self.out = Path(recipe.output_dir)
        self.is_main = self.accelerator.is_main_process
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.print = self.accelerator.print

    # ------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        from speeched.data.dataset import SpeechDataset
        from speeched.data.sampler import DurationBucketSampler
        from speeched.data.scan import scan
        from speeched.data.sources import load_source
        from speeched.data.text import build_normalizer
        from speeched.training.build import (
            CachedFeatureCollator,
            CachedItems,
            build_model,
            extract_features,
            target_texts,
            training_collator,
        )
        from speeched.training.optim import build_optimizer, build_param_groups, build_scheduler

        r = self.recipe
        report_dir = str(self.out) if self.is_main else None
        normalize = build_normalizer(r.data.target_normalization)

        train_utts = []
        source_ids: list[int] = []  # which data.train entry each kept utterance came from (for the weights)
        bad = []  # every source's unusable entries, written once (scans must not overwrite each other)
        for k, src in enumerate(r.data.train):
            res = scan(
                load_source(src),
                src.filters,
                task=r.task,
                on_bad_audio=r.data.on_bad_audio,
                normalize_target=normalize,
            )
            bad.extend(res.bad)
            self.print(f"train {src.name or src.path}: {res.summary()}")
            source_ids.extend([k] * len(res.kept))
            train_utts.extend(res.kept)
        self.dev_sets = []
        for src in r.data.dev:
            res = scan(load_source(src), src.filters, task=r.task, on_bad_audio="skip")
            bad.extend(res.bad)
            utts = res.kept[: r.eval.limit] if r.eval.limit else res.kept
            self.dev_sets.append((src.name or Path(src.path).stem, utts))
        if self.is_main:
            from speeched.data.scan import write_report

            write_report(bad, str(self.out))
            if bad:
                self.print(f"{len(bad)} unusable entries skipped: see {self.out / 'bad_audio.jsonl'}")
        if not train_utts:
            raise TrainingError("no usable training utterances: see bad_audio.jsonl in the output directory")

        # The CTC vocabulary covers transcripts (the CTC head is trained on them, for st too).
        texts = [normalize(x) if normalize else x for x in target_texts(train_utts, "asr")]
        loaded = build_model(r, texts)
        self.model, self.tokenizer, self.feature_extractor = (
            loaded.model,
            loaded.tokenizer,
            loaded.feature_extractor,
        )
        model = self.model
        report = getattr(model, "init_report", None) or {}
        self.random_init = set(report.get("random_init_parameters", []))

        if r.finetune.method != "full":
            from speeched.modeling.finetune import apply_finetune

            # First: apply_finetune sets requires_grad on every parameter.
            lo = r.finetune.lora
            parts = {"decoder": ("decoder",), "encoder": ("encoder",), "both": ("encoder", "decoder")}[
                lo.apply_to
            ]
            lora = None
            if r.finetune.method == "lora":
                lora = {"r": lo.r, "alpha": lo.alpha, "dropout": lo.dropout, "parts": parts}
                if lo.target_modules:
                    lora["target_modules"] = lo.target_modules
            apply_finetune(model, r.finetune.method, lora)
        if r.train.freeze_feature_encoder == "always":
            model.freeze_feature_encoder()
        if r.finetune.freeze_embeddings:
            for emb in (model.decoder.get_input_embeddings(), model.decoder.get_output_embeddings()):
                for p in emb.parameters() if emb is not None else ():
                    p.requires_grad = False
        ddp_safe_defaults(model, self.accelerator.num_processes)
        if r.train.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in model.parameters())
        self.print(
            f"parameters: {n_train / 1e6:.2f} M trainable of {n_all / 1e6:.2f} M ({r.finetune.method})"
        )

        sr = int(self.feature_extractor.sampling_rate)
        from speeched.modeling.prompting import PromptError, decoder_prompt, describe

        prompt = decoder_prompt(model, self.tokenizer)
        try:  # every example's language resolves to a prefix, or training stops before step 1
            prompt.check([*train_utts, *(u for _, utts in self.dev_sets for u in utts)])
        except PromptError as err:
            raise TrainingError(str(err)) from err
        self.print(describe(prompt.spec, self.tokenizer))
        self.base_collator = training_collator(
            model, self.tokenizer, self.feature_extractor, r.task, normalize
        )
        dataset = SpeechDataset(train_utts, sr, on_bad_audio=r.data.on_bad_audio, report_dir=report_dir)
        collator: Any = self.base_collator
        if r.data.feature_cache:
            cache = extract_features(
                dataset, self.feature_extractor, self.base_collator.input_name, self.is_main
            )
            dataset, collator = CachedItems(train_utts), CachedFeatureCollator(self.base_collator, cache)
        self.train_utts = train_utts
        b = r.data.batching
        self.sampler = DurationBucketSampler(
            [u.duration or 0.0 for u in train_utts],
            max_duration=b.max_duration,
            max_batch_size=b.max_batch_size,
            shuffle=b.shuffle,
            drop_last=b.drop_last,
            seed=r.train.seed,
            rank=self.accelerator.process_index,
            world_size=self.accelerator.num_processes,
            source_ids=source_ids,
            source_weights=[src.weight for src in r.data.train],
        )
        # One line per source: what a (weighted) epoch is made of; `epochs:` counts these epochs.
        names = [src.name or Path(src.path).stem for src in r.data.train]
        self.train_mix = self.sampler.source_mix(names)
        if len(self.train_mix) > 1 or self.sampler.weighted:
            self.print(
                "train mix per epoch: "
                + ", ".join(
                    f"{m['source']} x{m['weight']:g} = {m['utterances_per_epoch']} utts "
                    f"({m['share']:.0%}, {m['hours_per_epoch']:.2f} h)"
                    for m in self.train_mix
                )
            )
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=self.sampler, collate_fn=collator, num_workers=b.num_workers
        )
        batches_per_epoch = max(1, len(self.sampler) // r.train.grad_accum)
        if r.train.max_steps:
            self.total_steps = r.train.max_steps
        else:
            self.total_steps = max(1, math.ceil(r.train.epochs * batches_per_epoch))
        if self.overfit_batch:
            self.total_steps = self.overfit_batch

        lrs = r.optim.group_lrs()
        groups = build_param_groups(model, lrs, r.optim.weight_decay, self.random_init)
        optimizer = build_optimizer(groups, r.optim.optimizer, tuple(r.optim.betas), r.optim.eps)
        # Staged unfreezing: start step per group (presets are fractions of the total, known only now).
        self.unfreeze = r.optim.unfreeze_starts(self.total_steps)
        scheduler = build_scheduler(
            optimizer,
            r.optim.scheduler,
            r.optim.warmup_steps,
            self.total_steps,
            starts=self.unfreeze,
            rewarmup=r.optim.unfreeze_warmup,
        )
        if any(self.unfreeze.values()):
            from speeched.training.optim import unfreeze_stages

            stages = unfreeze_stages(self.unfreeze, lrs, r.optim.unfreeze_warmup, {g["name"] for g in groups})
            self.print("staged unfreezing: " + "; ".join(stages))
            late = [g for g, start in self.unfreeze.items() if start >= self.total_steps]
            if late:
                logger.warning("optim.unfreeze: %s start after the last of %d steps", late, self.total_steps)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.step = 0
        self.epoch = 0
        self.batches_in_epoch = 0
        self.nonfinite_in_a_row = 0
        self.gradients_checked = False
        self.best: dict[str, Any] = {}
        self.ids_seen: dict[int, set[str]] = {}

    # ------------------------------------------------------------------------------- checkpoints
    def _manager(self):
        from speeched.training.checkpoint import CheckpointManager

        c = self.recipe.checkpoint
        return CheckpointManager(self.out, keep_last=c.keep_last, best_mode=self.best_mode())

    def best_metric_name(self) -> str:
        from speeched.training.recipe import TASK_METRICS

        c = self.recipe.checkpoint
        metrics = self.recipe.eval.metrics or TASK_METRICS[self.recipe.task]
        return c.best_metric or metrics[0]

    def best_mode(self) -> str:
        from speeched.training.recipe import LOWER_IS_BETTER

        c = self.recipe.checkpoint
        return c.best_mode or ("min" if self.best_metric_name() in LOWER_IS_BETTER else "max")

    def save_checkpoint(self, score: float | None = None) -> None:
        from accelerate.utils import gather_object

        from speeched.training.checkpoint import capture_rng_state

        rng_states = gather_object([capture_rng_state()])
        sampler_state = self.sampler.state_dict(batches_consumed=self.batches_in_epoch)
        if not self.is_main:
            self.accelerator.wait_for_everyone()
            return
        unwrapped = self.accelerator.unwrap_model(self.model)

        def write(tmp: Path) -> None:
            unwrapped.save_pretrained(tmp / "model", safe_serialization=True)
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save({"ranks": rng_states}, tmp / "rng.pt")
            state = {
                "step": self.step,
                "epoch": self.epoch,
                "batches_in_epoch": self.batches_in_epoch,
                "sampler": sampler_state,
                "nonfinite_in_a_row": self.nonfinite_in_a_row,
                "best": self.best,
                "world_size": self.accelerator.num_processes,
            }
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
            (tmp / "recipe.yaml").write_text(self.recipe.to_yaml())

        self._manager().save(self.step, write, score=score)
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self, path: Path) -> None:
        from safetensors.torch import load_file

        state = json.loads((path / "trainer_state.json").read_text())
        if state["world_size"] != self.accelerator.num_processes:
            raise TrainingError(
                f"checkpoint {path} was written by {state['world_size']} processes, this run has "
                f"{self.accelerator.num_processes}: resume with the same number of processes"
            )
        unwrapped = self.accelerator.unwrap_model(self.model)
        weights = load_file(str(path / "model" / "model.safetensors"))
        # Tied weights (e.g. the decoder's output layer = its input embeddings) are stored once.
        _, unexpected = unwrapped.load_state_dict(weights, strict=False)
        if unexpected:
            raise TrainingError(f"checkpoint {path} does not match the model: unexpected {unexpected[:5]}")
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        rng = torch.load(path / "rng.pt", weights_only=True)["ranks"]
        # Restored by fit() right before the first step: creating the DataLoader iterator draws from
        # torch's RNG, which the uninterrupted run did before this point.
        self._pending_rng = rng[self.accelerator.process_index]
        self.step = state["step"]
        self.epoch = state["epoch"]
        self.batches_in_epoch = state["batches_in_epoch"]
        self.nonfinite_in_a_row = state["nonfinite_in_a_row"]
        self.best = state["best"]
        self.sampler.load_state_dict(state["sampler"])
        self.print(f"resumed from {path} at step {self.step}")

    # ------------------------------------------------------------------------------- eval + export
    def evaluate(self) -> dict[str, Any]:
        from speeched.evaluation.runner import DecodeOptions, evaluate_utterances

        results: dict[str, Any] = {}
        if not self.dev_sets:
            return results
        if self.is_main:
            model = self.accelerator.unwrap_model(self.model)
            was_training = model.training
            model.eval()
            e = self.recipe.eval
            opts = DecodeOptions(
                num_beams=e.num_beams,
                ctc_weight=e.ctc_weight,
                max_duration=e.max_duration,
                max_new_tokens=e.max_new_tokens,
                device=str(self.accelerator.device),
            )
            for name, utts in self.dev_sets:
                res = evaluate_utterances(
                    model,
                    self.tokenizer,
                    self.feature_extractor,
                    utts,
                    task=self.recipe.task,
                    options=opts,
                    normalizer=e.normalizer,
                )
                results[name] = res.metrics
            model.train(was_training)
        self.accelerator.wait_for_everyone()
        return results

    def export(self, out: Path) -> Path:
        from speeched.modeling.model_dir import save_model_dir

        model = self.accelerator.unwrap_model(self.model)
        r = self.recipe
        # The decoding its dev scores were measured with becomes the default of `eval` and `transcribe`.
        model.config.decoding = {"num_beams": r.eval.num_beams, "ctc_weight": r.eval.ctc_weight}
        if r.finetune.method == "lora" and r.finetune.lora.merge_on_export:
            import copy

            from speeched.modeling.finetune import merge_lora

            model = copy.deepcopy(model)
            merge_lora(model)  # in place (returns the number of merged layers)
        return atomic_export(
            out,
            lambda tmp: save_model_dir(
                tmp, model, self.tokenizer, self.feature_extractor, {"recipe": r.model.model_dump()}
            ),
        )

    # ------------------------------------------------------------------------------- loop
    def _micro_batches(self, it):
        """Next `grad_accum` batches, moving to the next epoch when one ends."""
        out = []
        while len(out) < self.recipe.train.grad_accum:
            try:
                batch = next(it[0])
            except StopIteration:
                self.epoch += 1
                self.batches_in_epoch = 0
                self.sampler.set_epoch(self.epoch)
                it[0] = iter(self.loader)
                continue
            self.batches_in_epoch += 1
            self.ids_seen.setdefault(self.epoch, set()).update(batch["ids"])
            out.append(batch)
        return out

    def train_step(self, batches: list[dict[str, Any]]) -> dict[str, float]:
        acc = self.accelerator
        model = self.model
        cfg = acc.unwrap_model(model).config
        lam = float(cfg.ctc_weight) if cfg.ctc_vocab else 0.0
        local = torch.tensor(
            [
                float(sum(int(b["num_target_tokens"]) for b in batches)),
                float(sum(len(b["ids"]) for b in batches)),
            ],
            device=acc.device,
        )
        totals = acc.reduce(local, reduction="sum")
        n_tokens, n_utts = float(totals[0]), float(totals[1])
        world = acc.num_processes
        ce_total = torch.zeros((), device=acc.device)
        ctc_total = torch.zeros((), device=acc.device)
        for i, batch in enumerate(batches):
            batch = _to_device(batch, acc.device)
            ctx = acc.no_sync(model) if i < len(batches) - 1 else _nullcontext()
            with ctx, acc.autocast():
                out = model(
                    **model_inputs(batch),
                    loss_reduction="sum",
                    ctc_labels=batch["transcripts"] if lam > 0 else None,
                )
                # DDP averages gradients over processes: scale by world size so the result is a sum / N.
                loss = (1 - lam) * out.ce_loss_sum / n_tokens * world
                if lam > 0 and out.ctc_loss_sum is not None:
                    loss = loss + lam * out.ctc_loss_sum / n_utts * world
            acc.backward(loss)
            ce_total += out.ce_loss_sum.detach().float()
            if out.ctc_loss_sum is not None:
                ctc_total += out.ctc_loss_sum.detach().float()
        sums = acc.reduce(torch.stack([ce_total, ctc_total]), reduction="sum")
        ce = float(sums[0]) / n_tokens
        stats = {"loss": ce if lam == 0 else (1 - lam) * ce + lam * float(sums[1]) / n_utts, "ce_loss": ce}
        if lam > 0:
            stats["ctc_loss"] = float(sums[1]) / n_utts
        stats["audio_seconds"] = float(
            acc.reduce(
                torch.tensor(sum(b["audio_seconds"] for b in batches), device=acc.device), reduction="sum"
            )
        )
        return stats

    def optimizer_step(self, stats: dict[str, float]) -> bool:
        """Clip, step, schedule. A non-finite loss or gradient skips the update (never poisons the weights)."""
        t = self.recipe.train
        acc = self.accelerator
        finite = math.isfinite(stats["loss"])
        if finite and self.step == 0 and not self.gradients_checked:
            self.gradients_checked = True
            self.check_gradients()  # before frozen groups' gradients are dropped (they would look missing)
        if finite:
            self.drop_frozen_gradients()
        if finite and t.max_grad_norm:
            norm = acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
            stats["grad_norm"] = float(norm)
            finite = math.isfinite(stats["grad_norm"])
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_in_a_row += 1
            logger.warning(
                "step %d: non-finite loss/gradient, update skipped (%d in a row)",
                self.step,
                self.nonfinite_in_a_row,
            )
            if self.nonfinite_in_a_row >= t.max_consecutive_nonfinite:
                raise TrainingError(
                    f"{self.nonfinite_in_a_row} consecutive non-finite losses at step {self.step}: lower optim.lr, "
                    "check the data (bad_audio.jsonl), or use train.precision=bf16 instead of fp16"
                )
            return False
        self.nonfinite_in_a_row = 0
        self.announce_unfreezing()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def drop_frozen_gradients(self) -> None:
        """Staged unfreezing (optim.unfreeze): a group before its start step gets no update at all. Its
        gradients were computed (DDP's all-reduce stays identical on every rank) and are dropped here, before
        clipping, so they neither shrink the clipped update of the others nor reach AdamW, which skips a None
        grad (no weight decay, no moment update). The lr gate is 0 for these steps as well."""
        from speeched.training.optim import frozen_groups

        frozen = frozen_groups(self.unfreeze, self.step)
        for group in self.optimizer.param_groups if frozen else ():
            if group.get("name") in frozen:
                for p in group["params"]:
                    p.grad = None

    def announce_unfreezing(self) -> None:
        """One line when a group takes its first step, e.g. `step 500: decoder unfreezes (lr 1e-4, ...)`."""
        from speeched.training.optim import format_lr

        if not self.step or self.step not in self.unfreeze.values():
            return
        warmup = self.recipe.optim.unfreeze_warmup
        lrs = self.recipe.optim.group_lrs()
        present = {g.get("name") for g in self.optimizer.param_groups}
        for name, start in self.unfreeze.items():
            if start == self.step and name in present:
                rewarm = f", re-warmup {warmup} steps" if warmup else ""
                self.print(f"step {start}: {name} unfreezes (lr {format_lr(lrs[name])}{rewarm})")

    def check_gradients(self) -> list[str]:
        """After the first backward: every trainable parameter must have a gradient. Names the ones that
        have none (a frozen-LoRA, freezing or gradient-checkpointing mistake, or an unused head) in the
        log and in preflight.json — they would never train."""
        model = self.accelerator.unwrap_model(self.model)
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        if self.is_main:
            (self.out / "preflight.json").write_text(
                json.dumps({"parameters_without_gradient": missing}, indent=1)
            )
            if missing:
                logger.warning(
                    "%d trainable parameter tensors got no gradient in the first step and will not train: %s%s",
                    len(missing),
                    ", ".join(missing[:8]),
                    " ..." if len(missing) > 8 else "",
                )
        return missing

    def fit(self) -> TrainResult:
        from tqdm.auto import tqdm

        from speeched.training.metrics_log import MetricsLogger
        from speeched.training.plots import plot_training_curves

        r = self.recipe
        self.setup()
        if not self.resume and not self.overfit_batch and self._manager().latest() is not None:
            # Never train over an earlier run's checkpoints: that would mix two runs and lose one.
            raise TrainingError(
                f"{self.out} already holds checkpoints of an earlier run: continue it with --resume auto, or "
                "choose another --output-dir"
            )
        if self.resume:
            ckpt = self._manager().resolve_resume(self.resume)
            if ckpt is not None:
                self.load_checkpoint(Path(ckpt.path) if hasattr(ckpt, "path") else Path(ckpt))
        logger_ = (
            MetricsLogger(self.out, resume_step=self.step if self.resume else None) if self.is_main else None
        )
        if self.trackers:
            self.accelerator.init_trackers("speeched", config={"task": r.task, "max_steps": self.total_steps})
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        it = [iter(self.loader)]
        if getattr(self, "_pending_rng", None) is not None:
            from speeched.training.checkpoint import restore_rng_state

            restore_rng_state(self._pending_rng)
            self._pending_rng = None
        fixed = self._micro_batches(it) if self.overfit_batch else None
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not self.is_main,
            desc="train",
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        audio_done = 0.0
        steps_done = 0
        history: list[dict[str, Any]] = []
        while self.step < self.total_steps:
            batches = fixed if fixed is not None else self._micro_batches(it)
            stats = self.train_step(batches)
            stepped = self.optimizer_step(stats)
            if not stepped:
                continue
            self.step += 1
            steps_done += 1
            audio_done += stats["audio_seconds"]
            elapsed = time.perf_counter() - t0
            stats["lr"] = self.scheduler.get_last_lr()[0]
            for g in self.optimizer.param_groups:
                stats[f"lr_{g.get('name', 'group')}"] = g["lr"]
            stats["audio_s_per_s"] = audio_done / max(elapsed, 1e-9)
            stats["elapsed_s"] = elapsed
            bar.update(1)
            bar.set_postfix(
                loss=f"{stats['loss']:.3f}",
                lr=f"{stats['lr']:.1e}",
                steps_s=f"{steps_done / elapsed:.2f}",
                audio_s=f"{stats['audio_s_per_s']:.0f}",
            )
            if self.step % r.train.log_every == 0 or self.overfit_batch or self.step == 1:
                values = {k: v for k, v in stats.items() if k != "audio_seconds"}
                if self.trackers:
                    self.accelerator.log({f"train/{k}": v for k, v in values.items()}, step=self.step)
                if logger_:
                    logger_.log(self.step, "train", values)
                    if "csv" in r.log.trackers:
                        append_csv(self.out / "metrics.csv", self.step, "train", values)
                history.append({"step": self.step, **stats})
            if self.overfit_batch:
                continue
            last = self.step >= self.total_steps
            score = None
            due = bool(r.eval.every_steps) and self.step % r.eval.every_steps == 0
            if (due or last) and self.dev_sets:  # every_steps: null = only at the end
                score = self._eval_and_export(logger_, elapsed)
            if self.step % r.checkpoint.every_steps == 0 or last:
                self.save_checkpoint(score)
        bar.close()
        self.check_ranks()
        best_dir = self.out / "best"
        if self.is_main:
            if not self.dev_sets and not self.overfit_batch:
                self.export(best_dir)  # nothing to select on: the last model is the best we know
            if r.checkpoint.average_last and not self.overfit_batch:
                from speeched.training.averaging import average_last_checkpoints

                average_last_checkpoints(self.out, r.checkpoint.average_last, self.out / "averaged")
            if logger_:
                logger_.close()
                if r.log.plots:
                    plot_training_curves(self.out / "metrics.jsonl", self.out / "plots")
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return TrainResult(self.out, self.step, best_dir if best_dir.exists() else None, self.best, history)

    def check_ranks(self) -> None:
        """Multi-process sanity check, written to rank_check.json: identical weights on every rank (DDP
        kept them in sync) and disjoint data within the first epoch (the sampler sharded correctly)."""
        from accelerate.utils import gather_object

        if self.accelerator.num_processes == 1:
            return
        model = self.accelerator.unwrap_model(self.model)
        checksum = float(sum(p.detach().double().sum().item() for p in model.parameters()))
        first = min(self.ids_seen) if self.ids_seen else 0
        seen = sorted(self.ids_seen.get(first, set()))
        gathered = gather_object(
            [{"rank": self.accelerator.process_index, "checksum": checksum, "ids": seen}]
        )
        if not self.is_main:
            return
        sums = [g["checksum"] for g in gathered]
        sets = [set(g["ids"]) for g in gathered]
        overlap = set.intersection(*sets) if sets else set()
        report = {
            "checksums": sums,
            "weights_identical": len(set(sums)) == 1,
            "ids_per_rank": [len(x) for x in sets],
            "overlap_first_epoch": sorted(overlap),
        }
        (self.out / "rank_check.json").write_text(json.dumps(report, indent=2))
        if not report["weights_identical"]:
            raise TrainingError(f"weights differ across ranks after training: {sums}")

    def _eval_and_export(self, logger_: Any, elapsed: float) -> float | None:
        name = self.best_metric_name()
        results = self.evaluate()
        if not self.is_main:
            return None
        first = None
        for dev, metrics in results.items():
            values = {
                k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            values["elapsed_s"] = elapsed
            logger_.log(self.step, f"dev/{dev}", values)
            if "csv" in self.recipe.log.trackers:
                append_csv(self.out / "metrics.csv", self.step, f"dev/{dev}", values)
            if self.trackers:
                self.accelerator.log({f"dev/{dev}/{k}": v for k, v in values.items()}, step=self.step)
            self.print(
                f"step {self.step} dev/{dev}: "
                + ", ".join(f"{k}={values[k]:.4g}" for k in ("wer", "cer", "bleu", "chrf") if k in values)
            )
            if first is None:
                first = metrics.get(name)
        if first is not None:
            better = (
                not self.best
                or (self.best_mode() == "min" and first < self.best["value"])
                or (self.best_mode() == "max" and first > self.best["value"])
            )
            if better:
                self.best = {"metric": name, "value": first, "step": self.step}
                self.export(self.out / "best")
                (self.out / "best" / "best.json").write_text(json.dumps(self.best, indent=2))
        if self.recipe.log.plots:
            from speeched.training.plots import plot_training_curves

            plot_training_curves(self.out / "metrics.jsonl", self.out / "plots")
        return first


def ddp_safe_defaults(model: Any, world_size: int) -> list[str]:
    """Under DDP, layers skipped at random (encoder/decoder layerdrop) leave parameters without gradients on
    some ranks and hang or break the all-reduce: switch layerdrop off and say so. Returns what was changed."""
    changed = []
    if world_size <= 1:
        return changed
    for half in ("encoder", "decoder"):
        cfg = getattr(model.config, half)
        for key in ("layerdrop", "encoder_layerdrop", "decoder_layerdrop"):
            if getattr(cfg, key, 0.0):
                setattr(cfg, key, 0.0)
                changed.append(f"{half}.{key}")
    if changed:
        logger.warning(
            "multi-process training: %s set to 0 (layerdrop breaks DDP's gradient sync)", ", ".join(changed)
        )
    return changed


def available_trackers(requested: list[str]) -> list[str]:
    """accelerate trackers that are installed ("csv" is speeched's own metrics.csv). A requested tracker that
    is not installed is reported, not silently dropped."""
    import importlib.util

    module = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
    out = []
    for name in requested:
        if name == "csv":
            continue
        if importlib.util.find_spec(module[name]) is None:
            logger.warning(
                "log.trackers: %s is not installed (pip install %s); metrics.jsonl/csv still written",
                name,
                name,
            )
            continue
        out.append(name)
    return out


def append_csv(path: Path, step: int, split: str, values: dict[str, Any]) -> None:
    """One row per (step, split, metric): a long format that never needs its header rewritten."""
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write("step,split,metric,value\n")
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                f.write(f"{step},{split},{k},{v}\n")


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def train(recipe: Any, resume: str | None = None, overfit_batch: int | None = None) -> TrainResult:
    """Library entry point of `speeched train`."""
    return Trainer(recipe, resume=resume, overfit_batch=overfit_batch).fit()
