"""Fixtures of the reliability suite: one small synthesized corpus per module, a private duration cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from speeched.data.synth import synthesize_corpus

    out = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(out, kind="digits", num=16, seed=3, progress=False)
    return out


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPEECHED_CACHE_DIR", str(cache))
    return cache
