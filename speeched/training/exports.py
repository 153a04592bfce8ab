"""What a run exports: `best/` (on every improvement, and at the end without dev sets), `averaged/`,
each with its model card (README.md + model_card.json, speeched.export.model_card), on the main process.

For a model with a CTC head decoded with `eval.ctc_weight > 0`, the final `best/` is scored once more
with ctc_weight 0 (attention-only: what transformers' pipeline and `speeched export --to transformers`
run), so the card names both scores. Only then, not at every evaluation.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from speeched.export.model_card import write_model_card
from speeched.inference.loading import load_inference_model
from speeched.training.averaging import average_last_checkpoints
from speeched.training.card import card_info, compute_info, metric_entries
from speeched.training.checkpoint import export_model
from speeched.training.dev_eval import best_record, evaluate_dev_sets

logger = logging.getLogger("speeched")


class RunExports:
    """`best(model, step, results)` after an improving evaluation; `finish(model, step)` at the end."""

    def __init__(self, run: Any, out: Path) -> None:
        self.run, self.recipe, self.out = run, run.recipe, Path(out)
        self.started = time.monotonic()
        self.metrics: list[dict[str, Any]] = []  # of the model in best/

    def _card(
        self, model_dir: Path, model: Any, step: int, metrics: list[dict[str, Any]], note: str | None = None
    ):
        r = self.run
        compute = compute_info(r.accelerator, step, time.monotonic() - self.started)
        # languages from one utterance per (lang, tgt_lang) pair: never a pass over the whole corpus
        info = card_info(
            self.recipe, model, r.data.card_data, r.data.examples, metrics, compute, r.data.synthetic, note
        )
        write_model_card(model_dir, info)

    def export(self, out: Path, model: Any, step: int, metrics: list[dict[str, Any]]) -> Path:
        r = self.run
        export_model(out, model, r.tokenizer, r.feature_extractor, self.recipe, r.training_durations)
        self._card(out, model, step, metrics)
        return out

    def best(self, model: Any, step: int, results: dict[str, dict[str, Any]], best: dict[str, Any]) -> Path:
        self.metrics = metric_entries(results, self.recipe)
        out = self.export(self.out / "best", model, step, self.metrics)
        (out / "best.json").write_text(json.dumps(best_record(best), indent=2))
        return out

    def finish(self, model: Any, step: int) -> None:
        """Main process, after the last step: best/ without dev sets, the CTC-free dev score, averaged/."""
        r, best = self.run, self.out / "best"
        if not r.dev_sets:
            self.export(best, model, step, [])  # nothing to select on: the last model is the best we know
        elif best.exists() and model.config.ctc_vocab and self.recipe.eval.ctc_weight > 0:
            im = load_inference_model(best, str(r.accelerator.device))
            results = evaluate_dev_sets(
                im.model,
                im.tokenizer,
                im.feature_extractor,
                r.dev_sets,
                self.recipe,
                r.accelerator.device,
                0.0,
            )
            self.metrics += metric_entries(results, self.recipe, ctc_weight=0.0)
            self._card(best, im.model, step, self.metrics)
        k = self.recipe.checkpoint.average_last
        if k:
            averaged = average_last_checkpoints(
                self.out, k, self.out / "averaged"
            )  # + best/'s training_durations
            note = f"Average of the last {k} checkpoints' weights; its scores were not measured (see best/)."
            self._card(averaged, model, step, [], note)
