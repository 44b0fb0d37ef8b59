"""The goods dimension and calibration: each pair's ordinary growth (yardsticks), route growth net of it, a null built from the data, p-values and Benjamini–Hochberg."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from tradewatch.detect.config import DetectParams

# How a pair's ordinary growth was measured, best first (shown per route and counted in the run's notes).
YARDSTICK_BASES = {
    "unrestricted": "the pair's growth in unrestricted goods (median over products)",
    "all_goods_totals": "the pair's all-goods totals less the restricted goods loaded (trade_totals, e.g. Eurostat "
                        "DS-045409 TOTAL)",
    "all_products": "the median over all the pair's loaded products (the warehouse has too few unrestricted goods)",
    "origin": "the origin's growth in unrestricted goods to all its partners (the pair has too few products; "
              "inflation and exchange rates still net out)",
    "none": "no yardstick: the pair has too few products to measure its ordinary growth",
}

PAIR = ["origin_iso3", "transit_iso3"]
ONWARD_PAIR = ["transit_iso3", "target_iso3"]


def _material(value: str, params: DetectParams) -> pl.Expr:
    # Products with a monthly base below the smoothing constant have log growth pulled towards zero by the
    # smoothing; they would make the null look calmer than the routes it judges.
    return pl.col(value) >= params.smoothing


def _light_growth(recent: str, base: str, params: DetectParams) -> pl.Expr:
    """Log growth with the yardstick's light smoothing: the many small flows of a pair measure its ordinary
    growth without being pulled towards 'no growth' by the routes' heavier smoothing."""
    s = params.yardstick_smoothing
    return ((pl.col(recent) + s) / (pl.col(base) + s)).log()


def median_growth(frame: pl.DataFrame, keys: list[str], recent: str, base: str, params: DetectParams,
                  *, restricted: bool | None) -> pl.DataFrame:
    """Per `keys`: the median lightly smoothed log growth (`recent` over `base`) over HS-6 products with a
    base of at least params.yardstick_smoothing, and how many products it rests on (`n`).
    `restricted` False keeps the unrestricted products only, True the restricted ones, None all."""
    rows = frame.filter((pl.col("level") == 6) & pl.col(base).is_not_null() & pl.col(recent).is_not_null()
                        & (pl.col(base) >= params.yardstick_smoothing))
    if restricted is not None:
        rows = rows.filter(pl.col("restricted") == restricted)
    # One row per product: with keys coarser than a route (the origin's median over all its partners) the
    # first route in route order, so the same data give the same yardstick whatever order the rows came in.
    ties = [c for c in ("transit_iso3", "target_iso3", "origin_iso3") if c in frame.columns and c not in keys]
    rows = rows.select(*keys, "product", *ties, base, recent).sort([*keys, "product", *ties])
    return (rows.unique([*keys, "product"], keep="first", maintain_order=True).group_by(keys)
            .agg(_light_growth(recent, base, params).median().alias("median"), pl.len().alias("n")))


def pair_yardsticks(routes: pl.DataFrame, params: DetectParams, totals: pl.DataFrame | None) -> pl.DataFrame:
    """Per origin→transit pair: `pair_growth_log` (the pair's ordinary growth, log) and `pair_basis` (a key
    of YARDSTICK_BASES). `totals` (origin_iso3, transit_iso3, totals_growth_log) are all-goods totals, or None."""
    need = params.min_yardstick_products
    pairs = routes.select(PAIR).unique()
    unrestricted = median_growth(routes, PAIR, "recent", "base", params, restricted=False)
    everything = median_growth(routes, PAIR, "recent", "base", params, restricted=None)
    # Only unrestricted goods: the origin's restricted goods are the suspects, their diversions would inflate it.
    origin = median_growth(routes, ["origin_iso3"], "recent", "base", params, restricted=False).select(
        "origin_iso3", o=pl.when(pl.col("n") >= need).then(pl.col("median")))
    frame = (pairs.join(unrestricted.rename({"median": "u", "n": "u_n"}), on=PAIR, how="left")
             .join(everything.rename({"median": "a", "n": "a_n"}), on=PAIR, how="left")
             .join(origin, on="origin_iso3", how="left"))
    if totals is not None and totals.height:
        frame = frame.join(totals.select(*PAIR, "totals_growth_log"), on=PAIR, how="left")
    else:
        frame = frame.with_columns(totals_growth_log=pl.lit(None, pl.Float64))
    return frame.select(
        *PAIR,
        pair_growth_log=pl.when(pl.col("u_n") >= need).then(pl.col("u"))
        .when(pl.col("totals_growth_log").is_not_null()).then(pl.col("totals_growth_log"))
        .when(pl.col("a_n") >= need).then(pl.col("a")).otherwise(pl.col("o")),
        pair_basis=pl.when(pl.col("u_n") >= need).then(pl.lit("unrestricted"))
        .when(pl.col("totals_growth_log").is_not_null()).then(pl.lit("all_goods_totals"))
        .when(pl.col("a_n") >= need).then(pl.lit("all_products"))
        .when(pl.col("o").is_not_null()).then(pl.lit("origin")).otherwise(pl.lit("none")),
    )


