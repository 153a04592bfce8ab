"""Weighted training sources end to end: a tiny run sees every in-domain utterance twice per epoch and a
fresh half of the general source, logs the mix, and records the weights in its checkpoint."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import write_tiny_recipe

from speeched.training.recipe import load_recipe
from speeched.training.trainer import Trainer


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """general.jsonl (6 utterances) and indomain.jsonl (4), next to the synthesized audio they point to."""
    from speeched.data.synth import synthesize_corpus

    out = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(out, kind="digits", num=12, seed=3, dev_fraction=0.0, test_fraction=0.0, progress=False)
    lines = (out / "train.jsonl").read_text().splitlines()
    (out / "general.jsonl").write_text("\n".join(lines[:6]) + "\n")
    (out / "indomain.jsonl").write_text("\n".join(lines[6:10]) + "\n")
    return out


def test_weighted_sources_train_on_the_weighted_mix(tmp_path, sources, capsys):
    ids = {
        name: [json.loads(x)["id"] for x in (sources / f"{name}.jsonl").read_text().splitlines()]
        for name in ("general", "indomain")
    }
    train_sources = [
        {"path": str(sources / "general.jsonl"), "name": "general", "weight": 0.5},
        {"path": str(sources / "indomain.jsonl"), "name": "indomain", "weight": 2},
    ]
    # 0.5 * 6 + 2 * 4 = 11 utterances per epoch, all in one batch: one step = one epoch.
    recipe_path = write_tiny_recipe(
        tmp_path,
        sources,
        data={
            "train": train_sources,
            "dev": [],
            "batching": {"max_duration": 1000, "max_batch_size": 11, "shuffle": False},
        },
        train={"max_steps": 3, "seed": 0, "log_every": 1},
        checkpoint={"every_steps": 1, "keep_last": 5},
    )
    trainer = Trainer(load_recipe(recipe_path, output_dir=tmp_path / "run"))
    seen: list[list[str]] = []
    step = trainer.train_step
    trainer.train_step = lambda batches: seen.append([i for b in batches for i in b["ids"]]) or step(batches)
    trainer.fit()

    out = capsys.readouterr().out
    assert "train mix per epoch: general x0.5 = 3 utts (27%" in out and "indomain x2 = 8 utts (73%" in out
    assert len(seen) == 3
    halves = []
    for epoch in seen:
        c = Counter(epoch)
        assert all(c[i] == 2 for i in ids["indomain"])  # weight 2: each in-domain utterance twice
        general = {i for i in ids["general"] if c[i]}
        assert len(general) == 3 and all(c[i] == 1 for i in general)  # weight 0.5: half, once each
        assert sum(c.values()) == 11
        halves.append(frozenset(general))
    assert len(set(halves)) > 1  # a fresh half of the general source per epoch
    state = json.loads(
        (tmp_path / "run" / "checkpoints" / "step-00000002" / "trainer_state.json").read_text()
    )
    assert state["sampler"]["source_weights"] == [0.5, 2.0]
