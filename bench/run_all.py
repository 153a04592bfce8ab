"""`make bench`: run every benchmark on this machine and write docs/benchmarks.md (generated: never edit it).

    .venv/bin/python bench/run_all.py                 # full run (~1 h on 2 quiet cores), docs/benchmarks.md
    .venv/bin/python bench/run_all.py --quick         # tiny sizes, minutes: checks every bench end to end;
                                                      # writes runs/bench/benchmarks-quick.md, not the docs page
    .venv/bin/python bench/run_all.py --only train,padding

Each benchmark is a script that prints markdown; this collects them with the machine, the library versions,
the load average, each exact command and its wall time. Results of the long benches are included when
their JSON exists: time to accuracy (`make bench-tta`) and the GPU bench (`make bench-gpu`). The demo's
figures come from runs/demo-seed*/ (`make demo SEED=N`): median and range over the seeds. Hand-written
notes live in docs/benchmark-notes.md; this page links to them and never includes hand-edited numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, load_average, machine_lines  # noqa: E402

DEMO_MODEL = "runs/demo/best"


FILE_SECTIONS = (
    "Time to accuracy (`make bench-tta`)",
    "GPU (`make bench-gpu`)",
    "Demo: held-out WER over seeds (`make demo SEED=N`)",
    "Speech translation demo (`make demo-st`)",
)


def benches(quick: bool) -> list[tuple[str, str, list[str]]]:
    """(key, title, command) for every benchmark; --quick shrinks each to a harness check."""
    q = quick
    longform_model = _demo_model()
    out = [
        ("train", "Training throughput: the same work on both sides",
         ["bench/bench_train.py", *(["--quick"] if q else ["--steps", "12", "--repeats", "3"])]),
        ("optimizer", "AdamW implementations on CPU (the largest non-matmul cost of a step)",
         ["bench/bench_optimizer.py", *(["--repeats", "2"] if q else [])]),
        ("compile", "torch.compile on CPU: fusing a training step's non-matmul work",
         ["bench/bench_compile.py", *(["--composition", "logmel", "--steps", "2", "--warmup", "1"] if q else [])]),
        ("padding", "Padding at matched randomness", ["bench/bench_padding.py", *(["--num", "400"] if q else [])]),
        ("transcribe", "Transcription on a trained model: WER next to RTFx",
         ["bench/bench_transcribe.py", "--model", longform_model or DEMO_MODEL, *(["--quick"] if q else [])]),
        ("forward", "Model forward / generate vs transformers' SpeechEncoderDecoderModel",
         ["bench/bench_forward.py", *(["--repeats", "1"] if q else [])]),
        ("loader", "Loader throughput", ["bench/bench_loader.py"]),
        ("eval", "Eval throughput: duration batches vs fixed batch size",
         ["bench/bench_eval.py", *(["--n", "24", "--repeats", "1"] if q else [])]),
        ("memory", "Memory vs corpus size, manifest start-up",
         ["bench/bench_memory.py", *(["--sizes", "0.01", "--rows", "2000"] if q else [])]),
    ]  # fmt: skip
    out.append(("generalisation", "Held-out accents and synthesiser variants (the demo models' evals)",
                ["bench/bench_generalisation.py", "--runs", "runs/demo*", "--data", "data/digits"]))  # fmt: skip
    if longform_model:
        out.append(("longform", "Long-form transcription vs one by one",
                    ["bench/bench_longform.py", "--model", longform_model, *([] if q else _seed_models()),
                     *(["--seconds", "30"] if q else [])]))  # fmt: skip
    if (ROOT / "bench/bench_onnx.py").exists():
        out.append(
            (
                "onnx",
                "ONNX Runtime vs PyTorch",
                ["bench/bench_onnx.py", *(["--n", "4", "--tokens", "4"] if q else [])],
            )
        )
    return out


def _demo_model() -> str | None:
    for cand in [ROOT / DEMO_MODEL, *sorted(ROOT.glob("runs/demo-seed*/best"))]:
        if (cand / "config.json").exists():
            return str(cand.relative_to(ROOT))
    return None


def _seed_models() -> list[str]:
    """The `make demo SEED=N` models, scored next to the demo model where a bench takes several."""
    found = [c for c in sorted(ROOT.glob("runs/demo-seed*/best")) if (c / "config.json").exists()]
    return [str(c.relative_to(ROOT)) for c in found if str(c.relative_to(ROOT)) != _demo_model()]


def run_bench(cmd: list[str], timeout: float) -> tuple[str, float, int]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"TIMED OUT after {timeout:.0f} s", time.perf_counter() - t0, 124
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        return f"FAILED (exit {proc.returncode}):\n\n```\n{proc.stderr[-2500:]}\n```", took, proc.returncode
    return proc.stdout.strip(), took, 0


# ------------------------------------------------------------------------------------------------ demo
def _summary(run: Path) -> dict | None:
    p = run / "eval" / "summary.json"
    return json.loads(p.read_text()) if p.exists() else None


def _train_minutes(run: Path) -> float | None:
    p = run / "metrics.jsonl"
    if not p.exists():
        return None
    rows = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
    t = [r["values"].get("elapsed_s", 0) for r in rows if r["split"] == "train"]
    return max(t) / 60 if t else None


def _seed_of(run: Path) -> str:
    m = re.search(r"seed(\d+)$", run.name)
    return m.group(1) if m else "recipe (42)"


def _demo_row(label: str, s: dict, minutes: float | None) -> str:
    return (f"| {label} | {100 * s['wer']:.2f}% | {100 * s['cer']:.2f}% | "
            f"{'?' if minutes is None else f'{minutes:.1f} min'} | {s['decoding']['strategy']} |")  # fmt: skip


def demo_section() -> str:
    runs = sorted(
        ROOT.glob("runs/demo-seed*"), key=lambda p: int(_seed_of(p)) if _seed_of(p).isdigit() else 0
    )
    runs = [r for r in runs if _summary(r)]
    if not runs:
        one = ROOT / "runs/demo"
        if _summary(one):
            s = _summary(one)
            return (
                f"One run only (runs/demo, the recipe's seed 42): held-out WER {100 * s['wer']:.2f}% on "
                f"{s['num_utterances']} utterances. Run `make demo SEED=1`, `SEED=2`, `SEED=3` for a median and range."
            )
        return "_No demo runs found: run `make demo SEED=1`, `make demo SEED=2`, `make demo SEED=3` first._"
    lines = [
        "Each row: `make demo SEED=N` (seeded random init of the new parts: cross-attention, CTC head, MiniLM's "
        "LM-head transform; `train.seed=N` for the data order; the pretrained halves and the corpus are the same), "
        "scored by `speeched eval` on the held-out test split (voices never heard in training).",
        "",
        "| seed | held-out WER | CER | training time | decoding |",
        "|---:|---:|---:|---:|---|",
    ]
    wers, mins = [], []
    for r in runs:
        s = _summary(r)
        m = _train_minutes(r)
        wers.append(100 * s["wer"])
        if m is not None:
            mins.append(m)
        lines.append(_demo_row(_seed_of(r), s, m))
    one = ROOT / "runs/demo"
    if _summary(one):  # `make demo` without SEED: shown, not counted in the seeds' median
        lines.append(
            _demo_row("recipe's 42 (`make demo`, not in the median)", _summary(one), _train_minutes(one))
        )
    lines += [
        "",
        "Training time is the wall time each run saw: runs made side by side shared the cores.",
        "",
        f"**Held-out WER: median {statistics.median(wers):.2f}% (range {min(wers):.2f}–{max(wers):.2f}%, "
        f"{len(wers)} seeds)**; training time median {statistics.median(mins):.1f} min."
        if mins
        else f"**Held-out WER: median {statistics.median(wers):.2f}% ({min(wers):.2f}–{max(wers):.2f}%)**",
    ]
    return "\n".join(lines)


def demo_st_section() -> str:
    s = _summary(ROOT / "runs/demo-st")
    if not s:
        return "_runs/demo-st not found: run `make demo-st` first._"
    m = _train_minutes(ROOT / "runs/demo-st")
    sig = s.get("bleu_signature") or s.get("normalized", {}).get("bleu_signature", "")
    unseen_path = ROOT / "runs/demo-st/eval-unseen/summary.json"
    rows = [("held-out voices (`test.jsonl`)", s)]
    if unseen_path.exists():
        rows.append(
            (
                "accents and variants never in training (`test_unseen.jsonl`)",
                json.loads(unseen_path.read_text()),
            )
        )
    lines = [
        f"One run (`make demo-st`): English speech -> German text, {'?' if m is None else f'{m:.1f}'} min of "
        f"training, {s['decoding']['strategy']}. The model's tokenizer (MiniLM's) is uncased, so it cannot write "
        'German\'s capitals: lowercased (the "basic" normaliser) is the score of what it can learn, the '
        f"case-sensitive one is beside it. {sig}",
        "",
        "| test set | utterances | BLEU, lowercased | chrF, lowercased | BLEU, case-sensitive | chrF, case-sensitive |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for what, r in rows:
        lines.append(
            f"| {what} | {r['num_utterances']} | {r.get('normalized_bleu', float('nan')):.1f} | "
            f"{r.get('normalized_chrf', float('nan')):.1f} | {r['bleu']:.1f} | {r['chrf']:.1f} |"
        )
    return "\n".join(lines)


def json_section(path: Path, what: str, how: str) -> str:
    if not path.exists():
        return f"_Not measured in this run: {how} writes {path.relative_to(ROOT)}._"
    d = json.loads(path.read_text())
    if d.get("skipped"):
        return f"skipped: {d['skipped']} (`{how}`)"
    return d.get("markdown", f"_{path} has no markdown field_")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="tiny sizes; checks the harness (numbers mean nothing)"
    )
    ap.add_argument("--only", default="", help="comma-separated keys: train,padding,transcribe,forward,...")
    ap.add_argument(
        "--out", default="", help="default docs/benchmarks.md (runs/bench/benchmarks-quick.md with --quick)"
    )
    ap.add_argument(
        "--timeout", type=float, default=0, help="seconds per bench (default 3600, 900 with --quick)"
    )
    a = ap.parse_args()
    out_path = ROOT / (a.out or ("runs/bench/benchmarks-quick.md" if a.quick else "docs/benchmarks.md"))
    timeout = a.timeout or (900 if a.quick else 3600)
    only = {k for k in a.only.split(",") if k}
    page = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (bench/run_all.py); never edited by hand. How each number was measured is "
        "written next to it: the command, the repeats, median and range. Sides do the same work (equal trainable "
        "parameters, the same optimizer, audio counted from the batches actually processed); repeated runs are "
        "interleaved. These machines are shared: read ratios measured in the same run, and check the load "
        "average printed with each table. Notes, profiles and caveats: [benchmark-notes.md](benchmark-notes.md).",
        "",
        *(
            ["**QUICK RUN (`--quick`): tiny sizes to check the harness; these numbers mean nothing.**", ""]
            if a.quick
            else []
        ),
        *machine_lines(),
        f"- commit: {_git_commit()}",
        "",
    ]
    previous = _previous_sections(out_path) if only else {}
    listed = benches(a.quick)
    for key, title, cmd in listed:
        if only and key not in only:
            if title in previous:  # carried over verbatim, saying from which generation
                page += _carried(title, previous)
            continue
        print(f"== {title}: {' '.join(cmd)}  (load {load_average()})", flush=True)
        body, took, rc = run_bench(cmd, timeout)
        print(f"   {'ok' if rc == 0 else f'exit {rc}'} in {took:.0f} s", flush=True)
        page += [f"## {title}", "", f"`.venv/bin/python {' '.join(cmd)}` ({took:.0f} s)", "", body, ""]
    listed_titles = {title for _, title, _ in listed}
    for title in previous:  # listed only on some machines (long-form: a demo model)
        if title not in listed_titles and title not in FILE_SECTIONS:
            page += _carried(title, previous)
    # cheap: read from files that other targets wrote. Where a machine has none of a section's files (runs/
    # is never committed: a fresh checkout), the earlier page's section is carried over, saying from which
    # commit, instead of being replaced by "not measured".
    previous = previous or _previous_sections(out_path)
    tta, logmel_tta = (
        ROOT / "runs/bench/time_to_accuracy.json",
        ROOT / "runs/bench/time_to_accuracy-logmel.json",
    )
    body = json_section(tta, "tta", "make bench-tta")
    if logmel_tta.exists():  # the first measurement, on the demo's earlier composition
        body += "\n\n### The fifth session's composition (log-mel encoder, random init)\n\n"
        body += json_section(logmel_tta, "tta", "bench_time_to_accuracy.py --composition logmel")
    demos = [p for p in [*ROOT.glob("runs/demo-seed*"), ROOT / "runs/demo"] if _summary(p)]
    tta_title, gpu_title, demo_title, st_title = FILE_SECTIONS
    page += _file_section(tta_title, body, tta.exists(), previous)
    gpu = ROOT / "runs/bench/gpu.json"
    page += _file_section(gpu_title, json_section(gpu, "gpu", "make bench-gpu"), gpu.exists(), previous)
    page += _file_section(demo_title, demo_section(), bool(demos), previous)
    st = bool(_summary(ROOT / "runs/demo-st"))
    page += _file_section(st_title, demo_st_section(), st, previous)
    page.append(f"_Load average when the page was written: {load_average()}._")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(page) + "\n")
    print(f"wrote {out_path}")


def _carried(title: str, previous: dict[str, tuple[str, str]]) -> list[str]:
    """An earlier page's section, as it was, saying which commit measured it."""
    commit, body = previous[title]
    return [
        f"## {title}",
        "",
        f"_Not rerun by this `--only` run: as generated at commit {commit}._",
        "",
        body,
        "",
    ]