def _ordinary(routes: pl.DataFrame, keys: list[str], recent: str, base: str, params: DetectParams,
              name: str) -> pl.DataFrame:
    """Per `keys`: the median growth over unrestricted products (enough of them), else over all products."""
    need = params.min_yardstick_products
    unrestricted = median_growth(routes, keys, recent, base, params, restricted=False)
    everything = median_growth(routes, keys, recent, base, params, restricted=None)
    return (everything.rename({"median": "a", "n": "a_n"})
            .join(unrestricted.rename({"median": "u", "n": "u_n"}), on=keys, how="left")
            .select(*keys, pl.when(pl.col("u_n") >= need).then(pl.col("u"))
                    .when(pl.col("a_n") >= need).then(pl.col("a")).alias(name)))


@dataclass
class Yardsticks:
    """Every route's ordinary growths, measured once over all the run's candidate routes (the `reference`):
    per pair (`pair`: pair_growth_log, pair_basis), per pair and HS chapter (`chapter`), per origin at control
    countries (`control`) and per onward pair (`onward`)."""

    pair: pl.DataFrame
    chapter: pl.DataFrame
    control: pl.DataFrame
    onward: pl.DataFrame


# The columns of a route the yardsticks read (reference_columns keeps only these, so the unrestricted goods
# that only serve as yardstick can stay narrow).
REFERENCE_COLUMNS = ("origin_iso3", "transit_iso3", "target_iso3", "product", "level", "restricted", "base",
                     "recent", "control_base", "control_recent", "onward_base", "onward_recent")


def yardsticks(reference: pl.DataFrame, params: DetectParams, totals: pl.DataFrame | None) -> Yardsticks:
    """The ordinary growths of `reference` (candidate routes with at least REFERENCE_COLUMNS): what
    net_growth nets each route against. `totals` as for pair_yardsticks."""
    pair = pair_yardsticks(reference, params, totals)
    control = _ordinary(reference.unique(["origin_iso3", "product", "level"]), ["origin_iso3"],
                        "control_recent", "control_base", params, "control_ordinary_log")
    onward = _ordinary(reference.unique([*ONWARD_PAIR, "product", "level"]), ONWARD_PAIR,
                       "onward_recent", "onward_base", params, "onward_ordinary_log")
    # A boom of a whole sector on the pair (its unrestricted goods of the same HS chapter) counts too: the
    # larger of the two is the yardstick, so a chapter-wide boom does not pass for diversion.
    chapters = reference.with_columns(chapter=pl.col("product").str.slice(0, 2))
    chapter = median_growth(chapters, [*PAIR, "chapter"], "recent", "base", params, restricted=False).filter(
        pl.col("n") >= params.min_chapter_products).select(*PAIR, "chapter", chapter_growth_log="median")
    return Yardsticks(pair, chapter, control, onward)


def net_growth(routes: pl.DataFrame, params: DetectParams, totals: pl.DataFrame | None, *,
               measured: Yardsticks | None = None) -> pl.DataFrame:
    """Routes with the triple difference: `net_growth_log` = o→t growth − the pair's ordinary growth
    (floored at params.control_floor; the growth of the pair's unrestricted goods of the product's chapter
    when that is larger, `chapter_growth_log`) − the product's growth to control countries beyond the origin's
    ordinary growth there (only when positive); `expected` monthly value from them; `onward_net_log` =
    t→target growth (smoothed as its yardstick is) − the transit's ordinary growth to the target. `measured`: the yardsticks of all the
    run's candidate routes (default: measured on `routes` themselves)."""
    measured = measured or yardsticks(routes, params, totals)
    out = (routes.with_columns(chapter=pl.col("product").str.slice(0, 2))
           .join(measured.pair, on=PAIR, how="left").join(measured.chapter, on=[*PAIR, "chapter"], how="left")
           .join(measured.control, on="origin_iso3", how="left").join(measured.onward, on=ONWARD_PAIR, how="left")
           .drop("chapter"))
    pair_term = pl.max_horizontal(pl.col("pair_growth_log").fill_null(0.0), pl.lit(params.control_floor),
                                  pl.col("chapter_growth_log"))
    product_term = (pl.col("control_growth_log") - pl.col("control_ordinary_log").fill_null(0.0)).clip(lower_bound=0.0)
    return out.with_columns(
        product_boom_log=product_term.fill_null(0.0),
        net_growth_log=pl.col("growth_log") - pair_term - product_term.fill_null(0.0),
        expected=pl.col("base") * (pair_term + product_term.fill_null(0.0)).exp(),
        onward_net_log=onward_growth_light(params) - pl.col("onward_ordinary_log").fill_null(0.0),
    )


