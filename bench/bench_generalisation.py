"""Held-out accents and voices: the demo model's WER per group of unseen speech, from files `make demo` wrote.

`make demo` scores `test.jsonl` (accent x variant combinations never in training) and `test_unseen.jsonl`
(whole eSpeak accents and synthesiser variants absent from the training split: `unseen` says which). This
reads each run's `eval*/predictions.jsonl`, joins them with the manifests' `accent`/`variant` columns and
scores every group with jiwer (the same normalised texts `speeched eval` scored). When the machine has
CMU Flite (Debian's `apt-get install flite`), `make demo` also scores `eval-flite` (bench/flite_digits.py:
speech from a synthesiser the model never trained on); it is read here too, per Flite voice.

    .venv/bin/python bench/bench_generalisation.py --runs 'runs/demo*' --data data/digits
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
from collections import defaultdict
from pathlib import Path

import jiwer


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def group_wers(predictions: Path, manifest: Path, key) -> dict[str, tuple[float, int]]:
    meta = {r["id"]: r for r in _rows(manifest)}
    refs: dict[str, list[str]] = defaultdict(list)
    hyps: dict[str, list[str]] = defaultdict(list)
    for p in _rows(predictions):
        m = meta.get(p["id"])
        if m is None:
            continue
        g = key(m)
        refs[g].append(p.get("reference_normalized", p["reference"]))
        hyps[g].append(p.get("hypothesis_normalized", p["hypothesis"]))
    return {g: (100 * jiwer.wer(refs[g], hyps[g]), len(refs[g])) for g in sorted(refs)}


def unseen_key(m: dict) -> str:
    what = m.get("unseen", "?")
    if what == "accent":
        return f"unseen accent {m['accent']}"
    if what == "variant":
        return f"unseen variant {m['variant']}"
    return f"unseen accent+variant {m['accent']}+{m['variant']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/demo*", help="glob of demo run folders")
    ap.add_argument("--data", default="data/digits", help="the demo corpus (manifests with accent columns)")
    ap.add_argument("--flite", default="data/flite-digits", help="the Flite test set (bench/flite_digits.py)")
    ap.add_argument("--json", default="", help="also write the numbers here")
    a = ap.parse_args()
    data = Path(a.data)
    table: dict[str, dict[str, tuple[float, int]]] = {}
    for run in sorted(glob.glob(a.runs)):
        r = Path(run)
        per: dict[str, tuple[float, int]] = {}
        if (r / "eval/predictions.jsonl").exists() and (data / "test.jsonl").exists():
            s = json.loads((r / "eval/summary.json").read_text())
            per["test split (held-out accent x variant pairs)"] = (100 * s["wer"], s["num_utterances"])
        pu = r / "eval-unseen/predictions.jsonl"
        if pu.exists() and (data / "test_unseen.jsonl").exists():
            s = json.loads((r / "eval-unseen/summary.json").read_text())
            per["all unseen accents and variants"] = (100 * s["wer"], s["num_utterances"])
            per.update(group_wers(pu, data / "test_unseen.jsonl", unseen_key))
        pf = r / "eval-flite/predictions.jsonl"
        if pf.exists() and Path(a.flite, "test.jsonl").exists():
            s = json.loads((r / "eval-flite/summary.json").read_text())
            per["another synthesiser (Flite), all voices"] = (100 * s["wer"], s["num_utterances"])
            per.update(group_wers(pf, Path(a.flite, "test.jsonl"), lambda m: f"Flite voice {m['voice'][6:]}"))
        if per:
            table[r.name] = per
    if not table:
        print("_No demo evaluations found: run `make demo` (it scores test.jsonl and test_unseen.jsonl)._")
        return
    groups = sorted(
        {g for per in table.values() for g in per},
        key=lambda g: (not g.startswith(("test", "all")), g.startswith(("another", "Flite")), g[0] == "F", g),
    )
    runs = sorted(table)
    print(
        "WER % (normalised as `speeched eval` scored it) per group of held-out speech; one column per run.\n"
    )
    # a median only across seeds of one configuration (runs/demo-seedN), never across different recipes
    seeds = [r for r in runs if r.startswith("demo-seed")]
    med = len(seeds) > 1
    print("| group | utterances | " + " | ".join(runs) + (" | median over seeds |" if med else " |"))
    print("|---|---:|" + "---:|" * (len(runs) + med))
    for g in groups:
        vals = [table[r][g][0] for r in seeds if g in table[r]]
        n = next(table[r][g][1] for r in runs if g in table[r])
        cells = [f"{table[r][g][0]:.2f}" if g in table[r] else "" for r in runs]
        tail = f" | {statistics.median(vals):.2f} |" if med and vals else (" | |" if med else " |")
        print(f"| {g} | {n} | " + " | ".join(cells) + tail)
    if a.json:
        Path(a.json).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