def _file_section(title: str, body: str, measured: bool, previous: dict[str, tuple[str, str]]) -> list[str]:
    """A section read from files under runs/: fresh where they exist, else the earlier page's, if it had one."""
    if not measured and title in previous:
        return _carried(title, previous)
    return [f"## {title}", "", body, ""]


FOOTER = re.compile(r"^_Load average when the page was written: .*?\._\s*", flags=re.M)


def _previous_sections(path: Path) -> dict[str, tuple[str, str]]:
    """{title: (commit, body)} of the bench sections of an earlier generated page, so that `--only` reruns
    some benches without dropping the others (each carried section says which commit measured it)."""
    if not path.exists():
        return {}
    text = path.read_text()
    m = re.search(r"^- commit: (.+)$", text, flags=re.M)
    commit = m.group(1).strip() if m else "unknown"
    out = {}
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        title, _, body = part.partition("\n")
        carried = re.match(r"\s*_Not rerun by this `--only` run: as generated at commit (.+?)\._\n", body)
        if carried:  # carried twice: keep the commit that measured it
            body = body[carried.end() :]
        body = FOOTER.sub("", body)  # the page's own footer follows the last section: not part of it
        out[title.strip()] = (carried.group(1) if carried else commit, body.strip())
    return out


def _git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout  # fmt: skip
        return sha.strip() + (" (with uncommitted changes)" if dirty.strip() else "")
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
