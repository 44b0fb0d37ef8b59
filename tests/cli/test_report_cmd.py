"""`tradewatch report` through the real CLI: writes one HTML file, default path, one-line errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from typer.testing import CliRunner

from tradewatch.cli.main import app

runner = CliRunner()

_spec = importlib.util.spec_from_file_location(
    "review_fixture", Path(__file__).resolve().parents[1] / "detect" / "conftest.py"
)
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)


def test_report_to_out_and_default_path(tmp_path, tradewatch_home):
    db = tmp_path / "w.duckdb"
    fixture.build_review_warehouse(db)
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", "--db", str(db), "--out", str(out), "--top", "2"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    text = out.read_text(encoding="utf-8")
    # a chart for each of the run's 5 flags; --top 2 opens the best two
    assert fixture.RUN_NEW in text and text.count('class="chart"') == 5
    assert text.count('<details class="chart-box" open>') == 2
    result = runner.invoke(app, ["report", "--db", str(db), "--run", fixture.RUN_OLD])
    assert result.exit_code == 0, result.output
    default = tradewatch_home / "reports" / f"report-{fixture.RUN_OLD}.html"
    assert result.stdout.strip() == str(default) and default.is_file()


def test_report_errors_are_one_line(tmp_path):
    db = tmp_path / "w.duckdb"
    fixture.build_review_warehouse(db)
    for args, message in ((["--out", str(tmp_path / "no" / "r.html")], "does not exist"),
                          (["--run", "nope"], "--run nope")):
        result = runner.invoke(app, ["report", "--db", str(db), *args])
        assert result.exit_code == 2, result.output
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["report", "--db", str(tmp_path / "missing.duckdb")])
    assert result.exit_code == 2 and "no warehouse here yet" in result.stderr
