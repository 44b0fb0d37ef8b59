"""Benchmark the Comext ingest path: a synthetic real-size month through tradewatch's loader vs a bare DuckDB read;
with --months N, N packed months through `ingest files` (read in parallel, one writer) vs the floor of the same months."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reporting import print_result  # benchmarks/ is on sys.path when a script here runs

DEFAULT_ROWS = 4_900_000
HEADER = ("REPORTER,PARTNER,TRADE_TYPE,PRODUCT_NC,PRODUCT_SITC,PRODUCT_CPA21,PRODUCT_CPA22,PRODUCT_BEC,"
          "PRODUCT_BEC5,PRODUCT_SECTION,FLOW,STAT_PROCEDURE,SUPPL_UNIT,PERIOD,VALUE_EUR,VALUE_NAC,QUANTITY_KG,"
          "QUANTITY_SUPPL_UNIT")
EU27 = ("AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT", "LT",
        "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK")


def write_synthetic_month(path: Path, rows: int, *, period: str = "202203", seed: int = 7) -> int:
    """Write a Comext-layout .dat of exactly `rows` rows for `period` (YYYYMM) to `path`: 27 reporters,
    about 250 partners (a few confidential Q-codes), about 9,000 CN8 codes, two flows, and 2-3 statistical
    procedure rows for about one key in ten, as in a real bulk file. Returns the row count written."""
    import duckdb
    import pycountry

    partners = sorted({c.alpha_2 for c in pycountry.countries} - {"GR"} | {"EL"})[:244] + ["QP", "QQ", "QR", "QS", "QU", "QV"]
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    reporters_sql = "[" + ",".join(f"'{r}'" for r in EU27) + "]"
    partners_sql = "[" + ",".join(f"'{p}'" for p in partners) + "]"
    # About 9,000 distinct CN8 codes, chapters 01-97 so some begin with a zero.
    con.execute(f"""CREATE TEMP TABLE products AS
        SELECT row_number() OVER () - 1 AS idx, code FROM (
            SELECT DISTINCT lpad(CAST(1 + (hash(i, {seed}) % 97) AS VARCHAR), 2, '0')
                   || lpad(CAST(hash(i, {seed} + 1) % 1000000 AS VARCHAR), 6, '0') AS code
            FROM range(9200) t(i) ORDER BY code LIMIT 9000)""")
    n_products = con.execute("SELECT count(*) FROM products").fetchone()[0]
    keyspace = len(EU27) * len(partners) * n_products * 2
    # A multiplier coprime with the key space walks distinct keys in a scattered order.
    step = 1_000_003
    while _gcd(step, keyspace) != 1:
        step += 2
    key_count = rows
    con.execute(f"""
        COPY (
            WITH keys AS (
                SELECT (i * {step}) % {keyspace} AS k, i FROM range({key_count}) t(i)
            ), decoded AS (
                SELECT i, k % 2 AS flow_index, (k // 2) % {n_products} AS product_index,
                       (k // (2 * {n_products})) % {len(partners)} AS partner_index,
                       (k // (2 * {n_products} * {len(partners)})) AS reporter_index
                FROM keys
            ), expanded AS (
                SELECT d.*, unnest(CASE WHEN hash(i, 3) % 10 = 0 THEN [1, 2, 3] ELSE [1] END) AS procedure
                FROM decoded d
            )
            SELECT {reporters_sql}[reporter_index + 1] AS REPORTER, {partners_sql}[partner_index + 1] AS PARTNER,
                   CASE WHEN partner_index < 5 THEN 'I' ELSE 'E' END AS TRADE_TYPE, p.code AS PRODUCT_NC,
                   substr(p.code, 1, 5) AS PRODUCT_SITC, '' AS PRODUCT_CPA21, '' AS PRODUCT_CPA22, '' AS PRODUCT_BEC,
                   '' AS PRODUCT_BEC5, 'I' AS PRODUCT_SECTION, CAST(flow_index + 1 AS VARCHAR) AS FLOW,
                   CAST(procedure AS VARCHAR) AS STAT_PROCEDURE, CASE WHEN hash(i) % 3 = 0 THEN 'NAR' ELSE '' END AS SUPPL_UNIT,
                   '{period}' AS PERIOD, CAST(1 + hash(i, procedure) % 5000000 AS VARCHAR) AS VALUE_EUR,
                   CAST(1 + hash(i, procedure, 1) % 9000000 AS VARCHAR) AS VALUE_NAC,
                   CAST(hash(i, procedure, 2) % 100000 AS VARCHAR) AS QUANTITY_KG,
                   CASE WHEN hash(i) % 3 = 0 THEN CAST(hash(i, 9) % 1000 AS VARCHAR) ELSE '' END AS QUANTITY_SUPPL_UNIT
            FROM expanded JOIN products p ON p.idx = product_index
            LIMIT {rows}
        ) TO {_sql_text(str(path))} (FORMAT csv, HEADER true, QUOTE '')""")
    con.close()
    with open(path, "rb") as handle:
        written = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 24), b"")) - 1
    return written


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _cpu_s() -> float:
    """CPU seconds (user + system, all threads) this process used: steadier than wall time on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child_ingest(dat: str, home: str) -> None:
    os.environ["TRADEWATCH_HOME"] = home
    from tradewatch.flows import ingest, warehouse

    started = time.perf_counter()
    con = warehouse.connect(Path(home) / "bench.duckdb")
    result = ingest.load_file(con, Path(dat))
    con.close()
    elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "cpu_s": _cpu_s(), "rows_loaded": result.rows,
                      "quarantined": result.quarantined, "status": result.status}))


