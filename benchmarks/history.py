"""Benchmark the whole history: an N-month world of real Comext shape (benchmarks/history_world.py)
through tradewatch's ingest of the monthly .7z files, detection on the canonical warehouse, and the
monthly refresh (one new month, two revised), each against the DuckDB floor of the same data."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reporting import print_result  # benchmarks/ is on sys.path when a script here runs

DEFAULT_ROWS = 4_900_000
PARTS = ("ingest", "detect", "refresh", "all")


def _world(rows: int):
    import history_world

    return history_world.World(rows_per_month=rows)


# --- children: each runs in its own process, so its peak memory is its own ----------------------------

def child_build(db: str, months: int, rows: int) -> dict:
    """Make `db` hold the `months`-month world (months it already holds are kept): canonical rows written
    month by month from DuckDB SQL into the attached warehouse."""
    import duckdb

    import history_world
    from tradewatch.flows import warehouse

    started = time.perf_counter()
    con = warehouse.connect(Path(db))
    warehouse.migrate(con)
    held = {r[0] for r in con.execute("SELECT DISTINCT period FROM loads WHERE source = 'comext'").fetchall()}
    con.close()
    wanted = [m for m in history_world.months(months) if m not in held]
    written = 0
    if wanted:
        gen = duckdb.connect()
        gen.execute(f"SET temp_directory = '{Path(db).parent / 'duckdb_tmp'}'")
        world = _world(rows)
        world.build(gen)
        gen.execute(f"ATTACH '{db}' AS wh")
        for period in wanted:
            written += history_world.write_warehouse_month(gen, world, period, schema_name="wh")
        gen.execute("CHECKPOINT wh")
        gen.close()
    return {"seconds": round(time.perf_counter() - started, 2), "months_written": len(wanted), "rows_written": written}


def child_7z(folder: str, periods: str, rows: int, revision: int) -> dict:
    """Write the .7z bulk files of `periods` (comma-separated YYYY-MM) to `folder`."""
    from datetime import date

    import duckdb

    import history_world

    started = time.perf_counter()
    gen = duckdb.connect()
    world = _world(rows)
    world.build(gen)
    keys = {}
    for text in periods.split(","):
        period = date(int(text[:4]), int(text[5:7]), 1)
        path, count = history_world.write_7z_month(gen, world, period, Path(folder), revision=revision)
        keys[path.name] = count
    return {"seconds": round(time.perf_counter() - started, 2), "keys": keys}


def child_ingest_floor(folder: str, db: str) -> dict:
    """The DuckDB floor of benchmarks/ingest.py for every month of `folder`: extract the .dat (timed
    apart: LZMA), then one CREATE TABLE AS SELECT … GROUP BY of the typed file into a fresh database."""
    import duckdb
    import py7zr

    from ingest import _typed_reader

    lzma_s = floor_s = 0.0
    con = duckdb.connect(db)
    for index, archive in enumerate(sorted(Path(folder).glob("full_v2_*.7z"))):
        started = time.perf_counter()
        with py7zr.SevenZipFile(archive) as handle:
            handle.extractall(Path(db).parent / "floor_dat")
        lzma_s += time.perf_counter() - started
        dat = next((Path(db).parent / "floor_dat").glob("*.dat"))
        started = time.perf_counter()
        con.execute(f"""CREATE TABLE totals_{index} AS
            SELECT REPORTER, PARTNER, PRODUCT_NC, FLOW, PERIOD, sum(VALUE_EUR) AS value,
                   sum(QUANTITY_KG) AS net_weight_kg, sum(QUANTITY_SUPPL_UNIT) AS quantity,
                   any_value(SUPPL_UNIT) AS quantity_unit
            FROM {_typed_reader(str(dat))} GROUP BY ALL""")
        con.execute("CHECKPOINT")
        floor_s += time.perf_counter() - started
        dat.unlink()
    con.close()
    return {"floor_s": round(floor_s, 2), "lzma_s": round(lzma_s, 2)}


def child_detect(db: str) -> dict:
    """engine.run_detection on `db`, as benchmarks/detect.py measures it (store=False)."""
    from detect import measure_tradewatch

    return measure_tradewatch(Path(db))


def child_detect_floor(db: str) -> dict:
    """The least a detection must do, in one DuckDB GROUP BY: each route's (reporter, partner, flow,
    product) baseline and recent totals over the window's rows (baseline start to the latest month), so
    its memory follows routes, not rows."""
    import duckdb

    from tradewatch.detect.config import DetectParams

    params = DetectParams()
    con = duckdb.connect(db, read_only=True)
    last = con.execute("SELECT max(period) FROM trade_flows").fetchone()[0]
    started = time.perf_counter()
    con.execute(f"""CREATE TEMP TABLE grouped AS
        SELECT reporter_iso3, partner_iso3, flow, product_code,
               sum(value) FILTER (WHERE period < DATE '{params.event}-01') AS base_value,
               sum(value) FILTER (WHERE period > DATE '{last}' - INTERVAL {params.recent_months} MONTH) AS recent_value
        FROM trade_flows WHERE period >= DATE '{params.event}-01' - INTERVAL {params.baseline_months} MONTH
        GROUP BY ALL""")
    seconds = time.perf_counter() - started
    groups = con.execute("SELECT count(*) FROM grouped").fetchone()[0]
    return {"seconds": round(seconds, 3), "groups": groups}


def child_detect_profile(db: str) -> dict:
    """engine.run_detection with a thread sampling, every 0.2 s, this process's resident memory and the
    innermost tradewatch function the main thread is in: where detection's memory and time go, by step,
    without changing detect/. Returns the steps by peak resident memory."""
    import threading

    from tradewatch.detect import engine
    from tradewatch.flows import warehouse

    main = threading.main_thread().ident
    page = os.sysconf("SC_PAGE_SIZE")
    samples: dict[str, list[float]] = {}
    done = threading.Event()

    def where() -> str:
        frame, found = sys._current_frames().get(main), "other"
        while frame is not None:
            name = frame.f_code.co_filename
            if "/detect/" in name or "/flows/" in name:
                found = f"{Path(name).stem}.{frame.f_code.co_name}:{frame.f_lineno}"
                break
            frame = frame.f_back
        return found

    def sample() -> None:
        while not done.wait(0.2):
            with open("/proc/self/statm") as handle:
                rss = int(handle.read().split()[1]) * page / 2**20
            samples.setdefault(where(), []).append(rss)

    con = warehouse.connect(Path(db), read_only=True)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    engine.run_detection(con, engine.DetectParams(), store=False)
    seconds = time.perf_counter() - started
    done.set()
    thread.join()
    steps = sorted(({"at": k, "peak_rss_mb": round(max(v)), "seconds": round(0.2 * len(v), 1)}
                    for k, v in samples.items()), key=lambda s: -s["peak_rss_mb"])
    return {"seconds": round(seconds, 2), "steps": steps[:15]}


CHILDREN = {"detect-profile": child_detect_profile, "build": child_build, "7z": child_7z, "ingest-floor": child_ingest_floor, "detect": child_detect,
            "detect-floor": child_detect_floor}


def run_child(args: list[str], *, command: list[str] | None = None) -> tuple[dict | str, float, float]:
    """Run a child of this script (or `command`); returns its last stdout line (JSON when it parses),
    its wall seconds and its own peak RSS in MB (os.wait4: this child's rusage alone)."""
    argv = command or [sys.executable, __file__, "--child", *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        text, problems = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks/history.py: child {' '.join(argv[-3:])} failed (exit {proc.returncode}): "
                         f"{problems.strip().splitlines()[-1] if problems.strip() else text[-300:]}")
    last = text.strip().splitlines()[-1] if text.strip() else ""
    try:
        parsed = json.loads(last)
    except json.JSONDecodeError:
        parsed = last
    return parsed, seconds, usage.ru_maxrss / 1024


def _tradewatch() -> list[str]:
    found = shutil.which("tradewatch") or str(Path(sys.executable).parent / "tradewatch")
    return [found]


def _mb(path: Path) -> float:
    size = path.stat().st_size if path.exists() else 0
    wal = path.with_name(path.name + ".wal")
    return round((size + (wal.stat().st_size if wal.exists() else 0)) / 1e6, 1)


def _rows(db: Path) -> dict:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    rows = dict(con.execute("SELECT source, count(*) FROM trade_flows GROUP BY source").fetchall())
    months = con.execute("SELECT count(DISTINCT period) FROM trade_flows WHERE source = 'comext'").fetchone()[0]
    con.close()
    return {"rows": sum(rows.values()), "comext_rows": rows.get("comext", 0), "comtrade_rows": rows.get("comtrade", 0),
            "months_held": months}


def _detect_code() -> dict:
    """Which detect/ the measurement ran: the commit, and whether detect/ had uncommitted edits (another
    engineer may be changing it in the same checkout) with a short hash of its files."""
    import hashlib

    repo = Path(__file__).resolve().parents[1]
    run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], capture_output=True, text=True).stdout.strip()
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((repo / "detect").glob("*.py")))).hexdigest()
    return {"commit": run("rev-parse", "--short", "HEAD"), "detect_edited": bool(run("status", "--porcelain", "detect")),
            "detect_sha": digest[:12]}


