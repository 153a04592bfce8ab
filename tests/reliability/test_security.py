"""Static security checks over speeched/ (AST, not grep: comments and docstrings do not count).

No unsafe YAML or pickle loading, no shells, remote code only when the user asks for it, and models
written as safetensors.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "speeched"
FILES = sorted(PACKAGE.rglob("*.py"))
SAFE_LOADERS = {"SafeLoader", "CSafeLoader"}
UNSAFE_YAML = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
NON_MODEL_SAVERS = ("tokenizer", "feature_extractor", "processor", "config")


def _calls() -> list[tuple[str, ast.Call]]:
    out = []
    for path in FILES:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        out += [
            (f"{path.relative_to(ROOT)}:{n.lineno}", n) for n in ast.walk(tree) if isinstance(n, ast.Call)
        ]
    return out


CALLS = _calls()


def _dotted(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # noqa: BLE001
        return ""


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_the_checks_see_the_package():
    assert len(FILES) > 20 and any(_dotted(c.func) == "torch.load" for _, c in CALLS)


def test_yaml_is_only_loaded_safely():
    bad = []
    for where, call in CALLS:
        func = _dotted(call.func)
        if func in {f"yaml.{n}" for n in UNSAFE_YAML}:
            bad.append(f"{where}: {func}")
        elif func in ("yaml.load", "yaml.load_all", "yaml.compose", "yaml.compose_all"):
            loader = _kw(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
            if loader is None or _dotted(loader).rsplit(".", 1)[-1] not in SAFE_LOADERS:
                bad.append(f"{where}: {func} without Loader=yaml.SafeLoader")
    assert not bad, bad


def test_torch_load_is_weights_only():
    bad = []
    for where, call in CALLS:
        if _dotted(call.func) == "torch.load":
            flag = _kw(call, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                bad.append(where)
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_no_pickle_eval_or_shell():
    bad = []
    for where, call in CALLS:
        func = _dotted(call.func)
        if func in (
            "os.system",
            "os.popen",
            "eval",
            "exec",
            "pickle.load",
            "pickle.loads",
            "subprocess.getoutput",
        ):
            bad.append(f"{where}: {func}")
        shell = _kw(call, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            bad.append(f"{where}: shell={_dotted(shell)}")
        if func.startswith("subprocess.") and call.args:
            first = call.args[0]
            if isinstance(first, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                bad.append(f"{where}: {func} with a command string (use an argument list)")
    assert not bad, bad


def test_trust_remote_code_defaults_false_and_is_only_passed_through():
    bad = []
    for path in FILES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                positional = args.posonlyargs + args.args
                pairs = list(
                    zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
                )
                pairs += [
                    (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None
                ]
                for arg, default in pairs:
                    if arg.arg != "trust_remote_code":
                        continue
                    value = default.args[0] if isinstance(default, ast.Call) and default.args else default
                    if not (isinstance(value, ast.Constant) and value.value is False):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: default {_dotted(default)}")
            elif isinstance(node, ast.AnnAssign) and _dotted(node.target) == "trust_remote_code":
                value = node.value
                if isinstance(value, ast.Call) and value.args:  # Field(False, ...)
                    value = value.args[0]
                if not (isinstance(value, ast.Constant) and value.value is False):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: field default {_dotted(node.value)}")
    for where, call in CALLS:
        value = _kw(call, "trust_remote_code")
        if isinstance(value, ast.Constant) and value.value is not False:
            bad.append(f"{where}: trust_remote_code={value.value!r} hard-coded")
    assert not bad, bad


def test_trust_remote_code_user_facing_defaults():
    from speeched.commands import init
    from speeched.training.recipe import ModelConfig

    assert ModelConfig.model_fields["trust_remote_code"].default is False
    default = inspect.signature(init.command).parameters["trust_remote_code"].default
    assert getattr(default, "default", default) is False
    for recipe in sorted((ROOT / "recipes").rglob("*.yaml")):
        model = (yaml.safe_load(recipe.read_text()) or {}).get("model") or {}
        assert model.get("trust_remote_code", False) is False, f"{recipe} enables trust_remote_code"


def test_models_are_saved_as_safetensors_only():
    bad = []
    for where, call in CALLS:
        func = _dotted(call.func)
        if func.endswith(".save_pretrained"):
            receiver = func.rsplit(".", 1)[0]
            if any(name in receiver for name in NON_MODEL_SAVERS):
                continue
            flag = _kw(call, "safe_serialization")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                bad.append(f"{where}: {func} without safe_serialization=True")
        if func == "torch.save" and call.args and "model" in _dotted(call.args[0]):
            bad.append(f"{where}: torch.save of model weights (pickle); use safetensors")
    assert not bad, bad


@pytest.mark.parametrize("decoder_layers", [1])
def test_init_writes_safetensors_and_no_pickled_weights(tmp_path, decoder_layers):
    from helpers import make_tiny_model_dir

    out = make_tiny_model_dir(tmp_path, decoder_layers=decoder_layers)
    assert (out / "model.safetensors").is_file()
    assert not [p.name for p in out.rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".pickle")]
