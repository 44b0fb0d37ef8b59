"""SIGKILL during a partition load (library, the real CLI, a .7z): afterwards the warehouse holds the old or
the new partition, never a mix, no scratch is left behind once the next run starts, and the next run completes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from corpus import seven_zip
from tradewatch.flows.core import settings
from tradewatch.flows import ingest, warehouse

HEADER = ("REPORTER,PARTNER,TRADE_TYPE,PRODUCT_NC,PRODUCT_SITC,PRODUCT_CPA21,PRODUCT_CPA22,PRODUCT_BEC,"
          "PRODUCT_BEC5,PRODUCT_SECTION,FLOW,STAT_PROCEDURE,SUPPL_UNIT,PERIOD,VALUE_EUR,VALUE_NAC,QUANTITY_KG,"
          "QUANTITY_SUPPL_UNIT")


def _month_text(factor: int, rows: int = 150_000) -> tuple[str, tuple[int, int]]:
    reporters = ["DE", "FR", "IT", "PL", "NL", "CZ"]
    partners = ["RU", "KZ", "GE", "AM", "KG", "TR", "AE", "CN", "BR", "MX"]
    lines = [HEADER]
    total = 0
    for i in range(rows):
        value = (i % 997 + 1) * factor
        total += value
        lines.append(f"{reporters[i % 6]},{partners[(i // 6) % 10]},E,{84000000 + i // 60:08d},,,,,,,2,,,202203,{value},,,")
    return "\n".join(lines) + "\n", (rows, total)


def _write_month(path: Path, factor: int, rows: int = 150_000) -> tuple[int, int]:
    text, state = _month_text(factor, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return state


LOADER = """
import sys
from pathlib import Path
from tradewatch.flows import ingest, warehouse
con = warehouse.connect(sys.argv[1])
print("open", flush=True)
ingest.load_file(con, Path(sys.argv[2]), force=True)
con.close()
print("done", flush=True)
"""


def _state(db: Path) -> tuple[int, int]:
    check = duckdb.connect(str(db), read_only=True)
    try:
        return check.execute("SELECT count(*), sum(value) FROM trade_flows").fetchone()
    finally:
        check.close()


def _load(db: Path, path: Path) -> None:
    con = warehouse.connect(db)
    try:
        # Putting the smaller old month back is a deliberate shrink (the shrink guard would refuse it).
        ingest.load_file(con, path, force=True, shrink_limit=None)
    finally:
        con.close()


def _stale_scratch() -> list[Path]:
    root = settings.cache_dir() / "extract"
    return [p for p in root.iterdir()] if root.is_dir() else []


def _kill_loop(db: Path, old_file: Path, old: tuple, new: tuple, start, attempts: int, seed: int,
               window: tuple[float, float]) -> tuple[int, dict]:
    """Start the loader `attempts` times, SIGKILL it at a random moment in `window` seconds after it is
    ready, and check the warehouse after each kill. Returns (kills, outcomes)."""
    rng = random.Random(seed)
    outcomes = {"old": 0, "new": 0}
    kills = 0
    for attempt in range(attempts):
        child = start()
        time.sleep(rng.uniform(*window))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait()
        state = _state(db)
        assert state in (old, new), f"attempt {attempt}: mixed partition {state}, expected {old} or {new}"
        outcomes["old" if state == old else "new"] += 1
        if state == new:  # put the old one back so the next kill can land mid-load again
            _load(db, old_file)
    print(f"SIGKILL: {kills} of {attempts} kills landed mid-run; warehouse after them: {outcomes}")
    return kills, outcomes


def _setup(tmp_path: Path) -> tuple[Path, Path, Path, tuple, tuple]:
    db = tmp_path / "w.duckdb"
    old_file, new_file = tmp_path / "old" / "full_202203.dat", tmp_path / "new" / "full_202203.dat"
    old = _write_month(old_file, 1)
    new = _write_month(new_file, 3)
    _load(db, old_file)
    return db, old_file, new_file, old, new


def _finish(db: Path, new_file: Path, new: tuple) -> None:
    _load(db, new_file)
    assert _state(db) == new, "the next run completes the load"
    assert not _stale_scratch(), f"scratch of killed runs is removed by the next run: {_stale_scratch()}"
    check = duckdb.connect(str(db), read_only=True)
    try:
        last = check.execute("""SELECT rows, value_sum FROM loads WHERE status = 'ok' AND period = DATE '2022-03-01'
                                ORDER BY load_id DESC LIMIT 1""").fetchone()
    finally:
        check.close()
    assert last == (new[0], float(new[1])), "the load record matches what is stored"


@pytest.mark.slow
def test_sigkill_leaves_old_or_new_partition(tmp_path):
    db, old_file, new_file, old, new = _setup(tmp_path)

    def start():
        child = subprocess.Popen([sys.executable, "-c", LOADER, str(db), str(new_file)], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "open"
        return child

    whole = _measured(start)  # from "open" to the end of the load: kills land anywhere in it
    assert _state(db) == new
    _load(db, old_file)
    # A load's duration varies by tens of percent on a busy machine (it failed 3 of 8 in CI at 0.95 × one
    # measurement): kill within the first 70 % of it, where a kill lands mid-load nearly always.
    kills, outcomes = _kill_loop(db, old_file, old, new, start, attempts=8, seed=20220301, window=(0.0, 0.7 * whole))
    assert kills >= 4, f"the loader finished too fast ({whole:.2f} s) for the kills to land; make the file larger"
    _finish(db, new_file, new)


def _cli_start(db: Path, path: Path):
    def start():
        return subprocess.Popen([sys.executable, "-m", "tradewatch.cli.main", "ingest", "files", str(path),
                                 "--db", str(db), "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return start


def _measured(start) -> float:
    """Seconds from start() returning (the moment kills are timed from) to the loader's exit."""
    child = start()
    began = time.monotonic()
    assert child.wait() == 0
    return time.monotonic() - began


