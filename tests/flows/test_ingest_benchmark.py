"""benchmarks/ingest.py runs end to end on a small synthetic month and reports the agreed fields."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "ingest.py"


def test_benchmark_small_run_reports_rows_times_and_memory(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--rows", "3000", "--json", "--keep", str(tmp_path),
                          "--repeat", "2"],
                         capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(out.stdout)
    assert report["rows"] == 3000
    assert report["rows_loaded"] < 3000  # several statistical-procedure rows per key were summed
    assert report["quarantined"] == 0
    assert report["repeat"] == 2
    for key in ("tradewatch_s", "duckdb_read_s", "ratio", "duckdb_floor_s", "ratio_to_floor", "duckdb_copy_s",
                "copy_ratio", "peak_rss_mb"):
        assert report[key] > 0
    # The ratio comes from unrounded times; the times are printed to the millisecond.
    assert report["ratio"] == pytest.approx(report["tradewatch_s"] / report["duckdb_read_s"], rel=0.05)
    assert report["goal_met"] == (report["tradewatch_s"] <= 2 * report["duckdb_read_s"] and report["peak_rss_mb"] < 2048)


def test_benchmark_refuses_a_repeat_below_one():
    out = subprocess.run([sys.executable, str(SCRIPT), "--rows", "10", "--repeat", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--repeat must be at least 1" in out.stderr
