"""Comext bulk files: the real extract reproduces the reference totals exactly; Q-codes kept, bad rows quarantined; annual files; downloads."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import duckdb
import pytest

from ingest_helpers import FIXTURES, Reply, comext_dir, home, server  # noqa: F401  (fixtures)
from tradewatch.flows import ingest, warehouse
from tradewatch.flows.download import DownloadError
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.sources import comext

DAT = FIXTURES / "comext" / "full_202203.dat"

# ../shared/data/README.md: by partner and year (2022 is January–November), EUR.
REFERENCE = {
    ("RUS", 2020): 29_542_800_237, ("RUS", 2021): 33_195_079_129, ("RUS", 2022): 12_554_123_423,
    ("BLR", 2020): 1_962_774_563, ("BLR", 2021): 2_456_592_633, ("BLR", 2022): 2_687_870_783,
    ("KAZ", 2020): 1_896_207_381, ("KAZ", 2021): 1_817_524_475, ("KAZ", 2022): 3_657_553_749,
    ("GEO", 2020): 451_626_758, ("GEO", 2021): 549_385_971, ("GEO", 2022): 1_072_969_525,
    ("UZB", 2020): 622_125_861, ("UZB", 2021): 634_405_584, ("UZB", 2022): 984_730_133,
}


def _write_7z(dat: Path, archive: Path, member: str) -> Path:
    import py7zr

    with py7zr.SevenZipFile(archive, "w") as zf:
        zf.write(dat, member)
    return archive


@pytest.mark.slow
def test_real_extract_reproduces_reference_totals_and_reloads_unchanged(home, comext_dir):
    files = sorted(comext_dir.glob("full_v2_*.7z"))
    assert len(files) == 35
    con = warehouse.connect(home / "w.duckdb")
    results = ingest.load_files(con, files)
    assert {r.status for r in results} == {"ok"}
    count, total = con.execute("SELECT count(*), CAST(sum(value) AS HUGEINT) FROM trade_flows").fetchone()
    assert (count, total) == (895_729, 94_085_770_205)
    by_partner_year = {
        (partner, year): int(value) for partner, year, value in con.execute(
            "SELECT partner_iso3, year(period), CAST(sum(value) AS HUGEINT) FROM trade_flows GROUP BY ALL").fetchall()
    }
    assert by_partner_year == REFERENCE
    assert sum(r.quarantined for r in results) == 0
    before = con.execute("SELECT count(*), max(load_id) FROM loads").fetchone()
    again = ingest.load_files(con, files)
    assert {r.status for r in again} == {"unchanged"}
    assert con.execute("SELECT count(*), max(load_id) FROM loads").fetchone() == before
    assert con.execute("SELECT count(*), CAST(sum(value) AS HUGEINT) FROM trade_flows").fetchone() == (count, total)


def test_totals_over_procedures_q_codes_kept_bad_rows_quarantined(home):
    con = warehouse.connect(home / "w.duckdb")
    result = ingest.load_file(con, DAT)
    rows = {(r[0], r[1], r[2], r[3]): (r[4], r[5]) for r in con.execute(
        "SELECT reporter_iso3, partner_iso3, product_code, flow, value, net_weight_kg FROM trade_flows").fetchall()}
    assert rows[("DEU", "RUS", "85423190", "export")] == (1750.0, 15.0)  # three procedures summed
    assert rows[("GRC", "QUQ", "84713000", "export")] == (30.0, None)  # GR→alpha-3; Q-code kept
    assert rows[("DEU", "QSQ", "27101943", "export")] == (12.0, None)
    assert rows[("ITA", "RUS", "84715000", "export")] == (40.0, None)  # readable procedure kept, bad one refused
    assert rows[("NLD", "BLR", "01012100", "import")] == (3.0, None)
    assert result.rows == 6 and result.confidential == 2
    assert result.value_sum == {"EUR": 1750 + 70 + 30 + 12 + 40 + 3}
    got = con.execute("SELECT line, reason FROM quarantine ORDER BY line").fetchall()
    assert got == [
        (8, "unknown PARTNER code ZZ"),
        (9, 'PRODUCT_NC "8471300" is not a CN8 code'),
        (10, "VALUE_EUR -5 is not a finite non-negative number"),
        (12, 'VALUE_EUR "abc" is not a number'),
    ]
    assert result.quarantined == 4


def test_repeated_row_is_one_clear_error(home, tmp_path):
    bad = tmp_path / "full_202203.dat"
    lines = DAT.read_text().splitlines()
    bad.write_text("\n".join(lines + [lines[1]]) + "\n")
    con = warehouse.connect(home / "w.duckdb")
    with pytest.raises(InputError, match=r"line 14: duplicate row for DE→RU 85423190 202203 \(first at line 2\)"):
        ingest.load_file(con, bad)
    assert warehouse.row_count(con) == 0


@pytest.mark.parametrize("first, second", [("GR", "EL"), ("DE", "de")])
def test_two_codes_for_one_reporter_are_a_duplicate_key_not_a_double_count(home, tmp_path, first, second):
    # Rows are totalled per raw code; two raw codes of one country (Greece is GR and EL; case differs) land on
    # one canonical key, which the warehouse must refuse rather than store twice.
    bad = tmp_path / "full_202203.dat"
    header = DAT.read_text().splitlines()[0]
    bad.write_text(f"{header}\n{first},KZ,E,84713000,,,,,,,2,1,,202203,70,70,1,\n"
                   f"{second},KZ,E,84713000,,,,,,,2,1,,202203,30,30,1,\n")
    con = warehouse.connect(home / "w.duckdb")
    with pytest.raises(InputError, match=r"duplicate key .*84713000 appears 2 times"):
        ingest.load_file(con, bad)
    assert warehouse.row_count(con) == 0


def test_distinct_codes_of_distinct_countries_load_without_the_warehouse_key_scan(home, tmp_path):
    staged = comext.stage(warehouse.connect(home / "w.duckdb"), DAT, table="stage_t")
    assert staged.key_unique


def test_annual_file_is_freq_a(home, tmp_path):
    annual_dat = tmp_path / "full_202152.dat"
    annual_dat.write_text(DAT.read_text().replace(",202203,", ",202152,"))
    archive = _write_7z(annual_dat, tmp_path / "full_v2_202152.7z", "full_202152.dat")
    con = warehouse.connect(home / "w.duckdb")
    result = ingest.load_file(con, archive)
    assert result.rows == 6
    assert con.execute("SELECT DISTINCT freq, period::VARCHAR FROM trade_flows").fetchall() == [("A", "2021-01-01")]


def test_url_pattern_and_base_url():
    assert comext.file_url("2022-03") == ("https://ec.europa.eu/eurostat/api/dissemination/files?file="
                                          "comext%2FCOMEXT_DATA%2FPRODUCTS%2Ffull_v2_202203.7z")
    assert comext.file_url("2021", "http://127.0.0.1:9/api/") == (
        "http://127.0.0.1:9/api/files?file=comext%2FCOMEXT_DATA%2FPRODUCTS%2Ffull_v2_202152.7z")
    assert comext.file_url("2022-01", "http://mirror.local/{file}") == "http://mirror.local/full_v2_202201.7z"


def test_download_from_local_eurostat_then_unchanged(home, server, tmp_path):
    months = {"202202": None, "202203": None}
    for month in months:
        dat = tmp_path / f"full_{month}.dat"
        dat.write_text(DAT.read_text().replace(",202203,", f",{month},"))
        months[month] = _write_7z(dat, tmp_path / f"full_v2_{month}.7z", dat.name).read_bytes()

    def answer(path, query, headers):
        name = query.get("file", "").rsplit("/", 1)[-1]
        month = name.removeprefix("full_v2_").removesuffix(".7z")
        if path == "/files" and month in months:
            return Reply(200, months[month], {"ETag": f'"{month}"', "Content-Type": "application/octet-stream"})
        return None

    server.handle(answer)
    items = ingest.plan_comext(["2022-02", "2022-03"], base_url=server.url)
    summary = ingest.run_plain(home / "w.duckdb", items)
    assert summary.totals["rows"] == 12 and summary.downloads == {"downloaded": 2}
    assert (home / "cache" / "comext" / "full_v2_202203.7z").exists()
    again = ingest.run_plain(home / "w.duckdb", ingest.plan_comext(["2022-02", "2022-03"], base_url=server.url))
    assert again.downloads == {"unchanged": 2} and again.totals["unchanged"] == 2 and again.totals["rows"] == 0


def test_eurostat_html_page_fails_naming_the_file(home, server):
    server.route("/files", Reply(200, b"<html><body>Eurostat is under maintenance</body></html>",
                                 {"Content-Type": "text/html"}))
    with pytest.raises(DownloadError, match="full_v2_202203.7z: the server sent an HTML page"):
        ingest.run_plain(home / "w.duckdb", ingest.plan_comext(["2022-03"], base_url=server.url))


def test_source_dir_reads_local_files(home, tmp_path):
    shutil.copy(DAT, tmp_path / "full_202203.dat")
    items = ingest.plan_comext(["2022-03"], source_dir=tmp_path)
    summary = ingest.run_plain(home / "w.duckdb", items)
    assert summary.totals["rows"] == 6 and summary.totals["confidential"] == 2 and summary.totals["quarantined"] == 4
    with pytest.raises(InputError, match="--source-dir .* has no full_v2_202204.7z"):
        ingest.plan_comext(["2022-04"], source_dir=tmp_path)


def test_parse_then_load_equals_direct_load(home):
    parsed = ingest.check_parsed(ingest.parse_file(DAT))
    assert Path(parsed.canonical).exists() and parsed.rows == 6 and parsed.quarantined == 4
    con = warehouse.connect(home / "w.duckdb")
    result = ingest.load_parsed(con, parsed)
    assert result.rows == 6 and result.confidential == 2
    via_parquet = con.execute("SELECT * FROM trade_flows ORDER BY ALL").fetchall()
    assert ingest.load_parsed(con, parsed).status == "unchanged"
    other = warehouse.connect(home / "x.duckdb")
    ingest.load_file(other, DAT)
    assert other.execute("SELECT * FROM trade_flows ORDER BY ALL").fetchall() == via_parquet


def test_a_parsed_file_repeating_a_key_is_refused_checked_or_not(home):
    parsed = ingest.parse_file(DAT)
    assert not parsed.key_checked
    # Repeat one canonical row in the Parquet, as a damaged or hand-edited cache file would.
    doubled = Path(parsed.canonical).with_name("doubled.parquet")
    scratch = duckdb.connect()
    scratch.execute(f"""COPY (SELECT * FROM read_parquet('{parsed.canonical}')
                              UNION ALL (SELECT * FROM read_parquet('{parsed.canonical}') LIMIT 1))
                        TO '{doubled}' (FORMAT parquet)""")
    scratch.close()
    bad = dataclasses.replace(parsed, canonical=str(doubled), checksum="doubled")
    with pytest.raises(InputError, match="duplicate key"):
        ingest.check_parsed(bad)
    con = warehouse.connect(home / "w.duckdb")
    # Not checked: the load groups the rows itself and refuses them; nothing is stored.
    with pytest.raises(InputError, match="duplicate key"):
        ingest.load_parsed(con, bad)
    assert warehouse.row_count(con) == 0
    assert con.execute("SELECT status FROM loads").fetchall() == [("failed",)]
    # Checked: the load trusts the check and leaves the grouping out.
    good = ingest.check_parsed(parsed)
    assert good.key_checked and ingest.load_parsed(con, good).rows == 6
