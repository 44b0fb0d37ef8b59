"""Warehouse: migrations, atomic partition replace, re-runs never duplicate, failures leave the old partition."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from tradewatch.flows import schema, warehouse
from tradewatch.flows.core.errors import InputError, TradewatchError, WarehouseBusy


def _stage(con, name, rows):
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {', '.join(schema.COLUMN_NAMES)} FROM trade_flows LIMIT 0")
    for row in rows:
        base = dict(source="demo", freq="M", period=dt.date(2022, 1, 1), reporter_iso3="DEU", partner_iso3="KAZ",
                    flow="export", product_code="854231", product_level=6, value=100.0, currency="EUR",
                    net_weight_kg=None, quantity=None, quantity_unit=None)
        base.update(row)
        con.execute(f"INSERT INTO {name} VALUES ({', '.join('?' * len(schema.COLUMN_NAMES))})",
                    [base[c] for c in schema.COLUMN_NAMES])
    return name


def test_connect_creates_and_migrates(tmp_path):
    con = warehouse.connect(tmp_path / "w.duckdb")
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"trade_flows", "loads", "quarantine", "runs", "anomalies", "reviews", "schema_version"} <= tables
    assert warehouse.schema_version(con) == warehouse.SCHEMA_VERSION
    con.close()
    # Opening again applies nothing twice.
    con = warehouse.connect(tmp_path / "w.duckdb")
    assert con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == len(warehouse.MIGRATIONS)


def test_older_warehouse_is_migrated(tmp_path, monkeypatch):
    path = tmp_path / "old.duckdb"
    monkeypatch.setattr(warehouse, "MIGRATIONS", warehouse.MIGRATIONS[:1])
    con = warehouse.connect(path)
    _stage(con, "s", [{}])
    con.execute("INSERT INTO trade_flows BY NAME SELECT * FROM s")  # what a version-1 tradewatch left behind
    con.close()
    monkeypatch.setattr(warehouse, "MIGRATIONS", warehouse.MIGRATIONS + [(999, ["CREATE TABLE added_later (x INTEGER)"])])
    con = warehouse.connect(path)
    assert warehouse.schema_version(con) == 999
    assert con.execute("SELECT count(*) FROM added_later").fetchone()[0] == 0
    assert warehouse.row_count(con) == 1  # data survives the migration


def _layout(con) -> dict[str, list[tuple[str, str, bool]]]:
    """Every table of the warehouse: its columns in order as (name, DuckDB type, nullable)."""
    rows = con.execute("""SELECT table_name, column_name, data_type, is_nullable = 'YES' FROM information_schema.columns
                          WHERE table_catalog = current_database() AND table_schema = 'main'
                          ORDER BY table_name, ordinal_position""").fetchall()
    layout: dict[str, list[tuple[str, str, bool]]] = {}
    for table, *column in rows:
        layout.setdefault(table, []).append(tuple(column))
    return layout


def _primary_keys(con) -> dict[str, tuple[str, ...]]:
    rows = con.execute("""SELECT table_name, constraint_column_names FROM duckdb_constraints()
                          WHERE constraint_type = 'PRIMARY KEY' AND database_name = current_database()""").fetchall()
    return {table: tuple(columns) for table, columns in rows}


DECLARED = {name: [(f.name, f.duckdb_type, f.nullable) for f in table.fields] for name, table in schema.TABLES.items()}
DECLARED_KEYS = {name: table.key for name, table in schema.TABLES.items() if table.primary_key}


def test_fresh_warehouse_holds_exactly_the_declared_tables(tmp_path):
    con = warehouse.connect(tmp_path / "w.duckdb")
    assert _layout(con) == DECLARED
    assert _primary_keys(con) == DECLARED_KEYS


@pytest.mark.parametrize("applied", range(1, len(warehouse.MIGRATIONS)))
def test_warehouse_made_at_an_earlier_version_ends_like_a_fresh_one(tmp_path, monkeypatch, applied):
    """A warehouse an earlier tradewatch made (only the first `applied` migrations), reopened by this one."""
    path = tmp_path / "old.duckdb"
    with monkeypatch.context() as patch:
        patch.setattr(warehouse, "MIGRATIONS", warehouse.MIGRATIONS[:applied])
        con = warehouse.connect(path)
        assert _layout(con) != DECLARED
        _stage(con, "s", [{}])
        con.execute("INSERT INTO trade_flows BY NAME SELECT * FROM s")
        con.execute(*schema.bind("loads", {"load_id": 1, "source": "demo", "file": "old.csv",
                                           "started_at": dt.datetime(2022, 2, 1), "status": "ok"}))
        con.close()
    con = warehouse.connect(path)
    assert warehouse.schema_version(con) == warehouse.SCHEMA_VERSION
    assert _layout(con) == DECLARED
    assert _primary_keys(con) == DECLARED_KEYS
    assert warehouse.row_count(con) == 1
    assert con.execute("SELECT file, status FROM loads").fetchall() == [("old.csv", "ok")]


def test_loads_rows_are_written_by_column_name(tmp_path):
    """The ok, empty and failed rows of `loads` carry each value in its own column."""
    con = warehouse.connect(tmp_path / "w.duckdb")
    _stage(con, "s", [{}, {"partner_iso3": "ARM", "value": 50.0}])
    ok = warehouse.replace_partitions(con, "s", file="f.csv", checksum="c1", source="demo")
    con.execute("CREATE OR REPLACE TEMP TABLE e AS SELECT * EXCLUDE (load_id) FROM trade_flows LIMIT 0")
    empty = warehouse.replace_partitions(con, "e", file="e.csv", checksum="c2", source="demo")
    _stage(con, "s", [{"value": -1.0}])
    with pytest.raises(InputError):
        warehouse.replace_partitions(con, "s", file="bad.csv", checksum="c3", source="demo")
    cursor = con.execute("SELECT * FROM loads ORDER BY load_id")
    names = [c[0] for c in cursor.description]
    rows = [dict(zip(names, row)) for row in cursor.fetchall()]
    assert names == list(schema.TABLES["loads"].columns)
    first, second, third = rows
    assert first["load_id"] == ok.load_id and second["load_id"] == empty.load_id
    assert {k: first[k] for k in ("source", "freq", "period", "reporters", "file", "checksum", "rows", "value_sum",
                                  "currency", "quarantined", "status", "message")} == {
        "source": "demo", "freq": "M", "period": dt.date(2022, 1, 1), "reporters": 1, "file": "f.csv",
        "checksum": "c1", "rows": 2, "value_sum": 150.0, "currency": "EUR", "quarantined": 0, "status": "ok",
        "message": None}
    assert (second["status"], second["rows"], second["reporters"], second["period"], second["message"]) == (
        "empty", 0, 0, None, "no rows to load")
    assert (third["status"], third["file"], third["checksum"], third["rows"], third["reporters"]) == (
        "failed", "bad.csv", "c3", 0, None)
    assert "not a finite non-negative" in third["message"]
    for row in rows:
        assert row["started_at"] <= row["finished_at"]
    assert con.execute("SELECT * FROM load_partitions").fetchall() == [(ok.load_id, "demo", "M", dt.date(2022, 1, 1),
                                                                        "DEU")]


def test_replace_partition_is_idempotent_and_replaces(tmp_path):
    con = warehouse.connect(tmp_path / "w.duckdb")
    rows = [{"partner_iso3": "KAZ"}, {"partner_iso3": "ARM", "value": 50.0}]
    for _ in range(3):
        _stage(con, "s", rows)
        warehouse.replace_partitions(con, "s", file="f", checksum="c", source="demo")
    assert warehouse.row_count(con) == 2
    # A revised file that loses half the rows and most of the value is refused (a file cut short looks like
    # this), in one line naming it and both numbers, and recorded as a refused load; nothing changes.
    _stage(con, "s", [{"partner_iso3": "KAZ", "value": 7.0}])
    with pytest.raises(warehouse.ShrinkRefused, match=r"^f2: refused: it would replace demo 2022-01 DEU, loaded "
                       r"with 2 rows worth €150, with 1 worth €7: more than 50% lost.*--allow-shrink") as refused:
        warehouse.replace_partitions(con, "s", file="f2", checksum="c2", source="demo")
    assert "\n" not in str(refused.value)
    assert con.execute("SELECT status FROM loads WHERE file = 'f2'").fetchall() == [("refused",)]
    assert sorted(con.execute("SELECT partner_iso3, value FROM trade_flows").fetchall()) == [("ARM", 50.0), ("KAZ", 100.0)]
    # Allowed, it replaces the partition: ARM disappears, KAZ changes value; the replaced rows are kept.
    result = warehouse.replace_partitions(con, "s", file="f2", checksum="c2", source="demo", shrink_limit=None)
    assert result.rows == 1 and result.value_sum == {"EUR": 7.0} and result.periods == ["2022-01"]
    assert con.execute("SELECT partner_iso3, value FROM trade_flows").fetchall() == [("KAZ", 7.0)]
    kept = con.execute("SELECT partner_iso3, value, load_id, superseded_by FROM trade_flows_history "
                       "WHERE superseded_by = ? ORDER BY ALL", [result.load_id]).fetchall()
    assert [row[:2] for row in kept] == [("ARM", 50.0), ("KAZ", 100.0)] and all(r[2] < r[3] for r in kept)
    # Another reporter in the same period is a separate partition and stays.
    _stage(con, "s", [{"reporter_iso3": "FRA"}])
    warehouse.replace_partitions(con, "s", file="f3", checksum="c3", source="demo")
    assert warehouse.row_count(con) == 2
    loads = con.execute("SELECT file, rows, value_sum, status FROM loads ORDER BY load_id").fetchall()
    assert loads[-2:] == [("f2", 1, 7.0, "ok"), ("f3", 1, 100.0, "ok")]


@pytest.mark.parametrize("bad, message", [
    ([{}, {}], "duplicate key"),
    ([{"value": -1.0}], "not a finite non-negative"),
    ([{"value": float("nan")}], "not a finite non-negative"),
    ([{"flow": "sideways"}], "flow"),
    ([{"currency": "GBP"}], "currency"),
    ([{"product_code": "8542", "product_level": 6}], "does not have the digits of its level"),
])
def test_failed_checks_leave_previous_partition(tmp_path, bad, message):
    con = warehouse.connect(tmp_path / "w.duckdb")
    _stage(con, "s", [{"value": 1.0}])
    warehouse.replace_partitions(con, "s", file="good", checksum="g", source="demo")
    _stage(con, "s", bad)
    with pytest.raises(InputError, match=message):
        warehouse.replace_partitions(con, "s", file="bad.csv", checksum="b", source="demo")
    assert con.execute("SELECT value FROM trade_flows").fetchall() == [(1.0,)]
    assert con.execute("SELECT status FROM loads WHERE file = 'bad.csv'").fetchone()[0] == "failed"


def test_error_mid_transaction_rolls_back(tmp_path, monkeypatch):
    con = warehouse.connect(tmp_path / "w.duckdb")
    _stage(con, "s", [{"value": 1.0}])
    warehouse.replace_partitions(con, "s", file="good", checksum="g", source="demo")
    _stage(con, "s", [{"value": 2.0}])
    # A quarantine table with the wrong shape fails after the DELETE ran inside the transaction.
    con.execute("CREATE TEMP TABLE broken_q AS SELECT 1 AS nothing")
    with pytest.raises(duckdb.Error):
        warehouse.replace_partitions(con, "s", file="x", checksum="x", source="demo", quarantine_table="broken_q")
    assert con.execute("SELECT value FROM trade_flows").fetchall() == [(1.0,)]


def test_db_path_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        warehouse.connect("/nonexistent/dir/x.duckdb")
    with pytest.raises(InputError, match="is a folder"):
        warehouse.connect(tmp_path)
    with pytest.raises(TradewatchError, match="no warehouse here yet"):
        warehouse.connect(tmp_path / "missing.duckdb", read_only=True)
    (tmp_path / "junk.duckdb").write_bytes(b"this is not a database" * 100)
    with pytest.raises(TradewatchError, match="is not a tradewatch warehouse \\(not a DuckDB database file\\)"):
        warehouse.connect(tmp_path / "junk.duckdb")


def test_busy_writer_waits_then_fails(tmp_path):
    import subprocess
    import sys
    import time

    path = tmp_path / "w.duckdb"
    warehouse.connect(path).close()
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import duckdb,time; c=duckdb.connect({str(path)!r}); print('held', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        messages = []
        started = time.monotonic()
        with pytest.raises(WarehouseBusy, match="another tradewatch process"):
            warehouse.connect(path, read_only=True, wait_s=1.0, on_wait=messages.append)
        assert time.monotonic() - started < 10
        assert messages and "waiting" in messages[0]
    finally:
        holder.kill()
        holder.wait()
    # Once the writer is gone the reader gets in.
    warehouse.connect(path, read_only=True).close()