def _load(loadavg: list) -> None:
    loadavg.append(round(os.getloadavg()[0], 2))


def part_ingest(months: int, rows: int, work: Path, loadavg: list) -> dict:
    """N months as .7z through `tradewatch ingest files` (the real CLI path) into a fresh warehouse, and
    the DuckDB floor of the same files."""
    import history_world

    folder = work / "ingest_7z"
    shutil.rmtree(folder, ignore_errors=True)
    periods = ",".join(f"{m:%Y-%m}" for m in history_world.months(months))
    made, generate_s, _ = run_child(["7z", str(folder), periods, str(rows), "0"])
    db = work / "ingest.duckdb"
    db.unlink(missing_ok=True)
    _load(loadavg)
    env_home = work / "home"
    os.environ["TRADEWATCH_HOME"] = str(env_home)
    out, ingest_s, ingest_peak = run_child([], command=[*_tradewatch(), "ingest", "files", str(folder), "--db", str(db),
                                                        "--json"])
    _load(loadavg)
    floor_db = work / "floor.duckdb"
    floor_db.unlink(missing_ok=True)
    floor, _, floor_peak = run_child(["ingest-floor", str(folder), str(floor_db)])
    warehouse_mb = _mb(db)
    floor_db.unlink(missing_ok=True)
    counts = _rows(db)
    expected = sum(made["keys"].values())
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "ingest_months": months, "ingest_s": round(ingest_s, 2), "ingest_peak_rss_mb": round(ingest_peak, 1),
        "ingest_rows": counts["comext_rows"], "ingest_rows_expected": expected,
        "ingest_rows_match": counts["comext_rows"] == expected,
        "ingest_floor_s": floor["floor_s"], "ingest_lzma_s": floor["lzma_s"],
        "ingest_floor_peak_rss_mb": round(floor_peak, 1),
        "ingest_ratio_to_floor": round(ingest_s / floor["floor_s"], 2),
        "ingest_ratio_to_floor_plus_lzma": round(ingest_s / (floor["floor_s"] + floor["lzma_s"]), 2),
        "ingest_s_per_month": round(ingest_s / months, 2), "ingest_warehouse_mb": warehouse_mb,
        "generate_7z_s": round(generate_s, 1),
        "ingest_files_loaded": out if isinstance(out, str) else len(out.get("files", [])),
    }


