"""`tradewatch ingest comext-api` through the real CLI against a loopback stand-in of Eurostat's dissemination API: a load with a 413 split, an asynchronous answer and a 503, the Prefect flow, a malformed answer and bad options in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import duckdb
import pytest

FLOWS_TESTS = Path(__file__).parents[1] / "flows"
sys.path.insert(0, str(FLOWS_TESTS))
from eurostat_standin import StandIn, value  # noqa: E402
from fakeserver import FakeServer, Reply  # noqa: E402
from ingest_helpers import quick_home  # noqa: E402
from test_ingest_cmd import invoke, one_line_error  # noqa: E402  (tests/cli is on sys.path)


@pytest.fixture
def home(tmp_path, monkeypatch):
    return quick_home(tmp_path, monkeypatch, RETRY_MAX_DELAY_S="0.02", RETRY_MAX_AFTER_S="0.05",
                      EUROSTAT_INTERVAL_S="0", EUROSTAT_POLL_S="0.01")


@pytest.fixture
def api():
    standin = StandIn()
    with FakeServer() as fake:
        fake.handle(standin)
        yield fake, standin


def ingest_args(server, db, *extra):
    return ["ingest", "comext-api", "--products", "85423190,84713000,TOTAL", "--partners", "KAZ,RUS",
            "--reporters", "DEU", "--from", "2022-01", "--to", "2022-02", "--base-url", server.url,
            "--db", str(db), *extra]


def stored(db) -> tuple[int, int, float]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        flows, value_sum = con.execute("SELECT count(*), sum(value) FROM trade_flows").fetchone()
        totals = con.execute("SELECT count(*) FROM trade_totals").fetchone()[0]
    finally:
        con.close()
    return flows, totals, value_sum or 0.0


def test_loads_through_a_413_split_an_asynchronous_answer_and_a_503(home, api):
    server, standin = api
    standin.max_cells = 8  # the unit (24 cells) is refused, then its halves
    standin.asynchronous = lambda key: key.split(".")[3] == "85423190"
    standin.failures = [Reply(503, b"busy", {"Retry-After": "0"})]
    db = home / "w.duckdb"
    result = invoke(*ingest_args(server, db), "--task-runner", "none", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["totals"]["rows"] == 24 and summary["totals"]["errors"] == []
    flows, totals, value_sum = stored(db)
    assert (flows, totals) == (16, 8)
    assert value_sum == sum(value("DE", p, k, f, m) for p in ("KZ", "RU") for k in ("85423190", "84713000")
                            for f in ("1", "2") for m in ("2022-01", "2022-02"))
    assert standin.jobs and any(job["polls"] > standin.polls for job in standin.jobs.values())
    again = invoke(*ingest_args(server, db), "--task-runner", "none", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout[again.stdout.index("{"):])["totals"]["unchanged"] == 1


@pytest.mark.slow
def test_the_prefect_flow_loads_products_and_totals_alike(home, api):
    server, _ = api
    db = home / "w.duckdb"
    result = invoke(*ingest_args(server, db), "--json")
    assert result.exit_code == 0, result.output
    assert stored(db)[:2] == (16, 8)


def test_a_malformed_answer_fails_in_one_line_and_loads_nothing(home, api):
    server, standin = api
    standin.malformed = True
    db = home / "w.duckdb"
    line = one_line_error(invoke(*ingest_args(server, db), "--task-runner", "none"))
    assert "malformed answer from the API: line 3 has 8 fields" in line and "nothing of it was loaded" in line
    assert not db.exists() or stored(db)[:2] == (0, 0)


@pytest.mark.parametrize("change, expected", [
    (("--products", "8542X"), "error: --products 8542X: expected CN8 codes"),
    (("--partners", "Narnia"), "error: --partners NARNIA: not an ISO alpha-3"),
    (("--reporters", "KAZ"), "error: --reporters KZ: DS-045409 reports the EU member states only"),
    (("--flow", "out"), "error: --flow out: expected import, export or both"),
    (("--from", "2022-13"), "error: --from 2022-13"),
    (("--base-url", "ftp://x"), "error: --base-url ftp://x: expected an http(s) URL"),
])
def test_bad_options_fail_in_one_line_naming_the_option(home, change, expected):
    args = ["ingest", "comext-api", "--products", "85423190", "--partners", "KAZ", "--from", "2022-01",
            "--to", "2022-02", "--db", str(home / "w.duckdb"), "--task-runner", "none"]
    index = args.index(change[0]) if change[0] in args else None
    if index is None:
        args += list(change)
    else:
        args[index + 1] = change[1]
    assert one_line_error(invoke(*args)).startswith(expected)
