"""BACI annual CSV: thousands of USD and tonnes scaled, leading zeros restored, country codes through BACI's own table."""

from __future__ import annotations

import shutil

import pytest

from ingest_helpers import FIXTURES, home  # noqa: F401  (fixtures)
from tradewatch.flows import ingest, warehouse
from tradewatch.flows.errors import InputError


def test_baci_rows_scaled_and_mapped(home):
    con = warehouse.connect(home / "w.duckdb")
    result = ingest.load_file(con, FIXTURES / "baci" / "BACI_HS17_Y2021_V202401.csv")
    rows = con.execute("""SELECT reporter_iso3, partner_iso3, product_code, value, net_weight_kg, flow, freq,
                                 period::VARCHAR, currency, product_level FROM trade_flows ORDER BY ALL""").fetchall()
    assert ("FRA", "RUS", "010121", 12500.0, 750.0, "export", "A", "2021-01-01", "USD", 6) in rows
    assert ("FRA", "RUS", "854231", 1000250.0, None, "export", "A", "2021-01-01", "USD", 6) in rows  # q 'NA'
    assert ("USA", "KAZ", "854231", 3200.0, 1.0, "export", "A", "2021-01-01", "USD", 6) in rows  # 842 → USA
    assert ("CHE", "RUS", "901380", 1500.0, 2.0, "export", "A", "2021-01-01", "USD", 6) in rows  # 757 → CHE
    assert ("TWN", "RUS", "854232", 7000.0, None, "export", "A", "2021-01-01", "USD", 6) in rows  # S19 falls back to M49 490
    assert result.rows == 6 and result.quarantined == 3
    reasons = [r[0] for r in con.execute("SELECT reason FROM quarantine ORDER BY line").fetchall()]
    assert reasons == ["unknown exporter code i 999", 'k "8542" is not an HS6 code', 'v "x" is not a number']


def test_baci_without_country_table_uses_m49(home, tmp_path):
    shutil.copy(FIXTURES / "baci" / "BACI_HS17_Y2021_V202401.csv", tmp_path / "data.csv")
    con = warehouse.connect(home / "w.duckdb")
    result = ingest.load_file(con, tmp_path / "data.csv")
    assert result.rows == 6
    assert con.execute("SELECT count(*) FROM trade_flows WHERE reporter_iso3 = 'FRA'").fetchone()[0] == 2


def test_baci_code_table_is_not_data(home):
    with pytest.raises(InputError, match="BACI code table"):
        ingest.recognise(FIXTURES / "baci" / "country_codes_V202401.csv")


def test_baci_wrong_country_table_is_one_error(home, tmp_path):
    bad = tmp_path / "codes.csv"
    bad.write_text("code,name\n1,x\n")
    con = warehouse.connect(home / "w.duckdb")
    with pytest.raises(InputError, match="country_code"):
        ingest.load_file(con, FIXTURES / "baci" / "BACI_HS17_Y2021_V202401.csv", reader_options={"country_codes": bad})
