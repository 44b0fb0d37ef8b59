"""A --db that is not a tradewatch warehouse is refused in one line by every command, and left untouched."""

from __future__ import annotations

import duckdb
import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app

COMMANDS = [["detect"], ["status"], ["status", "--revisions"], ["runs"], ["flags", "list"], ["report"],
            ["detect", "--reproduce", "latest"], ["backup", "{tmp}/backup"]]


@pytest.fixture(params=["csv", "duckdb"])
def not_a_warehouse(request, tmp_path):
    if request.param == "csv":
        path = tmp_path / "flags.csv"
        path.write_text("rank,score\n1,0.9\n")
        return path, "not a DuckDB database file"
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.close()
    return path, "a DuckDB database but not a tradewatch warehouse"


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_refuses_it_in_one_line(command, not_a_warehouse, tmp_path):
    path, why = not_a_warehouse
    before = path.read_bytes()
    args = [part.replace("{tmp}", str(tmp_path)) for part in command]
    done = CliRunner().invoke(app, [*args, "--db", str(path)])
    assert done.exit_code == 2, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --db {path}: is ") and why in lines[0], done.stderr
    assert path.read_bytes() == before, "the file is left as it was"
