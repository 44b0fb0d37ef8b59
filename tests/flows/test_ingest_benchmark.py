"""benchmarks/ingest.py runs end to end on a small synthetic month and reports the agreed fields."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "ingest.py"


def test_benchmark_small_run_reports_rows_times_and_memory(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--rows", "3000", "--json", "--keep", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(out.stdout)
    assert report["rows"] == 3000
    assert report["rows_loaded"] < 3000  # several statistical-procedure rows per key were summed
    assert report["quarantined"] == 0
    for key in ("tradewatch_s", "duckdb_read_s", "ratio", "peak_rss_mb"):
        assert report[key] > 0
