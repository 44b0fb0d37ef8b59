"""Several months at once: read ahead on worker threads, loaded in order by one writer, with the same
warehouse, results and errors as file by file; and the Comext reader's one pass straight to Parquet gives
the rows, checks and key judgement of its TEMP-table path."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import pytest

from ingest_helpers import FIXTURES, home  # noqa: F401  (fixture)
from tradewatch.flows import ingest, schema, warehouse
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.sources import comext

HEADER = ",".join(comext.COLUMNS)
DAT = FIXTURES / "comext" / "full_202203.dat"


def _month(folder: Path, period: str, *, factor: int = 1, partners=("RU", "KZ", "EL", "QS"), extra: str = "") -> Path:
    """A clean Comext month: 3 reporters × `partners` × 20 products, two procedures for some keys."""
    lines = [HEADER]
    for r, reporter in enumerate(("DE", "FR", "PL")):
        for p, partner in enumerate(partners):
            for product in range(20):
                value = (r + 1) * (p + 2) * (product + 1) * factor
                lines.append(f"{reporter},{partner},E,{85000000 + product:08d},,,,,,,2,1,,{period},{value},,{product},")
                if product % 4 == 0:
                    lines.append(f"{reporter},{partner},E,{85000000 + product:08d},,,,,,,2,2,,{period},7,,1,")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"full_{period}.dat"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def _stage(path: Path, tmp_path: Path, *, fast: bool):
    con = duckdb.connect()
    folder = tmp_path / ("fast" if fast else "slow")
    folder.mkdir(exist_ok=True)
    staged = comext.stage(con, path, table="t", parquet_dir=folder if fast else None)
    rows = con.execute(f"SELECT {', '.join(schema.COLUMN_NAMES)} FROM t ORDER BY ALL").fetchall()
    quarantine = con.execute("SELECT line, reason FROM t_quarantine ORDER BY line").fetchall()
    con.close()
    return staged, rows, quarantine


@pytest.mark.parametrize("partners, unique", [(("RU", "KZ", "EL", "QS"), True), (("RU", "GR", "EL"), False),
                                              (("RU", "ru"), False), (("QA", "qa"), False)])
def test_one_pass_to_parquet_stages_what_the_temp_table_path_stages(tmp_path, partners, unique):
    path = _month(tmp_path, "202203", partners=partners)
    fast, fast_rows, fast_quarantine = _stage(path, tmp_path, fast=True)
    slow, slow_rows, slow_quarantine = _stage(path, tmp_path, fast=False)
    assert fast.parquet and Path(fast.parquet).exists() and slow.parquet is None
    assert fast_rows == slow_rows and len(fast_rows) == fast.rows == slow.rows > 0
    assert fast_quarantine == slow_quarantine == []
    # Two spellings of one country (GR and EL, ru and RU) may merge keys: the warehouse checks them then.
    assert fast.key_unique == slow.key_unique == unique


def test_a_file_with_refused_or_repeated_rows_takes_the_temp_table_path(tmp_path):
    bad = _month(tmp_path / "bad", "202203", extra="DE,XX,E,85000001,,,,,,,2,1,,202203,5,,1,\nDE,RU,E,1234,,,,,,,1,1,,202203,5,,1,\n")
    fast, fast_rows, fast_quarantine = _stage(bad, tmp_path, fast=True)
    slow, slow_rows, slow_quarantine = _stage(bad, tmp_path, fast=False)
    assert fast.parquet is None and not list((tmp_path / "fast").iterdir())
    assert (fast_rows, fast_quarantine) == (slow_rows, slow_quarantine) and len(fast_quarantine) == 2
    repeated = _month(tmp_path / "rep", "202203", extra="DE,RU,E,85000001,,,,,,,2,1,,202203,5,,1,\n")
    with pytest.raises(InputError, match="duplicate row"):
        _stage(repeated, tmp_path, fast=True)


def _warehouse_state(db: Path) -> tuple[list, list]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        flows = con.execute(f"SELECT {', '.join(schema.COLUMN_NAMES)}, load_id FROM trade_flows ORDER BY ALL").fetchall()
        loads = con.execute("SELECT load_id, file, checksum, period, rows, value_sum, status FROM loads ORDER BY ALL").fetchall()
    finally:
        con.close()
    return flows, loads


def _months(folder: Path, count: int = 5) -> list[Path]:
    return [_month(folder, f"2022{m:02d}", factor=m) for m in range(1, count + 1)]


def test_months_read_in_parallel_load_as_file_by_file(home, tmp_path, monkeypatch):
    files = _months(tmp_path / "in")
    states, statuses = [], []
    for workers in ("1", "3"):
        monkeypatch.setenv(ingest.PARSE_WORKERS_ENV, workers)
        db = tmp_path / f"w{workers}.duckdb"
        events = []
        summary = ingest.ingest_paths(db, files, on_event=lambda kind, **info: events.append((kind, info["name"])))
        statuses.append([r.status for r in summary.results])
        states.append(_warehouse_state(db))
        # The writer says 'load' then 'loaded' for each file, in the order given.
        assert events == [(kind, str(f)) for f in files for kind in ("load", "loaded")]
        again = ingest.ingest_paths(db, files)
        assert [r.status for r in again.results] == ["unchanged"] * len(files)
    assert statuses == [["ok"] * len(files)] * 2
    flows_1, loads_1 = states[0]
    flows_3, loads_3 = states[1]
    assert flows_1 == flows_3 and [row[1:] for row in loads_1] == [row[1:] for row in loads_3]
    assert not list((Path(home) / "cache" / "extract").glob("extract-*"))


def test_a_bad_month_stops_the_run_there_and_leaves_no_scratch(home, tmp_path, monkeypatch):
    monkeypatch.setenv(ingest.PARSE_WORKERS_ENV, "3")
    files = _months(tmp_path / "in")
    files[2].write_text("REPORTER,PARTNER\nDE,RU\n")
    db = tmp_path / "w.duckdb"
    with pytest.raises(InputError, match=files[2].name):
        ingest.ingest_paths(db, files)
    con = duckdb.connect(str(db), read_only=True)
    periods = con.execute("SELECT DISTINCT strftime(period, '%Y%m') FROM trade_flows ORDER BY 1").fetchall()
    con.close()
    assert periods == [("202201",), ("202202",)]
    assert not list((Path(home) / "cache" / "extract").glob("extract-*"))


def test_a_month_replaced_earlier_in_the_same_run_loads_again(home, tmp_path, monkeypatch):
    monkeypatch.setenv(ingest.PARSE_WORKERS_ENV, "2")
    first = _month(tmp_path / "a", "202203", factor=1)
    revised = _month(tmp_path / "b", "202203", factor=2)
    db = tmp_path / "w.duckdb"
    ingest.ingest_paths(db, [first])
    # Read ahead, `first` looks loaded; by its turn `revised` has replaced it, so it loads again.
    summary = ingest.ingest_paths(db, [revised, first])
    assert [r.status for r in summary.results] == ["ok", "ok"]
    con = warehouse.connect(db, read_only=True)
    assert con.execute("SELECT sum(value) FROM trade_flows").fetchone()[0] == summary.results[1].value_sum["EUR"]
    con.close()


def test_reading_ahead_stays_within_its_workers():
    started, taken, lock = [], [], threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
            assert i <= len(taken) + 2, f"item {i} started while the caller had taken {len(taken)}"
        time.sleep(0.01)
        return i * i

    for future in ingest._in_order(list(range(8)), work, workers=2):
        taken.append(future.result())
        time.sleep(0.02)
    assert taken == [i * i for i in range(8)] and sorted(started) == list(range(8))


def test_an_error_comes_at_its_items_turn_and_later_results_are_discarded():
    discarded = []

    def work(i: int) -> int:
        if i == 1:
            raise InputError("f1", "broken")
        return i

    futures = ingest._in_order(list(range(5)), work, workers=3, discard=discarded.append)
    assert next(futures).result() == 0
    with pytest.raises(InputError, match="broken"):
        next(futures).result()
    futures.close()
    assert set(discarded) <= {2, 3, 4} and discarded  # read ahead, never loaded: handed back for cleanup


def test_parse_workers_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(ingest.PARSE_WORKERS_ENV, "3")
    assert ingest.parse_workers() == 3
    monkeypatch.setenv(ingest.PARSE_WORKERS_ENV, "0")
    with pytest.raises(InputError, match=ingest.PARSE_WORKERS_ENV):
        ingest.parse_workers()