@pytest.mark.slow
def test_sigkill_of_the_cli_ingest_files(tmp_path):
    db, old_file, new_file, old, new = _setup(tmp_path)
    start = _cli_start(db, new_file)
    whole = _measured(start)  # startup, staging, the transaction: kills land anywhere in it
    assert _state(db) == new
    _load(db, old_file)
    kills, outcomes = _kill_loop(db, old_file, old, new, start, attempts=6, seed=7, window=(0.3 * whole, 0.97 * whole))
    assert kills >= 3, f"the CLI finished too fast ({whole:.2f} s) for the kills to land"
    _finish(db, new_file, new)


@pytest.mark.slow
def test_sigkill_while_loading_a_7z(tmp_path):
    db, old_file, _, old, _ = _setup(tmp_path)
    text, new = _month_text(5)
    archive = tmp_path / "new7z" / "full_v2_202203.7z"
    archive.parent.mkdir()
    archive.write_bytes(seven_zip({"full_202203.dat": text.encode()}))
    start = _cli_start(db, archive)
    whole = _measured(start)
    assert _state(db) == new
    _load(db, old_file)
    kills, outcomes = _kill_loop(db, old_file, old, new, start, attempts=6, seed=11, window=(0.3 * whole, 0.97 * whole))
    assert kills >= 3, f"the load finished too fast ({whole:.2f} s) for the kills to land"
    _finish(db, archive, new)


def test_stale_scratch_of_a_dead_process_is_removed():
    """Scratch folders carry their process id; the next load removes those whose process is gone."""
    root = settings.cache_dir() / "extract"
    root.mkdir(parents=True, exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = root / f"extract-{dead.stdout.strip()}-abc123"
    (stale / "spill").mkdir(parents=True)
    (stale / "full_202203.dat").write_bytes(b"x" * 1000)
    mine = root / f"extract-{os.getpid()}-live"
    mine.mkdir()
    ingest._scratch_root()
    assert not stale.exists() and mine.exists()
    mine.rmdir()
