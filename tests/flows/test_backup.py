"""Backups: a verified Parquet export of every table, refused when tampered, restored whole, taken while a writer waits."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from tradewatch.flows import backup, ingest, schema, warehouse
from tradewatch.flows.core.errors import InputError, WarehouseBusy
from tradewatch.flows.sources import ecb

FIXTURES = Path(__file__).resolve().parent / "fixtures"
COMEXT = FIXTURES / "comext" / "full_202203.dat"
EXACT_TABLES = ("trade_flows", "trade_totals", "loads", "fx_rates", "quarantine", "runs", "reviews")

HOLDER = """
import sys, time
from datetime import datetime
from tradewatch.flows import schema, warehouse
con = warehouse.connect(sys.argv[1])
con.execute("BEGIN TRANSACTION")
con.execute(*schema.bind("reviews", {"route_id": "held-route", "status": "confirmed", "note": "written while held",
                                     "reviewed_at": datetime(2024, 5, 1, 8, 0)}))
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
con.close()
"""


def build_warehouse(path: Path) -> Path:
    """A small warehouse through the real load paths: a Comext month, SDMX totals, ECB rates (with a
    quarantined line), one detection run and one review whose note needs quoting."""
    con = warehouse.connect(path)
    try:
        ingest.load_file(con, COMEXT)
        ingest.load_file(con, FIXTURES / "comext_sdmx" / "ds-045409_sample.csv")
        ecb.load_rates(con, FIXTURES / "ecb" / "EXR_M.USD.EUR.SP00.A.csv")
        con.execute(*schema.bind("runs", {"run_id": "run-1", "started_at": datetime(2024, 4, 1, 9, 30),
                                          "params_json": '{"event": "2022-03"}', "flagged": 2, "candidates": 40}))
        con.execute(*schema.bind("reviews", {"route_id": "route-1", "status": "dismissed",
                                             "note": "l'entrepôt — «reexport» via KAZ", "reviewer": "ana",
                                             "reviewed_at": datetime(2024, 4, 2, 10, 0), "score_at_review": 0.75}))
    finally:
        con.close()
    return path


@pytest.fixture(scope="module")
def _template(tmp_path_factory) -> Path:
    return build_warehouse(tmp_path_factory.mktemp("backup-template") / "w.duckdb")


@pytest.fixture
def db(_template, tmp_path) -> Path:
    return Path(shutil.copy(_template, tmp_path / "w.duckdb"))


def table_stats(path: Path) -> dict[str, dict]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {key: backup.relation_stats(con, f'"{key}"') for key in backup.list_tables(con)}


def exact_rows(path: Path, table: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_restores_identical_tables(db, tmp_path):
    made = backup.backup(db, tmp_path / "bk")
    manifest = json.loads((tmp_path / "bk" / backup.MANIFEST).read_text())
    assert made.tables["trade_flows"] > 0 and made.tables["reviews"] == 1
    assert set(manifest["tables"]) == set(table_stats(db)), "every table is in the backup, schema_version too"
    assert "schema_version" in manifest["tables"] and manifest["schema_version"] == warehouse.SCHEMA_VERSION
    assert manifest["source"] == str(db) and manifest["sequences"]["load_ids"]["next_value"] == made.next_load_id
    assert not list(tmp_path.glob(".bk.partial-*")), "no scratch folder is left"

    restored = backup.restore(tmp_path / "bk", tmp_path / "restored.duckdb")
    assert restored.kept is None and restored.tables == made.tables
    assert table_stats(tmp_path / "restored.duckdb") == table_stats(db)
    for table in EXACT_TABLES:
        assert exact_rows(tmp_path / "restored.duckdb", table) == exact_rows(db, table), table
    assert not list(tmp_path.glob("*.wal")) and not list(tmp_path.glob(".restored.duckdb.restore-*"))
    with warehouse.opened(tmp_path / "restored.duckdb", read_only=True) as con:  # a warehouse commands can read
        assert warehouse.row_count(con) == made.tables["trade_flows"]


def _max_load_id(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT max(load_id) FROM loads").fetchall()[0][0]


def test_next_ingest_after_restore_gets_a_fresh_load_id(db, tmp_path):
    backup.backup(db, tmp_path / "bk")
    target = tmp_path / "restored.duckdb"
    result = backup.restore(tmp_path / "bk", target)
    restored_max = _max_load_id(target)
    assert result.next_load_id == restored_max + 1
    with warehouse.opened(target) as con:
        loaded = ingest.load_file(con, COMEXT, force=True)
    assert loaded.load_id > restored_max


def test_a_lagging_sequence_is_moved_past_the_restored_load_ids(db, tmp_path):
    """A warehouse whose load_ids fell behind its loads (as one rebuilt by hand might): the restore still
    makes the next ingest's id fresh."""
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE OR REPLACE SEQUENCE load_ids START 1")
    backup.backup(db, tmp_path / "bk")
    target = tmp_path / "restored.duckdb"
    result = backup.restore(tmp_path / "bk", target)
    assert result.next_load_id == _max_load_id(db) + 1
    with warehouse.opened(target) as con:
        assert ingest.load_file(con, COMEXT, force=True).load_id > _max_load_id(db)


