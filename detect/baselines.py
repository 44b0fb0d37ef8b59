"""The rules analysts use today, as rankings to compare tradewatch with: plain growth, and the European Commission's 2023 rule."""

from __future__ import annotations

import math
from datetime import date

import duckdb
import polars as pl

from tradewatch.detect import features
from tradewatch.detect.config import DetectParams

RouteKey = tuple[str, str, str, str]

# European Commission, "Russia sanctions: circumvention" guidance (2023): exports that rose by 100 % or
# more against their 2019-2021 average and exceed EUR 1 million a year.
EC_BASELINE_FIRST = date(2019, 1, 1)
EC_BASELINE_LAST = date(2021, 12, 1)
EC_MIN_GROWTH = 2.0
EC_MIN_ANNUAL_EUR = 1_000_000.0
# A plain analyst's threshold: exports to the transit at least doubled.
GROWTH_FLAG = 2.0


def _keys(frame: pl.DataFrame, target: str) -> list[RouteKey]:
    return [(o, t, target, k) for o, t, k in frame.select("origin_iso3", "transit_iso3", "product").iter_rows()]


def plain_growth(con: duckdb.DuckDBPyConnection, params: DetectParams) -> tuple[list[RouteKey], list[RouteKey]]:
    """Every origin→transit HS-6 flow with a baseline, ranked by recent over seasonally matched baseline
    value (the same windows tradewatch uses), highest first — growth and nothing else — and the plain
    analyst's list: the flows that at least doubled (GROWTH_FLAG)."""
    legs, _ = features.origin_legs(con, params)
    ranked = (legs.filter(pl.col("base") > 0).with_columns(growth=pl.col("recent") / pl.col("base"))
              .sort(["growth", "origin_iso3", "transit_iso3", "product"], descending=[True, False, False, False]))
    flagged = ranked.filter(pl.col("growth") >= GROWTH_FLAG).sort("origin_iso3", "transit_iso3", "product")
    return _keys(ranked, params.targets[0]), _keys(flagged, params.targets[0])


def plain_growth_ranking(con: duckdb.DuckDBPyConnection, params: DetectParams) -> list[RouteKey]:
    """The ranking of plain_growth."""
    return plain_growth(con, params)[0]


def ec_rule_ranking(con: duckdb.DuckDBPyConnection, params: DetectParams) -> list[RouteKey]:
    """Origin→transit HS-6 flows whose recent 12 months (annualised) are at least double their 2019-2021
    yearly average and above EUR 1 M, ranked by that growth (flows from nothing first, by value). USD
    flows are converted with fx_rates when the warehouse has them, else compared as they are."""
    inventory = features.take_inventory(con, params)
    run_windows = features.compute_windows(params, inventory.data_start, inventory.data_end)
    first = max(EC_BASELINE_FIRST, inventory.data_start)
    if first > EC_BASELINE_LAST:
        return []
    windows = features.Windows(
        event=run_windows.event, baseline_start=first, baseline_end=min(EC_BASELINE_LAST, run_windows.recent_start),
        recent_start=run_windows.recent_start, recent_end=run_windows.recent_end,
        data_start=inventory.data_start, data_end=inventory.data_end)
    legs, _ = features.origin_legs(con, params, windows, seasonal=False, inventory=inventory)
    rates = features.fx_window_rates(con, windows)
    usd_per_eur = rates[1] if rates else 1.0
    annual_eur = pl.col("recent") * 12 / pl.when(pl.col("currency") == "USD").then(usd_per_eur).otherwise(1.0)
    ranked = (
        legs.filter((annual_eur >= EC_MIN_ANNUAL_EUR) & (pl.col("recent") >= EC_MIN_GROWTH * pl.col("base")))
        .with_columns(growth=pl.when(pl.col("base") > 0).then(pl.col("recent") / pl.col("base"))
                      .otherwise(float("inf")))
        .sort(["growth", "recent", "origin_iso3", "transit_iso3", "product"],
              descending=[True, True, False, False, False])
    )
    return _keys(ranked, params.targets[0])

# The simple heuristic's thresholds: origin→Russia fell by half, growth net of control countries ×1.5, EUR 1 M.
SIMPLE_MIN_DROP = 0.5
SIMPLE_MIN_NET = 1.5
SIMPLE_MIN_EXCESS = 1_000_000.0


def simple_rule(routes: pl.DataFrame, params: DetectParams) -> tuple[list[RouteKey], list[RouteKey]]:
    """A fair ten-line rule an analyst could write: keep HS-6 routes whose origin→Russia flow fell ≥ 50 %,
    rank them by growth net of control countries × log of the excess over what control countries predict;
    flag those with net growth ≥ ×1.5 and excess ≥ 1 M over 12 months. Uses the run's features (`routes`)."""
    control = pl.max_horizontal(pl.col("control_growth_log").fill_null(0.0), pl.lit(-0.5))
    kept = (routes.filter((pl.col("level") == 6) & (pl.col("target_change") <= -SIMPLE_MIN_DROP))
            .with_columns(net=pl.col("growth_log") - control,
                          excess=(pl.col("recent") - pl.col("base") * control.exp()) * 12)
            .with_columns(rank_key=pl.col("net") * pl.col("excess").clip(lower_bound=1.0).log())
            .sort(["rank_key", "origin_iso3", "transit_iso3", "product"], descending=[True, False, False, False]))
    columns = ("origin_iso3", "transit_iso3", "target_iso3", "product")
    flags = kept.filter((pl.col("net") >= math.log(SIMPLE_MIN_NET)) & (pl.col("excess") >= SIMPLE_MIN_EXCESS))
    return ([tuple(row) for row in kept.select(columns).iter_rows()],
            [tuple(row) for row in flags.select(columns).iter_rows()])
