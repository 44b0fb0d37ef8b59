"""`tradewatch flags list|show|review|history` through the real CLI on a small fixture warehouse."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app

runner = CliRunner()

# The fixture warehouse builder lives with the detect tests; load it by path (tests are not a package).
_spec = importlib.util.spec_from_file_location(
    "review_fixture", Path(__file__).resolve().parents[1] / "detect" / "conftest.py"
)
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)


@pytest.fixture(scope="module")
def _template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("flags-cli") / "w.duckdb"
    fixture.build_review_warehouse(path)
    return path


@pytest.fixture
def db(_template, tmp_path) -> str:
    path = tmp_path / "w.duckdb"
    path.write_bytes(_template.read_bytes())
    return str(path)


def run(*args: str):
    # a wide terminal, so rich does not fold long cells and the assertions see whole words
    return runner.invoke(app, list(args), env={"COLUMNS": "250"})


def test_list_json_rows_carry_the_stable_id(db):
    result = run("flags", "list", "--db", db, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == [fixture.ROUTE_CHIPS, fixture.ROUTE_SCRIPT, fixture.ROUTE_MODEMS,
                                       fixture.ROUTE_LEDS, fixture.ROUTE_CARS]
    assert rows[0]["status"] == "new" and rows[0]["tier"] == "1" and rows[0]["run_id"] == fixture.RUN_NEW


def test_list_filters_sort_and_limit(db):
    result = run("flags", "list", "--db", db, "-f", "json", "--product", "85", "--sort", "excess", "--limit", "2")
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in json.loads(result.stdout)] == [fixture.ROUTE_CHIPS, fixture.ROUTE_MODEMS]
    result = run("flags", "list", "--db", db, "-f", "json", "--product", "8542")
    assert [r["product_code"] for r in json.loads(result.stdout)] == ["854231"]
    result = run("flags", "list", "--db", db, "-f", "json", "--transit", "KAZ", "--origin", "ita",
                 "--tier", "1", "--min-score", "0.1")
    assert json.loads(result.stdout) == []
    result = run("flags", "list", "--db", db, "-f", "json", "--tier", "3", "--run", "run-2023-02")
    assert {r["id"] for r in json.loads(result.stdout)} == {fixture.ROUTE_SCRIPT, fixture.ROUTE_LEDS}


def test_list_injection_attempt_is_refused_and_a_real_code_may_match_nothing(db):
    # Issue 15: a filter that is not a country is an error, no longer an empty list.
    result = run("flags", "list", "--db", db, "--transit", "KAZ' OR 1=1 --", "--format", "json")
    assert result.exit_code == 2 and "--transit KAZ' OR 1=1 --: not an ISO 3166 alpha-3 code" in result.stderr
    result = run("flags", "list", "--db", db, "--transit", "MNG", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    table = run("flags", "list", "--db", db, "--transit", "MNG")
    assert table.exit_code == 0 and "No flagged route matches" in table.stdout


def test_list_table_csv_and_parquet(db, tmp_path):
    table = run("flags", "list", "--db", db)
    assert table.exit_code == 0, table.output
    assert fixture.ROUTE_CHIPS in table.stdout and "DEU→KAZ→RUS" in table.stdout
    assert "<script>alert" in table.stdout  # shown as text, not interpreted
    csv = run("flags", "list", "--db", db, "--format", "csv")
    assert csv.stdout.splitlines()[0].startswith("id,run_id,rank,score,status")
    out = tmp_path / "flags.parquet"
    result = run("flags", "list", "--db", db, "--format", "parquet", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Wrote 5 routes" in result.stderr
    assert pl.read_parquet(out)["id"].to_list()[0] == fixture.ROUTE_CHIPS


@pytest.mark.parametrize("args, message", [
    (["--format", "parquet"], "--format parquet"),
    (["--out", "x.csv"], "--out x.csv"),
    (["--run", "nope"], "--run nope"),
    (["--format", "csv", "--out", "/no/such/folder/x.csv"], "does not exist"),
])
def test_list_bad_options_one_line_errors(db, args, message):
    result = run("flags", "list", "--db", db, *args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_list_without_warehouse_says_so(tmp_path):
    result = run("flags", "list", "--db", str(tmp_path / "none.duckdb"))
    assert result.exit_code == 2 and "no warehouse here yet" in result.stderr
    assert not (tmp_path / "none.duckdb").exists()


def test_show_draws_the_legs_and_lists_the_evidence(db):
    result = run("flags", "show", "r-deu-kaz", "--db", db)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert fixture.ROUTE_CHIPS in text and "Germany" in text and "Kazakhstan" in text
    assert "Electronic integrated circuits" in text and "CHPL tier" in text
    assert "onward_growth" in text and "unavailable: no transit→Russia data" in text
    legs = [line for line in text.splitlines() if line.strip().startswith(("DEU→KAZ", "DEU→RUS", "KAZ→RUS"))]
    assert len(legs) == 3 and all("█" in line for line in legs)
    marker = next(line for line in text.splitlines() if "▲" in line and "━" in line and "event" not in line)
    # the event marker sits under the first month of the surge on the DEU→KAZ leg
    assert legs[0].index("█") == marker.index("▲")
    # the loads of the months the run scored (its baseline start 2021-03 to its recent end 2022-12)
    assert "comext: 22 file(s), months 2021-03 … 2022-12" in text
    assert "full_v2_202103.7z" in text


def test_show_unknown_route_is_one_line_error(db):
    result = run("flags", "show", "nope", "--db", db)
    assert result.exit_code == 2 and "route nope" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_review_then_history_and_status(db, monkeypatch):
    monkeypatch.setenv("USER", "maria")
    result = run("flags", "review", fixture.ROUTE_MODEMS, "--status", "dismissed", "--note", "known [b]distributor[/b]",
                 "--run", fixture.RUN_OLD, "--db", db)
    assert result.exit_code == 0, result.output
    assert "dismissed by maria" in result.stdout and "UTC" in result.stdout
    result = run("flags", "review", "r-ita", "--status", "dismissed", "--note", "car dealer", "--by", "Ann",
                 "--run", fixture.RUN_OLD, "--db", db)
    assert result.exit_code == 0, result.output
    history = run("flags", "history", fixture.ROUTE_MODEMS, "--db", db)
    assert history.exit_code == 0, history.output
    assert "dismissed" in history.stdout and "maria" in history.stdout
    assert "[b]distributor[/b]" in history.stdout  # a note is text, not markup
    rows = json.loads(run("flags", "list", "--db", db, "-f", "json").stdout)
    status = {r["id"]: r["status"] for r in rows}
    assert status[fixture.ROUTE_MODEMS] == "reopened" and status[fixture.ROUTE_CARS] == "dismissed"
    reviewed = next(r for r in rows if r["id"] == fixture.ROUTE_CARS)
    assert reviewed["reviewed_by"] == "Ann" and reviewed["review_note"] == "car dealer"
    new = json.loads(run("flags", "list", "--db", db, "-f", "json", "--status", "new").stdout)
    assert fixture.ROUTE_MODEMS in [r["id"] for r in new] and fixture.ROUTE_CARS not in [r["id"] for r in new]


def test_history_of_unreviewed_route(db):
    result = run("flags", "history", fixture.ROUTE_CHIPS, "--db", db)
    assert result.exit_code == 0 and "No decision recorded" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--status", "new", "--note", "x"], "--status"),
    (["--status", "confirmed"], "--note"),
])
def test_review_bad_options(db, args, message):
    result = run("flags", "review", fixture.ROUTE_CHIPS, *args, "--db", db)
    assert result.exit_code == 2 and message in result.output


def test_help_lists_the_subcommands():
    result = run("flags", "--help")
    assert result.exit_code == 0
    for name in ("list", "show", "review", "history"):
        assert name in result.stdout


def test_decisions_survive_a_new_detect_run(tmp_path, monkeypatch):
    """detect → review → detect again: the decision, its history and the route id carry over."""
    monkeypatch.setenv("USER", "maria")
    db = str(fixture.build_detectable_warehouse(tmp_path / "w.duckdb"))
    first = run("detect", "--db", db, "--format", "json")
    assert first.exit_code == 0, first.output
    flagged = json.loads(first.stdout)
    assert flagged, "the fixture should make the engine flag DEU→KAZ 854231"
    route = flagged[0]["id"]
    listed = json.loads(run("flags", "list", "--db", db, "-f", "json").stdout)
    assert listed[0]["id"] == route and listed[0]["status"] == "new"
    first_run = listed[0]["run_id"]

    result = run("flags", "review", route[:8], "--status", "dismissed", "--note", "licensed distributor", "--db", db)
    assert result.exit_code == 0, result.output

    second = run("detect", "--db", db, "--format", "json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)[0]["id"] == route
    listed = json.loads(run("flags", "list", "--db", db, "-f", "json").stdout)
    assert listed[0]["run_id"] != first_run
    assert listed[0]["id"] == route and listed[0]["status"] == "dismissed"
    assert listed[0]["review_note"] == "licensed distributor" and listed[0]["reviewed_by"] == "maria"
    assert json.loads(run("flags", "list", "--db", db, "-f", "json", "--status", "new").stdout) == []
    history = run("flags", "history", route, "--db", db)
    assert "licensed distributor" in history.stdout and first_run in history.stdout

    # the engine's own rows render in `flags show` and in the report
    shown = run("flags", "show", route, "--db", db)
    assert shown.exit_code == 0, shown.output
    assert "DEU→KAZ" in shown.stdout and "▲" in shown.stdout and "dismissed" in shown.stdout
    out = tmp_path / "r.html"
    report = run("report", "--db", db, "--out", str(out))
    assert report.exit_code == 0, report.output
    assert route in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("args, expected", [
    (["--transit", "KAZZ"], "--transit KAZZ: not an ISO 3166 alpha-3 code or a country's name; did you mean KAZ?"),
    (["--origin", "Germny"], "--origin Germny: not an ISO 3166 alpha-3 code or a country's name; did you mean DEU?"),
    (["--tier", "5"], "--tier 5: expected a CHPL tier: 1, 2, 3, 3.A, 3.B, 4, 4.A, 4.B"),
    (["--product", "abc"], "--product abc: expected an HS or CN code (prefix) of 2 to 8 digits"),
])
def test_list_refuses_a_filter_that_cannot_match_in_one_line(db, args, expected):
    result = run("flags", "list", "--db", db, *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0]


def test_list_takes_country_names_and_lower_case_codes(db):
    by_code = json.loads(run("flags", "list", "--db", db, "-f", "json", "--origin", "DEU").stdout)
    assert by_code
    for spelling in ("deu", "Germany"):
        result = run("flags", "list", "--db", db, "-f", "json", "--origin", spelling)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == by_code


def test_review_needs_a_note(db):
    import duckdb

    def reviews() -> int:
        con = duckdb.connect(db, read_only=True)
        try:
            return con.execute("SELECT count(*) FROM reviews").fetchone()[0]
        finally:
            con.close()

    before = reviews()
    result = run("flags", "review", fixture.ROUTE_CHIPS, "--status", "watch", "--note", "  ", "--db", db)
    assert result.exit_code == 2 and "--note: expected a note" in result.stderr
    assert reviews() == before
