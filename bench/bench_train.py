"""Training throughput: `speeched train` vs transformers' Seq2SeqTrainer on the same weights and audio.

    .venv/bin/python bench/bench_train.py [--steps 20] [--num 400]

Model: wav2vec2 (random init, 4 layers, width 256) + the real MiniLM decoder — a plain composition
that both trainers load. Data: lognormal durations (median 4 s, clipped 1–12 s) of noise with
12-token transcripts. Reference batches hold 8 utterances; ours hold the same audio on average
(8 × mean duration seconds), grouped by duration. Prints a markdown table of audio-seconds per
wall-second and seconds per 100 steps, and ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def make_corpus(root: Path, num: int, seed: int = 0) -> tuple[Path, list[float]]:
    rng = np.random.default_rng(seed)
    durations = np.clip(rng.lognormal(mean=np.log(4.0), sigma=0.5, size=num), 1.0, 12.0)
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, d in enumerate(durations):
        path = root / "wavs" / f"u{i:05d}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(d * 16000))).astype(np.float32), 16000)
        text = " ".join(rng.choice(WORDS, size=12))
        lines.append(
            json.dumps({"id": f"u{i:05d}", "audio": f"wavs/u{i:05d}.wav", "text": text, "duration": float(d)})
        )
    manifest = root / "train.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, [float(d) for d in durations]


def make_model(root: Path) -> Path:
    from helpers import minilm_path
    from transformers import Wav2Vec2Config

    from speeched.modeling.compose import ComposeSpec, init_model

    enc = root / "enc"
    Wav2Vec2Config(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        conv_dim=(256,) * 7,
        mask_time_prob=0.0,
        layerdrop=0.0,
    ).save_pretrained(enc)
    out = root / "model"
    init_model(ComposeSpec(encoder=str(enc), decoder=minilm_path()), out)
    return out


def run_reference(model_dir: Path, manifest: Path, steps: int, strategy: str, out: Path) -> float:
    """Seconds per step of Seq2SeqTrainer (after 2 warm-up steps)."""
    from transformers import (
        AutoFeatureExtractor,
        AutoTokenizer,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        SpeechEncoderDecoderModel,
        TrainerCallback,
    )

    model = SpeechEncoderDecoderModel.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    fe = AutoFeatureExtractor.from_pretrained(model_dir)
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]

    import datasets

    def load(batch: dict) -> dict:
        """Lazy decoding; column-only access (the length column, for group_by_length) passes through."""
        if "audio" not in batch:
            return batch
        out = {"input_values": [], "labels": [], "length": batch["length"]}
        for path, text in zip(batch["audio"], batch["text"], strict=True):
            audio, _ = sf.read(manifest.parent / path, dtype="float32")
            out["input_values"].append(fe(audio, sampling_rate=16000).input_values[0])
            out["labels"].append(tok(text, add_special_tokens=False).input_ids + [tok.sep_token_id])
        return out

    table = datasets.Dataset.from_list(
        [{"audio": r["audio"], "text": r["text"], "length": int(r["duration"] * 16000)} for r in rows]
    )
    train_set = table.with_transform(load)

    def collate(items):
        batch = fe.pad(
            [{"input_values": it["input_values"]} for it in items],
            return_tensors="pt",
            return_attention_mask=True,
        )
        width = max(len(it["labels"]) for it in items)
        labels = torch.full((len(items), width), -100)
        for i, it in enumerate(items):
            labels[i, : len(it["labels"])] = torch.tensor(it["labels"])
        return {
            "input_values": batch["input_values"],
            "attention_mask": batch["attention_mask"],
            "labels": labels,
        }

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())

    args = Seq2SeqTrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=8,
        max_steps=steps + 2,
        learning_rate=1e-4,
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        train_sampling_strategy=strategy,
        length_column_name="length",
        disable_tqdm=True,
    )
    trainer = Seq2SeqTrainer(
        model=model, args=args, train_dataset=train_set, data_collator=collate, callbacks=[Timer()]
    )
    trainer.train()
    return (times[-1] - times[1]) / (len(times) - 2)


def run_ours(model_dir: Path, manifest: Path, steps: int, max_duration: float, out: Path) -> float:
    import yaml

    from speeched.training.recipe import load_recipe
    from speeched.training.trainer import train

    recipe = {
        "task": "asr",
        "model": {"path": str(model_dir)},
        "data": {"train": [{"path": str(manifest)}], "batching": {"max_duration": max_duration}},
        "optim": {"lr": 1e-4, "warmup_steps": 0, "scheduler": "constant"},
        "train": {"max_steps": steps + 2, "log_every": 1},
        "checkpoint": {"every_steps": 100000, "keep_last": 1},
        "log": {"plots": False},
    }
    path = out / "recipe.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe))
    result = train(load_recipe(path, output_dir=out / "run"))
    elapsed = [h["elapsed_s"] for h in result.history]
    return (elapsed[-1] - elapsed[1]) / (len(elapsed) - 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--num", type=int, default=400)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest, durations = make_corpus(root / "data", a.num)
        model_dir = make_model(root)
        mean = float(np.mean(durations))
        audio_per_ref_step = 8 * mean
        res = {}
        res["Seq2SeqTrainer (default random batches)"] = (
            run_reference(model_dir, manifest, a.steps, "random", root / "r1"),
            audio_per_ref_step,
        )
        res["Seq2SeqTrainer (group_by_length)"] = (
            run_reference(model_dir, manifest, a.steps, "group_by_length", root / "r2"),
            audio_per_ref_step,
        )
        res["speeched train (duration buckets)"] = (
            run_ours(model_dir, manifest, a.steps, audio_per_ref_step, root / "ours"),
            audio_per_ref_step,
        )
    print(
        f"\n{a.steps} timed steps each, {a.num} utterances, mean duration {mean:.2f} s, ~{audio_per_ref_step:.1f} s audio/step\n"
    )
    print("| trainer | s/step | s per 100 steps | audio-s per wall-s |")
    print("|---|---:|---:|---:|")
    ours = res["speeched train (duration buckets)"]
    for name, (sps, audio) in res.items():
        print(f"| {name} | {sps:.2f} | {100 * sps:.0f} | {audio / sps:.1f} |")
    for name, (sps, _) in res.items():
        if name.startswith("Seq2Seq"):
            print(f"\nspeeched vs {name}: {sps / ours[0]:.2f}x")


if __name__ == "__main__":
    main()
