"""The CLI's command table, the README tour and the help texts agree."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main
from typer.testing import CliRunner

from speeched.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands() -> set[str]:
    group = typer.main.get_command(app)
    names = set()
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        sub = getattr(cmd, "commands", None)
        names.update(f"{name} {s}" for s in sub) if sub else names.add(name)
    return names


def _tour() -> str:
    block = README.split("## A tour of the CLI", 1)[1]
    return block.split("```bash", 1)[1].split("```", 1)[0]


def test_every_command_is_in_the_readme_tour_and_nothing_else() -> None:
    tour = _tour()
    shown = set()
    for line in tour.splitlines():
        m = re.match(r"speeched (data \w+|\w+)", line.strip())
        if m:
            shown.add(m.group(1))
    assert shown == _commands()


def test_tour_lines_paste_into_a_shell() -> None:
    # `--kind digits|sentences` once sat in the tour: pasted, it is a pipe into a command `sentences`
    for line in _tour().splitlines():
        code = line.split("#", 1)[0]
        assert "|" not in code, line


def test_every_command_help_has_examples_and_exit_codes() -> None:
    runner = CliRunner()
    for name in sorted(_commands()):
        result = runner.invoke(app, [*name.split(), "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (name, result.output)
        assert "Exit codes: 0 done; 1 some inputs failed" in " ".join(result.output.split()), name
        assert "Examples:" in result.output, name


def test_option_names_are_never_cut_at_80_columns() -> None:
    runner = CliRunner()
    group = typer.main.get_command(app)
    for name in sorted(_commands()):
        parts = name.split()
        cmd = group
        for p in parts:
            cmd = cmd.commands[p]  # type: ignore[attr-defined]
        out = runner.invoke(app, [*parts, "--help"], env={"COLUMNS": "80"}).output
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in out, (name, opt)
