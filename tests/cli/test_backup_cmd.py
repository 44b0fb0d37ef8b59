"""`tradewatch backup` and `tradewatch restore` through the real CLI: exit codes, one-line errors, --force, the demo."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app

runner = CliRunner()

_spec = importlib.util.spec_from_file_location(
    "backup_fixture", Path(__file__).resolve().parents[1] / "flows" / "test_backup.py"
)
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)


def run(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def assert_one_line_error(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.fixture(scope="module")
def _template(tmp_path_factory) -> Path:
    return fixture.build_warehouse(tmp_path_factory.mktemp("backup-cli") / "w.duckdb")


@pytest.fixture
def db(_template, tmp_path) -> Path:
    return Path(shutil.copy(_template, tmp_path / "w.duckdb"))


def test_backup_and_restore_round_trip(db, tmp_path):
    made = run("backup", str(tmp_path / "bk"), "--db", str(db))
    assert made.exit_code == 0, made.output
    assert f"Backed up {db}" in made.stdout and "Verified: every Parquet file reads back" in made.stdout
    assert "trade_flows" in made.stdout and "synthetic" not in made.stdout

    restored = run("restore", str(tmp_path / "bk"), "--db", str(tmp_path / "r.duckdb"), "--json")
    assert restored.exit_code == 0, restored.output
    answer = json.loads(restored.stdout)
    assert answer["target"] == str(tmp_path / "r.duckdb") and answer["kept"] is None and not answer["demo"]
    assert fixture.table_stats(tmp_path / "r.duckdb") == fixture.table_stats(db)
    assert answer["next_load_id"] == fixture._max_load_id(db) + 1


def test_backup_into_an_existing_folder_is_one_line(db, tmp_path):
    (tmp_path / "bk").mkdir()
    (tmp_path / "bk" / "old.txt").write_text("x")
    assert_one_line_error(run("backup", str(tmp_path / "bk"), "--db", str(db)),
                          str(tmp_path / "bk"), "already exists; expected a new (or empty) folder")
    assert_one_line_error(run("backup", str(tmp_path / "b2"), "--db", str(tmp_path / "none.duckdb")),
                          "no warehouse here yet")
    assert not (tmp_path / "b2").exists()


def test_restore_of_a_tampered_backup_is_one_line(db, tmp_path):
    assert run("backup", str(tmp_path / "bk"), "--db", str(db)).exit_code == 0
    parquet = tmp_path / "bk" / "trade_flows.parquet"
    parquet.write_bytes(parquet.read_bytes()[:-40])
    assert_one_line_error(run("restore", str(tmp_path / "bk"), "--db", str(tmp_path / "r.duckdb")),
                          str(parquet), "SHA-256", "changed or truncated")
    assert not (tmp_path / "r.duckdb").exists()
    assert_one_line_error(run("restore", str(tmp_path / "nowhere"), "--db", str(tmp_path / "r.duckdb")),
                          "nowhere: is not a folder")


def test_restore_over_data_needs_force(db, tmp_path):
    assert run("backup", str(tmp_path / "bk"), "--db", str(db)).exit_code == 0
    assert_one_line_error(run("restore", str(tmp_path / "bk"), "--db", str(db)), str(db), "holds data",
                          "pass --force")
    forced = run("restore", str(tmp_path / "bk"), "--db", str(db), "--force")
    assert forced.exit_code == 0, forced.output
    assert f"The warehouse it replaced is kept as {db}.before-restore." in forced.stdout
    assert (tmp_path / "w.duckdb.before-restore").is_file()


def test_backup_of_the_demo_says_it_is_synthetic(tmp_path):
    from tradewatch.flows import ingest, warehouse
    from tradewatch.flows.core import settings

    settings.home().mkdir(parents=True, exist_ok=True)
    with warehouse.opened(settings.demo_db_path()) as con:
        ingest.load_file(con, fixture.COMEXT, source_label="demo")
    made = run("backup", str(tmp_path / "bk"))
    assert made.exit_code == 0, made.output
    assert "synthetic demo data" in made.stdout and str(settings.demo_db_path()) in made.stdout
    restored = run("restore", str(tmp_path / "bk"), "--force")
    assert restored.exit_code == 0, restored.output
    assert "synthetic demo data" in restored.stdout and str(settings.demo_db_path()) in restored.stdout
