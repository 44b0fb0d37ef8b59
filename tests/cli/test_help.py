"""Help texts: no `<bool>` beside flags (they take no value), rich markup never eats text such as [dask]."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from tradewatch.cli.main import app


def _commands() -> list[list[str]]:
    """Every command path of the app: ['detect'], ['ingest', 'comext'], …"""
    root = typer.main.get_command(app)
    paths = []

    def walk(command, path: list[str]) -> None:
        if hasattr(command, "commands"):  # a group (typer's own, not a click.Group subclass)
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            paths.append(path)

    walk(root, [])
    return paths


COMMANDS = _commands()


def test_every_command_is_found():
    assert ["detect"] in COMMANDS and ["ingest", "comext"] in COMMANDS and ["flags", "review"] in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_help_shows_no_type_for_flags(path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    done = CliRunner().invoke(app, [*path, "--help"])
    assert done.exit_code == 0, done.output
    assert "<bool>" not in done.output
    assert "--help" in done.output


def test_help_keeps_square_brackets_of_extras(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    done = CliRunner().invoke(app, ["ingest", "comext", "--help"])
    assert "tradewatch[dask]" in done.output
    assert "<str>" in done.output  # options that take a value still show its type
