"""The training loop on a tiny model and a tiny synthesized corpus: exact accumulation, exact resume, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import minilm_path, tiny_encoder_dir, tone_corpus
from helpers import write_tiny_recipe as write_recipe
from safetensors.torch import load_file
from typer.testing import CliRunner

from speeched.cli import app
from speeched.training.recipe import load_recipe
from speeched.training.trainer import train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tone_corpus(tmp_path_factory.mktemp("corpus"), num=40)


def torchrun_train(
    recipe_path: Path, out: Path, *extra: str, entry: tuple[str, ...] = ("-m", "speeched.cli")
) -> None:
    """`speeched train` in 2 CPU processes (gloo) with torchrun, on a free port, with a clean environment.
    `entry`: what torchrun starts (a script taking the CLI's arguments instead of `-m speeched.cli`)."""
    import os
    import subprocess
    import sys

    # Drop what an in-process run left in os.environ (accelerate's state, ranks).
    skip = ("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        free_port(),
    ]
    cmd += [*entry, "train", str(recipe_path), "--output-dir", str(out), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def free_port() -> str:
    """A free TCP port on loopback, so parallel torchrun tests (pytest -n 2) never share one."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def final_weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"step-{step:08d}" / "model" / "model.safetensors"))


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, worst


def test_batch_8_equals_batch_4_times_accum_2(tmp_path, corpus):
    runs = {}
    for name, batch, accum in (("b8", 8, 1), ("b4x2", 4, 2)):
        recipe_path = write_recipe(
            tmp_path / name,
            corpus,
            data={"batching": {"max_duration": 1000, "max_batch_size": batch, "shuffle": False}},
            train={"max_steps": 1, "grad_accum": accum, "seed": 0, "max_grad_norm": None},
            # SGD: the update is the gradient itself (Adam's first step is ~sign(g), which amplifies
            # float noise in near-zero gradients and would hide what this test checks).
            optim={"optimizer": "sgd", "lr": 0.01, "warmup_steps": 0, "scheduler": "constant"},
        )
        recipe = load_recipe(recipe_path, output_dir=tmp_path / name / "run")
        train(recipe)
        runs[name] = final_weights(tmp_path / name / "run", 1)
    assert_same(runs["b8"], runs["b4x2"], atol=1e-6)
    # The check has teeth: the update itself is orders of magnitude above the tolerance (a loss
    # normalised per micro-batch instead of per update would differ by ~1e-3 here).
    from accelerate.utils import set_seed

    from speeched.training.build import build_model

    set_seed(0)  # the trainer seeds before composing, so this rebuilds the same initial weights
    init = build_model(load_recipe(tmp_path / "b8" / "recipe.yaml")).model.state_dict()
    update = max((runs["b8"][k] - init[k]).abs().max().item() for k in runs["b8"])
    assert update > 1e-3


def test_resume_from_checkpoint_gives_identical_weights(tmp_path, corpus):
    recipe_path = write_recipe(
        tmp_path,
        corpus,
        data={"batching": {"max_duration": 1000, "max_batch_size": 3, "shuffle": True}},
        train={"max_steps": 4, "seed": 0},
        model={"ctc_weight": 0.3},
    )
    out = tmp_path / "run"
    train(load_recipe(recipe_path, output_dir=out))
    uninterrupted = final_weights(out, 4)
    # Pretend the run died after step 2: only checkpoints up to step 2 survive.
    for step in (3, 4):
        shutil.rmtree(out / "checkpoints" / f"step-{step:08d}")
    train(load_recipe(recipe_path, output_dir=out), resume="auto")
    assert_same(final_weights(out, 4), uninterrupted, atol=0.0)


def test_train_cli_outputs_and_best_model(tmp_path, corpus):
    recipe_path = write_recipe(tmp_path, corpus, eval={"every_steps": 2, "max_new_tokens": 5})
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(recipe_path), "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "best" / "model.safetensors").is_file()
    assert (out / "best" / "preprocessor_config.json").is_file()
    # the decoding the dev scores were measured with travels with the model (eval/transcribe defaults)
    assert json.loads((out / "best" / "config.json").read_text())["decoding"] == {
        "num_beams": 1,
        "ctc_weight": 0.0,
    }
    lines = (out / "metrics.jsonl").read_text().splitlines()
    # error rates in percent, the unit in the name (as `speeched eval` prints "WER %")
    dev = [json.loads(line)["values"] for line in lines if '"dev/dev"' in line]
    assert dev and all(v["wer_percent"] >= 0 and "wer" not in v for v in dev)
    assert "step 2 dev/dev: wer%=" in result.output
    durations = json.loads((out / "best" / "config.json").read_text())["training_durations"]
    assert set(durations) == {"min", "max", "median", "p95"}
    assert 0 < durations["min"] <= durations["median"] <= durations["p95"] <= durations["max"] < 5
    assert any('"train"' in line and '"loss"' in line for line in lines)


def test_unknown_key_fails_before_heavy_work(tmp_path, corpus):
    recipe_path = write_recipe(tmp_path, corpus)
    text = recipe_path.read_text().replace("lr: 0.001", "lrr: 0.001")
    recipe_path.write_text(text)
    result = CliRunner().invoke(app, ["train", str(recipe_path)])
    assert result.exit_code == 2
    assert "optim.lrr" in result.output and "did you mean 'lr'" in result.output


def test_dry_run_prints_plan(tmp_path, corpus):
    recipe_path = write_recipe(tmp_path, corpus)
    result = CliRunner().invoke(
        app, ["train", str(recipe_path), "--dry-run", "--output-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert "dry run OK" in result.output and "speech_to_text encoder + bert decoder" in result.output
    assert "smoke run on 2 samples" in result.output and "frames/s" in result.output
    assert "load report" in result.output
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_overfit_batch_loss_falls(tmp_path, corpus):
    recipe_path = write_recipe(
        tmp_path, corpus, optim={"lr": 3e-3, "warmup_steps": 0, "scheduler": "constant"}
    )
    result = train(load_recipe(recipe_path, output_dir=tmp_path / "o"), overfit_batch=25)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 25
    assert losses[-1] < 0.5 * losses[0]


def test_two_processes_match_one_process(tmp_path, corpus):
    """Two CPU processes (gloo) — started with torchrun, since this accelerate's `launch --cpu` uses mpirun
    for several CPU processes: disjoint data per rank, identical weights on both ranks, and
    2 processes × batch 4 make the same update as 1 process × batch 8."""

    sgd = {"optimizer": "sgd", "lr": 0.01, "warmup_steps": 0, "scheduler": "constant"}
    runs = {}
    for name, batch in (("one", 8), ("two", 4)):
        recipe_path = write_recipe(
            tmp_path / name,
            corpus,
            data={"batching": {"max_duration": 1000, "max_batch_size": batch, "shuffle": False}},
            train={"max_steps": 1, "seed": 0, "max_grad_norm": None},
            optim=sgd,
        )
        out = tmp_path / name / "run"
        if name == "one":
            train(load_recipe(recipe_path, output_dir=out))
        else:
            torchrun_train(recipe_path, out)
            assert (out / "rank_check.json").is_file()
            check = __import__("json").loads((out / "rank_check.json").read_text())
            assert check["weights_identical"] and check["ids_per_rank"] == [4, 4]
            assert check["overlap_first_epoch"] == []
        runs[name] = final_weights(out, 1)
    assert_same(runs["one"], runs["two"], atol=1e-6)


def test_parameters_without_gradient_are_named(tmp_path, corpus):
    """A CTC head that no loss uses (ctc_weight 0 at training time) gets no gradient: the preflight names it."""
    from speeched.modeling.compose import ComposeSpec, init_model

    enc = tiny_encoder_dir(tmp_path, "speech2text")
    init_model(
        ComposeSpec(
            encoder=str(enc),
            decoder=minilm_path(),
            decoder_options={"num_hidden_layers": 1},
            extensions={"ctc_vocab": ["<blank>", "<unk>", "one"], "ctc_units": "word"},
        ),
        tmp_path / "m",
    )
    recipe_path = write_recipe(tmp_path, corpus, train={"max_steps": 1, "seed": 0})
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["model"] = {"path": str(tmp_path / "m")}
    recipe_path.write_text(yaml.safe_dump(recipe))
    train(load_recipe(recipe_path, output_dir=tmp_path / "run"))
    report = __import__("json").loads((tmp_path / "run" / "preflight.json").read_text())
    assert "ctc_head.proj.weight" in report["parameters_without_gradient"]
    assert not any(n.startswith("decoder.bert.encoder") for n in report["parameters_without_gradient"])


def test_nonfinite_loss_skips_the_update_then_stops_with_a_clear_message(tmp_path, corpus):
    from speeched.training.trainer import Trainer, TrainingError

    recipe_path = write_recipe(
        tmp_path, corpus, train={"max_steps": 5, "seed": 0, "max_consecutive_nonfinite": 3}
    )
    trainer = Trainer(load_recipe(recipe_path, output_dir=tmp_path / "run"))
    trainer.setup()
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    batch = trainer._micro_batches([iter(trainer.loader)])
    stats = trainer.train_step(batch)  # real gradients exist now
    stats["loss"] = float("nan")
    assert trainer.optimizer_step(stats) is False
    assert trainer.optimizer_step({"loss": float("inf")}) is False
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)  # nothing was applied
    with pytest.raises(TrainingError, match="3 consecutive non-finite losses"):
        trainer.optimizer_step({"loss": float("nan")})


def test_csv_tracker_writes_metrics_csv(tmp_path, corpus):
    recipe_path = write_recipe(tmp_path, corpus, log={"plots": False, "trackers": ["csv"]})
    train(load_recipe(recipe_path, output_dir=tmp_path / "run"))
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,split,metric,value"
    assert any(r.startswith("1,train,loss,") for r in rows)


def test_two_processes_resume_from_checkpoint(tmp_path, corpus):
    """2 CPU processes: kill after step 1's checkpoint (simulated by deleting later ones), resume with
    --resume auto, and end with the weights of the uninterrupted 2-process run."""

    recipe_path = write_recipe(
        tmp_path,
        corpus,
        data={"batching": {"max_duration": 1000, "max_batch_size": 2, "shuffle": True}},
        train={"max_steps": 3, "seed": 0},
    )
    out = tmp_path / "run"

    def launch(*extra: str) -> None:
        torchrun_train(recipe_path, out, *extra)

    launch()
    uninterrupted = final_weights(out, 3)
    for step in (2, 3):
        shutil.rmtree(out / "checkpoints" / f"step-{step:08d}")
    launch("--resume", "auto")
    assert_same(final_weights(out, 3), uninterrupted, atol=0.0)


# Runs `speeched train` with Accelerator.end_training wrapped: it records how many DDP modules are still alive
# when the process group is about to be destroyed.
DDP_PROBE = """
import gc, json, os, sys

import accelerate
from torch.nn.parallel import DistributedDataParallel

end_training = accelerate.Accelerator.end_training


def probed(self):
    alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    probe = os.path.join(os.environ["DDP_PROBE_DIR"], f"rank-{self.process_index}.json")
    with open(probe, "w") as f:
        json.dump({"ddp_alive": alive}, f)
    end_training(self)


accelerate.Accelerator.end_training = probed
from speeched.cli import main

sys.argv[0] = "speeched"
main()
"""


def test_two_processes_free_ddp_before_destroying_the_process_group(tmp_path, corpus, monkeypatch):
    """Regression test of a hang at exit (blamed on fused AdamW at first, reverted in 73027e2): DDP's Reducer
    held the last reference to the gloo process group, so freeing the model after destroy_process_group ran
    the group's destructor with the GIL held while gloo's worker thread waited for the GIL (see
    Trainer.end_training). Timing made it rare; the invariant that prevents it is checked here: no DDP
    module is left when accelerate destroys the group."""
    recipe_path = write_recipe(
        tmp_path,
        corpus,
        data={"batching": {"max_duration": 1000, "max_batch_size": 2}},
        train={"max_steps": 1},
    )
    script = tmp_path / "ddp_probe.py"
    script.write_text(DDP_PROBE)
    probes = tmp_path / "probes"
    probes.mkdir()
    monkeypatch.setenv("DDP_PROBE_DIR", str(probes))
    torchrun_train(recipe_path, tmp_path / "run", entry=(str(script),))
    found = {p.name: json.loads(p.read_text()) for p in probes.iterdir()}
    assert found == {"rank-0.json": {"ddp_alive": 0}, "rank-1.json": {"ddp_alive": 0}}


def test_layerdrop_is_switched_off_for_multi_process_training(tmp_path):
    from speeched import SpeechEncoderDecoderModel
    from speeched.training.build import ddp_safe_defaults

    enc = tiny_encoder_dir(tmp_path, "wav2vec2", layerdrop=0.1)
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        str(enc), minilm_path(), decoder_num_hidden_layers=1
    )
    assert ddp_safe_defaults(model, world_size=1) == []
    assert model.config.encoder.layerdrop == 0.1
    assert ddp_safe_defaults(model, world_size=2) == ["encoder.layerdrop"]
    assert model.config.encoder.layerdrop == 0.0 and model.encoder.config.layerdrop == 0.0


def test_two_processes_lora_decoder_frozen_encoder(tmp_path, corpus):
    """DDP with most parameters frozen (LoRA on the decoder, encoder frozen): no unused-parameter errors, and
    both ranks end with the same weights."""
    recipe_path = write_recipe(
        tmp_path,
        corpus,
        data={"batching": {"max_duration": 1000, "max_batch_size": 2, "shuffle": True}},
        train={"max_steps": 2, "seed": 0},
        finetune={"method": "lora", "lora": {"r": 4}},
    )
    out = tmp_path / "run"
    torchrun_train(recipe_path, out)
    check = __import__("json").loads((out / "rank_check.json").read_text())
    assert check["weights_identical"]
    exported = load_file(str(out / "best" / "model.safetensors"))  # exported with the adapters merged
    assert exported and not any("lora_" in k for k in exported)
    from speeched.modeling.model_dir import load_model_dir

    assert load_model_dir(out / "best").model.config.decoder.model_type == "bert"


def test_fresh_run_refuses_to_overwrite_an_earlier_runs_checkpoints(tmp_path, corpus):
    from speeched.training.trainer import TrainingError

    recipe_path = write_recipe(tmp_path, corpus, train={"max_steps": 1, "seed": 0})
    out = tmp_path / "run"
    train(load_recipe(recipe_path, output_dir=out))
    with pytest.raises(TrainingError, match="--resume auto"):
        train(load_recipe(recipe_path, output_dir=out))
    assert (out / "checkpoints" / "step-00000001").is_dir()  # the earlier run is untouched


def test_train_step_runs_the_forward_inside_speech_attention(tmp_path, corpus, monkeypatch):
    """On CUDA the context leaves cuDNN attention out (tests/test_attention_backends.py); here: the
    training forward runs inside it, on the accelerator's device."""
    from contextlib import contextmanager

    import speeched.training.trainer as trainer_module
    from speeched.training.trainer import Trainer

    seen, active, forwards = [], [], []

    @contextmanager
    def recording(device):
        seen.append(torch.device(device))
        active.append(True)
        try:
            yield
        finally:
            active.pop()

    monkeypatch.setattr(trainer_module, "speech_attention", recording)
    trainer = Trainer(load_recipe(write_recipe(tmp_path, corpus), output_dir=tmp_path / "run"))
    trainer.setup()
    trainer.model.register_forward_pre_hook(lambda *_: forwards.append(bool(active)))
    trainer.train_step(trainer._micro_batches([iter(trainer.loader)]))
    assert forwards == [True] and seen == [trainer.accelerator.device]
