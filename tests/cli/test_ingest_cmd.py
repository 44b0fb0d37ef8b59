"""`tradewatch ingest …` and `tradewatch status` through the real CLI: reference totals, summaries, one-line errors, the key kept secret."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app

FLOWS_TESTS = Path(__file__).parents[1] / "flows"
sys.path.insert(0, str(FLOWS_TESTS))
from fakeserver import FakeServer, Reply  # noqa: E402
from ingest_helpers import quick_home  # noqa: E402

FIXTURES = FLOWS_TESTS / "fixtures"
COMEXT = (Path(__file__).parents[2] / ".." / "shared" / "data" / "comext").resolve()
SECRET = "cli-secret-key-0123456789"

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    return quick_home(tmp_path, monkeypatch, RETRY_MAX_DELAY_S="0.02", COMTRADE_INTERVAL_S="0")


def invoke(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.slow
def test_ingest_files_real_extract_then_status_shows_reference_totals(home):
    if not COMEXT.is_dir():
        pytest.skip(f"real Comext extract not found at {COMEXT}")
    db = str(home / "w.duckdb")
    files = [str(p) for p in sorted(COMEXT.glob("full_v2_*.7z"))]
    first = invoke("ingest", "files", *files, "--db", db, "--json")
    assert first.exit_code == 0, first.output
    totals = json.loads(first.stdout)["totals"]
    assert totals["rows"] == 895_729 and totals["value_sum"] == {"EUR": 94_085_770_205.0}
    status = invoke("status", "--db", db, "--json")
    rows = json.loads(status.stdout)["trade_flows"]
    assert len(rows) == 35 and sum(r["rows"] for r in rows) == 895_729
    assert sum(r["value_sum"] for r in rows) == 94_085_770_205
    assert {r["currency"] for r in rows} == {"EUR"} and all(r["file"].endswith(".7z") for r in rows)
    again = invoke("ingest", "files", *files, "--db", db, "--json")
    assert json.loads(again.stdout)["totals"]["unchanged"] == 35
    table = invoke("status", "--db", db)
    assert "94,085,770,205" in table.stdout and "2022-11" in table.stdout


def test_ingest_files_mixed_sources_and_summary_table(home):
    db = str(home / "w.duckdb")
    result = invoke("ingest", "files", str(FIXTURES / "comext" / "full_202203.dat"),
                    str(FIXTURES / "comtrade" / "breakdowns.json"), str(FIXTURES / "baci"), "--db", db)
    assert result.exit_code == 0, result.output
    assert "ingest summary" in result.stdout and "breakdowns.json" in result.stdout
    assert "│ total" in result.stdout and "11 " in result.stdout  # quarantined: 4 Comext + 4 Comtrade + 3 BACI
    report = json.loads(invoke("status", "--db", db, "--json").stdout)
    assert {r["source"] for r in report["trade_flows"]} == {"comext", "comtrade", "baci"}


def test_ingest_baci_release_zip_picks_years(home, tmp_path):
    import zipfile

    data = (FIXTURES / "baci" / "BACI_HS17_Y2021_V202401.csv").read_text()
    release = tmp_path / "BACI_HS17_V202401.zip"
    with zipfile.ZipFile(release, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for year in (2020, 2021, 2022):
            zf.writestr(f"BACI_HS17_Y{year}_V202401.csv", data.replace("\n2021,", f"\n{year},"))
        zf.write(FIXTURES / "baci" / "country_codes_V202401.csv", "country_codes_V202401.csv")
    db = str(home / "w.duckdb")
    result = invoke("ingest", "baci", str(release), "--from", "2021", "--db", db, "--json")
    assert result.exit_code == 0, result.output
    files = [f["file"] for f in json.loads(result.stdout)["files"]]
    assert files == [f"{release}:BACI_HS17_Y2021_V202401.csv", f"{release}:BACI_HS17_Y2022_V202401.csv"]
    periods = [r["period"] for r in json.loads(invoke("status", "--db", db, "--json").stdout)["trade_flows"]]
    assert periods == ["2021", "2022"]
    line = one_line_error(invoke("ingest", "baci", str(release), "--to", "2019", "--db", db))
    assert "holds the years 2020–2022, none of" in line


def test_ingest_comext_from_local_eurostat_without_prefect(home):
    import py7zr

    dat = FIXTURES / "comext" / "full_202203.dat"
    archive = home / "full_v2_202203.7z"
    with py7zr.SevenZipFile(archive, "w") as zf:
        zf.write(dat, dat.name)
    body = archive.read_bytes()
    with FakeServer() as server:
        server.route("/files", Reply(200, body, {"ETag": '"1"'}))
        args = ["ingest", "comext", "--from", "2022-03", "--to", "2022-03", "--base-url", server.url,
                "--task-runner", "none", "--db", str(home / "w.duckdb"), "--json"]
        first = invoke(*args)
        assert first.exit_code == 0, first.output
        totals = json.loads(first.stdout)["totals"]
        assert (totals["rows"], totals["quarantined"], totals["confidential"]) == (6, 4, 2)
        assert server.requests[0].query["file"] == "comext/COMEXT_DATA/PRODUCTS/full_v2_202203.7z"
        again = json.loads(invoke(*args).stdout)["totals"]
        assert again["unchanged"] == 1 and again["downloads"] == {"unchanged": 1}


def test_ingest_comext_server_error_is_one_line(home):
    with FakeServer() as server:
        server.route("/files", Reply(500, b"oops"))
        result = invoke("ingest", "comext", "--from", "2022-03", "--to", "2022-03", "--base-url", server.url,
                        "--task-runner", "none", "--db", str(home / "w.duckdb"))
    assert result.exit_code == 2, result.output
    *retries, line = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith("error: ") and "full_v2_202203.7z" in line and "HTTP 500" in line and "gave up" in line
    assert [text.split(" in ")[0] for text in retries] == [
        f"retrying: HTTP 500 from 127.0.0.1; retry {n}/5" for n in range(1, 6)]  # each retry said as it came


def test_each_download_retry_says_why_and_when_on_the_terminal(home):
    import py7zr

    dat = FIXTURES / "comext" / "full_202203.dat"
    archive = home / "full_v2_202203.7z"
    with py7zr.SevenZipFile(archive, "w") as zf:
        zf.write(dat, dat.name)
    busy = Reply(503, b"busy", {"Retry-After": "1"})
    with FakeServer() as server:  # a loopback Eurostat that fails twice, then answers
        server.route("/files", busy, busy, Reply(200, archive.read_bytes(), {"ETag": '"1"'}))
        result = invoke("ingest", "comext", "--from", "2022-03", "--to", "2022-03", "--base-url", server.url,
                        "--task-runner", "none", "--db", str(home / "w.duckdb"), "--json")
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("retrying:")] == [
        "retrying: HTTP 503 from 127.0.0.1; retry 1/5 in 1 s", "retrying: HTTP 503 from 127.0.0.1; retry 2/5 in 1 s"]
    assert json.loads(result.stdout)["totals"]["rows"] == 6


def test_ingest_files_progress_counts_files_and_rows(home, monkeypatch):
    monkeypatch.setenv("TRADEWATCH_PROGRESS", "1")  # the bars also when stderr is not a terminal
    result = invoke("ingest", "files", str(FIXTURES / "comext" / "full_202203.dat"), "--db", str(home / "w.duckdb"))
    assert result.exit_code == 0, result.output
    assert "loaded 1 of 1 file(s), 6 rows" in result.stderr


@pytest.mark.parametrize("args, needle", [
    (["ingest", "comext", "--from", "2022-xx", "--to", "2022-04"], "--from 2022-xx"),
    (["ingest", "comext", "--from", "2022-05", "--to", "2022-04"], "--from is after --to"),
    (["ingest", "comext", "--from", "2022-01", "--to", "2022-01", "--freq", "Q"], "--freq Q"),
    (["ingest", "comext", "--from", "2022-01", "--to", "2022-01", "--base-url", "ftp://x"], "--base-url ftp://x"),
    (["ingest", "comext", "--from", "2022-01", "--to", "2022-01", "--source-dir", "/nonexistent"], "--source-dir /nonexistent"),
    (["ingest", "comext", "--from", "2022-01", "--to", "2022-01", "--dask-address", "tcp://x:1"], "--dask-address"),
    (["ingest", "comtrade", "--reporters", "KAZ,QQQQ", "--from", "2022-01", "--to", "2022-01"], "--reporters QQQQ"),
    (["ingest", "comtrade", "--reporters", "KAZ", "--from", "2022-01", "--to", "2022-01", "--products", "85A"], "--products 85A"),
    (["ingest", "files", "/nonexistent.7z"], "/nonexistent.7z: no such file"),
    (["ingest", "baci", str(FIXTURES / "comtrade" / "breakdowns.csv")], "not a BACI file"),
    (["ingest", "files", str(FIXTURES / "baci" / "BACI_HS17_Y2021_V202401.csv"), "--country-codes", "/nope.csv"], "--country-codes /nope.csv"),
    (["ingest", "ecb", "--file", "/nope.csv"], "--file /nope.csv"),
    (["ingest", "baci", str(FIXTURES / "baci"), "--from", "22"], "--from 22: expected a year YYYY"),
    (["ingest", "baci", str(FIXTURES / "baci"), "--from", "2023", "--to", "2022"], "the first year is after the last"),
])
def test_bad_options_are_one_line_errors(home, args, needle):
    line = one_line_error(invoke(*args, "--db", str(home / "w.duckdb")))
    assert needle in line


def test_bad_file_among_good_loads_nothing(home, tmp_path):
    bad = tmp_path / "page.csv"
    bad.write_text("<html><body>Not found</body></html>")
    db = home / "w.duckdb"
    line = one_line_error(invoke("ingest", "files", str(FIXTURES / "comext" / "full_202203.dat"), str(bad), "--db", str(db)))
    assert "page.csv" in line and "HTML" in line
    assert not db.exists() or "comext" not in invoke("status", "--db", str(db)).stdout


def test_ecb_and_status_show_rates(home):
    db = str(home / "w.duckdb")
    result = invoke("ingest", "ecb", "--file", str(FIXTURES / "ecb" / "EXR_M.USD.EUR.SP00.A.csv"), "--db", db)
    assert result.exit_code == 0 and "3 months 2021-12 … 2022-02, 1 quarantined" in result.stdout
    report = json.loads(invoke("status", "--db", db, "--json").stdout)
    assert report["fx_rates"]["rows"] == 3 and report["fx_rates"]["unit"] == "USD per EUR"


def test_comtrade_key_never_printed(home, monkeypatch):
    monkeypatch.setenv("COMTRADE_API_KEY", SECRET)
    help_text = invoke("ingest", "comtrade", "--help").output
    assert SECRET not in help_text and "COMTRADE_API_KEY" in help_text
    with FakeServer() as server:
        server.route("/data/v1/get/C/M/HS", Reply(403, f"key {SECRET} is not allowed".encode()))
        result = invoke("ingest", "comtrade", "--reporters", "KAZ", "--from", "2022-01", "--to", "2022-01",
                        "--products", "8542", "--base-url", server.url, "--task-runner", "none",
                        "--db", str(home / "w.duckdb"))
        assert server.requests[0].headers.get("Ocp-Apim-Subscription-Key") == SECRET
    line = one_line_error(result)
    assert "HTTP 403" in line and "reporters 398" in line and SECRET not in result.output


def test_status_on_missing_warehouse_is_one_line(home):
    assert "no warehouse here yet" in one_line_error(invoke("status", "--db", str(home / "none.duckdb")))


@pytest.mark.slow
def test_ingest_comext_runs_the_prefect_flow(home, tmp_path, prefect_server, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    shutil.copy(FIXTURES / "comext" / "full_202203.dat", tmp_path / "full_202203.dat")
    result = invoke("ingest", "comext", "--from", "2022-03", "--to", "2022-03", "--source-dir", str(tmp_path),
                    "--db", str(home / "w.duckdb"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["totals"]["rows"] == 6
    (tmp_path / "full_202204.dat").write_text("<html>not data</html>")
    failed = invoke("ingest", "comext", "--from", "2022-04", "--to", "2022-04", "--source-dir", str(tmp_path),
                    "--db", str(home / "w.duckdb"))
    lines = [line for line in failed.stderr.splitlines() if line.strip() and not line.startswith("running the Prefect")]
    assert failed.exit_code == 2 and len(lines) == 1 and "full_202204.dat" in lines[0], failed.stderr


@pytest.mark.parametrize("command", ["comext", "comtrade", "comext-api"])
def test_prefect_logs_stay_off_the_terminal_unless_verbose(home, monkeypatch, command):
    # The Prefect flow's own console log lines are silenced (quiet) unless --verbose asks for them.
    from tradewatch.flows import prefect_flows

    monkeypatch.delenv("TRADEWATCH_DEBUG", raising=False)
    asked = []

    def flow(items, db, *, quiet, **kwargs):
        asked.append(quiet)
        return {"totals": {"files": 0, "rows": 0, "partitions": 0, "quarantined": 0, "confidential": 0,
                           "unchanged": 0, "value_sum": {}, "errors": []}, "files": []}

    monkeypatch.setattr(prefect_flows, "run_ingest_flow", flow)
    options = {"comext": [], "comtrade": ["--reporters", "KAZ"],
               "comext-api": ["--products", "85423190", "--partners", "KAZ", "--reporters", "DEU"]}[command]
    args = ["ingest", command, "--from", "2022-03", "--to", "2022-03", *options, "--db", str(home / "w.duckdb")]
    for extra in ([], ["--verbose"]):
        result = invoke(*args, *extra)
        assert result.exit_code == 0, result.output
    assert asked == [True, False]
