"""Eurostat DS-045409 SDMX-CSV: totals land in trade_totals (never trade_flows), re-runs, revisions, quarantine,
refusals, pair_totals, the migration, and the real extract's check figures."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app
from tradewatch.flows import ingest, schema, warehouse
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.sources import comext_sdmx

FIXTURE = Path(__file__).parent / "fixtures" / "comext_sdmx" / "ds-045409_sample.csv"
REAL = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "comext_sdmx"
        / "ds-045409_totals_M_2020-2022.csv").resolve()
HEADER = FIXTURE.read_text().splitlines()[0]
PREFIX = "ESTAT:DS-045409(1.0),13/01/23 11:00:00"


def _row(reporter="AT", partner="KZ", product="TOTAL", flow="2", period="2022-01", value="100", flag="",
         freq="M", indicator="VALUE_IN_EUROS", dataflow=None) -> str:
    head = PREFIX if dataflow is None else f"{dataflow},13/01/23 11:00:00"
    return f"{head},{freq},{reporter},{partner},{product},{flow},{indicator},{period},{value},{flag}"


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


@pytest.fixture
def con(tmp_path):
    connection = warehouse.connect(tmp_path / "w.duckdb")
    yield connection
    connection.close()


def _totals(con) -> list[tuple]:
    return con.execute("""SELECT reporter_iso3, partner_iso3, flow, product_group, product_level, strftime(period, '%Y-%m'),
                                 value FROM trade_totals ORDER BY ALL""").fetchall()


# ------------------------------------------------------------------------------------------ recognition

def test_recognised_by_content_also_gzipped(tmp_path):
    assert ingest.recognise(FIXTURE) is comext_sdmx
    packed = tmp_path / "totals.bin.gz"
    packed.write_bytes(gzip.compress(FIXTURE.read_bytes()))
    assert ingest.recognise(packed) is comext_sdmx
    # ECB's CSV has TIME_PERIOD and OBS_VALUE too, but no DATAFLOW and no trade dimension.
    ecb = Path(__file__).parent / "fixtures" / "ecb" / "EXR_M.USD.EUR.SP00.A.csv"
    assert not comext_sdmx.looks_like(ecb, ecb.read_bytes())


# ------------------------------------------------------------------------------------------ loading

def test_totals_land_in_trade_totals_and_cn8_in_trade_flows(con):
    result = ingest.load_file(con, FIXTURE)
    assert result.status == "ok" and result.source == "comext_sdmx"
    assert result.rows == 8 and result.quarantined == 0 and result.not_available == 2
    assert _totals(con) == [
        ("AUT", "KAZ", "export", "TOTAL", 0, "2022-01", 100000.0),
        ("AUT", "KAZ", "export", "TOTAL", 0, "2022-02", 150000.0),
        ("AUT", "KAZ", "import", "27", 2, "2022-01", 30000.0),
        ("AUT", "KAZ", "import", "TOTAL", 0, "2022-01", 40000.0),
        ("DEU", "RUS", "export", "2710", 4, "2022-01", 700000.0),
        ("DEU", "RUS", "export", "TOTAL", 0, "2022-01", 9000000.0),
        ("GRC", "RUS", "export", "TOTAL", 0, "2022-01", 250000.0),  # Greece as GR, not EL
    ]
    # The ':' and empty observations are absent, never zeros.
    assert con.execute("SELECT count(*) FROM trade_totals WHERE value = 0").fetchone()[0] == 0
    assert con.execute("SELECT obs_flag FROM trade_totals WHERE reporter_iso3 = 'GRC'").fetchone()[0] == "p"
    assert con.execute("SELECT DISTINCT source, currency, freq FROM trade_totals").fetchall() == [("comext_sdmx", "EUR", "M")]
    assert con.execute("SELECT DISTINCT load_id FROM trade_totals").fetchall() == [(result.load_id,)]
    # Only the CN8 row reaches trade_flows, as a Comext row: nothing counted twice.
    assert con.execute("SELECT source, reporter_iso3, partner_iso3, flow, product_code, product_level, value, currency "
                       "FROM trade_flows").fetchall() == [
        ("comext", "DEU", "RUS", "export", "85423190", 8, 1234.0, "EUR")]
    summary = ingest.RunSummary(results=[result]).to_dict()
    assert summary["totals"]["not_available"] == 2 and summary["files"][0]["not_available"] == 2


def test_rerun_is_unchanged_and_a_revised_file_replaces_its_partitions(con, tmp_path):
    first = ingest.load_file(con, FIXTURE)
    again = ingest.load_file(con, FIXTURE)
    assert again.status == "unchanged"
    assert con.execute("SELECT count(*) FROM trade_totals").fetchone()[0] == 7
    # Revised: AT→KZ TOTAL export 2022-01 changes, the AT→KZ TOTAL import of the same partition is gone.
    revised = _write(tmp_path / "revised.csv", [_row(value="123456")])
    result = ingest.load_file(con, revised)
    assert result.status == "ok" and result.rows == 1 and result.load_id > first.load_id
    rows = {(r[0], r[2], r[3], r[5]): r[6] for r in _totals(con)}
    assert rows[("AUT", "export", "TOTAL", "2022-01")] == 123456.0
    assert ("AUT", "import", "TOTAL", "2022-01") not in rows
    # Other products of that partition (chapter 27), other months and other reporters stay.
    assert rows[("AUT", "import", "27", "2022-01")] == 30000.0
    assert rows[("AUT", "export", "TOTAL", "2022-02")] == 150000.0
    assert rows[("DEU", "export", "TOTAL", "2022-01")] == 9000000.0
    assert len(rows) == 6
    # The first file's partitions were partly replaced since: loading it again is a real load.
    assert ingest.load_file(con, FIXTURE).status == "ok"
    assert len(_totals(con)) == 7


def test_cn8_rows_replace_only_their_products_in_a_comext_month(con):
    # A bulk Comext month loaded before: the SDMX file's one CN8 code must not delete the others.
    con.execute("CREATE TEMP TABLE bulk AS SELECT * EXCLUDE (load_id) FROM trade_flows LIMIT 0")
    con.execute("""INSERT INTO bulk VALUES ('comext', 'M', DATE '2022-01-01', 'DEU', 'RUS', 'export', '84713000', 8,
                   5.0, 'EUR', NULL, NULL, NULL), ('comext', 'M', DATE '2022-01-01', 'DEU', 'RUS', 'export',
                   '85423190', 8, 9.0, 'EUR', NULL, NULL, NULL)""")
    warehouse.replace_partitions(con, "bulk", file="full_v2_202201.7z", checksum="bulk", source="comext")
    ingest.load_file(con, FIXTURE)
    assert con.execute("SELECT product_code, value FROM trade_flows ORDER BY 1").fetchall() == [
        ("84713000", 5.0), ("85423190", 1234.0)]


def test_annual_rows_and_gzip(con, tmp_path):
    plain = _write(tmp_path / "annual.csv", [_row(freq="A", period="2021", value="5"), _row(freq="A", period="2022", value="7")])
    packed = tmp_path / "annual.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    result = ingest.load_file(con, packed)
    assert result.rows == 2 and result.periods == ["2021-01", "2022-01"]
    assert con.execute("SELECT freq, period, value FROM trade_totals ORDER BY period").fetchall() == [
        ("A", dt.date(2021, 1, 1), 5.0), ("A", dt.date(2022, 1, 1), 7.0)]
    # pair_totals is monthly only.
    assert warehouse.pair_totals(con, first=dt.date(2021, 1, 1), last=dt.date(2022, 12, 31)).height == 0


# ------------------------------------------------------------------------------------------ bad input

def test_bad_rows_are_quarantined_with_line_numbers(con, tmp_path):
    path = _write(tmp_path / "bad.csv", [
        _row(),                                   # line 2 loads
        _row(reporter="ZZ"),                      # 3
        _row(partner="EU27_2020"),                # 4
        _row(period="2022-13"),                   # 5
        _row(value="abc"),                        # 6
        _row(value="-5"),                         # 7
        _row(flow="3"),                           # 8
        _row(product="ABC"),                      # 9
        _row(freq="Q", period="2022-Q1"),         # 10
        _row(partner="QU", value="8"),            # 11 loads, partner kept as QUQ
        _row(period="2022-02", value=":"),        # 12 not available
        _row(partner="QA", value="9"),            # 13 loads: Qatar, not a confidential code
    ])
    result = ingest.load_file(con, path)
    assert result.rows == 3 and result.quarantined == 8 and result.not_available == 1
    quarantined = con.execute("SELECT file, line, reason FROM quarantine ORDER BY line").fetchall()
    assert [q[1] for q in quarantined] == [3, 4, 5, 6, 7, 8, 9, 10]
    assert {q[0] for q in quarantined} == {str(path)}
    reasons = [q[2] for q in quarantined]
    assert reasons[0] == 'reporter "ZZ" is not a known ISO alpha-2 country code'
    assert reasons[1] == 'partner "EU27_2020" is not a known ISO alpha-2 country code'
    assert reasons[2] == 'TIME_PERIOD "2022-13" is not a month YYYY-MM (01-12)'
    assert reasons[3] == 'OBS_VALUE "abc" is not a number'
    assert reasons[4] == 'OBS_VALUE "-5" is not a finite non-negative number'
    assert reasons[5].startswith('flow "3" is not 1 (import) or 2 (export)')
    assert reasons[6].startswith('product "ABC" is not TOTAL')
    assert reasons[7].startswith('freq "Q" is not M')
    assert con.execute("SELECT partner_iso3 FROM trade_totals ORDER BY 1").fetchall() == [("KAZ",), ("QAT",), ("QUQ",)]
    assert con.execute("SELECT count(*) FROM trade_flows").fetchone()[0] == 0


@pytest.mark.parametrize("rows, message", [
    ([_row(reporter="ZZ"), _row(value="x")], r"bad\.csv line 2: no row could be read \(2 refused\)"),
    ([_row(indicator="QUANTITY_IN_100KG")], r"bad\.csv line 2: indicators 'QUANTITY_IN_100KG'; expected VALUE_IN_EUROS"),
    ([_row(), _row(dataflow="ESTAT:DS-059341(1.0)")], r"bad\.csv line 3: DATAFLOW 'ESTAT:DS-059341\(1\.0\)'; expected"),
    ([_row(), _row(value="7")], r"bad\.csv line 3: observation AT→KZ product TOTAL flow 2 2022-01 appears twice \(first at line 2\)"),
    ([_row(reporter="GR"), _row(reporter="EL")], r"bad\.csv line 3: observation EL→KZ .* appears twice"),
    ([], r"bad\.csv: holds a header but no observations"),
])
def test_unreadable_files_are_refused_in_one_line_and_change_nothing(con, tmp_path, rows, message):
    ingest.load_file(con, FIXTURE)
    before = (warehouse.status_rows(con), warehouse.status_rows(con, "trade_totals"), _totals(con))
    with pytest.raises(InputError, match=message) as caught:
        ingest.load_file(con, _write(tmp_path / "bad.csv", rows))
    assert "\n" not in str(caught.value)
    assert (warehouse.status_rows(con), warehouse.status_rows(con, "trade_totals"), _totals(con)) == before


GOOD = [_row(), _row(partner="RU"), _row(partner="GE", value="250")]


def _bytes(rows, header=HEADER, newline="\n") -> bytes:
    return (newline.join([header, *rows]) + newline).encode()


@pytest.mark.parametrize("content, rows, quarantined, not_available", [
    (_bytes(GOOD, newline="\r\n"), 3, 0, 0),
    (_bytes(GOOD, newline="\r"), 3, 0, 0),
    (b"\xef\xbb\xbf" + _bytes(GOOD), 3, 0, 0),
    (_bytes(GOOD).rstrip(b"\n"), 3, 0, 0),
    (_bytes(GOOD, header=",".join(f'"{h}"' for h in HEADER.split(","))), 3, 0, 0),
    (_bytes([_row(reporter="at", partner="kz", product="total", indicator="value_in_euros", value=" 5 ")]), 1, 0, 0),
    (_bytes(GOOD + [_row(partner="AM", value=": c")]), 3, 0, 1),
    # A line cut short after the reporter is damaged, not a month Eurostat reports as not available.
    (_bytes(GOOD + [PREFIX + ",M,AT"]), 3, 1, 0),
    (_bytes(GOOD + [_row(partner="AM", value="1e999")]), 3, 1, 0),
], ids=["crlf", "cr-only", "bom", "no-final-newline", "quoted-header", "lower-case", "colon-flag", "short-row",
        "overflow"])
def test_text_variants_load_or_quarantine(con, tmp_path, content, rows, quarantined, not_available):
    path = tmp_path / "variant.csv"
    path.write_bytes(content)
    result = ingest.load_file(con, path)
    assert (result.rows, result.quarantined, result.not_available) == (rows, quarantined, not_available)


@pytest.mark.parametrize("content, message", [
    (_bytes(GOOD[:1] + [_row(partner='"RU')] + GOOD[2:]), r"broken\.csv line 3: a double quote opened"),
    (_bytes(GOOD).replace(b"KZ", b"K\xe9", 1), r"broken\.csv line 2: is not UTF-8 text"),
    (_bytes(GOOD)[:-30], r"broken\.csv line 4: has 7 of 11 fields .* truncated"),
], ids=["open-quote", "latin-1", "truncated"])
def test_damaged_text_is_refused_in_one_line(con, tmp_path, content, message):
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        ingest.load_file(con, path)
    assert con.execute("SELECT count(*) FROM trade_totals").fetchone()[0] == 0


def test_wrong_layouts_are_refused_naming_the_header(con, tmp_path):
    missing = tmp_path / "missing.csv"
    missing.write_text("DATAFLOW,freq,reporter,partner,TIME_PERIOD,OBS_VALUE\nESTAT:DS-045409(1.0),M,AT,KZ,2022-01,1\n")
    with pytest.raises(InputError, match=r"missing\.csv line 1: missing column\(s\) PRODUCT, FLOW, INDICATORS"):
        ingest.load_file(con, missing)
    extra = tmp_path / "extra.csv"
    extra.write_text(HEADER + ",CONF_STATUS\n" + _row() + ",F\n")
    with pytest.raises(InputError, match=r"extra\.csv line 1: unexpected column\(s\) CONF_STATUS"):
        ingest.load_file(con, extra)
    assert con.execute("SELECT count(*) FROM trade_totals").fetchone()[0] == 0


def test_parse_to_parquet_path_carries_totals_like_load_file(con, tmp_path, monkeypatch):
    # The four steps (parse to Parquet -> check -> load) store what load_file stores, totals included.
    monkeypatch.setenv("TRADEWATCH_HOME", str(tmp_path / "home"))
    direct = warehouse.connect(tmp_path / "direct.duckdb")
    try:
        ingest.load_file(direct, FIXTURE)
        expected_totals = _totals(direct)
        expected_flows = direct.execute("SELECT * EXCLUDE (load_id) FROM trade_flows ORDER BY ALL").fetchall()
    finally:
        direct.close()
    parsed = ingest.check_parsed(ingest.parse_file(FIXTURE))
    assert set(parsed.also) == {"trade_totals"}
    result = ingest.load_parsed(con, parsed)
    assert result.status == "ok" and result.not_available == 2
    assert _totals(con) == expected_totals and len(expected_totals) == 7
    assert con.execute("SELECT * EXCLUDE (load_id) FROM trade_flows ORDER BY ALL").fetchall() == expected_flows
    assert ingest.load_parsed(con, parsed).status == "unchanged"


# ------------------------------------------------------------------------------------------ read API

def test_pair_totals_window_group_and_dtypes(con):
    ingest.load_file(con, FIXTURE)
    frame = warehouse.pair_totals(con, first=dt.date(2022, 1, 15), last=dt.date(2022, 1, 31))
    assert frame.columns == ["reporter_iso3", "partner_iso3", "flow", "period", "value", "currency"]
    assert dict(frame.schema) == {"reporter_iso3": pl.String, "partner_iso3": pl.String, "flow": pl.String,
                                  "period": pl.Date, "value": pl.Float64, "currency": pl.String}
    assert frame.rows() == [
        ("AUT", "KAZ", "export", dt.date(2022, 1, 1), 100000.0, "EUR"),
        ("AUT", "KAZ", "import", dt.date(2022, 1, 1), 40000.0, "EUR"),
        ("DEU", "RUS", "export", dt.date(2022, 1, 1), 9000000.0, "EUR"),
        ("GRC", "RUS", "export", dt.date(2022, 1, 1), 250000.0, "EUR"),
    ]
    assert warehouse.pair_totals(con, first=dt.date(2022, 1, 1), last=dt.date(2022, 12, 31)).height == 5
    chapter = warehouse.pair_totals(con, first=dt.date(2022, 1, 1), last=dt.date(2022, 12, 31), product_group="27")
    assert chapter.rows() == [("AUT", "KAZ", "import", dt.date(2022, 1, 1), 30000.0, "EUR")]


def test_pair_totals_is_empty_when_table_missing_or_empty(con):
    empty = warehouse.pair_totals(con, first=dt.date(2022, 1, 1), last=dt.date(2022, 12, 31))
    assert empty.height == 0 and empty.columns == list(warehouse.PAIR_TOTALS_COLUMNS)
    bare = duckdb.connect()
    missing = warehouse.pair_totals(bare, first=dt.date(2022, 1, 1), last=dt.date(2022, 12, 31))
    assert missing.height == 0 and dict(missing.schema) == dict(empty.schema)
    assert warehouse.status_rows(bare, "trade_totals") == []


# ------------------------------------------------------------------------------------------ schema

def test_trade_totals_declared_once_and_ddl_agrees():
    names = [f.name for f in schema.TRADE_TOTALS]
    assert len(names) == len(set(names)) and set(schema.TRADE_TOTALS_KEY) <= set(names)
    assert {"product_group", "product_level", "load_id"} <= set(names) and "product_code" not in names
    shared = {f.name: f for f in schema.TRADE_FLOWS}
    for f in schema.TRADE_TOTALS:
        if f.name in shared and f.name != "product_level":  # level 0 (TOTAL) is trade_totals' own
            assert f is shared[f.name]  # the same declaration, not a copy
    bare = duckdb.connect()
    bare.execute(schema.ddl("t", schema.TRADE_TOTALS))
    assert dict(bare.sql("SELECT * FROM t").pl().schema) == schema.polars_schema(schema.TRADE_TOTALS)


def test_fresh_and_migrated_warehouses_have_trade_totals(tmp_path, monkeypatch):
    fresh = warehouse.connect(tmp_path / "fresh.duckdb")
    assert warehouse.has_table(fresh, "trade_totals") and warehouse.schema_version(fresh) == warehouse.SCHEMA_VERSION
    fresh.close()
    path = tmp_path / "old.duckdb"
    monkeypatch.setattr(warehouse, "MIGRATIONS", [m for m in warehouse.MIGRATIONS if m[0] <= 4])
    old = warehouse.connect(path)
    assert not warehouse.has_table(old, "trade_totals") and warehouse.schema_version(old) == 4
    old.execute("""INSERT INTO trade_flows VALUES ('comext', 'M', DATE '2022-01-01', 'DEU', 'RUS', 'export', '85423190',
                   8, 1.0, 'EUR', NULL, NULL, NULL)""")
    old.close()
    monkeypatch.undo()
    migrated = warehouse.connect(path)
    assert warehouse.schema_version(migrated) == warehouse.SCHEMA_VERSION and warehouse.has_table(migrated, "trade_totals")
    assert warehouse.row_count(migrated) == 1
    assert ingest.load_file(migrated, FIXTURE).rows == 8
    migrated.close()


def test_totals_checks_refuse_levels_that_do_not_match(con):
    con.execute("CREATE TEMP TABLE s AS SELECT * EXCLUDE (load_id) FROM trade_totals LIMIT 0")
    con.execute("INSERT INTO s VALUES ('x', 'M', DATE '2022-01-01', 'DEU', 'RUS', 'export', '2710', 2, 1.0, 'EUR', NULL)")
    with pytest.raises(InputError, match="'2710' for level 2.? does not have the digits of its level"):
        warehouse.replace_partitions(con, "s", file="f", checksum="c", source="x", table="trade_totals")
    con.execute("DELETE FROM s")
    con.execute("INSERT INTO s VALUES ('x', 'M', DATE '2022-01-01', 'DEU', 'RUS', 'export', 'TOTAL', 0, 1.0, 'EUR', NULL)")
    assert warehouse.replace_partitions(con, "s", file="f", checksum="c", source="x", table="trade_totals").rows == 1
    # Level 0 belongs to trade_totals only.
    con.execute("CREATE TEMP TABLE f AS SELECT * EXCLUDE (load_id) FROM trade_flows LIMIT 0")
    con.execute("""INSERT INTO f VALUES ('x', 'M', DATE '2022-01-01', 'DEU', 'RUS', 'export', 'TOTAL', 0, 1.0, 'EUR',
                   NULL, NULL, NULL)""")
    with pytest.raises(InputError, match="does not have the digits of its level"):
        warehouse.replace_partitions(con, "f", file="f2", checksum="c2", source="x")


# ------------------------------------------------------------------------------------------ CLI

def test_cli_ingest_files_status_and_a_refused_garbage_file(tmp_path):
    runner = CliRunner()
    db = str(tmp_path / "cli.duckdb")
    loaded = runner.invoke(app, ["ingest", "files", str(FIXTURE), "--db", db, "--json"])
    assert loaded.exit_code == 0, loaded.output
    assert json.loads(loaded.stdout)["totals"]["rows"] == 8
    status = runner.invoke(app, ["status", "--db", db, "--json"])
    report = json.loads(status.stdout)
    assert [r["source"] for r in report["trade_flows"]] == ["comext"]
    assert {(r["period"], r["product_group"]) for r in report["trade_totals"]} == {
        ("2022-01", "TOTAL"), ("2022-01", "27"), ("2022-01", "2710"), ("2022-02", "TOTAL")}
    text = runner.invoke(app, ["status", "--db", db])
    assert text.exit_code == 0 and "trade_totals" in text.output
    garbage = tmp_path / "garbage.csv"
    shutil.copy(FIXTURE, garbage)
    garbage.write_text(HEADER + "\n" + _row(reporter="??", value="nope") + "\n")
    refused = runner.invoke(app, ["ingest", "files", str(garbage), "--db", db])
    assert refused.exit_code == 2
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "garbage.csv line 2: no row could be read" in lines[0], refused.output
    assert runner.invoke(app, ["status", "--db", db, "--json"]).stdout == status.stdout
    again = runner.invoke(app, ["ingest", "files", str(FIXTURE), "--db", db, "--json"])
    assert json.loads(again.stdout)["files"][0]["status"] == "unchanged"


# ------------------------------------------------------------------------------------------ real data

def test_real_extract_check_figures(con):
    if not REAL.is_file():
        pytest.skip(f"real Eurostat DS-045409 extract not found at {REAL} (../shared/data beside the repository)")
    result = ingest.load_file(con, REAL)
    assert result.status == "ok" and result.quarantined == 0 and result.rows == 14_000
    assert con.execute("SELECT count(*) FROM trade_flows").fetchone()[0] == 0
    assert con.execute("SELECT count(DISTINCT reporter_iso3) FROM trade_totals").fetchone()[0] == 27
    frame = warehouse.pair_totals(con, first=dt.date(2021, 1, 1), last=dt.date(2022, 12, 31))
    exports = (frame.filter(pl.col("flow") == "export")
               .group_by("partner_iso3", pl.col("period").dt.year().alias("year")).agg(pl.col("value").sum()))
    figures = {(r["partner_iso3"], r["year"]): r["value"] for r in exports.iter_rows(named=True)}
    assert figures[("KAZ", 2021)] == 5_487_204_564
    assert figures[("KAZ", 2022)] == 8_886_682_913
    assert figures[("RUS", 2021)] == 89_197_190_797
    assert figures[("RUS", 2022)] == 50_806_848_160
    assert ingest.load_file(con, REAL).status == "unchanged"
