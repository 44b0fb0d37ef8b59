"""Comtrade CSV and JSON files with several breakdowns and HS levels give the right totals, never counted twice."""

from __future__ import annotations

import json

import pytest

from ingest_helpers import FIXTURES, home  # noqa: F401  (fixtures)
from tradewatch.flows import ingest, warehouse
from tradewatch.flows.core.errors import InputError

EXPECTED = {
    ("KAZ", "RUS", "export", "8542"): (1000.0, 4, 10.0),   # the total row, not 1000 + 600 + 400 + 300
    ("KAZ", "RUS", "export", "854231"): (400.0, 6, 4.0),   # one breakdown summed, not both
    ("KAZ", "RUS", "export", "85"): (5000.0, 2, None),
    ("KAZ", "RUS", "export", "8517"): (100.0, 4, None),    # second-partner rows, cross breakdown left out
    ("ARM", "RUS", "import", "8542"): (777.0, 4, None),
    ("USA", "RUS", "export", "8542"): (50.0, 4, None),     # Comtrade code 842
}


@pytest.mark.parametrize("name", ["breakdowns.csv", "breakdowns.json"])
def test_breakdowns_and_levels_give_the_right_totals(home, name):
    con = warehouse.connect(home / "w.duckdb")
    result = ingest.load_file(con, FIXTURES / "comtrade" / name)
    rows = con.execute("""SELECT reporter_iso3, partner_iso3, flow, product_code, value, product_level,
                                 net_weight_kg, currency, freq, strftime(period, '%Y-%m')
                          FROM trade_flows""").fetchall()
    got = {(r[0], r[1], r[2], r[3]): (r[4], r[5], r[6]) for r in rows}
    assert got == EXPECTED
    assert {r[7] for r in rows} == {"USD"} and {(r[8], r[9]) for r in rows} == {("M", "2022-03")}
    assert result.rows == 6 and result.value_sum == {"USD": 7327.0}
    assert result.quarantined == 4
    reasons = [r[0] for r in con.execute("SELECT reason FROM quarantine ORDER BY line").fetchall()]
    assert reasons[0].startswith("unknown partner code 9999")
    assert "TOTAL" in reasons[1] and "primaryValue" in reasons[2] and "repeats an earlier" in reasons[3]
    lines = [r[0] for r in con.execute("SELECT line FROM quarantine ORDER BY line").fetchall()]
    assert lines == ([16, 17, 18, 19] if name.endswith(".csv") else [15, 16, 17, 18])


def test_csv_and_json_agree(home):
    con = warehouse.connect(home / "w.duckdb")
    ingest.load_file(con, FIXTURES / "comtrade" / "breakdowns.csv")
    first = con.execute("SELECT * EXCLUDE (load_id) FROM trade_flows ORDER BY ALL").fetchall()
    again = ingest.load_file(con, FIXTURES / "comtrade" / "breakdowns.json")
    assert again.status == "ok"
    assert con.execute("SELECT * EXCLUDE (load_id) FROM trade_flows ORDER BY ALL").fetchall() == first


def test_leading_zeros_restored_from_aggr_level(home, tmp_path):
    path = tmp_path / "zeros.csv"
    path.write_text("freqCode,period,reporterCode,flowCode,partnerCode,cmdCode,aggrLevel,primaryValue\n"
                    "M,202101,398,X,643,10121,6,5\nM,202101,398,X,643,0101,4,7\n")
    con = warehouse.connect(home / "w.duckdb")
    ingest.load_file(con, path)
    assert sorted(con.execute("SELECT product_code, product_level FROM trade_flows").fetchall()) == [("0101", 4), ("010121", 6)]


def test_annual_json_and_empty_answer(home, tmp_path):
    annual = tmp_path / "a.json"
    annual.write_text(json.dumps({"count": 1, "data": [{"freqCode": "A", "refYear": 2021, "refMonth": 52, "period": "2021",
                                                        "reporterCode": 51, "flowCode": "X", "partnerCode": 643,
                                                        "cmdCode": "8542", "primaryValue": 12.5}]}))
    empty = tmp_path / "e.json"
    empty.write_text('{"elapsedTime":"0.1 secs","count":0,"data":[],"error":""}')
    con = warehouse.connect(home / "w.duckdb")
    assert ingest.load_file(con, annual).rows == 1
    assert con.execute("SELECT freq, period::VARCHAR FROM trade_flows").fetchall() == [("A", "2021-01-01")]
    assert ingest.load_file(con, empty).rows == 0


def test_json_error_body_is_one_clear_error(home, tmp_path):
    path = tmp_path / "err.json"
    path.write_text('{"elapsedTime":"0 secs","count":0,"data":null,"error":"Invalid cmdCode"}')
    con = warehouse.connect(home / "w.duckdb")
    with pytest.raises(InputError, match="Invalid cmdCode"):
        ingest.load_file(con, path)
    assert warehouse.row_count(con) == 0


def _comtrade_csv(path, product: str, value: float, partner: str = "643") -> None:
    header = ("freqCode,refYear,refMonth,period,reporterCode,reporterISO,flowCode,partnerCode,partnerISO,"
              "partner2Code,cmdCode,aggrLevel,customsCode,motCode,qty,qtyUnitAbbr,netWgt,primaryValue")
    row = f"M,2022,1,202201,398,KAZ,X,{partner},RUS,0,{product},6,C00,0,,,,{value}"
    path.write_text(header + "\n" + row + "\n")


def test_a_query_for_other_products_keeps_the_products_loaded_before(home, tmp_path):
    """Comtrade arrives per product list: fetching 851762 after 854231 for the same reporter-month must not
    delete 854231; a revised 854231 replaces only 854231."""
    con = warehouse.connect(home / "w.duckdb")
    first, second, revised = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    _comtrade_csv(first, "854231", 100.0)
    _comtrade_csv(second, "851762", 200.0)
    _comtrade_csv(revised, "854231", 150.0)
    for path in (first, second):
        ingest.load_file(con, path)
    assert con.execute("SELECT product_code, value FROM trade_flows ORDER BY 1").fetchall() == [
        ("851762", 200.0), ("854231", 100.0)]
    ingest.load_file(con, revised)
    assert con.execute("SELECT product_code, value FROM trade_flows ORDER BY 1").fetchall() == [
        ("851762", 200.0), ("854231", 150.0)]
    # The parse-to-Parquet path (Prefect flows, pipeline) does the same.
    _comtrade_csv(revised, "854231", 175.0)
    ingest.load_parsed(con, ingest.check_parsed(ingest.parse_file(revised)))
    assert con.execute("SELECT product_code, value FROM trade_flows ORDER BY 1").fetchall() == [
        ("851762", 200.0), ("854231", 175.0)]