def onward_growth_light(params: DetectParams) -> pl.Expr:
    """The onward leg's growth smoothed like the yardstick it is netted against (params.yardstick_smoothing):
    netting a heavily smoothed growth against a lightly smoothed median made a small onward flow's net
    negative by construction whenever the transit's ordinary exports grew. Null where the leg is unknown."""
    s = params.yardstick_smoothing
    light = ((pl.col("onward_recent") + s) / (pl.col("onward_base") + s)).log()
    return pl.when(pl.col("onward_growth_log").is_not_null()).then(light)


def size_factor(base: pl.Expr, recent: pl.Expr, params: DetectParams) -> pl.Expr:
    """How much the smoothing shrinks a flow's log growth: by the delta method, relative noise ε in a window
    moves log(v + smoothing) by ε·v/(v + smoothing), so the spread of the smoothed log growth of a flow with
    these two windows is the spread of an unsmoothed one × sqrt((f_base² + f_recent²)/2), f = v/(v + smoothing).
    1 for flows far above the smoothing; at least params.min_size_factor. Without params.size_aware_scale, 1."""
    if not params.size_aware_scale:
        return pl.lit(1.0)
    s = params.smoothing

    def shrink(value: pl.Expr) -> pl.Expr:
        v = value.fill_null(0.0).clip(lower_bound=0.0)
        return v / (v + s) if s > 0 else pl.lit(1.0)

    both = ((shrink(base) ** 2 + shrink(recent) ** 2) / 2).sqrt()
    return pl.max_horizontal(both, pl.lit(params.min_size_factor))


def null_statistics(routes: pl.DataFrame, placebo: pl.DataFrame | None, params: DetectParams) -> pl.DataFrame:
    """The null: (origin_iso3, transit_iso3, value) — net growth of the pair's unrestricted HS-6 goods at the
    real event, and of all the pair's HS-6 goods at the placebo event (their growth minus the pair's median
    growth then), each divided by its size_factor (so flows of every size share one scale).
    `placebo`: origin_iso3, transit_iso3, product, base, growth_log at placebo windows, or None."""
    real = (routes.filter((pl.col("level") == 6) & ~pl.col("restricted") & _material("base", params)
                          & pl.col("net_growth_log").is_not_null())
            .unique([*PAIR, "product"])
            .select(*PAIR, value=pl.col("net_growth_log") / size_factor(pl.col("base"), pl.col("recent"), params)))
    if placebo is None or placebo.height == 0:
        return real
    material = placebo.filter(_material("base", params))
    # The placebo legs carry base and smoothed growth; their recent value follows from the two.
    recent = (pl.col("base") + params.smoothing) * pl.col("growth_log").exp() - params.smoothing
    shifted = material.with_columns(
        value=(pl.col("growth_log") - pl.col("growth_log").median().over(PAIR))
        / size_factor(pl.col("base"), recent, params)).select(*PAIR, "value")
    return pl.concat([real, shifted])


def route_scales(frame: pl.DataFrame, params: DetectParams) -> pl.DataFrame:
    """`frame` (with its pair's null_scale, null_size, null_basis) with `null_scale` the route's own: the pair's
    scale × the route's size_factor, from the route's own base and recent values only. A run whose whole null
    has fewer than params.min_null_size statistics never gets a confident scale for any route: at least
    params.small_null_scale after the size factor too."""
    sized = pl.col("null_scale") * size_factor(pl.col("base"), pl.col("recent"), params)
    tiny_run = (pl.col("null_basis") == "run") & (pl.col("null_size") < params.min_null_size)
    return frame.with_columns(
        null_scale=pl.when(tiny_run).then(pl.max_horizontal(sized, pl.lit(params.small_null_scale))).otherwise(sized))


