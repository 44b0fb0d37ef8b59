"""Benchmark the cost of keeping vintages: a year of monthly refreshes (one new month, the two before it
revised) through warehouse.replace_partitions, against a warehouse holding only the final data, built
in the same run. Reports storage (file size after CHECKPOINT), history rows, and the time of a revising
load against a bare DuckDB delete-and-insert of the same rows, all as ratios measured in this run.

    python benchmarks/vintages.py [--rows 300000] [--months 24] [--refreshes 12] [--changed 0.05] [--json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from reporting import print_result  # benchmarks/ is on sys.path when a script here runs

EU27 = 27
PARTNERS = 240


def _stage(con, table: str, *, month: int, rows: int, revision: int, changed: float, churn: float) -> None:
    """TEMP `table`: canonical Comext-like rows of month index `month` (0 = 2017-01) as revision
    `revision` (0: first publication). A revision changes the value of about `changed` of the rows, drops
    about `churn` of them and adds as many new ones; rows are otherwise identical between revisions."""
    from tradewatch.flows import schema

    period = f"DATE '2017-01-01' + INTERVAL ({month}) MONTH"
    extra = int(rows * churn) if revision else 0
    # Deterministic per (month, row): a heavy-tailed value, a revision factor for the rows it touches.
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT 'comext' AS source, 'M' AS freq, CAST({period} AS DATE) AS period,
               'R' || lpad(CAST(i % {EU27} AS VARCHAR), 2, '0') AS reporter_iso3,
               'P' || chr(65 + CAST((i // {EU27}) % {PARTNERS} AS INTEGER) // 26) || chr(65 + CAST((i // {EU27}) % {PARTNERS} AS INTEGER) % 26) AS partner_iso3,
               CASE WHEN (i // {EU27 * PARTNERS}) % 2 = 0 THEN 'export' ELSE 'import' END AS flow,
               lpad(CAST(10000000 + (i // {EU27 * PARTNERS * 2}) * 7919 % 89999999 AS VARCHAR), 8, '0') AS product_code,
               CAST(8 AS TINYINT) AS product_level,
               round(exp(8 + 3 * ((hash(i, {month}) % 10000) / 10000.0)) *
                     CASE WHEN {revision} > 0 AND hash(i, {month}, {revision}) % 10000 < {int(changed * 10000)}
                          THEN 1 + (CAST(hash(i, {month}, {revision}, 1) % 2000 AS DOUBLE) - 1000) / 10000.0 ELSE 1 END, 0) AS value,
               'EUR' AS currency,
               round(exp(5 + 3 * ((hash(i, {month}, 7) % 10000) / 10000.0)), 0) AS net_weight_kg,
               CAST(NULL AS DOUBLE) AS quantity, CAST(NULL AS VARCHAR) AS quantity_unit
        FROM range({rows + extra}) t(i)
        WHERE NOT ({revision} > 0 AND i < {rows} AND hash(i, {month}, {revision}, 2) % 10000 < {int(churn * 10000)})
          AND (i < {rows} OR {revision} > 0)""")
    assert set(c[0] for c in con.execute(f"DESCRIBE {table}").fetchall()) == set(schema.COLUMN_NAMES)


def _size(path: Path) -> int:
    return path.stat().st_size + (path.with_suffix(path.suffix + ".wal").stat().st_size
                                  if path.with_suffix(path.suffix + ".wal").exists() else 0)


def _checkpointed_size(con, path: Path) -> int:
    con.execute("CHECKPOINT")
    return _size(path)