def _child_ingest_files(home: str, files: list[str]) -> None:
    """tradewatch's ingest of several months as `tradewatch ingest files A.7z B.7z …` runs it (ingest_paths:
    months read ahead on worker threads, one writer loading them in order)."""
    os.environ["TRADEWATCH_HOME"] = home
    from tradewatch.flows import ingest

    started = time.perf_counter()
    summary = ingest.ingest_paths(Path(home) / "bench.duckdb", [Path(f) for f in files])
    elapsed = time.perf_counter() - started
    totals = summary.totals
    print(json.dumps({"seconds": elapsed, "cpu_s": _cpu_s(), "rows_loaded": totals["rows"],
                      "quarantined": totals["quarantined"], "files": totals["files"],
                      "parse_workers": ingest.parse_workers()}))


def _child_extract(files: list[str], scratch: str) -> None:
    """Only the LZMA: each month's .dat out of its .7z, one after the other (as py7zr does it for tradewatch)."""
    from tradewatch.flows.archive import extract_single_member

    started = time.perf_counter()
    for archive in files:
        extract_single_member(Path(archive), Path(scratch)).unlink()
    print(json.dumps({"seconds": time.perf_counter() - started}))


def _child_duckdb(dat: str) -> None:
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect()
    count = con.execute(f"SELECT count(*) FROM read_csv({_sql_text(dat)}, header = true)").fetchone()[0]
    con.close()
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu_s": _cpu_s(), "rows": count}))


def _typed_reader(dat: str) -> str:
    # Typed columns read faster than text plus casts. A loader that quarantines unreadable values row by
    # row reads text, so reading typed columns here only makes these bounds lower.
    types = ("{'REPORTER': 'VARCHAR', 'PARTNER': 'VARCHAR', 'PRODUCT_NC': 'VARCHAR', 'FLOW': 'TINYINT', "
             "'PERIOD': 'INTEGER', 'VALUE_EUR': 'DOUBLE', 'QUANTITY_KG': 'DOUBLE', 'QUANTITY_SUPPL_UNIT': 'DOUBLE', "
             "'SUPPL_UNIT': 'VARCHAR'}")
    return f"read_csv({_sql_text(dat)}, header = true, types = {types})"


def _child_duckdb_floor(dat: str, db: str) -> None:
    """The least any loader meeting the issue's storage rule must do: read the .dat (typed), total the rows
    of each key over statistical procedures, and store the totals in a table of a fresh database file (no
    code mapping, no checks, no quarantine, no checksum and no load records)."""
    _child_duckdb_floor_months(db, [dat])


def _child_duckdb_copy(dat: str, db: str) -> None:
    """Less than any loader: store the .dat's rows as they are (typed, not totalled, nothing checked) in a
    table of a fresh database file."""
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(db)
    con.execute(f"""CREATE TABLE copied AS
        SELECT REPORTER, PARTNER, PRODUCT_NC, FLOW, PERIOD, VALUE_EUR, QUANTITY_KG, QUANTITY_SUPPL_UNIT, SUPPL_UNIT
        FROM {_typed_reader(dat)}""")
    con.close()
    print(json.dumps({"seconds": time.perf_counter() - started}))


