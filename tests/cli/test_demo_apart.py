"""The demo lives apart (issue 15 item 2): seeded into its own warehouse, used only while the real one holds
no trade data, labelled 'synthetic demo data' in every output, and never mixed with a real ingest."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app
from tradewatch.flows.core import settings

runner = CliRunner()
FIXTURE = Path(__file__).resolve().parents[1] / "flows" / "fixtures" / "comext" / "full_202203.dat"


def sources(path: Path) -> set[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {row[0] for row in con.execute("SELECT DISTINCT source FROM trade_flows").fetchall()}
    finally:
        con.close()


@pytest.mark.slow
def test_demo_then_real_ingest_then_detect_never_mixes():
    first = runner.invoke(app, ["detect", "--format", "json", "--top", "5"])
    assert first.exit_code == 0, first.output
    assert "holds no trade data yet: using the synthetic demo data" in first.stderr
    rows = json.loads(first.stdout)
    assert rows and all(row["data"] == "synthetic demo data" for row in rows)
    demo_db, real_db = settings.demo_db_path(), settings.default_db_path()
    assert sources(demo_db) == {"demo"} and not real_db.exists()

    table = runner.invoke(app, ["flags", "list", "--limit", "3"], env={"COLUMNS": "100"})
    assert table.exit_code == 0 and "SYNTHETIC DEMO DATA — Flagged routes" in table.stdout
    exported = runner.invoke(app, ["flags", "list", "--format", "json", "--limit", "3"])
    assert {row["data"] for row in json.loads(exported.stdout)} == {"synthetic demo data"}
    report = runner.invoke(app, ["report", "--out", str(demo_db.parent / "r.html")])
    assert report.exit_code == 0, report.output
    assert "Synthetic demo data: the embedded demo world" in (demo_db.parent / "r.html").read_text()
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0 and "synthetic demo data: the embedded demo world" in status.stderr

    ingest = runner.invoke(app, ["ingest", "files", str(FIXTURE)])
    assert ingest.exit_code == 0, ingest.output
    assert "Real data loaded: the synthetic demo data" in ingest.stderr and "is no longer used" in ingest.stderr
    assert sources(real_db) == {"comext"} and sources(demo_db) == {"demo"}

    after = runner.invoke(app, ["detect", "--format", "json"])
    # One month of real data cannot support a baseline: detection says so, and never falls back to the demo.
    assert "demo" not in after.output.lower()
    assert sources(real_db) == {"comext"}
    listed = runner.invoke(app, ["flags", "list", "--format", "json"])
    assert "synthetic demo data" not in listed.output


def test_an_explicit_db_without_data_is_never_seeded_with_the_demo(tmp_path):
    from tradewatch.flows import warehouse

    new = tmp_path / "new.duckdb"
    result = runner.invoke(app, ["detect", "--db", str(new)])
    assert result.exit_code == 2 and not new.exists()  # nothing created, nothing seeded
    assert result.output.strip().splitlines() == [
        f"error: --db {new}: does not exist yet; load data into it with `tradewatch ingest files … --db {new}` (or "
        "`ingest comext`), or run `tradewatch detect` without --db to try the synthetic demo data"]
    for command in (["status"], ["flags", "list"], ["runs"], ["report"]):
        refused = runner.invoke(app, [*command, "--db", str(new)])
        assert refused.exit_code == 2 and "no warehouse here yet; load data into it" in refused.output, command
        assert not new.exists()

    empty = tmp_path / "empty.duckdb"
    warehouse.connect(empty).close()  # a warehouse tradewatch made, with no trade rows
    before = empty.read_bytes()
    result = runner.invoke(app, ["detect", "--db", str(empty)])
    assert result.exit_code == 2 and "holds no trade data; load data into it" in result.output
    assert empty.read_bytes() == before and not settings.demo_db_path().exists()
    status = runner.invoke(app, ["status", "--db", str(empty)])
    assert status.exit_code == 0 and "holds no trade data yet" in status.output
    listed = runner.invoke(app, ["flags", "list", "--db", str(empty)])
    assert listed.exit_code == 2 and "no trade data to run one on" in listed.output
    runs = runner.invoke(app, ["runs", "--db", str(empty)])
    assert runs.exit_code == 0 and "No detection run yet" in runs.output
