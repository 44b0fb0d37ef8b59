"""ECB USD-per-EUR monthly rates: loaded into fx_rates, missing months never filled in, reloads replace."""

from __future__ import annotations

import datetime as dt

import pytest

from ingest_helpers import FIXTURES, Reply, home, server  # noqa: F401  (fixtures)
from tradewatch.flows import ingest, warehouse
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.sources import ecb

ECB_FILE = FIXTURES / "ecb" / "EXR_M.USD.EUR.SP00.A.csv"


def test_rates_loaded_and_read_back(home):
    con = warehouse.connect(home / "w.duckdb")
    assert ecb.rates(con).height == 0  # nothing loaded: no rate, never a made-up one
    result = ecb.load_rates(con, ECB_FILE)
    assert (result.rows, result.quarantined, result.first_period, result.last_period) == (3, 1, "2021-12", "2022-02")
    frame = ecb.rates(con)
    assert frame["period"].to_list() == [dt.date(2021, 12, 1), dt.date(2022, 1, 1), dt.date(2022, 2, 1)]
    assert frame["rate"].to_list() == [1.1304, 1.1314, 1.1342]
    assert set(frame["base"]) == {"EUR"} and set(frame["quote"]) == {"USD"}
    assert con.execute("SELECT reason FROM quarantine").fetchone()[0] == 'OBS_VALUE empty is not a number'
    assert ecb.load_rates(con, ECB_FILE).status == "unchanged"
    assert ecb.status_row(con)["rows"] == 3


def test_revised_rate_replaces_the_month(home, tmp_path):
    con = warehouse.connect(home / "w.duckdb")
    ecb.load_rates(con, ECB_FILE)
    revised = tmp_path / "rev.csv"
    revised.write_text("TIME_PERIOD,OBS_VALUE\n2022-01,1.2000\n")
    ecb.load_rates(con, revised)
    frame = ecb.rates(con)
    assert frame.height == 3 and frame.filter(frame["period"] == dt.date(2022, 1, 1))["rate"].item() == 1.2


def test_other_series_is_refused(home, tmp_path):
    other = tmp_path / "gbp.csv"
    other.write_text("KEY,TIME_PERIOD,OBS_VALUE\nEXR.M.GBP.EUR.SP00.A,2022-01,0.84\n")
    con = warehouse.connect(home / "w.duckdb")
    with pytest.raises(InputError, match="line 2: series EXR.M.GBP.EUR.SP00.A"):
        ecb.load_rates(con, other)
    assert ecb.rates(con).height == 0


def test_ingest_ecb_downloads_from_the_api(home, server):
    server.route("/service/data/EXR/M.USD.EUR.SP00.A", Reply(200, ECB_FILE.read_bytes(), {"Content-Type": "text/csv"}))
    result = ingest.ingest_ecb(home / "w.duckdb", base_url=f"{server.url}/service")
    assert result["rows"] == 3 and result["download"] == "downloaded"
    assert server.requests[0].query == {"format": "csvdata"}