def _child_duckdb_floor_months(db: str, dats: list[str]) -> None:
    """The floor of one or several months (see _child_duckdb_floor): one query per month, into one fresh
    database."""
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(db)
    for index, dat in enumerate(dats):
        con.execute(f"""CREATE TABLE totals_{index} AS
            SELECT REPORTER, PARTNER, PRODUCT_NC, FLOW, PERIOD, sum(VALUE_EUR) AS value,
                   sum(QUANTITY_KG) AS net_weight_kg, sum(QUANTITY_SUPPL_UNIT) AS quantity,
                   any_value(SUPPL_UNIT) AS quantity_unit
            FROM {_typed_reader(dat)} GROUP BY ALL""")
    con.close()
    print(json.dumps({"seconds": time.perf_counter() - started}))


def _month_periods(count: int) -> list[str]:
    """`count` consecutive YYYYMM periods from 2017-01, the start of the history."""
    return [f"{2017 + i // 12}{i % 12 + 1:02d}" for i in range(count)]


def _pack_month(dat: str, archive: str) -> None:
    """A Comext-style full_v2_YYYYMM.7z holding the one .dat (LZMA2, fast preset: the time goes to
    generating the benchmark, while decompressing costs about the same at any preset)."""
    import py7zr

    with py7zr.SevenZipFile(archive, "w", filters=[{"id": py7zr.FILTER_LZMA2, "preset": 1}]) as packed:
        packed.write(dat, Path(dat).name)


def _write_months(work: Path, months: int, rows: int) -> tuple[list[Path], list[Path], int]:
    """`months` real-shape months (different periods and seeds) as .dat and as .7z in `work`, packed on
    all cores. Returns the .dat files, the .7z files and the rows written in all."""
    from concurrent.futures import ProcessPoolExecutor

    dats, archives, written = [], [], 0
    for index, period in enumerate(_month_periods(months)):
        dat = work / f"full_{period}.dat"
        written += write_synthetic_month(dat, rows, period=period, seed=7 + index)
        dats.append(dat)
        archives.append(work / f"full_v2_{period}.7z")
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(_pack_month, map(str, dats), map(str, archives)))
    return dats, archives, written


def _run_months(args, work: Path) -> dict:
    """--months N: tradewatch's ingest of N packed months against the floor of the same months, one round."""
    started = time.perf_counter()
    dats, archives, rows = _write_months(work, args.months, args.rows)
    generate_s = time.perf_counter() - started
    home = work / "home"
    home.mkdir(exist_ok=True)
    (home / "bench.duckdb").unlink(missing_ok=True)
    # First child, so ru_maxrss of the children is its own peak (all its reading threads included).
    ingest_out, peak_rss_mb = _run_child(["--child-ingest-files", str(home), *map(str, archives)])
    floor_db = work / "floor.duckdb"
    floor_db.unlink(missing_ok=True)
    floor_out, _ = _run_child(["--child-duckdb-floor-months", str(floor_db), *map(str, dats)])
    floor_db.unlink(missing_ok=True)
    scratch = work / "lzma"
    scratch.mkdir(exist_ok=True)
    lzma_out, _ = _run_child(["--child-extract", str(scratch), *map(str, archives)])
    tradewatch_s, floor_s = ingest_out["seconds"], floor_out["seconds"]
    per_month_s = tradewatch_s / args.months
    return {
        "months": args.months, "rows": rows, "rows_per_month": args.rows,
        "dat_mb": round(sum(d.stat().st_size for d in dats) / 1e6, 1),
        "archive_mb": round(sum(a.stat().st_size for a in archives) / 1e6, 1),
        "generate_s": round(generate_s, 2), "parse_workers": ingest_out["parse_workers"],
        "tradewatch_s": round(tradewatch_s, 3), "per_month_s": round(per_month_s, 3),
        "tradewatch_cpu_s": round(ingest_out["cpu_s"], 2),
        "duckdb_floor_s": round(floor_s, 3), "ratio_to_floor": round(tradewatch_s / floor_s, 2),
        "lzma_s": round(lzma_out["seconds"], 3),
        "peak_rss_mb": round(peak_rss_mb, 1), "rows_loaded": ingest_out["rows_loaded"],
        "quarantined": ingest_out["quarantined"],
        "projected_72_months_s": round(per_month_s * 72, 1),
        "goal_met": per_month_s * 72 <= 720 and peak_rss_mb < 4096,
    }


