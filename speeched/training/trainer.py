"""The training loop: one Accelerate script that runs on a CPU, a GPU, or many under `accelerate launch`.

Shape follows accelerate's `examples/nlp_example.py`: everything is built first (`prepare_run`, run.py),
then one `accelerator.prepare`, a plain loop, checkpoints (ours are atomic, see checkpoint.py) and
`accelerator.print` only on the main process. What we add:
- The DataLoader is *not* passed to `prepare`: our DurationBucketSampler already shards by rank
  (and resumes mid-epoch); accelerate would shard it a second time.
- Gradient accumulation by hand, the loss normalised by the target tokens of the whole update (all
  micro-batches, all processes): batch 8 × accum 1, 4 × accum 2 and 2 processes × 4 update the same.
- A non-finite loss or gradient skips the update; dev evaluation exports `best/`; Ctrl-C saves.
Logging lives in metrics_log.py, the checkpoint layout and exports in checkpoint.py.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object

from speeched.errors import EXIT_INTERRUPTED, SpeechedError
from speeched.modeling.attention_backends import speech_attention
from speeched.modeling.cpu_dropout import cpu_dropout
from speeched.modeling.grouped_conv import fft_grouped_conv
from speeched.training.batches import load_loader_state, loader_state, next_batch
from speeched.training.checkpoint import (
    CheckpointError,
    capture_rng_state,
    read_training_checkpoint,
    restore_rng_state,
    write_training_checkpoint,
)
from speeched.training.dev_eval import evaluate_dev_sets, improves
from speeched.training.exports import RunExports
from speeched.training.metrics_log import RunLog
from speeched.training.optim import drop_frozen_gradients, parameters_without_gradient, unfreezing_lines
from speeched.training.plots import plot_training_curves
from speeched.training.ranks import check_ranks
from speeched.training.run import Run, TrainingError, prepare_run

logger = logging.getLogger("speeched")
INPUT_KEYS = ("input_values", "input_features", "attention_mask", "labels", "decoder_input_ids", "prompt_ids")
__all__ = ["TrainResult", "Trainer", "TrainingError", "train"]


@dataclass
class TrainResult:
    output_dir: Path
    step: int
    best_dir: Path | None
    best_metric: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    target_reached_before: bool = False  # resumed at or past the target: nothing was trained


class Trainer:
    """`Trainer(recipe).fit()`; `setup()` builds (prepare_run) and prepares. Library entry point: `train`."""

    def __init__(self, recipe: Any, resume: str | None = None, overfit_batch: int | None = None,
                 progress: bool | None = None) -> None:  # fmt: skip
        self.recipe, self.resume, self.overfit_batch, self.progress = recipe, resume, overfit_batch, progress
        self.out = Path(recipe.output_dir)
        self.run: Run | None = None
        self.step = self.epoch = self.batches_in_epoch = self.nonfinite_in_a_row = 0
        self.gradients_checked = False
        self.best: dict[str, Any] = {}
        self.ids_seen: dict[int, set[str]] = {}
        self.pending_rng: dict[str, Any] | None = None
        self.saved_step: int | None = None
        self.before: tuple[int, int, dict[str, Any]] | None = None

    def setup(self) -> None:
        run = self.run = prepare_run(self.recipe, self.resume, self.overfit_batch)
        self.accelerator, self.is_main, self.print = run.accelerator, run.is_main, run.accelerator.print
        self.sampler, self.loader, self.total_steps = run.sampler, run.loader, run.total_steps
        self.exports = RunExports(run, self.out)
        if self.recipe.train.cpu_kernels == "speeched":  # the other half, dropout, is switched in train_step
            fft_grouped_conv(run.model)
        prepared = self.accelerator.prepare(run.model, run.optimizer, run.scheduler)
        self.model, self.optimizer, self.scheduler = prepared
        if run.resume_from is not None:
            self.load_checkpoint(run.resume_from.path)

    def trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            **loader_state(self.run, self.batches_in_epoch),
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "best": self.best,
            "world_size": self.accelerator.num_processes,
        }

    def save_checkpoint(self, score: float | None = None, rng: dict[str, Any] | None = None) -> None:
        rng_states = gather_object([rng or capture_rng_state()])
        state = self.trainer_state()
        if self.run.streamed:  # every rank's stream position, buffers and RNG (written by rank 0)
            state["stream"] = gather_object([state["stream"]])
        if self.is_main:
            model = self.accelerator.unwrap_model(self.model)
            args = (model, self.optimizer, self.scheduler, rng_states, state, self.recipe.to_yaml())
            write = partial(write_training_checkpoint, *args)  # write(tmp_dir)
            self.run.manager().save(self.step, write, score=score)
        self.saved_step = self.step
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self, path: Path) -> None:
        acc = self.accelerator
        state, self.pending_rng = read_training_checkpoint(
            Path(path), acc.unwrap_model(self.model), self.optimizer, self.scheduler,
            acc.num_processes, acc.process_index,
        )  # fmt: skip
        # fit() restores the RNG once the DataLoader iterator exists (creating it draws from torch's RNG).
        self.step, self.epoch = state["step"], state["epoch"]
        self.batches_in_epoch, self.best = state["batches_in_epoch"], state["best"]
        self.nonfinite_in_a_row = state["nonfinite_in_a_row"]
        try:
            load_loader_state(self.run, state, acc.process_index)
        except ValueError as err:
            raise CheckpointError(f"cannot resume from {path}: {err}") from None
        self.saved_step = self.step
        self.print(f"resumed from {path} at step {self.step}")

    def evaluate(self) -> dict[str, Any]:
        """Every dev set, decoded on the main process by the function `speeched eval` uses."""
        r, results = self.run, {}
        if self.is_main and r.dev_sets:
            model = self.accelerator.unwrap_model(self.model)
            results = evaluate_dev_sets(
                model, r.tokenizer, r.feature_extractor, r.dev_sets, self.recipe, self.accelerator.device
            )
        self.accelerator.wait_for_everyone()
        return results

    def eval_and_export(self, log: RunLog) -> float | None:
        """Score the dev sets; the first one's selection metric decides whether `best/` is replaced."""
        results = self.evaluate()
        if not self.is_main:
            return None
        name, mode = self.run.best_metric()
        for dev, metrics in results.items():
            log.dev(self.step, dev, metrics)
        first = next(iter(results.values()), {}).get(name)
        if first is not None:
            if improves(self.best, first, mode):
                self.best = {"metric": name, "value": first, "step": self.step}
                self.exports.best(self.accelerator.unwrap_model(self.model), self.step, results, self.best)
            if self.recipe.log.plots:
                plot_training_curves(self.out / "metrics.jsonl", self.out / "plots")
        return first

    def _micro_batches(self, it: list[Any]) -> list[dict[str, Any]]:
        """Next `grad_accum` batches, moving to the next epoch when one ends."""
        out = []
        while len(out) < self.recipe.train.grad_accum:
            try:
                batch = next_batch(it[0])  # audio broken since the scan: one line, or reported and skipped
            except StopIteration:
                self.epoch, self.batches_in_epoch = self.epoch + 1, 0
                self.sampler.set_epoch(self.epoch)
                it[0] = iter(self.loader)
                continue
            self.batches_in_epoch += 1
            if self.pending_rng is not None:  # streamed: its workers started (drawing a seed) just now
                restore_rng_state(self.pending_rng)
                self.pending_rng = None
            self.ids_seen.setdefault(self.epoch, set()).update(batch["ids"])
            out.append(batch)
        return out

    def train_step(self, batches: list[dict[str, Any]]) -> dict[str, float]:
        """Forward/backward over the micro-batches; the loss is a sum over tokens / tokens of the update."""
        acc, model = self.accelerator, self.model
        cfg = acc.unwrap_model(model).config
        lam = float(cfg.ctc_weight) if cfg.ctc_vocab else 0.0
        counts = [sum(int(b["num_target_tokens"]) for b in batches), sum(len(b["ids"]) for b in batches)]
        totals = acc.reduce(torch.tensor(counts, dtype=torch.float, device=acc.device), reduction="sum")
        n_tokens, n_utts, world = float(totals[0]), float(totals[1]), acc.num_processes
        sums = torch.zeros(3, device=acc.device)  # ce, ctc, audio seconds
        fast_dropout = self.recipe.train.cpu_kernels == "speeched"
        for i, batch in enumerate(batches):
            batch = {k: (v.to(acc.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            ctx = acc.no_sync(model) if i < len(batches) - 1 else nullcontext()
            with ctx, acc.autocast(), speech_attention(acc.device), cpu_dropout(fast_dropout):
                inputs = {k: batch[k] for k in INPUT_KEYS if k in batch}
                out = model(
                    **inputs, loss_reduction="sum", ctc_labels=batch["transcripts"] if lam > 0 else None
                )
                # DDP averages gradients over processes: scale by world size so the result is a sum / N.
                loss = (1 - lam) * out.ce_loss_sum / n_tokens * world
                if lam > 0 and out.ctc_loss_sum is not None:
                    loss = loss + lam * out.ctc_loss_sum / n_utts * world
            acc.backward(loss)
            sums[0] += out.ce_loss_sum.detach().float()
            if out.ctc_loss_sum is not None:
                sums[1] += out.ctc_loss_sum.detach().float()
            sums[2] += batch["audio_seconds"]
        sums = acc.reduce(sums, reduction="sum")
        ce = float(sums[0]) / n_tokens
        stats = {"loss": ce if lam == 0 else (1 - lam) * ce + lam * float(sums[1]) / n_utts, "ce_loss": ce}
        if lam > 0:
            stats["ctc_loss"] = float(sums[1]) / n_utts
        stats["audio_seconds"] = float(sums[2])
        return stats

    def optimizer_step(self, stats: dict[str, float]) -> bool:
        """Clip, step, schedule. A non-finite loss or gradient skips the update (never poisons the weights)."""
        t, r = self.recipe.train, self.run
        finite = math.isfinite(stats["loss"])
        if finite and self.step == 0 and not self.gradients_checked:
            self.gradients_checked = True
            self.check_gradients()  # before frozen groups' gradients are dropped (they would look missing)
        if finite:
            drop_frozen_gradients(self.optimizer, r.unfreeze, self.step)
        if finite and t.max_grad_norm:
            stats["grad_norm"] = float(
                self.accelerator.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
            )
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
        o = self.recipe.optim
        for line in unfreezing_lines(self.optimizer, r.unfreeze, self.step, o.group_lrs(), o.unfreeze_warmup):
            self.print(line)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def check_gradients(self) -> list[str]:
        """After the first backward, name trainable parameters without a gradient (log + preflight.json)."""
        missing = parameters_without_gradient(self.accelerator.unwrap_model(self.model))
        if self.is_main:
            (self.out / "preflight.json").write_text(json.dumps({"parameters_without_gradient": missing}))
            if missing:
                more = " ..." if len(missing) > 8 else ""
                logger.warning("%d trainable parameter tensors got no gradient in the first step and will not "
                               "train: %s%s", len(missing), ", ".join(missing[:8]), more)  # fmt: skip
        return missing

    def fit(self) -> TrainResult:
        if self.run is None:
            self.setup()
        r, acc = self.recipe, self.accelerator
        if self.step >= self.total_steps and not self.overfit_batch:
            self.print(f"already at step {self.step}, which reaches the target of {self.total_steps} steps: "
                       "nothing to train (raise train.max_steps or train.epochs to continue)")  # fmt: skip
            self.end_training()
            best = self.out / "best"
            return TrainResult(self.out, self.step, best if best.exists() else None, self.best, [], True)
        if self.run.trackers:
            acc.init_trackers("speeched", config={"task": r.task, "max_steps": self.total_steps})
        log = RunLog(
            acc, self.out, r.log.trackers, self.run.trackers, self.total_steps, self.step,
            self.step if self.resume else None, self.progress,
        )  # fmt: skip
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        it = [iter(self.loader)]
        if self.pending_rng is not None and not self.run.streamed:
            restore_rng_state(self.pending_rng)
            self.pending_rng = None
        fixed = self._micro_batches(it) if self.overfit_batch else None
        history: list[dict[str, Any]] = []
        try:
            while self.step < self.total_steps:
                self.before = (self.epoch, self.batches_in_epoch, capture_rng_state())  # rewound on Ctrl-C
                stats = self.train_step(fixed if fixed is not None else self._micro_batches(it))
                if not self.optimizer_step(stats):
                    continue
                self.step += 1
                self.before = None
                stats["lr"] = self.scheduler.get_last_lr()[0]
                stats.update({f"lr_{g.get('name', 'group')}": g["lr"] for g in self.optimizer.param_groups})
                due = self.step % r.train.log_every == 0 or bool(self.overfit_batch) or self.step == 1
                log.step(self.step, stats, due)
                if due:
                    history.append({"step": self.step, **stats})
                if not self.overfit_batch:
                    self.step_hooks(log)
        except KeyboardInterrupt:
            raise self.interrupted() from None
        finally:
            log.close()
        check_ranks(acc, acc.unwrap_model(self.model), self.ids_seen, self.out)
        if self.is_main and not self.overfit_batch:
            self.exports.finish(acc.unwrap_model(self.model), self.step)  # best/ (no dev sets), averaged/
            if r.log.plots:
                plot_training_curves(self.out / "metrics.jsonl", self.out / "plots")
        acc.wait_for_everyone()
        self.end_training()
        best = self.out / "best"
        return TrainResult(self.out, self.step, best if best.exists() else None, self.best, history)

    def end_training(self) -> None:
        """Free the DDP-wrapped model first, then let accelerate finish trackers and destroy the process group.

        The order prevents a deadlock at exit with several processes (gloo): a run that trains, saves its last
        checkpoint and never exits. py-spy on the stuck rank: the main thread in ~ProcessGroupGloo, called
        from the dealloc of DDP's Reducer; gloo's worker thread waiting for the GIL in ~AsyncBarrierWork ->
        ~AsyncAllgatherWork -> decref_pyobject. The Reducer (bound with a plain holder) keeps a reference to
        the process group; once destroy_process_group() had dropped torch's own, freeing the DDP model when
        `train()` returned ran the group's destructor with the GIL held. That destructor waits for gloo's
        worker thread, which may still be releasing the last barrier (wait_for_everyone) and, with it, the
        tensors of the all_gather_object before it: freeing those needs the GIL. Timing decides, so it showed
        under CPU contention only, and was blamed on fused AdamW (reverted in 73027e2); the optimizer plays
        no part (a bare DDP + all_gather_object + barrier script with the for-loop AdamW hangs the same way).
        Freed first, the Reducer no longer holds the last reference: the group goes from its Python binding,
        which releases the GIL while the destructor waits (IntrusivePtrNoGilDestructor in torch's
        c10d/init.cpp, added for this deadlock: pytorch/pytorch#56297).
        """
        acc = self.accelerator
        self.model = acc.unwrap_model(self.model)
        acc.free_memory()  # accelerate's own references to the prepared (DDP) model, then a gc pass
        acc.end_training()

    def step_hooks(self, log: RunLog) -> None:
        """After an update: dev evaluation/export when due (`eval.every_steps`, and at the end), checkpoint."""
        r = self.recipe
        last = self.step >= self.total_steps
        due = bool(r.eval.every_steps) and self.step % r.eval.every_steps == 0
        score = self.eval_and_export(log) if (due or last) and self.run.dev_sets else None
        if self.step % r.checkpoint.every_steps == 0 or last:
            self.save_checkpoint(score)

    def interrupted(self) -> SpeechedError:
        """Ctrl-C: save the last completed step if it has no checkpoint yet (a half-done step changed no
        weights; its data position and RNG are rewound), then say where to resume. Single process only:
        ranks cannot agree on a save once one of them was interrupted. A stream cannot be rewound: streamed
        data is saved only between steps."""
        saved, single = "", self.accelerator.num_processes == 1
        rewindable = not (self.run.streamed and self.before is not None)
        if self.step and self.step != self.saved_step and single and not self.overfit_batch and rewindable:
            rng = None
            if self.before is not None:  # interrupted inside a step: back to where it started
                self.epoch, self.batches_in_epoch, rng = self.before
                self.sampler.set_epoch(self.epoch)
            self.optimizer.zero_grad(set_to_none=True)
            self.save_checkpoint(None, rng)
            saved = f" (checkpoint saved at step {self.step})"
        elif self.saved_step:
            saved = f" (last checkpoint: step {self.saved_step})"
        return SpeechedError(
            f"stopped at step {self.step}{saved}; resume with `--resume auto`", EXIT_INTERRUPTED
        )


def train(
    recipe: Any, resume: str | None = None, overfit_batch: int | None = None, progress: bool | None = None
) -> TrainResult:
    """Library entry point of `speeched train`."""
    return Trainer(recipe, resume=resume, overfit_batch=overfit_batch, progress=progress).fit()