def run(rows: int, months: int, refreshes: int, changed: float, churn: float, folder: Path) -> dict:
    from tradewatch.flows import warehouse

    kept_path, final_path = folder / "vintages.duckdb", folder / "final.duckdb"
    kept = warehouse.connect(kept_path)
    revision_of: dict[int, int] = {}
    started = time.perf_counter()
    for month in range(months):
        _stage(kept, "s", month=month, rows=rows, revision=0, changed=changed, churn=churn)
        warehouse.replace_partitions(kept, "s", file=f"m{month}", checksum=f"m{month}-0", source="comext")
        revision_of[month] = 0
    initial_s = time.perf_counter() - started
    revision_s, plain_s = [], []
    for k in range(refreshes):
        new = months + k
        for month in (new - 2, new - 1):  # the two months before the new one are revised
            revision_of[month] += 1
            _stage(kept, "s", month=month, rows=rows, revision=revision_of[month], changed=changed, churn=churn)
            # Baseline, same rows, same run: a bare delete and insert of the month in a copy of its table.
            # (a stored table holding the month and the month before, written to the same file).
            kept.execute("CREATE OR REPLACE TABLE bench_plain AS SELECT * EXCLUDE (load_id) FROM trade_flows "
                         "WHERE period >= (SELECT min(period) FROM s) - INTERVAL 1 MONTH")
            kept.execute("CHECKPOINT")
            t0 = time.perf_counter()
            kept.execute("BEGIN TRANSACTION")
            kept.execute("DELETE FROM bench_plain WHERE period = (SELECT min(period) FROM s)")
            kept.execute("INSERT INTO bench_plain SELECT * FROM s")
            kept.execute("COMMIT")
            plain_s.append(time.perf_counter() - t0)
            kept.execute("DROP TABLE bench_plain")
            t0 = time.perf_counter()
            warehouse.replace_partitions(kept, "s", file=f"m{month}", checksum=f"m{month}-{revision_of[month]}",
                                         source="comext", shrink_limit=None)
            revision_s.append(time.perf_counter() - t0)
        _stage(kept, "s", month=new, rows=rows, revision=0, changed=changed, churn=churn)
        warehouse.replace_partitions(kept, "s", file=f"m{new}", checksum=f"m{new}-0", source="comext")
        revision_of[new] = 0
    current_rows = kept.execute("SELECT count(*) FROM trade_flows").fetchall()[0][0]
    history_rows = kept.execute("SELECT count(*) FROM trade_flows_history").fetchall()[0][0]
    kept_bytes = _checkpointed_size(kept, kept_path)
    # Each part written compactly to its own file: what the history costs, apart from the free blocks
    # that deletes leave in a live file (which later loads reuse).
    parts = {}
    for name, tables in (("current", ("trade_flows", "loads", "load_partitions")), ("history", ("trade_flows_history",))):
        target = folder / f"{name}.duckdb"
        kept.execute(f"ATTACH '{target}' AS {name}_copy")
        for table in tables:
            kept.execute(f"CREATE TABLE {name}_copy.{table} AS SELECT * FROM main.{table}")
        kept.execute(f"DETACH {name}_copy")
        parts[name] = _size(target)
    kept.close()

    # The same final data, each month loaded once in its final version: the warehouse without vintages.
    final = warehouse.connect(final_path)
    for month, revision in sorted(revision_of.items()):
        _stage(final, "s", month=month, rows=rows, revision=revision, changed=changed, churn=churn)
        warehouse.replace_partitions(final, "s", file=f"m{month}", checksum=f"m{month}-{revision}", source="comext")
    final_rows = final.execute("SELECT count(*) FROM trade_flows").fetchall()[0][0]
    final_bytes = _checkpointed_size(final, final_path)
    final.close()
    assert final_rows == current_rows, (final_rows, current_rows)
    revisions = len(revision_s)
    return {
        "months": months + refreshes, "rows_per_month": rows, "refreshes": refreshes, "revisions": revisions,
        "changed_share": changed, "churn_share": churn,
        "current_rows": current_rows, "history_rows": history_rows,
        "warehouse_file_mb": round(kept_bytes / 1e6, 1), "final_data_only_file_mb": round(final_bytes / 1e6, 1),
        "current_compact_mb": round(parts["current"] / 1e6, 1), "history_compact_mb": round(parts["history"] / 1e6, 1),
        "history_share_of_warehouse": round(parts["history"] / (parts["current"] + parts["history"]), 3),
        "history_rows_share": round(history_rows / (history_rows + current_rows), 3),
        "initial_load_s": round(initial_s, 1),
        "revision_load_s_median": round(sorted(revision_s)[revisions // 2], 2),
        "plain_replace_s_median": round(sorted(plain_s)[revisions // 2], 2),
        "revision_load_ratio_to_plain_replace": round(sorted(revision_s)[revisions // 2] /
                                                      max(sorted(plain_s)[revisions // 2], 1e-6), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000, help="rows per month (a real Comext month: ~4.9 M)")
    parser.add_argument("--months", type=int, default=24, help="months loaded before the year of refreshes")
    parser.add_argument("--refreshes", type=int, default=12, help="monthly refreshes (one new month, two revised)")
    parser.add_argument("--changed", type=float, default=0.05, help="share of a revised month's rows whose value changes")
    parser.add_argument("--churn", type=float, default=0.005, help="share of rows a revision drops (and as many added)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    for name in ("changed", "churn"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name} {getattr(args, name)}: expected a share between 0 and 1")
    if args.rows < 1000 or args.months < 3 or args.refreshes < 1:
        parser.error("expected --rows ≥ 1000, --months ≥ 3, --refreshes ≥ 1")
    with tempfile.TemporaryDirectory(prefix="tw-vintages-") as folder:
        os.environ.setdefault("TRADEWATCH_HOME", folder)
        result = run(args.rows, args.months, args.refreshes, args.changed, args.churn, Path(folder))
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
