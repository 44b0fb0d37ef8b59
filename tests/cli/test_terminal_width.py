"""Tables fit the terminal: at 80 columns `detect` and `flags list` use a compact layout in which every
column is legible and every row shows its route id; --wide shows everything; a footer says how many."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app

runner = CliRunner()
_spec = importlib.util.spec_from_file_location(
    "review_fixture", Path(__file__).resolve().parents[1] / "detect" / "conftest.py")
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("width") / "w.duckdb"
    fixture.build_detectable_warehouse(path)
    return str(path)


def lines_of(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize("columns", ["80", "100", "120"])
def test_detect_fits_the_terminal_with_ids(db, columns):
    result = runner.invoke(app, ["detect", "--db", db], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert max(len(line) for line in out.splitlines()) <= int(columns)
    header = next(line for line in lines_of(out) if " score " in line)
    for name in ("#", "score", "route", "product", "growth", "excess", "id"):
        assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", header), (name, header)
    row = next(line for line in lines_of(out) if "DEU→KAZ→RUS" in line)
    cells = row.split()
    assert cells[0] == "1" and "854231" in cells and re.fullmatch(r"[0-9a-f]{10}", cells[-1])
    assert re.search(r"1 of 1 flagged shown — `tradewatch flags show ID` for the evidence", out)
    # the id shown is one `flags show` takes
    shown = runner.invoke(app, ["flags", "show", cells[-1], "--db", db], env={"COLUMNS": "120"})
    assert shown.exit_code == 0 and "DEU" in shown.stdout


def test_detect_wide_shows_every_column(db):
    result = runner.invoke(app, ["detect", "--db", db, "--wide"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    for name in ("baseline → recent", "to target", "reason"):
        assert name in result.stdout
    assert "exports of 854231" in result.stdout


def test_flags_list_fits_80_columns(db):
    runner.invoke(app, ["detect", "--db", db], env={"COLUMNS": "80"})
    result = runner.invoke(app, ["flags", "list", "--db", db], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    row = next(line for line in lines_of(result.stdout) if "DEU→KAZ→RUS" in line)
    cells = row.split()
    assert re.fullmatch(r"[0-9a-f]{10}", cells[0]) and "new" in cells and "854231" in cells
    assert sum("DEU→KAZ→RUS" in line for line in result.stdout.splitlines()) == 1  # one line per route
