"""speeched.modeling.attention_backends: on CUDA, SDPA runs without cuDNN's per-shape graphs; CPU untouched.

The flags are process-wide backend switches that a CPU-only build sets too, so the CUDA branch is
checked here by its effect on them (the speed it buys is in docs/benchmark-notes.md, measured on an H200).
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager

import torch
from test_inference import LengthModel, _im, _tone

from speeched.inference import DecodeOptions, decode
from speeched.modeling.attention_backends import speech_attention


def _flags() -> tuple[bool, bool, bool, bool]:
    b = torch.backends.cuda
    return b.cudnn_sdp_enabled(), b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled()


def test_cuda_leaves_cudnn_out_and_restores_the_flags_after() -> None:
    before = _flags()
    assert before[0], "cuDNN SDPA is enabled by default: the test would prove nothing"
    with speech_attention("cuda"):
        assert _flags() == (False, True, True, True)
    with speech_attention(torch.device("cuda", 0)):
        assert _flags() == (False, True, True, True)
    assert _flags() == before


def test_cpu_changes_nothing() -> None:
    before = _flags()
    with speech_attention("cpu"):
        assert _flags() == before


def test_decode_generates_inside_the_context_for_its_device(monkeypatch) -> None:
    decode_module = importlib.import_module(
        "speeched.inference.decode"
    )  # the package exports a function of that name

    seen: list[str] = []
    active = []

    @contextmanager
    def recording(device):
        seen.append(str(device))
        active.append(True)
        try:
            yield
        finally:
            active.pop()

    class Checking(LengthModel):
        def generate(self, attention_mask, **kwargs):
            assert active, "generate ran outside speech_attention"
            return super().generate(attention_mask, **kwargs)

    monkeypatch.setattr(decode_module, "speech_attention", recording)
    im = _im(Checking())
    out = decode(im, [_tone(5), _tone(9)], DecodeOptions(max_duration=0.6))
    assert [d.text for d in out] == ["w5", "w9"] and len(im.model.calls) == 2
    assert seen == [str(im.device)]  # one context around all batches
