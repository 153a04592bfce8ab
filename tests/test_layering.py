"""The package layout, enforced: imports read from the source of every module in speeched/.

Layers (an arrow may only point down or sideways where listed):

    commands/, cli.py                       → anything in the library
    training/  evaluation/  transcription/  export/
                                            → inference/, modeling/, data/ (training → evaluation, export too)
    inference/                              → modeling/, data/
    modeling/          data/                → themselves only (never each other)
    errors.py                               → nothing of speeched (everyone may import it)

Library modules import at module level; a function-level import is allowed only in commands/ and
cli.py (start-up time of `speeched --help`) and for optional dependencies (OPTIONAL below). No cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "speeched"

BASE = {"errors"}
ALLOWED: dict[str, set[str]] = {
    "commands": {"*"},
    "cli": {"*"},
    "__init__": {"modeling"},
    "training": {"training", "evaluation", "export", "inference", "modeling", "data"},
    "evaluation": {"evaluation", "inference", "modeling", "data"},
    "transcription": {"transcription", "inference", "data"},
    "export": {"export", "inference", "modeling", "data"},
    "inference": {"inference", "modeling", "data"},
    "modeling": {"modeling"},
    "data": {"data"},
    "errors": set(),
}
# Optional or heavy-and-rarely-needed dependencies that may be imported inside a function.
OPTIONAL = {
    "onnx",
    "onnxruntime",
    "silero_vad",
    "pyroomacoustics",
    "audiomentations",
    "piper",  # the `voices` extra (speeched.data.piper_voice)
    "tensorboard",
    "wandb",
    "huggingface_hub",
    "psutil",
    "deepspeed",
}


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level?) for every import in the file (TYPE_CHECKING skipped)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                out.append((child.module, child.lineno, top))
            elif isinstance(child, ast.ImportFrom) and child.level:
                raise AssertionError(
                    f"{path}:{child.lineno}: relative import; use absolute speeched.* imports"
                )
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(tree, True)
    return out


def _target_layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "speeched" or len(parts) == 1:
        return None
    return parts[1]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_layering(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED, f"{path}: new top-level area {layer!r}: add it to the layering rules"
    allowed = ALLOWED[layer]
    problems = []
    for module, line, top in _imports(path):
        target = _target_layer(module)
        if target is not None and target not in BASE and "*" not in allowed and target not in allowed:
            problems.append(f"{path.relative_to(ROOT.parent)}:{line}: {layer} must not import {module}")
        lazy_ok = layer in ("commands", "cli") or module.split(".")[0] in OPTIONAL
        if not top and not lazy_ok:
            problems.append(
                f"{path.relative_to(ROOT.parent)}:{line}: import of {module} inside a function "
                "(import at module level; lazy imports only in commands/ and for optional dependencies)"
            )
    assert not problems, "\n".join(problems)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    names = {_module_name(p): p for p in _modules()}
    for name, path in names.items():
        deps = set()
        for module, _, top in _imports(path):
            if not top or not module.startswith("speeched"):
                continue
            # `from speeched.x import y` may name a submodule y or an attribute of x
            deps.add(module if module in names else module.rsplit(".", 1)[0])
        graph[name] = {d for d in deps if d in names and d != name}
    # a package's __init__ importing its own submodules is not a cycle with them
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if state.get(dep) is None:
                found = dfs(dep)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            cycle = dfs(node)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_rules_catch_a_bad_arrow(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("from speeched.data.sources import load_source\n\ndef f():\n    import json\n")
    imports = _imports(bad)
    assert ("speeched.data.sources", 1, True) in imports
    assert ("json", 4, False) in imports