def _robust_scale(values: pl.Expr) -> pl.Expr:
    return 1.4826 * (values - values.median()).abs().median()


def null_scales(null: pl.DataFrame, pairs: pl.DataFrame, params: DetectParams) -> pl.DataFrame:
    """Per pair: `null_scale` (robust standard deviation of the null, at least params.scale_floor), from the
    pair's own null statistics when it has params.min_null_size of them, else its origin's, else the run's;
    `null_basis` says which."""
    need = params.min_null_size
    by_pair = null.group_by(PAIR).agg(_robust_scale(pl.col("value")).alias("s_pair"), pl.len().alias("n_pair"))
    by_origin = null.group_by("origin_iso3").agg(_robust_scale(pl.col("value")).alias("s_origin"),
                                                 pl.len().alias("n_origin"))
    # A run with only a handful of null statistics still gets a scale, but never a confident one.
    overall = null.select(_robust_scale(pl.col("value"))).item() if null.height >= 3 else None
    if overall is not None and null.height < need:
        overall = max(overall, params.small_null_scale)
    frame = pairs.select(PAIR).unique().join(by_pair, on=PAIR, how="left").join(by_origin, on="origin_iso3", how="left")
    scale = (pl.when(pl.col("n_pair") >= need).then(pl.col("s_pair"))
             .when(pl.col("n_origin") >= need).then(pl.col("s_origin"))
             .otherwise(pl.lit(overall, pl.Float64)))
    # No null at all (no unrestricted goods and no placebo): the route cannot be tested, its scale stays null.
    return frame.select(
        *PAIR,
        null_scale=pl.when(scale.is_not_null()).then(pl.max_horizontal(scale, pl.lit(params.scale_floor))),
        null_size=pl.when(pl.col("n_pair") >= need).then(pl.col("n_pair"))
        .when(pl.col("n_origin") >= need).then(pl.col("n_origin")).otherwise(pl.lit(null.height, pl.UInt32)),
        null_basis=pl.when(pl.col("n_pair") >= need).then(pl.lit("pair"))
        .when(pl.col("n_origin") >= need).then(pl.lit("origin"))
        .when(pl.lit(overall is not None)).then(pl.lit("run")).otherwise(pl.lit("none")),
    )


def p_values(net: np.ndarray, scale: np.ndarray, dof: int) -> np.ndarray:
    """One-sided p-values of net growth (log) against a Student-t null with `dof` degrees of freedom and the
    given robust scales; NaN where either input is missing."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z = net / scale
    return np.where(np.isfinite(z), stats.t.sf(z, dof), np.nan)


def benjamini_hochberg(p: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """BH q-values of `p` (NaN entries stay NaN and do not count as tests). With `weights` (≥ 0, any scale;
    rescaled to mean 1 over the tests), the weighted procedure of Genovese, Roeder and Wasserman (2006):
    BH on p / w, which keeps the false discovery rate when the weights do not depend on the p-values."""
    q = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = tested.size
    if m == 0:
        return q
    adjusted = p[tested].astype(float)
    if weights is not None:
        w = weights[tested].astype(float)
        w = w * m / w.sum() if w.sum() > 0 else np.ones(m)
        with np.errstate(divide="ignore"):
            adjusted = np.where(w > 0, adjusted / w, np.inf)
    order = np.argsort(adjusted, kind="stable")
    ranked = adjusted[order] * m / np.arange(1, m + 1)
    out = np.empty(m)
    out[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    q[tested] = out
    return q


def loss_weights(lost: np.ndarray, cap: float) -> np.ndarray:
    """BH weights from what the target lost on each route's origin→target flow (monthly value, ≥ 0): a
    diversion can only be as large as that loss, so routes behind a big loss are tested with more weight.
    Proportional to the loss, at most `cap` times and at least 1/`cap` times the mean (then rescaled)."""
    lost = np.where(np.isfinite(lost) & (lost > 0), lost, 0.0)
    if lost.sum() <= 0:
        return np.ones_like(lost)
    w = lost / lost.mean()
    for _ in range(3):  # clipping moves the mean; a few rounds settle it
        w = np.clip(w, 1.0 / cap, cap)
        w = w / w.mean()
    return w


def expected_false_flags(q_flagged: np.ndarray) -> float:
    """An upper estimate of how many flagged routes are false: BH bounds the false share by the largest
    q-value among those flagged, so at most that share of the list."""
    if q_flagged.size == 0:
        return 0.0
    return float(np.max(q_flagged) * q_flagged.size)
