"""What `speeched eval` prints: scores side by side (units in every label), then what went wrong."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from speeched.errors import PartialFailure


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}" if pct else f"{value:.2f}"


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """A short table: normalised and raw scores (WER/CER in %, BLEU/chrF 0-100), then diagnostics."""
    console = console or Console(stderr=False, soft_wrap=True)
    task = summary["task"]
    table = Table(
        title=f"{summary['data']} — {summary['num_utterances']} utterances, {summary['decoding']['strategy']}"
    )
    table.add_column("metric")
    table.add_column(f"normalised ({summary['normalizer']['name']})", justify="right")
    table.add_column("raw", justify="right")
    norm, raw = summary["normalized"], summary["raw"]
    if task == "asr":
        table.add_row("WER %", _fmt(norm["wer"], True), _fmt(raw["wer"], True))
        table.add_row("CER %", _fmt(norm["cer"], True), _fmt(raw["cer"], True))
        table.add_row(
            "word errors S / D / I",
            f"{norm.get('substitutions', 0)} / {norm.get('deletions', 0)} / {norm.get('insertions', 0)}",
            f"{raw.get('substitutions', 0)} / {raw.get('deletions', 0)} / {raw.get('insertions', 0)}",
        )
    else:
        table.add_row("BLEU (0-100)", _fmt(norm["bleu"]), _fmt(raw["bleu"]))
        table.add_row("chrF (0-100)", _fmt(norm["chrf"]), _fmt(raw["chrf"]))
    console.print(table)
    d = summary["diagnostics"]
    n = summary["num_utterances"]
    ratio = summary.get("length_ratio")
    console.print(
        f"hyp/ref length ratio {ratio:.3f}" if ratio is not None else "hyp/ref length ratio n/a",
        f"| hit token cap {d['hit_token_cap']}/{n} | loops {d['repetition_loops']}/{n} "
        f"| identical across a batch {d['identical_in_batch']}/{n} | empty {d['empty_hypotheses']}/{n} "
        f"| distinct hypotheses {d['distinct_hypotheses']}/{n}",
    )
    if d.get("not_decoded"):
        console.print(f"not decoded (digital silence, empty text): {d['not_decoded']}/{n}")
    if task == "st":
        console.print(f"sacreBLEU: {summary.get('bleu_signature')}  chrF: {summary.get('chrf_signature')}")
        if summary.get("bleu_tokenizer_note"):
            console.print(f"[yellow]note:[/] {summary['bleu_tokenizer_note']}")
    console.print(f"normaliser: {summary['normalizer']['description']}")
    console.print(
        f"{summary['audio_seconds']:.1f} s of audio decoded in {summary['decode_seconds']:.1f} s "
        f"(RTFx {summary['rtfx']}); {summary['decoding']['num_batches']} batches on {summary['decoding']['device']}"
    )
    if d["degenerate"]:
        ex = (d["repetition_loop_examples"] or d["identical_in_batch_examples"])[:1]
        console.print(f"[yellow]warning:[/] {d['degenerate']} degenerate hypotheses, e.g. {ex}")
    for warning in summary.get("warnings") or []:  # e.g. number words under the english normaliser
        console.print(f"[yellow]warning:[/] {warning}")
    check = summary.get("batching_check")
    if check:
        verdict = (
            "identical" if check["identical"] else f"[red]{check['compared'] - check['agree']} differ[/]"
        )
        console.print(f"batch size 1 vs batched: {check['agree']}/{check['compared']} agree ({verdict})")
    if summary.get("files"):
        console.print(f"wrote {summary['files']['predictions']} and {summary['files']['summary']}")


def raise_if_failed(summary: dict[str, Any]) -> None:
    """Exit 1 (PartialFailure) when some utterances could not be scored; the rest was evaluated."""
    failed = summary.get("num_failed", 0)
    if not failed:
        return
    report = summary["data_report"]
    where = f"; see {report['report']}" if report.get("report") else ""
    reasons = dict(report.get("dropped") or {})
    for reason, n in (summary.get("failed_reasons") or {}).items():
        reasons[reason] = reasons.get(reason, 0) + n
    what = ", ".join(f"{n} {r}" for r, n in reasons.items())
    total = report["total"]
    raise PartialFailure(
        f"{failed} of {total} utterances could not be used ({what}){where}; the rest were scored"
    )
