"""Exploration (issue 13): which routes from just below the flag threshold a run shows for review besides its flags, and why each was not flagged."""

from __future__ import annotations

import math

import polars as pl

from tradewatch.detect import engine, features
from tradewatch.detect.config import DetectParams
from tradewatch.flows.core.numbers import money

MARK = "exploration"  # how every view names these routes
ROUTE = ["origin_iso3", "transit_iso3", "target_iso3"]


def count(flags: int, share: float) -> int:
    """How many exploration routes go beside `flags` flags so that they are `share` of the routes shown:
    round(share × flags / (1 − share)); none without flags or at share 0."""
    if flags <= 0 or share <= 0:
        return 0
    return int(math.floor(share * flags / (1.0 - share) + 0.5))


def below_threshold(scored: pl.DataFrame, params: DetectParams) -> pl.DataFrame:
    """The routes of `scored` (engine.score_routes) that were tested but not flagged, nearest the
    Benjamini–Hochberg cut first: lowest q-value, then p-value, larger excess, route id (a total order, so
    the same data, model and parameters give the same routes). An HS-4 route whose heading has a flagged
    HS-6 route is left out, as from the flags: its evidence is already shown."""
    flagged_six = scored.filter(pl.col("flag") & (pl.col("level") == 6)).select(
        *ROUTE, heading=pl.col("product").str.slice(0, 4)).unique()
    pool = scored.filter(pl.col("tested") & ~pl.col("flag") & pl.col("q_value").is_not_null()
                         & pl.col("level").is_in(list(params.product_levels)))
    pool = pool.with_columns(heading=pl.col("product").str.slice(0, 4)).join(
        flagged_six.with_columns(covered=pl.lit(True)), on=[*ROUTE, "heading"], how="left"
    ).filter(~((pl.col("level") == 4) & pl.col("covered").fill_null(False))).drop("heading", "covered")
    return pool.sort(["q_value", "p_value", "excess_value", "route_id"], descending=[False, False, True, False],
                     nulls_last=True)


def choose(scored: pl.DataFrame, params: DetectParams) -> pl.DataFrame:
    """The exploration routes of a run: the first count(flags, params.exploration_share) of below_threshold."""
    flags = int(scored["flag"].sum()) if scored.height else 0
    return below_threshold(scored, params).head(count(flags, params.exploration_share))


def why_not_flagged(row: dict, params: DetectParams) -> str:
    """The tests a tested route failed, in words: the BH cut and each gate of engine._gates, and the
    ranker's minimum when it applies."""
    failed = []
    q = row.get("q_value")
    if q is not None and q > params.fdr:
        failed.append(f"q {q:.3g} > FDR {params.fdr:g}")
    if (row.get("excess_value") or 0.0) < params.min_excess:
        failed.append(f"excess {money(row.get('excess_value'), row.get('currency'))} < "
                      f"{money(params.min_excess, row.get('currency'))}")
    net = row.get("net_growth_log")
    if net is None or net < math.log(params.min_growth):
        failed.append(f"net growth below ×{params.min_growth:g}")
    if (row.get("persistence") or 0.0) < params.min_persistence:
        failed.append(f"persistence below {params.min_persistence:g}")
    spike = row.get("spike_share")
    if spike is None or spike > params.max_spike_share:
        failed.append("one month carries the excess")
    probability = row.get("probability")
    if probability is not None and probability < params.ranker_min_probability:
        failed.append(f"ranker probability {probability:.2f} < {params.ranker_min_probability:g}")
    return "; ".join(failed) or "not flagged"


def table(scored: pl.DataFrame, windows: features.Windows, params: DetectParams, unavailable: dict[str, str],
          model, flags: int) -> pl.DataFrame:
    """The exploration routes as FLAGGED_SCHEMA rows ranked after the `flags` flags, each route's reasons
    led by 'EXPLORATION (not flagged: …)'. Scores are the routes' own, as scored."""
    chosen = choose(scored, params)
    lead = [f"{MARK.upper()} (not flagged: {why_not_flagged(row, params)}): " for row in chosen.iter_rows(named=True)]
    return engine.route_table(chosen, windows, params, unavailable, model, first_rank=flags + 1, lead=lead)


def note(explored: int, flags: int, params: DetectParams) -> str:
    """The run's note on what exploration added."""
    return (f"{explored} route(s) from just below the threshold added for review, marked '{MARK}' "
            f"(exploration_share {params.exploration_share:g} of the {flags + explored} shown): not flagged, "
            "and counted in neither the flagged list nor its expected false flags")