def _rewrite_with_doubled_value(folder: Path) -> None:
    path = folder / "trade_flows.parquet"
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT * REPLACE (value * 2 AS value) FROM read_parquet('{path}')) "
                    f"TO '{folder / 'doubled.parquet'}' (FORMAT parquet)")
    (folder / "doubled.parquet").replace(path)


def _edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / backup.MANIFEST).read_text())
    change(manifest)
    (folder / backup.MANIFEST).write_text(json.dumps(manifest))


def _forge_checksum(folder: Path) -> None:
    _rewrite_with_doubled_value(folder)
    _edit_manifest(folder, lambda m: m["tables"]["trade_flows"].update(sha256=sha(folder / "trade_flows.parquet")))


TAMPERING = {
    "value changed": (_rewrite_with_doubled_value, "trade_flows.parquet: SHA-256"),
    "value changed, checksum forged": (_forge_checksum, "trade_flows.parquet: table trade_flows has sum of value"),
    "truncated": (lambda f: (f / "loads.parquet").write_bytes((f / "loads.parquet").read_bytes()[:200]),
                  "loads.parquet: SHA-256"),
    "missing": (lambda f: (f / "reviews.parquet").unlink(), "reviews.parquet: is missing"),
    "manifest rows": (lambda f: _edit_manifest(f, lambda m: m["tables"]["runs"].update(rows=2)),
                      "runs.parquet: table runs has 1 rows, expected 2"),
    "manifest not json": (lambda f: (f / backup.MANIFEST).write_text('{"format": '), "manifest.json: is not valid JSON"),
    "load.sql changed": (lambda f: (f / "load.sql").write_text("DROP TABLE loads;\n"), "load.sql: SHA-256"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_a_tampered_backup_is_refused_in_one_line_and_the_target_is_untouched(db, tmp_path, case):
    tamper, expected = TAMPERING[case]
    backup.backup(db, tmp_path / "bk")
    tamper(tmp_path / "bk")
    target = Path(shutil.copy(db, tmp_path / "target.duckdb"))
    before = sha(target)
    with pytest.raises(InputError) as caught:
        backup.restore(tmp_path / "bk", target, force=True)
    message = str(caught.value)
    assert expected in message and "\n" not in message, message
    assert sha(target) == before
    assert not (tmp_path / "target.duckdb.before-restore").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "twhome") == ["bk", "target.duckdb", "w.duckdb"]


def test_out_must_be_new_or_empty(db, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"full: already exists; expected a new \(or empty\) folder"):
        backup.backup(db, tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x.txt"]
    with pytest.raises(InputError, match="already exists"):
        backup.backup(db, db)
    (tmp_path / "empty").mkdir()
    assert backup.backup(db, tmp_path / "empty").tables["trade_flows"] > 0
    assert (tmp_path / "empty" / backup.MANIFEST).is_file()


def test_restore_over_data_needs_force_and_keeps_the_replaced_file(db, tmp_path):
    backup.backup(db, tmp_path / "bk")
    target = tmp_path / "target.duckdb"
    with warehouse.opened(target) as con:
        ingest.load_file(con, COMEXT)
    before = sha(target)
    with pytest.raises(InputError, match=r"target.duckdb: holds data \(.*trade_flows.*\); pass --force"):
        backup.restore(tmp_path / "bk", target)
    assert sha(target) == before

    result = backup.restore(tmp_path / "bk", target, force=True)
    assert result.kept == tmp_path / "target.duckdb.before-restore"
    assert sha(result.kept) == before, "the replaced warehouse is kept as it was"
    assert table_stats(target) == table_stats(db)


def test_restore_into_an_empty_warehouse_needs_no_force(db, tmp_path):
    backup.backup(db, tmp_path / "bk")
    target = tmp_path / "fresh.duckdb"
    warehouse.connect(target).close()  # created and migrated, no data
    assert backup.restore(tmp_path / "bk", target).kept is None
    assert table_stats(target) == table_stats(db)


def _hold(db: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(seconds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
    return holder


def test_backup_waits_for_a_writer_then_takes_a_consistent_snapshot(db, tmp_path):
    holder = _hold(db, 1.5)
    told = []
    try:
        made = backup.backup(db, tmp_path / "bk", on_wait=told.append)
        assert holder.wait(timeout=30) == 0, holder.stderr.read()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert told and "is being written by another process; waiting" in told[0]
    # The writer's transaction was committed before the snapshot was taken: it is in, whole.
    assert made.tables["reviews"] == 2
    manifest = json.loads((tmp_path / "bk" / backup.MANIFEST).read_text())
    assert {key: entry["rows"] for key, entry in manifest["tables"].items()} == \
        {key: stats["rows"] for key, stats in table_stats(db).items()}
    restored = backup.restore(tmp_path / "bk", tmp_path / "restored.duckdb")
    assert table_stats(restored.target) == table_stats(db)


def test_restore_onto_a_busy_target_waits_then_refuses(db, tmp_path, monkeypatch):
    backup.backup(db, tmp_path / "bk")
    monkeypatch.setenv("TRADEWATCH_LOCK_WAIT_S", "0.3")
    holder = _hold(db, 1.0)
    try:
        with pytest.raises(WarehouseBusy) as caught:
            backup.restore(tmp_path / "bk", db, force=True, on_wait=lambda message: None)
    finally:
        holder.wait(timeout=30)
    assert "another tradewatch process is writing" in str(caught.value) and "nothing was restored" in str(caught.value)
    assert not (tmp_path / "w.duckdb.before-restore").exists()
    assert table_stats(db)["reviews"]["rows"] == 2, "the writer's commit stands"
    assert not list(tmp_path.glob(".w.duckdb.restore-*"))


def test_a_demo_backup_says_so_and_restores_into_the_demos_warehouse(tmp_path):
    from tradewatch.flows.core import settings

    settings.home().mkdir(parents=True, exist_ok=True)
    with warehouse.opened(settings.demo_db_path()) as con:
        ingest.load_file(con, COMEXT, source_label="demo")
    made = backup.backup(None, tmp_path / "bk", demo=True)
    assert made.demo and made.source == settings.demo_db_path().absolute()
    shutil.copytree(tmp_path / "bk", tmp_path / "bk2")
    settings.demo_db_path().unlink()
    restored = backup.restore(tmp_path / "bk2")
    assert restored.demo and restored.target == settings.demo_db_path().absolute()
    assert not settings.default_db_path().exists(), "the demo never lands in the real warehouse"