def part_detect(db: Path, months: int, rows: int, loadavg: list) -> dict:
    """Build (or extend) the N-month canonical warehouse, then detection and its floor, each in a child."""
    built, build_s, build_peak = run_child(["build", str(db), str(months), str(rows)])
    counts = _rows(db)
    _load(loadavg)
    floor, _, floor_peak = run_child(["detect-floor", str(db)])
    code = _detect_code()
    result, detect_wall, detect_peak = run_child(["detect", str(db)])
    _load(loadavg)
    return {"detect_code": code,
        "months": months, **counts, "warehouse_mb": _mb(db), "build_s": build_s, "build_peak_rss_mb": round(build_peak, 1),
        "months_built": built["months_written"],
        "detect_s": result["seconds"], "detect_wall_s": round(detect_wall, 2), "detect_import_s": result["import_s"],
        "peak_rss_mb": round(detect_peak, 1), "flagged": result["flagged"], "candidates": result["candidates"],
        "detect_floor_s": floor["seconds"], "detect_floor_groups": floor["groups"],
        "detect_floor_peak_rss_mb": round(floor_peak, 1),
        "detect_ratio_to_floor": round(result["seconds"] / floor["seconds"], 2),
    }


def _refresh_periods(months: int) -> tuple[str, list[str]]:
    import history_world

    last = history_world.months(months)
    new = _next(last[-1])
    return f"{new:%Y-%m}", [f"{m:%Y-%m}" for m in last[-2:]]


