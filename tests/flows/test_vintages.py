"""Vintages: every replaced row is kept, the data as of any load is rebuilt exactly, revisions are listed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from tradewatch.flows import schema, vintages, warehouse
from tradewatch.flows.sources import ecb

FIXTURES = Path(__file__).parent / "fixtures"


def _stage(con, rows):
    con.execute(f"CREATE OR REPLACE TEMP TABLE s AS SELECT {', '.join(schema.COLUMN_NAMES)} FROM trade_flows LIMIT 0")
    for row in rows:
        base = dict(source="comext", freq="M", period=dt.date(2022, 1, 1), reporter_iso3="DEU", partner_iso3="KAZ",
                    flow="export", product_code="85423190", product_level=8, value=100.0, currency="EUR",
                    net_weight_kg=None, quantity=None, quantity_unit=None)
        base.update(row)
        con.execute(f"INSERT INTO s VALUES ({', '.join('?' * len(schema.COLUMN_NAMES))})",
                    [base[c] for c in schema.COLUMN_NAMES])


def _load(con, file, rows, **options) -> int:
    _stage(con, rows)
    return warehouse.replace_partitions(con, "s", file=file, checksum=file, source="comext", **options).load_id


def _rows(con) -> list[tuple]:
    return sorted(con.execute("SELECT reporter_iso3, partner_iso3, period, value FROM trade_flows").fetchall())


JAN, FEB = dt.date(2022, 1, 1), dt.date(2022, 2, 1)


@pytest.fixture
def revised(tmp_path):
    """A warehouse with one row from before vintages (no load), then four loads; returns (path, states):
    states maps each load id to the rows a reader saw right after it."""
    path = tmp_path / "w.duckdb"
    con = warehouse.connect(path)
    con.execute("INSERT INTO trade_flows BY NAME SELECT 'comext' AS source, 'M' AS freq, DATE '2021-12-01' AS period, "
                "'DEU' AS reporter_iso3, 'GEO' AS partner_iso3, 'export' AS flow, '85423190' AS product_code, "
                "8 AS product_level, 1.0 AS value, 'EUR' AS currency")  # stored before vintages: load_id NULL
    states = {}
    for file, rows, options in [
        ("jan-v1.dat", [{"partner_iso3": "KAZ"}, {"partner_iso3": "ARM", "value": 50.0}], {}),
        ("feb-v1.dat", [{"period": FEB, "reporter_iso3": "FRA", "value": 10.0}], {}),
        ("jan-v2.dat", [{"partner_iso3": "KAZ", "value": 120.0}, {"partner_iso3": "ARM", "value": 50.0},
                        {"partner_iso3": "GEO", "value": 5.0}], {}),  # ARM unchanged
        ("jan-v3.dat", [{"partner_iso3": "KAZ", "value": 7.0}], {"shrink_limit": None}),
        ("dec-v1.dat", [{"period": dt.date(2021, 12, 1), "partner_iso3": "GEO", "value": 2.0}], {}),
    ]:
        load_id = _load(con, file, rows, **options)
        states[load_id] = _rows(con)
    con.close()
    return path, states


def test_as_of_rebuilds_the_data_after_every_load_on_a_read_only_connection(revised):
    path, states = revised
    con = warehouse.connect(path, read_only=True)
    try:
        assert vintages.current(con) == max(states)
        for load_id, expected in states.items():
            vintages.as_of(con, load_id)
            assert _rows(con) == expected, load_id
            assert con.execute("SELECT max(load_id) FROM loads").fetchall()[0][0] == load_id
        vintages.drop_as_of(con)
        assert _rows(con) == states[max(states)]
        # Before the first load, only the row stored before vintages were kept.
        vintages.as_of(con, 0)
        assert _rows(con) == [("DEU", "GEO", dt.date(2021, 12, 1), 1.0)]
    finally:
        con.close()


def test_every_replaced_row_is_kept_with_the_load_that_replaced_it(revised):
    path, states = revised
    con = warehouse.connect(path, read_only=True)
    kept = con.execute("SELECT partner_iso3, value, load_id, superseded_by FROM trade_flows_history "
                       "ORDER BY superseded_by, partner_iso3").fetchall()
    first, _, second, third, fourth = sorted(states)
    # Only rows that changed or went are kept: ARM, unchanged by jan-v2, kept its first load until jan-v3.
    assert kept == [("KAZ", 100.0, first, second),
                    ("ARM", 50.0, first, third), ("GEO", 5.0, second, third), ("KAZ", 120.0, second, third),
                    ("GEO", 1.0, None, fourth)]
    assert con.execute("SELECT partner_iso3, load_id FROM trade_flows WHERE period = ? ORDER BY 1",
                       [JAN]).fetchall() == [("KAZ", third)]
    con.close()


def test_revisions_say_what_each_revision_changed(revised):
    path, states = revised
    con = warehouse.connect(path, read_only=True)
    rows = vintages.revisions(con)
    con.close()
    got = [(r["file"], r["period"], r["rows_before"], r["value_before"], r["rows_after"], r["value_after"],
            r["rows_replaced"]) for r in rows]
    assert got == [("dec-v1.dat", "2021-12", 1, 1.0, 1, 2.0, 1), ("jan-v3.dat", "2022-01", 3, 175.0, 1, 7.0, 3),
                   ("jan-v2.dat", "2022-01", 2, 150.0, 3, 175.0, 1)]
    assert all(r["revised_at"] is not None and r["table"] == "trade_flows" for r in rows)


def test_revised_since_finds_the_revisions_of_a_routes_rows_after_a_time(revised):
    path, _ = revised
    con = warehouse.connect(path, read_only=True)
    route = dict(origin="DEU", transit="KAZ", target="RUS", product_code="854231")
    everything = vintages.revised_since(con, **route, since=None)
    assert [(r["file"], r["period"], r["rows_before"]) for r in everything] == [
        ("jan-v2.dat", "2022-01", 1), ("jan-v3.dat", "2022-01", 1)]
    last = everything[-1]["revised_at"]
    assert vintages.revised_since(con, **route, since=last) == []
    assert vintages.revised_since(con, **{**route, "product_code": "8471"}, since=None) == []
    con.close()


def test_ecb_rates_keep_their_vintages(tmp_path):
    path = tmp_path / "w.duckdb"
    rates = (FIXTURES / "ecb" / "EXR_M.USD.EUR.SP00.A.csv").read_text()
    first_file, second_file = tmp_path / "a.csv", tmp_path / "b.csv"
    first_file.write_text(rates)
    # The same months with every rate revised: the second load replaces them all.
    lines = rates.splitlines()
    header = lines[0].split(",")
    value = header.index("OBS_VALUE")

    def bump(cell: str) -> str:
        try:
            return f"{float(cell) + 0.01:.4f}"
        except ValueError:
            return cell  # a missing observation stays missing

    revised_lines = [lines[0]] + [",".join(bump(c) if i == value else c for i, c in enumerate(line.split(",")))
                                  for line in lines[1:] if line]
    second_file.write_text("\n".join(revised_lines) + "\n")
    con = warehouse.connect(path)
    ecb.load_rates(con, first_file)
    before = sorted(con.execute("SELECT period, rate FROM fx_rates").fetchall())
    first = vintages.current(con)
    ecb.load_rates(con, second_file)
    after = sorted(con.execute("SELECT period, rate FROM fx_rates").fetchall())
    assert before and after != before
    vintages.as_of(con, first)
    assert sorted(con.execute("SELECT period, rate FROM fx_rates").fetchall()) == before
    vintages.drop_as_of(con)
    changed = [r for r in vintages.revisions(con) if r["table"] == "fx_rates"]
    assert sum(r["rows_before"] for r in changed) == len(before)
    con.close()


def test_an_older_warehouse_gains_vintages_and_keeps_its_rows(tmp_path, monkeypatch):
    """Rows stored before migration 6 have no load; they stay in every vintage until replaced, then are kept."""
    path = tmp_path / "old.duckdb"
    monkeypatch.setattr(warehouse, "MIGRATIONS", [m for m in warehouse.MIGRATIONS if m[0] <= 5])
    old = warehouse.connect(path)
    _stage(old, [{"partner_iso3": "KAZ"}])
    old.execute("INSERT INTO trade_flows SELECT * FROM s")
    old.close()
    monkeypatch.undo()
    con = warehouse.connect(path)
    assert warehouse.schema_version(con) == warehouse.SCHEMA_VERSION
    assert con.execute("SELECT load_id FROM trade_flows").fetchall() == [(None,)]
    load_id = _load(con, "jan.dat", [{"partner_iso3": "KAZ", "value": 90.0}])
    assert con.execute("SELECT value, load_id, superseded_by FROM trade_flows_history").fetchall() == [
        (100.0, None, load_id)]
    vintages.as_of(con, load_id - 1)
    assert [r[3] for r in _rows(con)] == [100.0]
    con.close()


def test_a_refused_shrink_changes_nothing_and_is_recorded(tmp_path):
    con = warehouse.connect(tmp_path / "w.duckdb")
    _load(con, "full.dat", [{"partner_iso3": p} for p in ("KAZ", "ARM", "GEO", "TUR")])
    before = _rows(con)
    with pytest.raises(warehouse.ShrinkRefused, match="cut.dat: refused: .* loaded with 4 rows worth €400, with 1 "
                                                      "worth €100"):
        _load(con, "cut.dat", [{"partner_iso3": "KAZ"}])
    assert _rows(con) == before
    assert con.execute("SELECT count(*) FROM trade_flows_history").fetchall()[0][0] == 0
    assert con.execute("SELECT status, message LIKE '%--allow-shrink%' FROM loads WHERE file = 'cut.dat'"
                       ).fetchall() == [("refused", True)]
    # Half the value, fewer rows but not half: loaded (only more than half lost is refused).
    _load(con, "half.dat", [{"partner_iso3": p, "value": 67.0} for p in ("KAZ", "ARM", "GEO")])
    assert len(_rows(con)) == 3
    # A new partition is not a shrink, whatever its size; nor is a lower limit reached.
    _load(con, "new.dat", [{"reporter_iso3": "FRA", "value": 0.5}])
    with pytest.raises(warehouse.ShrinkRefused):
        _load(con, "tenth.dat", [{"partner_iso3": "KAZ", "value": 20.0}], shrink_limit=0.8)
    con.close()


def test_history_tables_are_declared_once():
    fresh = duckdb.connect()
    for table, history in schema.HISTORY_OF.items():
        fresh.execute(schema.TABLES[history].ddl())
        columns = [r[0] for r in fresh.execute(f"DESCRIBE {history}").fetchall()]
        assert columns == [*schema.TABLES[table].columns, "superseded_by"]


def test_a_change_in_any_column_supersedes_a_row_and_nulls_compare_equal(tmp_path):
    # The diff joins by key and compares every other column: a weight that appears (NULL → 3.0) or a unit
    # that changes is a revision; a row whose NULLs are still NULL is not.
    con = warehouse.connect(tmp_path / "w.duckdb")
    first = _load(con, "v1", [{"partner_iso3": "KAZ"}, {"partner_iso3": "ARM"}, {"partner_iso3": "GEO", "quantity": 2.0,
                                                                                "quantity_unit": "KG"}])
    second = _load(con, "v2", [{"partner_iso3": "KAZ", "net_weight_kg": 3.0}, {"partner_iso3": "ARM"},
                               {"partner_iso3": "GEO", "quantity": 2.0, "quantity_unit": "NAR"}])
    assert con.execute("SELECT partner_iso3, net_weight_kg, quantity_unit, superseded_by FROM trade_flows_history "
                       "ORDER BY 1").fetchall() == [("GEO", None, "KG", second), ("KAZ", None, None, second)]
    assert con.execute("SELECT partner_iso3, load_id FROM trade_flows ORDER BY 1").fetchall() == [
        ("ARM", first), ("GEO", second), ("KAZ", second)]
    con.close()
