"""`tradewatch runs` through the real CLI: the runs a warehouse holds, newest first, read-only."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app

runner = CliRunner()

_spec = importlib.util.spec_from_file_location(
    "review_fixture", Path(__file__).resolve().parents[1] / "detect" / "conftest.py"
)
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)


def run(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs-cli") / "w.duckdb"
    fixture.build_detectable_warehouse(path)
    first = run("detect", "--db", str(path), "--format", "json")
    second = run("detect", "--db", str(path), "--format", "json", "--event", "2022-04")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    return path


def test_runs_lists_each_run_newest_first_with_its_windows_data_and_flags(two_runs):
    result = run("runs", "--db", str(two_runs), "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["event"] for row in rows] == ["2022-04", "2022-03"]
    newest = rows[0]
    assert newest["recent"].startswith("2022-04") and newest["baseline"].endswith("2022-03")
    assert newest["data"] is None  # the fixture's rows were written without loads: nothing to name
    assert newest["flagged"] >= 1 and newest["candidates"] >= newest["flagged"]
    assert newest["model_version"].startswith("tradewatch-detect/") and "; ranker ranker-" in newest["model_version"]
    # the ids are the ones --run takes
    shown = run("flags", "list", "--db", str(two_runs), "--run", rows[1]["run_id"], "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert {row["run_id"] for row in json.loads(shown.stdout)} == {rows[1]["run_id"]}


def test_runs_table_and_limit(two_runs):
    result = run("runs", "--db", str(two_runs), "--limit", "1")
    assert result.exit_code == 0, result.output
    assert "2022-04" in result.stdout and "1 of 2 run(s) shown" in result.stdout
    assert "2.0 + ranker-" in result.stdout
    assert "2022-03  " not in result.stdout.replace("2022-03–", "")  # the older run (event 2022-03) is not listed


def test_runs_on_a_warehouse_without_runs(tmp_path):
    from tradewatch.flows import warehouse

    db = tmp_path / "empty.duckdb"
    warehouse.connect(db).close()
    result = run("runs", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "No detection run yet" in result.stdout


def test_data_names_each_source_and_the_months_the_run_read():
    from tradewatch.detect import runs

    loads = [{"source": "comext", "freq": "M", "period": "2021-01", "load_id": 1, "checksum": "a"},
             {"source": "comext", "freq": "M", "period": "2022-06", "load_id": 2, "checksum": "b"},
             {"source": "comtrade", "freq": "M", "period": "2021-03", "load_id": 3, "checksum": "c"}]
    assert runs._data(json.dumps(loads)) == "comext 2021-01–2022-06, comtrade 2021-03–2021-03"
    assert runs._data("[]") is None and runs._data("not json") is None and runs._data(None) is None