def _next(period):
    from datetime import date

    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def part_refresh(db: Path, months: int, rows: int, work: Path, loadavg: list) -> dict:
    """On the N-month warehouse: load one new month and two revised ones (3% of values up a tenth)
    through `tradewatch ingest files`, then detect; timed end to end (the files are made beforehand).
    The loads it made must replace partitions of those three months only."""
    import duckdb

    new, revised = _refresh_periods(months)
    folder = work / "refresh_7z"
    shutil.rmtree(folder, ignore_errors=True)
    run_child(["7z", str(folder), new, str(rows), "0"])
    run_child(["7z", str(folder), ",".join(revised), str(rows), "1"])
    con = duckdb.connect(str(db), read_only=True)
    before = con.execute("SELECT coalesce(max(load_id), 0) FROM loads").fetchone()[0]
    history_before = con.execute("SELECT count(*) FROM trade_flows_history").fetchone()[0]
    con.close()
    os.environ["TRADEWATCH_HOME"] = str(work / "home")
    _load(loadavg)
    started = time.perf_counter()
    _, ingest_s, ingest_peak = run_child([], command=[*_tradewatch(), "ingest", "files", str(folder), "--db", str(db),
                                                      "--json"])
    result, _, detect_peak = run_child(["detect", str(db)])
    total_s = time.perf_counter() - started
    _load(loadavg)
    con = duckdb.connect(str(db), read_only=True)
    periods = sorted(r[0] for r in con.execute(
        "SELECT DISTINCT strftime(period, '%Y-%m') FROM load_partitions WHERE load_id > ?", [before]).fetchall())
    partitions = con.execute("SELECT count(*) FROM load_partitions WHERE load_id > ?", [before]).fetchone()[0]
    moved = con.execute("SELECT count(*) FROM trade_flows_history").fetchone()[0] - history_before
    inserted = con.execute("SELECT count(*) FROM trade_flows WHERE load_id > ?", [before]).fetchone()[0]
    con.close()
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "refresh_s": round(total_s, 2), "refresh_ingest_s": round(ingest_s, 2), "refresh_detect_s": result["seconds"],
        "refresh_peak_rss_mb": round(max(ingest_peak, detect_peak), 1),
        "refresh_periods_replaced": periods, "refresh_partitions_replaced": partitions,
        "refresh_only_those_months": periods == sorted([new, *revised]),
        "refresh_rows_superseded": moved, "refresh_rows_inserted": inserted,
        "refresh_goal_met": total_s <= 120,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--months", type=int, default=12, help="months of the world (ending 2023-12)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--part", choices=PARTS, default="all", help="what to measure (default all)")
    parser.add_argument("--db", type=Path, help="the canonical warehouse to build, extend or reuse "
                                               "(default: a temporary one, deleted unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the warehouses afterwards")
    parser.add_argument("--rows-per-month", type=int, default=DEFAULT_ROWS, help="about this many rows a month")
    parser.add_argument("--ingest-months", type=int, help="months for the ingest part (default --months)")
    parser.add_argument("--profile", action="store_true",
                        help="with the detect part: also sample where detection's memory goes, step by step")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        converted = [int(v) if v.lstrip("-").isdigit() else v for v in rest]
        print(json.dumps(CHILDREN[kind](*converted), default=str))
        return 0
    if args.months < 1 or args.rows_per_month < 1000:
        parser.error("--months must be at least 1 and --rows-per-month at least 1000")
    work = (args.db.parent if args.db else Path(tempfile.mkdtemp(prefix="tradewatch-history-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    db = (args.db or work / f"history_{args.months}.duckdb").resolve()
    loadavg: list = []
    _load(loadavg)
    report: dict = {"months": args.months, "rows_per_month": args.rows_per_month}
    try:
        if args.part in ("ingest", "all"):
            report.update(part_ingest(args.ingest_months or args.months, args.rows_per_month, work, loadavg))
        if args.part in ("detect", "all"):
            report.update(part_detect(db, args.months, args.rows_per_month, loadavg))
            if args.profile:
                profile, _, _ = run_child(["detect-profile", str(db)])
                report["detect_profile"] = profile
        if args.part in ("refresh", "all"):
            if args.part == "refresh":
                run_child(["build", str(db), str(args.months), str(args.rows_per_month)])
            report.update(part_refresh(db, args.months, args.rows_per_month, work, loadavg))
    finally:
        if not args.keep:
            for path in (db, db.with_name(db.name + ".wal"), work / "ingest.duckdb"):
                path.unlink(missing_ok=True)
    report["loadavg_1min"] = loadavg
    report["cores"] = os.cpu_count()
    print_result(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
