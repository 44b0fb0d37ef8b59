"""Warehouse: migrations, atomic partition replace, re-runs never duplicate, failures leave the old partition."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from tradewatch.flows import schema, warehouse
from tradewatch.flows.core.errors import InputError, TradewatchError, WarehouseBusy


def _stage(con, name, rows):
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM trade_flows LIMIT 0")
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
    con.execute("INSERT INTO trade_flows SELECT * FROM s")  # what a version-1 tradewatch left behind
    con.close()
    monkeypatch.setattr(warehouse, "MIGRATIONS", warehouse.MIGRATIONS + [(999, ["CREATE TABLE added_later (x INTEGER)"])])
    con = warehouse.connect(path)
    assert warehouse.schema_version(con) == 999
    assert con.execute("SELECT count(*) FROM added_later").fetchone()[0] == 0
    assert warehouse.row_count(con) == 1  # data survives the migration


def test_replace_partition_is_idempotent_and_replaces(tmp_path):
    con = warehouse.connect(tmp_path / "w.duckdb")
    rows = [{"partner_iso3": "KAZ"}, {"partner_iso3": "ARM", "value": 50.0}]
    for _ in range(3):
        _stage(con, "s", rows)
        warehouse.replace_partitions(con, "s", file="f", checksum="c", source="demo")
    assert warehouse.row_count(con) == 2
    # A revised file replaces the partition: ARM disappears, KAZ changes value.
    _stage(con, "s", [{"partner_iso3": "KAZ", "value": 7.0}])
    result = warehouse.replace_partitions(con, "s", file="f2", checksum="c2", source="demo")
    assert result.rows == 1 and result.value_sum == {"EUR": 7.0} and result.periods == ["2022-01"]
    assert con.execute("SELECT partner_iso3, value FROM trade_flows").fetchall() == [("KAZ", 7.0)]
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
    with pytest.raises(TradewatchError, match="cannot open warehouse"):
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
