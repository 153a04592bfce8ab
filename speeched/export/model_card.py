"""`write_model_card(model_dir, info)`: README.md (Hugging Face hub style, YAML front matter) + model_card.json.

The composition (encoder/decoder types, widths, layers, parameter counts) is read from the directory's own
config.json and safetensors header, so a card never disagrees with the weights beside it. What only the
caller knows comes in `info` (every key optional):

    name: str                       title of the card (default: the directory name)
    encoder / decoder: str          where each half came from (hub id or path)
    task: "asr" | "st"              speech recognition or translation
    language: str | list[str]       ISO codes (front matter `language:`)
    license: str                    front matter `license:`
    data: [{"name", "hours", "role": "train"|"dev"|"test", "path"?, "utterances"?}]
    recipe: str | dict              the recipe (path or its contents)
    metrics: [{"metric": "wer", "value": 0.025, "dataset": "dev", "normalizer": "whisper_en",
               "decoding": {"num_beams": 4, "ctc_weight": 0.3}}]
    compute: {"device": "cpu" | "1x A100", "wall_seconds", "steps", "processes", "precision"}
    limitations: [str]              in addition to the ones derived here (synthetic data, CTC head, ...)
    synthetic: bool                 the training speech is synthetic (e.g. `speeched data synth`)
    exported_from / export_notes    set by `speeched export`

`info` is stored as model_card.json, which `speeched export` reads (e.g. to name the dev WER of
joint CTC/attention and attention-only decoding when the CTC head is dropped).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open

from speeched.export.common import CARD_JSON


def _parameter_counts(model_dir: Path) -> dict[str, int]:
    """Parameters per top-level module (encoder, decoder, ctc_head, ...) from the safetensors header."""
    counts: dict[str, int] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a dict
                n = 1
                for d in f.get_slice(key).get_shape():
                    n *= int(d)
                top = key.split(".", 1)[0]
                counts[top] = counts.get(top, 0) + n
    return counts


def _half(cfg: dict[str, Any]) -> str:
    width = cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("n_embd")
    layers = cfg.get("num_hidden_layers") or cfg.get("encoder_layers") or cfg.get("n_layer")
    return f"{cfg.get('model_type', '?')}, {layers} layers, width {width}"


def _millions(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n / 1e6:.1f} M" if n >= 1e5 else f"{n:,}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _front_matter(info: dict[str, Any], name: str) -> str:
    task = info.get("task", "asr")
    meta: dict[str, Any] = {
        "library_name": info.get("library_name", "transformers"),
        "pipeline_tag": "automatic-speech-recognition",
        "tags": ["speeched", "speech-encoder-decoder", "speech-translation" if task == "st" else "asr"],
    }
    if info.get("language"):
        meta["language"] = info["language"] if isinstance(info["language"], list) else [info["language"]]
    if info.get("license"):
        meta["license"] = info["license"]
    bases = [
        b
        for b in (info.get("encoder"), info.get("decoder"))
        if b and "/" in str(b) and not Path(str(b)).exists()
    ]
    if bases:
        meta["base_model"] = bases
    results = []
    for m in info.get("metrics") or []:
        if m.get("value") is None:
            continue
        results.append(
            {
                "task": {"type": "automatic-speech-recognition", "name": "Speech recognition"},
                "dataset": {"name": m.get("dataset") or "dev", "type": m.get("dataset") or "dev"},
                "metrics": [{"type": m.get("metric", "wer"), "value": _shown(m), "name": _metric_name(m)}],
            }
        )
    if results:
        meta["model-index"] = [{"name": name, "results": results}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


# Error rates are recorded as fractions (as jiwer returns them) and shown in percent, labelled, as every
# speeched report shows them; BLEU/chrF are already on a 0-100 scale.
PERCENT = {"wer", "cer"}


def _shown(m: dict[str, Any]) -> float:
    value = float(m["value"])
    return round(100 * value, 2) if m.get("metric", "wer") in PERCENT else round(value, 2)


def _metric_name(m: dict[str, Any]) -> str:
    d = m.get("decoding") or {}
    unit = " %" if m.get("metric", "wer") in PERCENT else ""
    parts = [f"{m.get('metric', 'wer').upper()}{unit} ({m.get('dataset') or 'dev'}"]
    if d:
        parts.append(f", beams {d.get('num_beams', 1)}, ctc_weight {d.get('ctc_weight', 0)}")
    if m.get("normalizer"):
        parts.append(f", normaliser {m['normalizer']}")
    return "".join(parts) + ")"


def _limitations(info: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    out = list(info.get("limitations") or [])
    if info.get("synthetic"):
        out.append(
            "Trained on synthetic speech (a speech synthesiser's voices): expect much higher error rates "
            "on real recordings, other accents, noise and spontaneous speech."
        )
    if cfg.get("ctc_vocab"):
        out.append(
            "The CTC head is a speeched extension: transformers' own classes and the `pipeline` cannot run "
            "it, so outside speeched decoding is attention-only (see the metrics for the difference)."
        )
    if cfg.get("coupling") == "prefix":
        out.append("Prefix coupling (speech as a soft prompt of a decoder-only LLM) runs only in speeched.")
    hours = sum(
        float(d.get("hours") or 0) for d in info.get("data") or [] if d.get("role", "train") == "train"
    )
    if info.get("data") and hours < 10:
        out.append(
            f"Trained on {hours:.2f} h of speech: a narrow domain; do not expect general-purpose accuracy."
        )
    return out


def render_model_card(model_dir: Path, info: dict[str, Any]) -> str:
    cfg = json.loads((model_dir / "config.json").read_text())
    enc, dec = cfg.get("encoder") or {}, cfg.get("decoder") or {}
    name = info.get("name") or model_dir.resolve().name
    counts = _parameter_counts(model_dir)
    total = sum(counts.values())
    lines = [_front_matter(info, name), f"# {name}", ""]
    task = "speech translation" if info.get("task") == "st" else "speech recognition"
    lines += [
        f"A {task} model made of a pretrained speech encoder and a pretrained text decoder, fine-tuned "
        "together with speeched (`SpeechEncoderDecoderModel`).",
        "",
        "## Composition",
        "",
        "| part | from | architecture | parameters |",
        "|---|---|---|---|",
        f"| encoder | `{info.get('encoder', '?')}` | {_half(enc)} | {_millions(counts.get('encoder'))} |",
        f"| decoder | `{info.get('decoder', '?')}` | {_half(dec)} | {_millions(counts.get('decoder'))} |",
    ]
    for extra in sorted(set(counts) - {"encoder", "decoder"}):
        lines.append(f"| {extra} | speeched | - | {_millions(counts[extra])} |")
    lines += [
        "",
        f"Total: {_millions(total)} parameters; coupling: {cfg.get('coupling', 'cross_attention')}"
        + (f"; adaptor layers: {cfg['adaptor_layers']}" if cfg.get("adaptor_layers") else "")
        + (f"; projector: {cfg['projector']}" if cfg.get("projector") else "")
        + (f"; CTC head over {len(cfg['ctc_vocab'])} units" if cfg.get("ctc_vocab") else "")
        + ".",
        "",
    ]
    data = info.get("data") or []
    lines += ["## Data", ""]
    if data:
        lines += ["| source | role | hours | utterances |", "|---|---|---|---|"]
        for d in data:
            hours = d.get("hours")
            lines.append(
                f"| {d.get('name') or d.get('path', '?')} | {d.get('role', 'train')} | "
                f"{'?' if hours is None else f'{float(hours):.2f}'} | {d.get('utterances', '?')} |"
            )
    else:
        lines.append("Not recorded.")
    lines += ["", "## Training recipe", ""]
    recipe = info.get("recipe")
    if isinstance(recipe, dict):
        lines += ["```yaml", yaml.safe_dump(recipe, sort_keys=False).rstrip(), "```"]
    elif recipe:
        lines.append(f"`{recipe}`")
    else:
        lines.append("Not recorded.")
    lines += ["", "## Metrics", ""]
    metrics = info.get("metrics") or []
    if metrics:
        lines += ["| data | metric | value | normaliser | decoding |", "|---|---|---|---|---|"]
        for m in metrics:
            d = m.get("decoding") or {}
            decoding = f"beams {d.get('num_beams', 1)}, ctc_weight {d.get('ctc_weight', 0)}" if d else "?"
            lines.append(
                f"| {m.get('dataset') or m.get('split') or 'dev'} | {m.get('metric', '?')}"
                f"{' %' if m.get('metric') in PERCENT else ''} | "
                f"{_fmt(_shown(m)) if m.get('value') is not None else 'n/a'} | {m.get('normalizer') or 'none'} | "
                f"{decoding} |"
            )
    else:
        lines.append("Not measured.")
    compute = info.get("compute") or {}
    lines += ["", "## Training compute", ""]
    if compute:
        lines += [f"- {k.replace('_', ' ')}: {_fmt(v)}" for k, v in compute.items()]
    else:
        lines.append("Not recorded.")
    lines += ["", "## Limitations", ""]
    lines += [f"- {x}" for x in _limitations(info, cfg)] or ["- None recorded."]
    if info.get("export_notes"):
        lines += ["", "## Export", ""] + [f"- {x}" for x in info["export_notes"]]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        f"speeched transcribe audio.wav --model {name}",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(model_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write README.md (the card) and model_card.json (`info` as given) into `model_dir`; returns README's path."""
    root = Path(model_dir)
    (root / "README.md").write_text(render_model_card(root, info), encoding="utf-8")
    (root / CARD_JSON).write_text(json.dumps(info, indent=2, default=str, ensure_ascii=False) + "\n")
    return root / "README.md"