def _run_child(args: list[str]) -> tuple[dict, float]:
    """Run this script in a child process; returns its JSON line and its peak RSS in MB."""
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    # ru_maxrss of children is the largest of all children waited for so far: the ingest child runs first,
    # so for it this is its own peak.
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return json.loads(out.stdout.strip().splitlines()[-1]), peak_kb / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows in the synthetic month")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the .dat and warehouse in")
    parser.add_argument("--child-ingest", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-duckdb", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1,
                        help="time each contender this many times, alternating, and report the medians")
    parser.add_argument("--child-duckdb-floor", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-duckdb-copy", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--months", type=int, default=None,
                        help="ingest this many real-size months packed as .7z (`ingest files`, months read in "
                             "parallel) against the floor of the same months; one round")
    parser.add_argument("--child-ingest-files", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--child-extract", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--child-duckdb-floor-months", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_ingest_files:
        _child_ingest_files(args.child_ingest_files[0], args.child_ingest_files[1:])
        return 0
    if args.child_extract:
        _child_extract(args.child_extract[1:], args.child_extract[0])
        return 0
    if args.child_duckdb_floor_months:
        _child_duckdb_floor_months(args.child_duckdb_floor_months[0], args.child_duckdb_floor_months[1:])
        return 0
    if args.child_ingest:
        _child_ingest(*args.child_ingest)
        return 0
    if args.child_duckdb:
        _child_duckdb(args.child_duckdb)
        return 0
    if args.child_duckdb_floor:
        _child_duckdb_floor(*args.child_duckdb_floor)
        return 0
    if args.child_duckdb_copy:
        _child_duckdb_copy(*args.child_duckdb_copy)
        return 0
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.months is not None and args.months < 1:
        parser.error("--months must be at least 1")
    work = args.keep or Path(tempfile.mkdtemp(prefix="tradewatch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.months is not None:
        try:
            result = _run_months(args, work)
        finally:
            if args.keep is None:
                import shutil

                shutil.rmtree(work, ignore_errors=True)
        print_result(result, args.json)
        return 0
    dat = work / "full_202203.dat"
    started = time.perf_counter()
    rows = write_synthetic_month(dat, args.rows)
    generate_s = time.perf_counter() - started
    home = work / "home"
    home.mkdir(exist_ok=True)
    floor_db = work / "floor.duckdb"
    times: dict[str, list[float]] = {"tradewatch": [], "read": [], "floor": [], "copy": []}
    peak_rss_mb = 0.0
    for _ in range(args.repeat):
        # The same order each round (tradewatch first, so ru_maxrss of the children is its peak), medians
        # over the rounds: one slow round on a shared machine does not decide the ratio.
        (home / "bench.duckdb").unlink(missing_ok=True)
        ingest_out, peak = _run_child(["--child-ingest", str(dat), str(home)])
        peak_rss_mb = max(peak_rss_mb, peak)
        duckdb_out, _ = _run_child(["--child-duckdb", str(dat)])
        floor_db.unlink(missing_ok=True)
        floor_out, _ = _run_child(["--child-duckdb-floor", str(dat), str(floor_db)])
        floor_db.unlink(missing_ok=True)
        copy_out, _ = _run_child(["--child-duckdb-copy", str(dat), str(floor_db)])
        floor_db.unlink(missing_ok=True)
        times["tradewatch"].append(ingest_out["seconds"])
        times["read"].append(duckdb_out["seconds"])
        times["floor"].append(floor_out["seconds"])
        times["copy"].append(copy_out["seconds"])
    tradewatch_s, read_s, floor_s, copy_s = (statistics.median(times[k]) for k in ("tradewatch", "read", "floor", "copy"))
    result = {
        "rows": rows,
        "dat_mb": round(dat.stat().st_size / 1e6, 1),
        "generate_s": round(generate_s, 2),
        "repeat": args.repeat,
        "tradewatch_s": round(tradewatch_s, 3),
        "duckdb_read_s": round(read_s, 3),
        "ratio": round(tradewatch_s / read_s, 2),
        "duckdb_floor_s": round(floor_s, 3),
        "floor_ratio": round(floor_s / read_s, 2),
        "ratio_to_floor": round(tradewatch_s / floor_s, 2),
        "duckdb_copy_s": round(copy_s, 3),
        "copy_ratio": round(copy_s / read_s, 2),
        "tradewatch_cpu_s": round(ingest_out["cpu_s"], 2),
        "duckdb_read_cpu_s": round(duckdb_out["cpu_s"], 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "rows_loaded": ingest_out["rows_loaded"],
        "quarantined": ingest_out["quarantined"],
        "goal_met": tradewatch_s <= 2 * read_s and peak_rss_mb < 2048,
    }
    if args.keep is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
