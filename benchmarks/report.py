"""Benchmark the HTML report of a run with many flagged routes: its size and render time, against reading
the legs of every flagged route (route_rows, the rows the charts draw) in the same run.

A copy of a warehouse holding a detection run (default: the demo world, seeded into a temporary
TRADEWATCH_HOME) gets its latest run's flags cloned under new route ids up to --flags rows, so every
flag has real legs to draw.

    python benchmarks/report.py [--db WAREHOUSE] [--flags 1000] [--repeat 3] [--out report.html] [--json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from reporting import print_result  # benchmarks/ is on sys.path when a script here runs


def _demo_warehouse(home: Path) -> Path:
    os.environ["TRADEWATCH_HOME"] = str(home)
    from tradewatch.detect import service
    from tradewatch.flows.core import settings

    service.detect(None)
    return settings.demo_db_path()


def _clone_flags(con, flags: int) -> int:
    """Clone the latest run's anomalies rows under new route ids (ranks after the last) up to `flags` rows."""
    from tradewatch.detect import review

    run_id = review.resolve_run(con, "latest")
    have = con.execute("SELECT count(*) FROM anomalies WHERE run_id = ?", [run_id]).fetchone()[0]
    copies = max(0, -(-flags // max(have, 1)) - 1)
    con.execute("""
        CREATE TEMP TABLE clones AS
        SELECT a.* REPLACE (a.route_id || '-c' || CAST(c.copy AS VARCHAR) AS route_id, a.rank + c.copy * ? AS rank)
        FROM anomalies a, range(1, ? + 1) c(copy) WHERE a.run_id = ?""", [have, copies, run_id])
    con.execute("INSERT INTO anomalies SELECT * FROM clones WHERE rank <= ?", [flags])
    con.execute("UPDATE runs SET flagged = (SELECT count(*) FROM anomalies WHERE run_id = ?) WHERE run_id = ?",
                [run_id, run_id])
    return con.execute("SELECT count(*) FROM anomalies WHERE run_id = ?", [run_id]).fetchone()[0]


def _read_legs(con) -> float:
    from tradewatch.detect import review, route_rows

    started = time.perf_counter()
    run_id = review.resolve_run(con, "latest")
    info = review.run_info(con, run_id)
    flags = review.list_flags(con, run=run_id).to_dicts()
    with route_rows.RouteRows.for_run(con, info.get("params"), flags[0]) as rows:
        rows.legs_of(flags)
    return time.perf_counter() - started


def _render(con, out: Path | None = None) -> tuple[float, int]:
    from tradewatch.detect import report

    started = time.perf_counter()
    text = report.build_report(con, "latest")
    seconds = time.perf_counter() - started
    if out is not None:
        out.write_text(text, encoding="utf-8")
    return seconds, len(text.encode("utf-8"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a warehouse with a detection run (default: the demo world)")
    parser.add_argument("--flags", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the last report rendered here (to open in a browser)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tw-bench-report-") as folder:
        source = args.db or _demo_warehouse(Path(folder) / "home")
        path = Path(folder) / "bench.duckdb"
        shutil.copy(source, path)
        from tradewatch.flows import warehouse

        con = warehouse.connect(path)  # migrated to this tradewatch's schema
        try:
            flagged = _clone_flags(con, args.flags)
            legs_s, report_s, size = [], [], 0
            for _ in range(args.repeat):
                legs_s.append(_read_legs(con))
                seconds, size = _render(con, args.out)
                report_s.append(seconds)
        finally:
            con.close()
    legs, rendered = statistics.median(legs_s), statistics.median(report_s)
    result = {"flagged_routes": flagged, "report_s": round(rendered, 3), "read_legs_s": round(legs, 3),
              "report_over_read_legs": round(rendered / legs, 2), "report_bytes": size,
              "bytes_per_route": round(size / max(flagged, 1))}
    print_result(result, args.json)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
