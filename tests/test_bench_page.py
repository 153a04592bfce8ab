"""bench/run_all.py's page: an `--only` rerun carries the other sections over and keeps one footer."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def regenerate(page: Path) -> str:
    cmd = [sys.executable, str(ROOT / "bench" / "run_all.py"), "--only", "none", "--out", str(page)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return page.read_text()


def titles(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, flags=re.M)


def test_only_rerun_carries_sections_and_one_footer(tmp_path):
    page = tmp_path / "benchmarks.md"
    shutil.copy(ROOT / "docs" / "benchmarks.md", page)
    before = titles(page.read_text())
    once = regenerate(page)
    twice = regenerate(page)
    for text in (once, twice):
        # nothing dropped, nothing duplicated (the order depends on which demo models runs/ holds here)
        assert sorted(titles(text)) == sorted(before)
        assert len(re.findall(r"^_Load average when the page was written", text, flags=re.M)) == 1
        assert "## Training throughput" in text and "target ≥ 1.5×" in text
    # each carried section says which commit measured it, and carrying twice keeps that commit
    carried = re.findall(r"as generated at commit (\S+)", once)
    assert carried and carried == re.findall(r"as generated at commit (\S+)", twice)
