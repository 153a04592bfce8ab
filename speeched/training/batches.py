"""The next training batch, with audio that broke after the scan turned into one line (no traceback).

With `data.on_bad_audio: skip` the dataset (speeched.data.dataset / the stream) reports such a file to
`bad_audio.jsonl` and replaces it; with `error` it raises `AudioError`, which reaches the training loop
directly (no workers) or re-raised by the DataLoader as a RuntimeError carrying the worker's traceback
text (the exception class needs arguments torch cannot rebuild). Both become a `BadAudioDuringTraining`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from speeched.data.audio import AudioError
from speeched.data.streaming import StreamStateError
from speeched.training.run import TrainingError

MARK = "AudioError: "


class BadAudioDuringTraining(TrainingError):
    """A training file became unreadable after the scan and data.on_bad_audio is `error` (exit 2)."""


def _message(what: str) -> BadAudioDuringTraining:
    return BadAudioDuringTraining(
        f"{what}: this audio became unreadable after the scan and data.on_bad_audio is 'error'; fix or remove "
        "it (`speeched data check` lists every such file) and resume with --resume auto, or set "
        "data.on_bad_audio: skip"
    )


def next_batch(it: Iterator[Any]) -> Any:
    """`next(it)`; StopIteration passes through."""
    try:
        return next(it)
    except AudioError as err:
        raise _message(str(err)) from None
    except RuntimeError as err:
        text = str(err)
        if "Caught AudioError" not in text:
            raise
        lines = [line.split(MARK, 1)[1] for line in text.splitlines() if MARK in line]
        raise _message(lines[-1].strip() if lines else text.splitlines()[0]) from None


def loader_state(run: Any, batches_in_epoch: int) -> dict[str, Any]:
    """The data position of this rank for the checkpoint: the sampler's, or the stream's (StatefulDataLoader
    state: shard order, every worker's position, buffers and RNG; gather every rank's)."""
    if run.streamed:
        return {"sampler": None, "stream": run.stream_state()}
    return {"sampler": run.sampler.state_dict(batches_consumed=batches_in_epoch)}


def load_loader_state(run: Any, state: dict[str, Any], rank: int) -> None:
    """Resume the data where `state` (a checkpoint's trainer state) left it; ValueError when it cannot."""
    if run.streamed != ("stream" in state):
        now = "streamed" if run.streamed else "not streamed"
        raise ValueError(f"the checkpoint's training data and this run's differ: this run's is {now} "
                         "(data.train[*].streaming): resume with the recipe the checkpoint was written with")  # fmt: skip
    if run.streamed:
        try:
            run.stream_load(state["stream"][rank])
        except StreamStateError as err:
            raise ValueError(str(err)) from None
    else:
        run.sampler.load_state_dict(state["sampler"])
