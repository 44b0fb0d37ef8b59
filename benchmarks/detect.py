"""Benchmark detection: tradewatch on an N-row synthetic warehouse vs one bare DuckDB GROUP BY and a plain pandas version of the growth features."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from reporting import print_result  # benchmarks/ is on sys.path when a script here runs

DEFAULT_ROWS = 10_000_000
ROWS_AT_SCALE_1 = 1_246_000  # the demo world at scale 1.0


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --- the synthetic warehouse ----------------------------------------------------------------------------

CHUNK_SERIES = 20_000  # series generated, turned into canonical rows and inserted at a time (<= 2.9 M rows)
# Where the rows are cut to exactly --rows: the rows with the lowest hash of their key (which is unique) go,
# whatever order the chunks came in.
CUT = """DELETE FROM trade_flows WHERE rowid IN (
             SELECT rowid FROM trade_flows
             ORDER BY hash(reporter_iso3, partner_iso3, flow, product_code, period), rowid LIMIT ?)"""


def world_scale(rows: int) -> float:
    """The demo scale first tried for `rows`: about ROWS_AT_SCALE_1 rows per unit, plus a fifth beyond the
    30 M-row world (scale 24), where every real HS-6 code is in and only origins can be added."""
    scale = max(0.05, rows / ROWS_AT_SCALE_1)
    return scale * 1.2 if scale > 25 else scale


def build_warehouse(path: Path, rows: int, block_series: int = CHUNK_SERIES) -> int:
    """Write a warehouse at `path` holding the demo world scaled to about `rows` canonical rows, cut
    to exactly `rows` (CUT) when the generator overshoots. The rows are generated and inserted
    chunk by chunk (demo.generate_chunks): memory holds the world's numeric monthly paths and one
    chunk, never the whole frame. Returns rows."""
    import duckdb

    from tradewatch.detect import demo
    from tradewatch.flows import warehouse

    scale = world_scale(rows)
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    con.execute("SET enable_progress_bar = false")
    # DuckDB would otherwise keep up to 80% of RAM of written blocks cached while the chunks go in.
    con.execute("SET memory_limit = '1GB'")
    warehouse.migrate(con)
    height = 0
    while True:
        for chunk in demo.generate_chunks(scale=scale, block_series=block_series):
            con.register("bench_chunk", chunk.to_arrow())
            con.execute("INSERT INTO trade_flows BY NAME SELECT * FROM bench_chunk")
            con.unregister("bench_chunk")
        previous, height = height, con.execute("SELECT count(*) FROM trade_flows").fetchall()[0][0]
        if height >= rows or scale >= 200 or height <= 1.01 * previous:  # enough, or the world no longer grows
            break
        scale *= 1.15 * rows / max(height, 1)
        con.execute("DELETE FROM trade_flows")
    if height < rows:
        raise SystemExit(f"--rows {rows}: the demo world tops out at about {height} rows; ask for fewer")
    if height > rows:
        # Ordering every row to cut the surplus needs more than the chunks did (at 100 M rows, a 1 GB limit
        # ran out of memory here); spilled blocks stay on disk.
        con.execute("SET memory_limit = '4GB'")
        con.execute(CUT, [height - rows])
    count = con.execute("SELECT count(*) FROM trade_flows").fetchall()[0][0]
    con.execute("CHECKPOINT")
    con.close()
    (path.parent / (path.name + ".rows")).write_text(f"{count} {scale}\n")
    return int(count)


# --- the three measurements, each in a fresh process so peak memory is its own ---------------------------

def measure_tradewatch(db: Path) -> dict:
    started = time.perf_counter()
    # Library imports are a fixed start-up cost (scipy's statistics: about a second), not detection work:
    # they are timed apart.
    import scipy.stats  # noqa: F401

    from tradewatch.detect import engine
    from tradewatch.flows import warehouse

    import_s = time.perf_counter() - started
    con = warehouse.connect(db, read_only=True)
    started = time.perf_counter()
    result = engine.run_detection(con, engine.DetectParams(), store=False)
    seconds = time.perf_counter() - started
    con.close()
    return {"seconds": round(seconds, 3), "peak_rss_mb": _peak_rss_mb(), "flagged": result.flagged.height,
            "candidates": result.candidates, "import_s": round(import_s, 3)}


def measure_duckdb(db: Path) -> dict:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    started = time.perf_counter()
    con.execute("""CREATE TEMP TABLE grouped AS
                   SELECT reporter_iso3, partner_iso3, product_code, period, sum(value) AS value
                   FROM trade_flows GROUP BY reporter_iso3, partner_iso3, product_code, period""")
    seconds = time.perf_counter() - started
    groups = con.execute("SELECT count(*) FROM grouped").fetchall()[0][0]
    con.close()
    return {"seconds": round(seconds, 3), "peak_rss_mb": _peak_rss_mb(), "groups": groups}


def measure_pandas(db: Path) -> dict:
    """A straightforward pandas version of the same route features tradewatch computes (no scoring):
    HS 2017 codes mapped forward, monthly HS-6 and HS-4 sums, seasonally matched baseline and recent
    averages over the months each reporter reported, the legs origin→transit, origin→Russia,
    origin→Belarus, origin→controls, transit→Russia (own report or Russia's mirror) and the transit's
    mirror imports; growth, difference-in-differences, substitution, onward growth, mirror gap, unit
    values, and persistence and spikes month by month for the routes that could be flagged. Needs
    pandas (in the `test` extra)."""
    import duckdb
    import numpy as np
    import pandas as pd

    from tradewatch.flows.core import products
    from tradewatch.detect.config import DetectParams

    params = DetectParams()
    smoothing = params.smoothing
    con = duckdb.connect(str(db), read_only=True)
    started = time.perf_counter()
    df = con.sql("SELECT reporter_iso3 AS reporter, partner_iso3 AS partner, flow, product_code, period, value, "
                 "currency, net_weight_kg AS kg FROM trade_flows WHERE freq = 'M' AND product_level IN (6, 8)").df()
    loaded = time.perf_counter() - started
    con.close()
    df["period"] = pd.to_datetime(df["period"])
    df["hs6"] = df["product_code"].str[:6]
    revision = pd.Timestamp(params.hs_revision + "-01")
    split = products.hs2017_to_hs2022()
    old = (df["period"] < revision) & df["hs6"].isin(list(split))
    mapped = df[old].copy()
    mapped["hs6"] = mapped["hs6"].map(split)
    mapped = mapped.explode("hs6")
    parts = mapped.groupby(level=0)["hs6"].transform("count")
    mapped["value"] = mapped["value"] / parts
    mapped["kg"] = mapped["kg"] / parts
    df = pd.concat([df[~old], mapped], ignore_index=True)

    event = pd.Timestamp(params.event + "-01")
    last = df["period"].max()
    recent_start = max(event, last - pd.DateOffset(months=params.recent_months - 1))
    base_start = max(event - pd.DateOffset(months=params.baseline_months), df["period"].min())
    df = df[(df["period"] >= base_start) & (df["period"] <= last)]
    df["kgv"] = df["value"].where(df["kg"] > 0)
    keys6 = ["reporter", "partner", "flow", "currency", "hs6", "period"]
    monthly6 = df.groupby(keys6, as_index=False)[["value", "kg", "kgv"]].sum()
    monthly6["level"] = 6
    monthly4 = monthly6.assign(hs6=monthly6["hs6"].str[:4]).groupby(keys6, as_index=False)[["value", "kg", "kgv"]].sum()
    monthly4["level"] = 4
    monthly = pd.concat([monthly6, monthly4], ignore_index=True).rename(columns={"hs6": "product"})

    # Seasonal weights per reporter and flow over the months each one reported.
    weights = []
    for (reporter, flow), months in df.groupby(["reporter", "flow"])["period"].unique().items():
        base = sorted(m for m in months if base_start <= m < event)
        recent = sorted(m for m in months if recent_start <= m <= last)
        if not base or not recent:
            continue
        for m in base:
            same = [b for b in base if b.month == m.month]
            matches = sum(1 for r in recent if r.month == m.month)
            weights.append((reporter, flow, m, matches / (len(recent) * len(same)), 0.0))
        for m in recent:
            if not any(b.month == m.month for b in base):
                for b in base:
                    weights.append((reporter, flow, b, 1 / (len(recent) * len(base)), 0.0))
            weights.append((reporter, flow, m, 0.0, 1 / len(recent)))
    weights = pd.DataFrame(weights, columns=["reporter", "flow", "period", "bw", "rw"]).groupby(
        ["reporter", "flow", "period"], as_index=False).sum()
    merged = monthly.merge(weights, on=["reporter", "flow", "period"])
    for column in ("value", "kg", "kgv"):
        merged[f"base_{column}"] = merged[column] * merged["bw"]
        merged[f"recent_{column}"] = merged[column] * merged["rw"]
    series = merged.groupby(["reporter", "partner", "flow", "currency", "product", "level"], as_index=False)[
        ["base_value", "recent_value", "base_kg", "recent_kg", "base_kgv", "recent_kgv"]].sum()

    exports = series[series["flow"] == "export"]
    imports = series[series["flow"] == "import"]
    excluded = set(params.origins) | set(params.targets) | set(params.co_targets) | set(params.controls)
    legs = exports[exports["reporter"].isin(params.origins) & ~exports["partner"].isin(excluded)]
    on = ["reporter", "product", "level"]

    def grouped(partners, name):
        part = exports[exports["reporter"].isin(params.origins) & exports["partner"].isin(partners)]
        out = part.groupby(on)[["base_value", "recent_value"]].sum()
        return out.rename(columns={"base_value": f"{name}_base", "recent_value": f"{name}_recent"})

    routes = legs.merge(grouped(params.targets, "target"), left_on=on, right_index=True, how="left")
    routes = routes.merge(grouped(params.co_targets, "co"), left_on=on, right_index=True, how="left")
    routes = routes.merge(grouped(params.controls, "control"), left_on=on, right_index=True, how="left")
    totals = exports.groupby(on)["base_value"].sum().rename("origin_total")
    routes = routes.merge(totals, left_on=on, right_index=True, how="left")
    onward = exports[exports["partner"].isin(params.targets)].set_index(["reporter", "product", "level"])[
        ["base_value", "recent_value"]].rename(columns={"base_value": "onward_base", "recent_value": "onward_recent"})
    onward_mirror = imports[imports["reporter"].isin(params.targets)].set_index(["partner", "product", "level"])[
        ["base_value", "recent_value"]].rename(columns={"base_value": "onward_base_m", "recent_value": "onward_recent_m"})
    routes = routes.merge(onward, left_on=["partner", "product", "level"], right_index=True, how="left")
    routes = routes.merge(onward_mirror, left_on=["partner", "product", "level"], right_index=True, how="left")
    mirror = imports.set_index(["reporter", "partner", "product", "level"])["recent_value"].rename("mirror_recent")
    routes = routes.merge(mirror, left_on=["partner", "reporter", "product", "level"], right_index=True, how="left")
    routes = routes.fillna({c: 0.0 for c in ("target_base", "target_recent", "co_base", "co_recent", "control_base",
                                              "control_recent")})
    log = np.log
    routes["growth_log"] = log((routes["recent_value"] + smoothing) / (routes["base_value"] + smoothing))
    routes["control_growth_log"] = log((routes["control_recent"] + smoothing) / (routes["control_base"] + smoothing))
    routes["did_log"] = routes["growth_log"] - routes["control_growth_log"].clip(lower=params.control_floor)
    expected = routes["base_value"] * np.exp(routes["control_growth_log"].clip(lower=params.control_floor))
    routes["excess_value"] = (routes["recent_value"] - expected) * params.recent_months
    routes["target_change"] = routes["target_recent"] / routes["target_base"].where(routes["target_base"] > 0) - 1
    routes["russia_share"] = routes["target_base"] / routes["origin_total"].where(routes["origin_total"] > 0)
    routes["co_target_change"] = routes["co_recent"] / routes["co_base"].where(routes["co_base"] > 0) - 1
    fall = (routes["target_base"] - routes["target_recent"]).where(routes["target_base"] > routes["target_recent"])
    routes["substitution_ratio"] = (routes["recent_value"] - expected).clip(lower=0) / fall
    onward_base = routes["onward_base"].fillna(routes["onward_base_m"] / params.cif_fob)
    onward_recent = routes["onward_recent"].fillna(routes["onward_recent_m"] / params.cif_fob)
    routes["onward_growth_log"] = log((onward_recent + smoothing) / (onward_base + smoothing))
    routes["mirror_gap_log"] = log(routes["recent_value"] / (routes["mirror_recent"] / params.cif_fob))
    routes["unit_value_change_log"] = log((routes["recent_kgv"] / routes["recent_kg"])
                                          / (routes["base_kgv"] / routes["base_kg"]))

    # Persistence and spikes, month by month, for the routes that could be flagged.
    screened = routes[(routes["excess_value"] >= 0.5 * params.min_excess) & (routes["did_log"] > 0)]
    recent = monthly[(monthly["period"] >= recent_start) & (monthly["flow"] == "export")]
    shape = recent.merge(screened[["reporter", "partner", "product", "level", "base_value"]],
                         on=["reporter", "partner", "product", "level"])
    shape["above"] = shape["value"] > 1.25 * shape["base_value"] + smoothing / 2
    shape["excess"] = (shape["value"] - shape["base_value"]).clip(lower=0)
    persistence = shape.groupby(["reporter", "partner", "product", "level"]).agg(
        months_above=("above", "sum"), spike_max=("excess", "max"), spike_sum=("excess", "sum"))
    routes = routes.merge(persistence, left_on=["reporter", "partner", "product", "level"], right_index=True,
                          how="left")
    routes = routes.sort_values(["did_log", "excess_value"], ascending=False)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "load_seconds": round(loaded, 3), "peak_rss_mb": _peak_rss_mb(),
            "routes": int(len(routes))}


MEASURES = {"tradewatch": measure_tradewatch, "duckdb": measure_duckdb, "pandas": measure_pandas}


def _child(kind: str, db: Path) -> dict:
    output = subprocess.run([sys.executable, __file__, "--measure", kind, "--db", str(db)],
                            check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows in the synthetic warehouse")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--db", type=Path, help="warehouse to build or reuse (default: under TRADEWATCH_HOME/bench)")
    parser.add_argument("--rebuild", action="store_true", help="build the warehouse even when it exists")
    parser.add_argument("--skip-pandas", action="store_true",
                        help="leave out the pandas comparison (it holds every row in memory: ~20 GB at 100 M rows)")
    parser.add_argument("--measure", choices=sorted(MEASURES), help=argparse.SUPPRESS)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build:
        build_warehouse(args.db, args.rows)
        return 0
    if args.measure:
        print(json.dumps(MEASURES[args.measure](args.db)))
        return 0
    if args.rows < 10_000:
        parser.error("--rows must be at least 10000")
    from tradewatch.flows.core import settings

    db = args.db or settings.home() / "bench" / f"detect_{args.rows}.duckdb"
    db.parent.mkdir(parents=True, exist_ok=True)
    marker = db.parent / (db.name + ".rows")
    started = time.perf_counter()
    if args.rebuild or not db.exists() or not marker.exists():
        # A child process, so the generator's memory does not count in the measurements.
        built = subprocess.run([sys.executable, __file__, "--build", "--db", str(db), "--rows", str(args.rows)])
        if built.returncode:
            return built.returncode  # the build printed its one-line reason
        # The build is the first child: the children's peak so far is its peak.
        build_peak_mb = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    else:
        build_peak_mb = None  # reused
    build_s = time.perf_counter() - started
    rows = int(marker.read_text().split()[0])
    kinds = ("duckdb", "tradewatch") if args.skip_pandas else ("duckdb", "tradewatch", "pandas")
    results = {kind: _child(kind, db) for kind in kinds}
    skipped = {"seconds": None, "load_seconds": None, "peak_rss_mb": None}
    pandas = results.get("pandas", skipped)
    report = {
        "rows": rows,
        "tradewatch_s": results["tradewatch"]["seconds"],
        "duckdb_groupby_s": results["duckdb"]["seconds"],
        "pandas_s": pandas["seconds"],
        "peak_rss_mb": results["tradewatch"]["peak_rss_mb"],
        "tradewatch_over_duckdb": round(results["tradewatch"]["seconds"] / results["duckdb"]["seconds"], 2),
        "pandas_over_tradewatch": (round(pandas["seconds"] / results["tradewatch"]["seconds"], 2)
                                   if pandas["seconds"] is not None else None),
        "tradewatch_import_s": results["tradewatch"]["import_s"],
        "pandas_load_s": pandas["load_seconds"],
        "pandas_peak_rss_mb": pandas["peak_rss_mb"],
        "duckdb_peak_rss_mb": results["duckdb"]["peak_rss_mb"],
        "flagged": results["tradewatch"]["flagged"],
        "candidates": results["tradewatch"]["candidates"],
        "build_s": round(build_s, 1),
        "build_peak_rss_mb": build_peak_mb,
        "cores": os.cpu_count(),
    }
    print_result(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
