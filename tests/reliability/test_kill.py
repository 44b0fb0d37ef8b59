"""SIGKILL during a partition load: afterwards the warehouse holds the old or the new partition, never a mix,
and the next run completes the load."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tradewatch.flows import ingest, warehouse

HEADER = ("REPORTER,PARTNER,TRADE_TYPE,PRODUCT_NC,PRODUCT_SITC,PRODUCT_CPA21,PRODUCT_CPA22,PRODUCT_BEC,"
          "PRODUCT_BEC5,PRODUCT_SECTION,FLOW,STAT_PROCEDURE,SUPPL_UNIT,PERIOD,VALUE_EUR,VALUE_NAC,QUANTITY_KG,"
          "QUANTITY_SUPPL_UNIT")


def _write_month(path: Path, factor: int, rows: int = 150_000) -> tuple[int, int]:
    reporters = ["DE", "FR", "IT", "PL", "NL", "CZ"]
    partners = ["RU", "KZ", "GE", "AM", "KG", "TR", "AE", "CN", "BR", "MX"]
    lines = [HEADER]
    total = 0
    for i in range(rows):
        value = (i % 997 + 1) * factor
        total += value
        lines.append(f"{reporters[i % 6]},{partners[(i // 6) % 10]},E,{84000000 + i // 60:08d},,,,,,,2,,,202203,{value},,,")
    path.write_text("\n".join(lines) + "\n")
    return rows, total


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


@pytest.mark.slow
def test_sigkill_leaves_old_or_new_partition(tmp_path):
    db = tmp_path / "w.duckdb"
    old_file, new_file = tmp_path / "old" / "full_202203.dat", tmp_path / "new" / "full_202203.dat"
    old_file.parent.mkdir()
    new_file.parent.mkdir()
    old = _write_month(old_file, 1)
    new = _write_month(new_file, 3)
    con = warehouse.connect(db)
    ingest.load_file(con, old_file)
    con.close()

    rng = random.Random(20220301)
    outcomes = {"old": 0, "new": 0}
    kills = 0
    for attempt in range(8):
        child = subprocess.Popen([sys.executable, "-c", LOADER, str(db), str(new_file)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "open"
        time.sleep(rng.uniform(0.0, 0.35))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait()
        check = duckdb.connect(str(db), read_only=True)
        state = check.execute("SELECT count(*), sum(value) FROM trade_flows").fetchone()
        check.close()
        assert state in (old, new), f"attempt {attempt}: mixed partition {state}, expected {old} or {new}"
        outcomes["old" if state == old else "new"] += 1
        if state == new:  # put the old one back so the next kill can land mid-load again
            con = warehouse.connect(db)
            ingest.load_file(con, old_file, force=True)
            con.close()
    assert kills >= 4, "the loader finished too fast for the kills to land; make the file larger"
    # The next run completes the load.
    con = warehouse.connect(db)
    ingest.load_file(con, new_file, force=True)
    assert con.execute("SELECT count(*), sum(value) FROM trade_flows").fetchone() == new
    assert con.execute("SELECT count(*) FROM loads WHERE status = 'ok'").fetchone()[0] >= 2
