"""Memory vs corpus size, and start-up time of a large manifest (issue 14's targets).

1. Peak RSS of `data check` and of building the training data (load_source -> scan -> SpeechDataset ->
   DurationBucketSampler -> DataLoader, a few batches; no model) on `datasets` save_to_disk corpora of
   synthetic WAV audio of the given sizes. Each measurement runs in a fresh child process and reads its
   own VmHWM; "growth" is the peak minus the same command's peak on a 10-utterance corpus (imports,
   matplotlib, ...), as a share of the corpus' audio bytes. Target: growth <= 15% of the audio bytes.
2. Start-up of a JSONL manifest of N rows (default 281,241 = LibriSpeech 960 h) with durations, to the
   first batch: first start (parse + Arrow cache write) and second start (cache mapped). Targets: <= 60 s
   and <= 10 s. Rows point at a pool of real files (only the spot-checked and batched ones are read).

Run:  .venv/bin/python bench/bench_memory.py [--sizes 0.1,1,4] [--rows 281241] [--json out.json]
      [--markdown out.md] [--workdir /tmp]      (corpora are written under --workdir and deleted)
Prints a markdown table fragment (also written to --markdown) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def _wav_bytes(samples: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def make_corpus(path: str, audio_bytes: float, seed: int = 0) -> dict:
    """A save_to_disk folder of WAV noise utterances (1-20 s, lognormal) totalling ~`audio_bytes`.

    The Arrow file is streamed batch by batch (never the whole corpus in memory) with the schema
    `datasets` gives an `Audio(decode=False)` column, so `load_from_disk` reads it like any saved set.
    """
    import datasets
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    pool = [(0.1 * rng.standard_normal(20 * SR)).astype(np.float32) for _ in range(8)]
    os.makedirs(path, exist_ok=True)
    tiny = datasets.Dataset.from_dict(
        {"audio": [{"bytes": b"", "path": "x.wav"}], "text": ["x"], "duration": [1.0], "id": ["x"]}
    ).cast_column("audio", datasets.Audio(decode=False))
    schema = tiny.data.table.schema
    total = rows = 0
    arrow = os.path.join(path, "data-00000-of-00001.arrow")
    with pa.OSFile(arrow, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        while total < audio_bytes:
            batch = {"audio": [], "text": [], "duration": [], "id": []}
            for _ in range(100):
                sec = float(np.clip(rng.lognormal(np.log(6.0), 0.6), 1.0, 20.0))
                n = int(sec * SR)
                start = int(rng.integers(0, 20 * SR - n + 1))
                data = _wav_bytes(pool[rows % len(pool)][start : start + n])
                batch["audio"].append({"bytes": data, "path": f"utt{rows}.wav"})
                batch["text"].append(f"synthetic utterance number {rows}")
                batch["duration"].append(n / SR)
                batch["id"].append(f"utt{rows}")
                total += len(data)
                rows += 1
            writer.write_table(pa.Table.from_pydict(batch, schema=schema))
    with open(os.path.join(path, "state.json"), "w") as f:
        json.dump(
            {
                "_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                "_fingerprint": f"bench{seed}x{rows}x{int(audio_bytes)}",
                "_format_columns": None,
                "_format_kwargs": {},
                "_format_type": None,
                "_output_all_columns": False,
                "_split": None,
            },
            f,
        )
    tiny.info.write_to_directory(path)
    return {"rows": rows, "audio_bytes": total}


# ------------------------------------------------------------------------------------------ children
def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _collate(items: list[dict]) -> dict:
    import torch

    n = max(len(it["array"]) for it in items)
    x = torch.zeros(len(items), n)
    for i, it in enumerate(items):
        x[i, : len(it["array"])] = torch.from_numpy(it["array"])
    return {"input_values": x, "ids": [it["id"] for it in items]}


def child(mode: str, path: str, batches: int, workers: int) -> dict:
    """Run one measurement in this (fresh) process; returns timings (after imports; `imports_s` apart)
    and VmHWM."""
    t_imports = time.perf_counter()
    import resource

    import torch

    from speeched.data.check import check_data
    from speeched.data.config import DataSource, Filters
    from speeched.data.dataset import SpeechDataset
    from speeched.data.sampler import DurationBucketSampler
    from speeched.data.scan import scan
    from speeched.data.sources import load_source

    t0 = time.perf_counter()
    fmt = "datasets" if os.path.isdir(path) else "auto"
    out: dict = {"mode": mode, "imports_s": t0 - t_imports}
    if mode == "check":
        with tempfile.TemporaryDirectory() as d:
            report = check_data(DataSource(path=path, format=fmt, filters=Filters(max_duration=60)), d)
        out.update(total=report.total, usable=len(report.durations))
    else:
        src = DataSource(path=path, format=fmt, filters=Filters(max_duration=60))
        res = scan(load_source(src), src.filters)
        out["scan_s"] = time.perf_counter() - t0
        ds = SpeechDataset(res.kept, SR)
        sampler = DurationBucketSampler(ds.durations, max_duration=120.0, world_size=1, rank=0)
        loader = torch.utils.data.DataLoader(
            ds, batch_sampler=sampler, collate_fn=_collate, num_workers=workers
        )
        seen = 0
        for k, batch in enumerate(loader):
            if k == 0:
                out["first_batch_s"] = time.perf_counter() - t0
            seen += len(batch["ids"])
            if k + 1 >= batches:
                break
        out.update(total=len(ds), batches=min(batches, len(sampler)), utterances=seen)
        del loader
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss"] = _hwm_bytes()
    out["children_peak_rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return out


def run_child(mode: str, path: str, env: dict | None = None, batches: int = 20, workers: int = 0) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        path,
        "--batches",
        str(batches),
        "--workers",
        str(workers),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ manifest
def make_manifest(d: str, rows: int, pool: int = 512, seed: int = 0) -> str:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    durs = []
    for i in range(pool):
        n = int(float(np.clip(rng.lognormal(np.log(12.0), 0.5), 1.0, 30.0)) * SR)
        sf.write(os.path.join(d, f"p{i}.wav"), (0.1 * rng.standard_normal(n)).astype(np.float32), SR)
        durs.append(n / SR)
    path = os.path.join(d, "train.jsonl")
    with open(path, "w") as f:
        for i in range(rows):
            k = i % pool
            row = {
                "id": f"utt{i}",
                "audio": f"p{k}.wav",
                "text": f"words of utterance {i}",
                "duration": durs[k],
            }
            f.write(json.dumps(row) + "\n")
    return path


def _mb(x: float) -> str:
    return f"{x / 1e6:,.0f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0.1,1,4", help="corpus sizes in GB of audio bytes, comma-separated")
    ap.add_argument("--rows", type=int, default=281241, help="manifest rows for the start-up test (0: skip)")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--workdir", default=None, help="where corpora are written (and deleted)")
    ap.add_argument("--json", default=None, help="write the results here as JSON")
    ap.add_argument("--markdown", default=None, help="write the markdown table fragment here")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.batches, args.workers)))
        return

    results: dict = {"corpora": [], "manifest": None}
    work = tempfile.mkdtemp(prefix="speeched-bench-mem-", dir=args.workdir)
    env = {"SPEECHED_CACHE_DIR": os.path.join(work, "cache"), "HF_DATASETS_CACHE": os.path.join(work, "hf")}
    try:
        tiny = os.path.join(work, "tiny")
        make_corpus(tiny, 1, seed=99)  # one batch of 100 utterances: the fixed cost of each command
        base = {m: run_child(m, tiny, env, args.batches)["peak_rss"] for m in ("check", "train")}
        for gb in [float(x) for x in args.sizes.split(",") if x]:
            path = os.path.join(work, f"corpus-{gb:g}GB")
            t0 = time.perf_counter()
            info = make_corpus(path, gb * 1e9)
            row = {"size_gb": gb, **info, "generate_s": time.perf_counter() - t0}
            for mode in ("check", "train"):
                r = run_child(mode, path, env, args.batches)
                r["growth"] = r["peak_rss"] - base[mode]
                r["growth_share"] = r["growth"] / info["audio_bytes"]
                row[mode] = r
            results["corpora"].append(row)
            shutil.rmtree(path)
            print(json.dumps(row), file=sys.stderr)
        if args.rows:
            d = os.path.join(work, "manifest")
            os.makedirs(d)
            t0 = time.perf_counter()
            path = make_manifest(d, args.rows)
            gen = time.perf_counter() - t0
            first = run_child("train", path, env, 1)
            second = run_child("train", path, env, 1)
            results["manifest"] = {"rows": args.rows, "generate_s": gen, "first": first, "second": second}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        "| corpus (audio bytes) | utterances | command | peak RSS | growth over a 100-utterance corpus | growth / audio bytes | time |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in results["corpora"]:
        for mode, name in (
            ("check", "`data check` (full decode)"),
            ("train", f"training data, {args.batches} batches"),
        ):
            r = row[mode]
            lines.append(
                f"| {row['audio_bytes'] / 1e9:.2f} GB | {row['rows']:,} | {name} | {_mb(r['peak_rss'])} | "
                f"{_mb(r['growth'])} | {100 * r['growth_share']:.1f}% | {r['seconds']:.1f} s |"
            )
    m = results["manifest"]
    if m:
        lines += [
            "",
            f"JSONL manifest of {m['rows']:,} rows with durations, load_source + scan + dataset + sampler to the "
            "first batch (no model):",
            "",
            "| start | imports (torch, speeched) | load + scan | first batch (after imports) | peak RSS |",
            "|---|---:|---:|---:|---:|",
        ]
        for k in ("first", "second"):
            r = m[k]
            lines.append(
                f"| {k} | {r['imports_s']:.1f} s | {r['scan_s']:.1f} s | {r['first_batch_s']:.1f} s | "
                f"{_mb(r['peak_rss'])} |"
            )
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
