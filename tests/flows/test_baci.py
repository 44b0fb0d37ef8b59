"""BACI annual CSV: thousands of USD and tonnes scaled, leading zeros restored, country codes through BACI's own
table; the release zip as CEPII ships it, year by year."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from ingest_helpers import STEPS, FIXTURES, home, record_steps  # noqa: F401  (fixtures)
from tradewatch.flows import ingest, warehouse
from tradewatch.flows.core.errors import InputError


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


# ------------------------------------------------------------------------------ a release zip as CEPII ships it

# The release's own table knows a code UN M49 does not (999 here), so its use shows in the rows.
RELEASE_CODES = (FIXTURES / "baci" / "country_codes_V202401.csv").read_text() + "999,Kosovo,XK,XKX\n"


def _release(tmp_path: Path, *, years=(2021, 2022), extra: dict[str, bytes] | None = None) -> Path:
    """A BACI release zip in CEPII's layout: one data file per year, the code tables and a readme."""
    data = (FIXTURES / "baci" / "BACI_HS17_Y2021_V202401.csv").read_text()
    release = tmp_path / "BACI_HS17_V202401.zip"
    with zipfile.ZipFile(release, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for year in years:
            zf.writestr(f"BACI_HS17_Y{year}_V202401.csv", data.replace("\n2021,", f"\n{year},"))
        zf.writestr("country_codes_V202401.csv", RELEASE_CODES)
        zf.writestr("product_codes_HS17_V202401.csv", "code,description\n010121,Horses\n")
        zf.writestr("Readme.txt", "BACI HS17 release V202401\n")
        for name, content in (extra or {}).items():
            zf.writestr(name, content)
    return release


def _flows(con) -> list[tuple]:
    return con.execute("""SELECT year(period), reporter_iso3, partner_iso3, product_code, value, net_weight_kg
                          FROM trade_flows ORDER BY ALL""").fetchall()


def test_release_zip_loads_each_year_as_its_csv_would_and_reloads_unchanged(home, tmp_path):
    release = _release(tmp_path)
    summary = ingest.ingest_paths(home / "w.duckdb", [release])
    assert [r.file for r in summary.results] == [f"{release}:BACI_HS17_Y2021_V202401.csv",
                                                f"{release}:BACI_HS17_Y2022_V202401.csv"]
    assert [(r.status, r.rows, r.quarantined) for r in summary.results] == [("ok", 7, 2), ("ok", 7, 2)]
    # The same rows as the unzipped CSV read with the same country table.
    codes = tmp_path / "codes.csv"
    codes.write_text(RELEASE_CODES)
    plain = ingest.ingest_paths(home / "plain.duckdb", [FIXTURES / "baci" / "BACI_HS17_Y2021_V202401.csv"],
                                country_codes=codes)
    assert plain.results[0].rows == 7
    con = warehouse.connect(home / "w.duckdb")
    zipped = _flows(con)
    con.close()
    con = warehouse.connect(home / "plain.duckdb")
    assert [r for r in zipped if r[0] == 2021] == _flows(con)
    con.close()
    assert sorted({r[0] for r in zipped}) == [2021, 2022]
    assert (2022, "XKX", "RUS", "854231", 1000.0, 1000.0) in zipped  # code 999 through the release's table
    again = ingest.ingest_paths(home / "w.duckdb", [release])
    assert [r.status for r in again.results] == ["unchanged", "unchanged"]
    # Every extracted member was removed: the scratch area holds nothing of this run.
    leftovers = [p for p in (home / "cache" / "extract").rglob("*") if p.is_file()]
    assert leftovers == []


def test_release_years_pick_members_and_a_range_outside_fails_before_loading(home, tmp_path):
    release = _release(tmp_path)
    summary = ingest.ingest_paths(home / "w.duckdb", [release], years=(2022, 2030))
    assert [r.file.rsplit(":", 1)[1] for r in summary.results] == ["BACI_HS17_Y2022_V202401.csv"]
    with pytest.raises(InputError, match=r"holds the years 2021–2022, none of 2010–2012"):
        ingest.ingest_paths(home / "w.duckdb", [release], years=(2010, 2012))
    con = warehouse.connect(home / "w.duckdb")
    assert [r[0] for r in con.execute("SELECT DISTINCT year(period) FROM trade_flows").fetchall()] == [2022]


def test_zip_without_baci_data_and_damaged_zip_are_one_line_errors(home, tmp_path):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("notes.csv", "a,b\n1,2\n")
    with pytest.raises(InputError, match=r"other\.zip: not a recognised trade-data file: a zip archive without BACI"):
        ingest.ingest_paths(home / "w.duckdb", [other])
    release = _release(tmp_path)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(release.read_bytes()[: release.stat().st_size // 2])
    with pytest.raises(InputError, match=r"cut\.zip: not a recognised trade-data file: a zip archive that cannot be read"):
        ingest.ingest_paths(home / "w.duckdb", [cut])
    assert not (home / "w.duckdb").exists() or warehouse.row_count(warehouse.connect(home / "w.duckdb")) == 0


def test_damaged_year_stops_there_and_earlier_years_stay(home, tmp_path):
    release = _release(tmp_path, years=(2021,), extra={"BACI_HS17_Y2022_V202401.csv": b"year,exporter\n2022,251\n"})
    with pytest.raises(InputError, match=r"BACI_HS17_Y2022_V202401\.csv line 1: header 'year,exporter'"):
        ingest.ingest_paths(home / "w.duckdb", [release])
    con = warehouse.connect(home / "w.duckdb")
    assert [r[0] for r in con.execute("SELECT DISTINCT year(period) FROM trade_flows").fetchall()] == [2021]


def test_member_path_climbing_out_is_refused(home, tmp_path):
    release = _release(tmp_path, years=(), extra={"../BACI_HS17_Y2021_V202401.csv": b"t,i,j,k,v,q\n"})
    with pytest.raises(InputError, match=r"leaves the extraction folder"):
        ingest.ingest_paths(home / "w.duckdb", [release])
    assert not (tmp_path / "BACI_HS17_Y2021_V202401.csv").exists()
    assert not (home / "cache" / "BACI_HS17_Y2021_V202401.csv").exists()


def test_member_over_the_size_limit_is_refused(home, tmp_path, monkeypatch):
    monkeypatch.setenv("TRADEWATCH_MAX_EXPANDED_BYTES", "100")
    with pytest.raises(InputError, match=r"over the 100-byte limit"):
        ingest.ingest_paths(home / "w.duckdb", [_release(tmp_path)])


def test_release_with_two_files_for_one_year_is_refused_before_loading(home, tmp_path):
    release = _release(tmp_path, extra={"old/BACI_HS17_Y2021_V202301.csv": b"t,i,j,k,v,q\n"})
    with pytest.raises(InputError, match=r"holds two data files for 2021"):
        ingest.ingest_paths(home / "w.duckdb", [release])
    assert warehouse.row_count(warehouse.connect(home / "w.duckdb")) == 0


def test_encrypted_member_is_refused(home, tmp_path):
    release = tmp_path / "BACI_HS17_V202401.zip"
    with zipfile.ZipFile(release, "w") as zf:
        zf.writestr("BACI_HS17_Y2021_V202401.csv", (FIXTURES / "baci" / "BACI_HS17_Y2021_V202401.csv").read_bytes())
    # Set the "encrypted" flag a password-protected release carries, in the local and the central header
    # (zipfile cannot write encrypted members itself).
    raw = bytearray(release.read_bytes())
    raw[6] |= 0x1
    central = raw.index(b"PK\x01\x02")
    raw[central + 8] |= 0x1
    release.write_bytes(bytes(raw))
    assert zipfile.ZipFile(release).getinfo("BACI_HS17_Y2021_V202401.csv").flag_bits & 0x1
    with pytest.raises(InputError, match=r"BACI_HS17_Y2021_V202401\.csv: member is encrypted"):
        ingest.ingest_paths(home / "w.duckdb", [release])
    assert warehouse.row_count(warehouse.connect(home / "w.duckdb")) == 0


def test_ingest_files_and_each_release_year_take_the_shared_steps_and_leave_no_parquet(home, tmp_path, monkeypatch):
    """`ingest files` runs download_step → parse_step → check_step → load_step for a file, and
    parse_step → check_step → load_step for each year of a release (its download is the zip itself); an
    unchanged year is recognised before it is parsed; no Parquet is left in the parse cache or scratch."""
    calls = record_steps(monkeypatch)
    csv = FIXTURES / "baci" / "BACI_HS17_Y2021_V202401.csv"
    release = _release(tmp_path, years=(2022, 2023))  # not 2021: that member's bytes are the CSV's
    summary = ingest.ingest_paths(home / "w.duckdb", [csv, release])
    assert [r.rows for r in summary.results] == [6, 7, 7]  # code 999 is only in the release's own table
    assert calls == list(STEPS) + list(STEPS[1:]) * 2
    calls.clear()
    again = ingest.ingest_paths(home / "w.duckdb", [release])
    assert [r.status for r in again.results] == ["unchanged", "unchanged"] and calls == []
    assert not list(home.rglob("*.parquet"))
