"""Compose a model from two pretrained halves: the library function behind `speeched init`.

`init_model(spec, out)` checks the output location first (a non-empty directory is refused unless
`force`), composes the model in memory, writes it to a temporary sibling and moves it into place, so a
failed or interrupted init never leaves half a model (or a trained model's stale `best.json`) behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from speeched.modeling.configuration import ModelConfigError, check_extension_types
from speeched.modeling.ctc import build_ctc_vocab
from speeched.modeling.halves import (
    CROSS_ATTENTION_NAMES,
    HalfLoadError,
    check_decoder,
    check_speech_encoder,
    hub_offline,
    hub_unreachable,
    load_config,
)
from speeched.modeling.model import SpeechEncoderDecoderModel
from speeched.modeling.model_dir import (
    LoadedModel,
    ModelDirError,
    current_umask,
    load_feature_extractor,
    save_model_dir,
)
from speeched.modeling.prefix import set_prompt
from speeched.modeling.prompting import apply_prompt, describe, prompt_spec, resolve_prompt

logger = logging.getLogger("speeched")

EXTENSION_KEYS = (
    "coupling",
    "adaptor_layers",
    "adaptor_stride",
    "adaptor_kernel_size",
    "projector",
    "layer_weighting",
    "ctc_weight",
    "ctc_vocab",
    "ctc_units",
    "spec_augment",
    "prompt",
)
# What a directory may hold for `force` to clear it: a model directory or a training run. Anything else
# (a home directory, a source tree) is refused even with force.
REPLACEABLE = {
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "best.json",
    "checkpoints",
    "best",
    "metrics.jsonl",
}


@dataclass
class ComposeSpec:
    """Everything `init` (or a recipe's `model` section) says about how to build a model.

    Option dicts are already parsed and typed (the CLI parses `k=v` strings). `ctc_texts`: transcripts
    from which the CTC head's vocabulary is built (the caller reads them; modeling reads no manifests).
    """

    encoder: str
    decoder: str
    tokenizer: str | None = None
    feature_extractor: str | None = None
    encoder_options: dict[str, Any] = field(default_factory=dict)
    decoder_options: dict[str, Any] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    trust_remote_code: bool = False
    # speeched.modeling.prompting.resolve_prompt arguments: task, style, src_lang, tgt_lang, template
    prompt: dict[str, Any] = field(default_factory=dict)
    ctc_texts: list[str] | None = None


def check_sources(spec: ComposeSpec) -> None:
    """Both halves must be findable and fit for their part before anything is loaded; one message when
    neither is here and the hub is out of reach."""
    missing: dict[str, tuple[str, HalfLoadError]] = {}
    configs = {}
    for half in ("encoder", "decoder"):
        name = getattr(spec, half)
        try:
            configs[half] = load_config(name, trust_remote_code=spec.trust_remote_code)[0]
        except HalfLoadError as err:
            missing[half] = (name, err)
    if not missing:
        # Each half must be able to play its part, checked before the tokenizer or any weights load.
        check_speech_encoder(spec.encoder, configs["encoder"])
        check_decoder(spec.decoder, configs["decoder"])
        return
    if len(missing) == 1:
        raise next(iter(missing.values()))[1]
    cause = next(iter(missing.values()))[1].__cause__
    if not (hub_offline() or (cause is not None and hub_unreachable(cause))):
        raise next(iter(missing.values()))[1]
    why = "offline: HF_HUB_OFFLINE is set" if hub_offline() else "no network"
    raise HalfLoadError(
        f"neither the encoder {spec.encoder!r} nor the decoder {spec.decoder!r} is a local directory or in the "
        f"Hugging Face cache, and the hub cannot be reached ({why}): pass local directories, --encoder DIR "
        "--decoder DIR (folders with config.json and model.safetensors, e.g. downloaded elsewhere with "
        "`hf download NAME --local-dir DIR`; a folder with only config.json gives a randomly initialised half)"
    )


def load_tokenizer(spec: ComposeSpec) -> Any:
    source = spec.tokenizer or spec.decoder
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HalfLoadError(
            f"cannot load a tokenizer from {source!r}: pass --tokenizer DIR (a folder with tokenizer files). "
            f"Original error: {first}"
        ) from err


def compose(spec: ComposeSpec) -> LoadedModel:
    """Build model + tokenizer + feature extractor from two pretrained halves."""
    unknown = set(spec.extensions) - set(EXTENSION_KEYS)
    if unknown:
        raise ModelConfigError(f"unknown model option(s) {sorted(unknown)}; known: {list(EXTENSION_KEYS)}")
    check_extension_types(spec.extensions)  # before anything loads; ranges are checked by the config
    check_sources(spec)
    tokenizer = load_tokenizer(spec)
    kwargs: dict[str, Any] = {f"encoder_{k}": v for k, v in spec.encoder_options.items()}
    kwargs.update({f"decoder_{k}": v for k, v in spec.decoder_options.items()})
    kwargs.update(spec.extensions)
    if spec.ctc_texts is not None:
        kwargs["ctc_vocab"] = build_ctc_vocab(spec.ctc_texts, spec.extensions.get("ctc_units", "char"))
    kwargs.update(spec.generation)
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        spec.encoder, spec.decoder, tokenizer=tokenizer, trust_remote_code=spec.trust_remote_code, **kwargs
    )
    if model.config.coupling == "prefix" and model.config.prompt:
        set_prompt(model, tokenizer, model.config.prompt)  # the prompt's token ids travel with the config
    # The decoder prompt (language tokens) is checked against the tokenizer now: a wrong mBART code fails at init.
    apply_prompt(model, tokenizer, resolve_prompt(tokenizer, **spec.prompt))
    feature_extractor = load_feature_extractor(spec.feature_extractor or spec.encoder, model.config.encoder)
    model.init_report = build_init_report(model)
    return LoadedModel(model=model, tokenizer=tokenizer, feature_extractor=feature_extractor, path=Path("."))


EXTENSION_MODULES = ("enc_to_dec_proj", "length_adaptor", "layer_weighting", "ctc_head")


def build_init_report(model: Any) -> dict[str, Any]:
    """Which parameters came from a checkpoint and which were randomly initialised, per part.

    The training loop gives randomly initialised parameters the learning rate of new parts (a random
    LM-head transform trained at the pretrained decoder's 1e-4 learns ~10x too slowly).
    """
    info = getattr(model, "load_info", {}) or {}
    random_names: set[str] = set()
    halves: dict[str, Any] = {}
    for half in ("encoder", "decoder"):
        module = getattr(model, half)
        names = [f"{half}.{n}" for n, _ in module.named_parameters()]
        hi = info.get(half)
        if hi is None:
            halves[half] = {"source": "given as a module", "parameters": len(names), "random_init": 0}
            continue
        if hi.random_init:
            new = set(names)
        else:
            missing = {f"{half}.{k}" for k in hi.missing_keys}
            new = {n for n in names if n in missing}
        random_names |= new
        halves[half] = {
            "source": hi.source,
            "parameters": sum(p.numel() for n, p in model.named_parameters() if n in names),
            "random_init": sum(p.numel() for n, p in model.named_parameters() if n in new),
        }
    for n, _ in model.named_parameters():
        if n.split(".")[0] in EXTENSION_MODULES:
            random_names.add(n)
    check_pretrained_loaded(model, info, random_names)
    return {"parts": halves, "random_init_parameters": sorted(random_names)}


MOSTLY_NOT_LOADED = 0.5


def check_pretrained_loaded(model: Any, info: dict[str, Any], random_names: set[str]) -> None:
    """Stop when a *pretrained* half came mostly from random init: almost always a key-prefix mismatch
    (a checkpoint saved under another class), which would otherwise train from scratch in silence.
    Cross-attention is excluded: it is new by design."""
    for half in ("encoder", "decoder"):
        hi = info.get(half)
        if hi is None or hi.random_init:
            continue
        params = {
            n: p.numel()
            for n, p in model.named_parameters()
            if n.startswith(half + ".") and not any(k in n.lower() for k in CROSS_ATTENTION_NAMES)
        }
        total = sum(params.values())
        missing = sum(v for n, v in params.items() if n in random_names)
        if total and missing / total > MOSTLY_NOT_LOADED:
            examples = [n for n in params if n in random_names][:3]
            raise HalfLoadError(
                f"the {half} checkpoint {hi.source!r} left {100 * missing / total:.0f}% of the {half}'s parameters "
                f"randomly initialised (e.g. {examples}): its weight names do not match "
                f"{type(getattr(model, half)).__name__}. Check that it is a checkpoint of this architecture; to "
                "train from scratch on purpose, pass a directory holding only its config.json."
            )


def format_init_report(report: dict[str, Any]) -> str:
    """The load report as the preflight prints it."""
    lines = ["load report (parameters from the checkpoint / randomly initialised):"]
    for half, part in report.get("parts", {}).items():
        total, rand = part.get("parameters", 0), part.get("random_init", 0)
        lines.append(
            f"  {half:8s} {total - rand:>12,d} loaded / {rand:>11,d} random   from {part.get('source', '?')}"
        )
    new = [n for n in report.get("random_init_parameters", []) if n.split(".")[0] in EXTENSION_MODULES]
    if new:
        modules = sorted({n.split(".")[0] for n in new})
        lines.append(f"  new parts (random init, lr_new): {', '.join(modules)}")
    return "\n".join(lines)


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse to write over a file or a non-empty directory (unless `force` and it holds a model or run)."""
    if out.exists() and not out.is_dir():
        raise ModelDirError(
            f"--out {out} is a file: give a directory for the model (it is created if missing)"
        )
    above = next((p for p in out.absolute().parents if p.exists()), None)
    if above is not None and not (above.is_dir() and os.access(above, os.W_OK)):
        what = "a file" if not above.is_dir() else "not writable"
        raise ModelDirError(f"cannot write the model next to {out}: {above} is {what}")
    if not out.is_dir():
        return
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    if not force:
        raise ModelDirError(
            f"--out {out} is not empty ({shown}): pass --force to replace what is there, or choose another "
            "directory (a trained model's best.json and checkpoints would otherwise sit next to new weights)"
        )
    if not REPLACEABLE & set(entries) or out.resolve() in (Path.home().resolve(), Path.cwd().resolve()):
        raise ModelDirError(
            f"--out {out} holds files that are not a speeched model or run ({shown}): --force only replaces "
            "a model directory; remove the files yourself or choose another directory"
        )


def init_model(spec: ComposeSpec, out: str | Path, force: bool = False) -> LoadedModel:
    """Compose and write a self-describing model directory to `out`.

    `out` must be missing or empty; with `force`, a directory holding a model or a training run is
    replaced. The model is written next to `out` first and moved into place once complete.
    """
    out = Path(out)
    check_output_dir(out, force)
    loaded = compose(spec)
    composed_from = {
        "encoder": spec.encoder,
        "decoder": spec.decoder,
        "encoder_options": spec.encoder_options,
        "decoder_options": spec.decoder_options,
        "extensions": {k: v for k, v in spec.extensions.items() if k != "ctc_vocab"},
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise ModelDirError(
            f"cannot write the model next to {out}: {err.strerror or err} ({out.parent})"
        ) from err
    try:
        save_model_dir(tmp, loaded.model, loaded.tokenizer, loaded.feature_extractor, composed_from)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; a model directory is shared like any
        if out.is_dir():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    loaded.path = out
    return loaded


def describe_init(loaded: LoadedModel) -> str:
    """What `speeched init` prints: the load report, the decoder prompt and where the model went."""
    model = loaded.model
    n = sum(p.numel() for p in model.parameters())
    return "\n".join(
        [
            format_init_report(model.init_report),
            describe(prompt_spec(model), loaded.tokenizer),
            f"wrote {loaded.path} ({n / 1e6:.1f} M parameters; coupling={model.config.coupling})",
        ]
    )
