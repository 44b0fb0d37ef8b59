"""Route features: windows, the monthly aggregation pushed down to DuckDB, and per-route evidence assembled in polars (lazy)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

import duckdb
import polars as pl

from tradewatch.flows.core import products
from tradewatch.detect import calibration
from tradewatch.detect.config import DetectParams
from tradewatch.flows.core.errors import TradewatchError
from tradewatch.flows.core.months import add_months, month_span, month_text, months_between, parse_month

# The EU as one origin when params.eu_rollup: Comtrade's code for the European Union (M49 97).
EU_CODE = "EUR"

# Every feature a route can carry, with the sentence the run prints when the data cannot support it.
FEATURES: dict[str, str] = {
    "growth_log": "origin→transit smoothed log growth, recent vs seasonally matched baseline",
    "pair_growth_log": "the origin→transit pair's ordinary growth (log): its unrestricted goods, else its all-goods "
                       "totals, else the median over its products",
    "chapter_growth_log": "the pair's growth in unrestricted goods of the product's HS chapter (log; the yardstick "
                          "when larger than the pair's)",
    "control_growth_log": "origin's exports of the product to control countries, smoothed log growth",
    "product_boom_log": "how much more the product grew to control countries than the origin's goods there (log, ≥ 0)",
    "net_growth_log": "origin→transit growth net of the pair's ordinary growth and of the product's boom at control "
                      "countries (log; the gated and scored growth)",
    "did_log": "origin→transit growth minus growth to control countries (log)",
    "excess_value": "origin→transit recent value above what the pair's ordinary growth and the product's boom "
                    "predict, whole recent window",
    "target_change": "origin→target fractional change",
    "target_base": "origin→target monthly baseline value",
    "russia_share": "target's share of the origin's baseline exports of the product, among loaded partners",
    "co_target_change": "origin→co-target fractional change",
    "onward_growth_log": "transit→target smoothed log growth",
    "onward_net_log": "transit→target growth net of the transit's ordinary growth to the target (log)",
    "onward_cover": "origin→transit rise matched by the transit→target rise (share, in USD)",
    "mirror_gap_log": "log of origin-reported exports over transit-reported imports (CIF/FOB adjusted)",
    "unit_value_change_log": "origin→transit log change of value per kg",
    "substitution_ratio": "origin→transit excess per month over the origin→target fall per month",
    "persistence": "share of recent months above the expected band",
    "spike_share": "largest month's share of the recent excess",
    "null_scale": "robust spread of the null (log): net growth of ordinary goods on this pair, and of all its goods "
                  "at the placebo event",
    "p_value": "chance that an ordinary flow on this pair grows this much net (Student-t null)",
    "q_value": "Benjamini–Hochberg q-value: the false discovery rate at which this route is flagged",
    "product_risk": "CHPL tier or user-list weight",
}


# --- months and windows ------------------------------------------------------------------------------

def route_id(origin: str, transit: str, target: str, product_code: str, product_level: int) -> str:
    """Stable identity of a route across runs: a hash of what the route is, never of the run."""
    text = f"{origin}|{transit}|{target}|{product_code}|{int(product_level)}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def route_ids(origin: pl.Expr, transit: pl.Expr, target: pl.Expr, product: pl.Expr, level: pl.Expr) -> pl.Expr:
    """route_id of every row, as an expression."""
    return pl.struct(o=origin, t=transit, g=target, p=product, lvl=level).map_elements(
        lambda r: route_id(r["o"], r["t"], r["g"], r["p"], r["lvl"]), return_dtype=pl.String)


@dataclass
class Windows:
    """The baseline and recent windows of a run (first days of months, ends included)."""

    event: date
    baseline_start: date
    baseline_end: date
    recent_start: date
    recent_end: date
    data_start: date
    data_end: date
    notes: list[str] = field(default_factory=list)

    @property
    def baseline_count(self) -> int:
        return months_between(self.baseline_start, self.baseline_end)

    @property
    def recent_count(self) -> int:
        return months_between(self.recent_start, self.recent_end)

    def baseline_label(self) -> str:
        """'2020–21' for whole calendar years, else 'Mar 2020–Feb 2022', for reasons."""
        first, last = self.baseline_start, self.baseline_end
        if first.month == 1 and last.month == 12:
            return str(first.year) if first.year == last.year else f"{first.year}–{str(last.year)[-2:]}"
        return f"{first:%b %Y}–{last:%b %Y}"


def compute_windows(params: DetectParams, data_start: date, data_end: date) -> Windows:
    """Baseline (the `baseline_months` before the event, cut at the data's first month) and recent window
    (`recent_months` ending at as_of or the data's last month, never before the event). Raises
    TradewatchError when the data cannot hold both windows."""
    event = parse_month(params.event)
    recent_end = parse_month(params.as_of) if params.as_of else data_end
    notes: list[str] = []
    if recent_end < event:
        raise TradewatchError(
            f"the data ends {month_text(recent_end)}, before the event {params.event}: nothing to compare after it; "
            "choose an earlier --event"
        )
    if recent_end > data_end:
        notes.append(f"as_of {month_text(recent_end)} is after the last month in the data ({month_text(data_end)})")
    recent_start = max(event, add_months(recent_end, -(params.recent_months - 1)))
    if months_between(recent_start, recent_end) < params.recent_months:
        notes.append(f"recent window shortened to {months_between(recent_start, recent_end)} months "
                     f"({month_text(recent_start)}–{month_text(recent_end)}): it starts at the event")
    baseline_end = add_months(event, -1)
    baseline_start = add_months(event, -params.baseline_months)
    if baseline_end < data_start:
        raise TradewatchError(
            f"the data starts {month_text(data_start)}, not before the event {params.event}: no baseline to compare "
            "with; choose a later --event"
        )
    if baseline_start < data_start:
        baseline_start = data_start
        notes.append(f"baseline shortened to {months_between(baseline_start, baseline_end)} months: "
                     f"data starts {month_text(data_start)}")
    windows = Windows(event, baseline_start, baseline_end, recent_start, recent_end, data_start, data_end, notes)
    matched = {d.month for d in month_span(baseline_start, baseline_end)}
    unmatched = sorted({d.month for d in month_span(recent_start, recent_end)} - matched)
    if unmatched:
        notes.append(f"{len(unmatched)} calendar month(s) of the recent window have no baseline counterpart; "
                     "they are compared with the whole-baseline average")
    return windows


# --- what the warehouse holds -----------------------------------------------------------------------

@dataclass
class Inventory:
    """Which (source, currency) each reporter and flow is read from, and the months it covers."""

    coverage: pl.DataFrame  # reporter, flow, source, currency, period (chosen source only)
    data_start: date
    data_end: date
    picks_needed: bool
    notes: list[str] = field(default_factory=list)


def take_inventory(con: duckdb.DuckDBPyConnection, params: DetectParams) -> Inventory:
    """One pass over trade_flows: months each reporter and flow reports at HS-6/CN8, one source per
    reporter and flow (params.source_priority, then most rows). Raises TradewatchError when the
    warehouse has no usable monthly rows or no coalition exports to a target."""
    settle(con)
    frame = con.sql(
        """SELECT reporter_iso3 AS reporter, flow, source, currency, period, count(*) AS n
           FROM trade_flows WHERE freq = 'M' AND product_level IN (6, 8) GROUP BY ALL"""
    ).pl()
    if frame.height == 0:
        total = scalar(con, "SELECT count(*) FROM trade_flows")
        if total == 0:
            raise TradewatchError("the warehouse holds no trade data; run `tradewatch ingest …` or `tradewatch detect` "
                                  "on an empty warehouse to seed the demo world")
        raise TradewatchError(f"the warehouse holds {total:,} rows but none monthly at HS-6 or CN8 level; "
                              "detection needs monthly product-level data")
    targets = list(params.targets)
    has_target = scalar(con,
        f"""SELECT count(*) FROM (SELECT 1 FROM trade_flows WHERE freq = 'M' AND product_level IN (6, 8)
            AND ((flow = 'export' AND reporter_iso3 IN ({_sql_list(params.origins)}) AND partner_iso3 IN ({_sql_list(targets)}))
              OR (flow = 'import' AND reporter_iso3 IN ({_sql_list(targets)}) AND partner_iso3 IN ({_sql_list(params.origins)})))
            LIMIT 1)"""
    )
    if not has_target:
        raise TradewatchError(
            f"no flows from a coalition origin to {', '.join(targets)} in the warehouse: nothing can be diverted; "
            "load exports of coalition reporters (e.g. Comext) first"
        )
    priority = {name: i for i, name in enumerate(params.source_priority)}
    totals = (
        frame.group_by("reporter", "flow", "source", "currency").agg(pl.col("n").sum())
        .with_columns(pl.col("source").replace_strict(priority, default=len(priority)).alias("rank"))
        .sort(["reporter", "flow", "rank", "n", "source", "currency"], descending=[False, False, False, True, False, False])
    )
    chosen = totals.unique(["reporter", "flow"], keep="first", maintain_order=True)
    notes = []
    dropped = totals.height - chosen.height
    if dropped:
        notes.append(f"{dropped} reporter/flow/source combinations skipped: each reporter is read from one source "
                     f"(priority {', '.join(params.source_priority)})")
    coverage = frame.join(chosen.select("reporter", "flow", "source", "currency"),
                          on=["reporter", "flow", "source", "currency"]).select(
        "reporter", "flow", "source", "currency", "period").sort("reporter", "flow", "period")
    return Inventory(coverage, frame["period"].min(), frame["period"].max(), picks_needed=dropped > 0, notes=notes)


def settle(con: duckdb.DuckDBPyConnection) -> None:
    """Finish any result a caller left half-read (DuckDB 2 refuses new relations until it is consumed)."""
    con.execute("SELECT 1").fetchall()


def scalar(con: duckdb.DuckDBPyConnection, sql: str, parameters: list | None = None):
    """First value of a query's first row; the result is read to the end so the connection is free again."""
    rows = con.execute(sql, parameters or []).fetchall()
    return rows[0][0] if rows else None


def _sql_list(values) -> str:
    values = list(values)
    if not values:
        return "NULL"
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


# --- weights that turn monthly values into seasonally matched averages --------------------------------

def window_weights(coverage: pl.DataFrame, windows: Windows, *, seasonal: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per reporter, flow and covered month: `bw` and `rw` such that Σ value·bw is the seasonally matched
    baseline monthly average and Σ value·rw the recent monthly average (months a reporter did not
    report are left out, not counted as zero). Returns (weights, counts) where counts has n_base and
    n_recent per reporter and flow."""
    by_key: dict[tuple[str, str], list[date]] = defaultdict(list)
    for reporter, flow, period in coverage.select("reporter", "flow", "period").unique().sort(
            "reporter", "flow", "period").iter_rows():
        by_key[(reporter, flow)].append(period)
    rows = []
    counts = []
    for (reporter, flow), periods in by_key.items():
        base = [p for p in periods if windows.baseline_start <= p <= windows.baseline_end]
        recent = [p for p in periods if windows.recent_start <= p <= windows.recent_end]
        counts.append((reporter, flow, len(base), len(recent)))
        if not base or not recent:
            continue
        weight: dict[date, float] = defaultdict(float)
        by_month: dict[int, list[date]] = defaultdict(list)
        for p in base:
            by_month[p.month].append(p)
        for m in recent:
            matched = by_month.get(m.month) if seasonal else None
            matched = matched or base
            for b in matched:
                weight[b] += 1.0 / (len(recent) * len(matched))
        for p in base:
            rows.append((reporter, flow, p, weight.get(p, 0.0), 0.0, True, False))
        for p in recent:
            rows.append((reporter, flow, p, 0.0, 1.0 / len(recent), False, True))
    schema = {"reporter": pl.String, "flow": pl.String, "period": pl.Date, "bw": pl.Float64, "rw": pl.Float64,
              "in_base": pl.Boolean, "in_recent": pl.Boolean}
    weights = pl.DataFrame(rows, schema=schema, orient="row")
    count_frame = pl.DataFrame(counts, schema={"reporter": pl.String, "flow": pl.String, "n_base": pl.Int32,
                                               "n_recent": pl.Int32}, orient="row")
    return weights, count_frame


# --- reading trade rows in DuckDB ----------------------------------------------------------------------

WEIGHTS = "tw_detect_weights"
MAPPED = "tw_detect_mapped"


class RowSource:
    """The trade rows detection reads, as SQL over trade_flows: monthly, HS-6 (CN8 cut to six digits), one
    source per reporter and flow, only the flows routes need. Months before the HS 2022 revision of codes
    that changed come from the small TEMP table MAPPED instead, already carrying their HS 2022 codes."""

    def __init__(self, con: duckdb.DuckDBPyConnection, params: DetectParams, inventory: Inventory,
                 first: date, last: date) -> None:
        self.con, self.params, self.first, self.last = con, params, first, last
        self.revision = parse_month(params.hs_revision)
        self.old_codes = sorted(products.hs2017_to_hs2022())
        self.pick_join = ""
        if inventory.picks_needed:
            picks = inventory.coverage.select("reporter", "flow", "source", "currency").unique()
            con.register("tw_detect_picks_arrow", picks.to_arrow())
            con.execute("CREATE OR REPLACE TEMP TABLE tw_detect_picks AS SELECT * FROM tw_detect_picks_arrow")
            con.unregister("tw_detect_picks_arrow")
            self.pick_join = ("JOIN tw_detect_picks p ON p.reporter = t.reporter_iso3 AND p.flow = t.flow "
                              "AND p.source = t.source AND p.currency = t.currency")
        self.mapped_rows = self._map_hs2017()

    def _filters(self) -> str:
        origins = _sql_list(self.params.origins)
        sanctioned = _sql_list(list(self.params.targets) + list(self.params.co_targets))
        return f"""t.freq = 'M' AND t.product_level IN (6, 8) AND t.reporter_iso3 <> t.partner_iso3
          AND ((t.flow = 'export' AND (t.reporter_iso3 IN ({origins}) OR t.partner_iso3 IN ({sanctioned})))
            OR (t.flow = 'import' AND (t.partner_iso3 IN ({origins}) OR t.reporter_iso3 IN ({sanctioned}))))"""

    def sql(self, first: date | None = None, last: date | None = None) -> str:
        """SELECT of (reporter, partner, flow, hs6, period, currency, value, kg, kgv) rows in [first, last];
        kgv is the value of rows that carry a weight. With params.eu_rollup, EU members' exports also
        appear once more under the reporter EU_CODE."""
        first, last = first or self.first, last or self.last
        old = _sql_list(self.old_codes)
        rows = f"""
            SELECT t.reporter_iso3 AS reporter, t.partner_iso3 AS partner, t.flow, left(t.product_code, 6) AS hs6,
                   t.period, t.currency, t.value, t.net_weight_kg AS kg,
                   CASE WHEN t.net_weight_kg > 0 THEN t.value END AS kgv
            FROM trade_flows t {self.pick_join}
            WHERE {self._filters()} AND t.period BETWEEN DATE '{first}' AND DATE '{last}'
              AND NOT (t.period < DATE '{self.revision}' AND left(t.product_code, 6) IN ({old}))"""
        if self.mapped_rows:
            rows += f"""
            UNION ALL
            SELECT reporter, partner, flow, hs6, period, currency, value, kg, kgv FROM {MAPPED}
            WHERE period BETWEEN DATE '{first}' AND DATE '{last}'"""
        if not self.params.eu_rollup:
            return rows
        from tradewatch.detect.config import country_groups

        eu = _sql_list(country_groups()["eu27"])
        return f"""
            WITH r AS ({rows})
            SELECT * FROM r
            UNION ALL
            SELECT '{EU_CODE}', partner, flow, hs6, period, currency, value, kg, kgv FROM r
            WHERE flow = 'export' AND reporter IN ({eu}) AND partner NOT IN ({eu})"""

    def _map_hs2017(self) -> int:
        """TEMP table MAPPED: rows before the revision whose HS 2017 code changed, under their HS 2022
        codes. A code split in several parts is shared out by the same route's mix of the new codes after
        the revision, else the reporter's mix, else equally. Returns the number of rows written."""
        con, pairs = self.con, products.correlation()
        con.execute(f"DROP TABLE IF EXISTS {MAPPED}")
        if not pairs or self.first >= self.revision:
            return 0
        values = ", ".join(f"('{old}', '{new}')" for old, new in pairs)
        con.execute(f"CREATE OR REPLACE TEMP TABLE tw_detect_corr AS SELECT * FROM (VALUES {values}) v(hs2017, hs2022)")
        involved = _sql_list(sorted({code for pair in pairs for code in pair}))
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE {MAPPED} AS
            WITH raw AS (
                SELECT t.reporter_iso3 AS reporter, t.partner_iso3 AS partner, t.flow, left(t.product_code, 6) AS hs6,
                       t.period, t.currency, sum(t.value) AS value, sum(t.net_weight_kg) AS kg,
                       sum(CASE WHEN t.net_weight_kg > 0 THEN t.value END) AS kgv
                FROM trade_flows t {self.pick_join}
                WHERE {self._filters()} AND t.period BETWEEN $first AND $last
                  AND left(t.product_code, 6) IN ({involved})
                GROUP BY ALL
            ), post AS (
                SELECT m.reporter, m.partner, m.flow, c.hs2017, c.hs2022, sum(m.value) AS value
                FROM raw m JOIN tw_detect_corr c ON m.hs6 = c.hs2022
                WHERE m.period >= $revision GROUP BY ALL
            ), route_share AS (
                SELECT reporter, partner, flow, hs2017, hs2022,
                       value / nullif(sum(value) OVER (PARTITION BY reporter, partner, flow, hs2017), 0) AS share
                FROM post
            ), reporter_share AS (
                SELECT reporter, flow, hs2017, hs2022,
                       sum(value) / nullif(sum(sum(value)) OVER (PARTITION BY reporter, flow, hs2017), 0) AS share
                FROM post GROUP BY reporter, flow, hs2017, hs2022
            ), route_total AS (
                SELECT reporter, partner, flow, hs2017, sum(share) AS total FROM route_share GROUP BY ALL
            ), reporter_total AS (
                SELECT reporter, flow, hs2017, sum(share) AS total FROM reporter_share GROUP BY ALL
            ), targets AS (
                SELECT hs2017, hs2022, count(*) OVER (PARTITION BY hs2017) AS parts FROM tw_detect_corr
            )
            SELECT m.reporter, m.partner, m.flow, c.hs2022 AS hs6, m.period, m.currency,
                   m.value * w.weight AS value, m.kg * w.weight AS kg, m.kgv * w.weight AS kgv
            FROM raw m
            JOIN targets c ON m.hs6 = c.hs2017
            LEFT JOIN route_total rt ON rt.reporter = m.reporter AND rt.partner = m.partner AND rt.flow = m.flow
                                    AND rt.hs2017 = c.hs2017
            LEFT JOIN route_share rs ON rs.reporter = m.reporter AND rs.partner = m.partner AND rs.flow = m.flow
                                    AND rs.hs2017 = c.hs2017 AND rs.hs2022 = c.hs2022
            LEFT JOIN reporter_total pt ON pt.reporter = m.reporter AND pt.flow = m.flow AND pt.hs2017 = c.hs2017
            LEFT JOIN reporter_share ps ON ps.reporter = m.reporter AND ps.flow = m.flow AND ps.hs2017 = c.hs2017
                                       AND ps.hs2022 = c.hs2022,
            LATERAL (SELECT CASE WHEN c.parts = 1 THEN 1.0
                                 WHEN rt.total > 0 THEN coalesce(rs.share, 0)
                                 WHEN pt.total > 0 THEN coalesce(ps.share, 0)
                                 ELSE 1.0 / c.parts END AS weight) w
            WHERE m.period < $revision AND w.weight > 0
        """, {"first": self.first, "last": self.last, "revision": self.revision})
        return int(scalar(con, f"SELECT count(*) FROM {MAPPED}"))


def register_weights(con: duckdb.DuckDBPyConnection, weights: pl.DataFrame) -> None:
    con.register("tw_detect_weights_arrow", weights.to_arrow())
    con.execute(f"CREATE OR REPLACE TEMP TABLE {WEIGHTS} AS SELECT * FROM tw_detect_weights_arrow")
    con.unregister("tw_detect_weights_arrow")


def drop_temp(con: duckdb.DuckDBPyConnection) -> None:
    for table in (MAPPED, WEIGHTS, "tw_detect_picks", "tw_detect_corr", "tw_detect_keys"):
        con.execute(f"DROP TABLE IF EXISTS {table}")


def series_stats(source: RowSource) -> pl.DataFrame:
    """One pass over the rows: additive window statistics per HS-6 series (reporter, partner, flow,
    product, currency): `base` and `recent` monthly averages (Σ value × weight), the same over rows with
    a weight for unit values (base_kg, base_kgv, recent_kg, recent_kgv), and how many rows fall before
    and after the HS 2022 revision (rows_before, rows_after)."""
    # Rounded so that DuckDB's parallel summation order cannot change a later ranking.
    return source.con.sql(f"""
        SELECT m.reporter, m.partner, m.flow, m.hs6 AS product, m.currency,
               round(sum(m.value * w.bw), 4) AS base, round(sum(m.value * w.rw), 4) AS recent,
               round(sum(m.kg * w.bw), 4) AS base_kg, round(sum(m.kgv * w.bw), 4) AS base_kgv,
               round(sum(m.kg * w.rw), 4) AS recent_kg, round(sum(m.kgv * w.rw), 4) AS recent_kgv,
               count(*) FILTER (WHERE m.period < DATE '{source.revision}') AS rows_before,
               count(*) FILTER (WHERE m.period >= DATE '{source.revision}') AS rows_after
        FROM ({source.sql()}) m
        JOIN {WEIGHTS} w ON w.reporter = m.reporter AND w.flow = m.flow AND w.period = m.period
        GROUP BY ALL
    """).pl().with_columns(pl.lit(6, pl.Int8).alias("level"))


def codes_new_at_revision(six: pl.DataFrame, params: DetectParams, windows: Windows) -> set[str]:
    """HS-6 codes (after the HS 2017 mapping) with rows after the HS 2022 revision but none before it,
    when the baseline reaches back before the revision: their baseline would be a false zero (a code
    split the correlation table does not know, or a predecessor code missing from the data)."""
    revision = parse_month(params.hs_revision)
    if not windows.baseline_start < revision <= windows.recent_end:
        return set()
    counts = six.group_by("product").agg(pl.col("rows_before").sum(), pl.col("rows_after").sum())
    return set(counts.filter((pl.col("rows_before") == 0) & (pl.col("rows_after") > 0))["product"].to_list())


def with_headings(six: pl.DataFrame, exclude: set[str] = frozenset()) -> pl.DataFrame:
    """HS-6 series statistics plus their HS-4 roll-ups (sums; codes in `exclude` left out)."""
    four = (six.lazy().filter(~pl.col("product").is_in(sorted(exclude)))
            .with_columns(pl.col("product").str.slice(0, 4))
            .group_by("reporter", "partner", "flow", "product", "currency")
            .agg(pl.col("base", "recent", "base_kg", "base_kgv", "recent_kg", "recent_kgv", "rows_before",
                        "rows_after").sum())
            .with_columns(pl.lit(4, pl.Int8).alias("level")).collect())
    return pl.concat([six, four.select(six.columns)])


def shape_stats(source: RowSource, keys: pl.DataFrame, windows: Windows, band_floor: float,
                band: float = 1.25) -> pl.DataFrame:
    """Month-by-month shape of the series in `keys` (reporter, partner, flow, product, level, base: the
    expected monthly value) over the recent window: months_above (months above the band, `band` × base +
    `band_floor`) and spike_share (the largest month's share of the positive recent excess).
    Only for the few series that could be flagged, and only recent months, so this pass stays small."""
    con = source.con
    empty = pl.DataFrame(schema={"reporter": pl.String, "partner": pl.String, "flow": pl.String,
                                 "product": pl.String, "level": pl.Int8, "months_above": pl.Int64,
                                 "spike_share": pl.Float64})
    if keys.height == 0:
        return empty
    con.register("tw_detect_keys_arrow", keys.select("reporter", "partner", "flow", "product", "level", "base").to_arrow())
    con.execute("CREATE OR REPLACE TEMP TABLE tw_detect_keys AS SELECT * FROM tw_detect_keys_arrow")
    con.unregister("tw_detect_keys_arrow")
    frame = con.sql(f"""
        WITH recent AS ({source.sql(windows.recent_start, windows.recent_end)}),
        monthly AS (
            -- Two equi-joins (HS-6 keys on the code, HS-4 keys on its heading) so both are hash joins.
            SELECT k.reporter, k.partner, k.flow, k.product, k.level, any_value(k.base) AS base, m.period,
                   sum(m.value) AS v
            FROM recent m JOIN tw_detect_keys k
              ON k.level = 6 AND k.reporter = m.reporter AND k.partner = m.partner AND k.flow = m.flow
             AND k.product = m.hs6
            GROUP BY k.reporter, k.partner, k.flow, k.product, k.level, m.period
            UNION ALL
            SELECT k.reporter, k.partner, k.flow, k.product, k.level, any_value(k.base) AS base, m.period,
                   sum(m.value) AS v
            FROM recent m JOIN tw_detect_keys k
              ON k.level = 4 AND k.reporter = m.reporter AND k.partner = m.partner AND k.flow = m.flow
             AND k.product = left(m.hs6, 4)
            GROUP BY k.reporter, k.partner, k.flow, k.product, k.level, m.period
        )
        SELECT reporter, partner, flow, product, level,
               count(*) FILTER (WHERE v > {float(band)} * base + {float(band_floor)}) AS months_above,
               max(greatest(v - base, 0)) / nullif(sum(greatest(v - base, 0)), 0) AS spike_share
        FROM monthly GROUP BY ALL
    """).pl()
    con.execute("DROP TABLE tw_detect_keys")
    return pl.concat([empty, frame.cast(empty.schema)], how="vertical")


# --- fx -----------------------------------------------------------------------------------------------

def monthly_usd_per_eur(con: duckdb.DuckDBPyConnection) -> dict[date, float]:
    """USD per EUR by month (first days) from table fx_rates (period, rate; with base/quote columns only
    EUR→USD rows, or USD→EUR inverted); {} when the table is missing or unreadable."""
    columns = {row[0] for row in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'fx_rates'").fetchall()}
    if not {"period", "rate"} <= columns:
        return {}
    if {"base", "quote"} <= columns:
        rate = ("CASE WHEN upper(base) = 'EUR' AND upper(quote) = 'USD' THEN rate "
                "WHEN upper(base) = 'USD' AND upper(quote) = 'EUR' AND rate > 0 THEN 1 / rate END")
    else:
        rate = "rate"
    try:
        rows = con.execute(f"""
            SELECT coalesce(TRY_CAST(period AS DATE), TRY_CAST(CAST(period AS VARCHAR) || '-01' AS DATE)) AS p,
                   avg(CAST({rate} AS DOUBLE)) FROM fx_rates GROUP BY p
        """).fetchall()
    except duckdb.Error:
        return {}
    return {date(p.year, p.month, 1): r for p, r in rows if p is not None and r is not None and r > 0}


def fx_window_rates(con: duckdb.DuckDBPyConnection, windows: Windows) -> tuple[float, float] | None:
    """Average USD per EUR over the baseline and the recent window (monthly_usd_per_eur), or None when
    fx_rates is missing or does not cover every month of both windows: cross-currency features are then
    unavailable, never computed with a made-up rate."""
    rates = monthly_usd_per_eur(con)
    out = []
    for first, last in ((windows.baseline_start, windows.baseline_end), (windows.recent_start, windows.recent_end)):
        months = month_span(first, last)
        if any(m not in rates for m in months):
            return None
        out.append(sum(rates[m] for m in months) / len(months))
    return out[0], out[1]


# --- routes -------------------------------------------------------------------------------------------

@dataclass
class RouteFrame:
    """The candidate routes with their features (null = unavailable for that route) and what the data
    could not support at all (feature -> reason). With build_routes(materialise="restricted"), `routes`
    holds the restricted goods only (the only routes that can be tested); the unrestricted ones, which only
    measure the pairs' ordinary growth and the null, are then summed up in `null` (the real-event null
    statistics, calibration.null_statistics) and `omitted` (how many routes were left out, per product
    level). `candidates` counts every candidate route either way."""

    routes: pl.DataFrame
    unavailable: dict[str, str]
    notes: list[str]
    windows: Windows
    placebo: pl.DataFrame | None = None
    candidates: int = 0
    null: pl.DataFrame | None = None
    omitted: dict[int, int] = field(default_factory=dict)


def _valid_partner() -> pl.Expr:
    # Aggregates and confidential partners are not places goods can pass through: Comext's Q?Q codes,
    # Comtrade's X?? areas (bunkers, free zones, "nes"), the world, the EU; Ceuta, Melilla and Northern
    # Ireland (XCX, XLX, XIX) belong to coalition members. Kosovo (XKX) is a country.
    code = pl.col("partner")
    return (code.str.len_chars() == 3) & ~code.str.starts_with("Q") & \
        ~(code.str.starts_with("X") & (code != "XKX")) & ~code.is_in(["WLD", EU_CODE, "EUU"])


def _log_growth(recent: pl.Expr, base: pl.Expr, smoothing: float) -> pl.Expr:
    return ((recent + smoothing) / (base + smoothing)).log()


MATERIALISE = ("all", "restricted")


def build_routes(con: duckdb.DuckDBPyConnection, params: DetectParams, *, windows: Windows | None = None,
                 inventory: Inventory | None = None, materialise: str = "all") -> RouteFrame:
    """Every candidate route origin→transit→target for each product (HS-6 and the HS-4 roll-up) with
    its features, its growth net of the pair's ordinary growth and of control countries (the goods
    dimension), and the placebo statistics calibration needs. `materialise` "restricted" builds the full
    rows of restricted goods only (memory then follows the routes that can be tested): the unrestricted
    goods still measure every yardstick, the null and the unavailable features from narrow frames, so a
    restricted route's row is the same either way. Raises TradewatchError when the warehouse cannot
    support detection."""
    if materialise not in MATERIALISE:
        raise ValueError(f"materialise must be one of {MATERIALISE}, not {materialise!r}")
    inventory = inventory or take_inventory(con, params)
    windows = windows or compute_windows(params, inventory.data_start, inventory.data_end)
    notes = list(windows.notes) + list(inventory.notes)
    coverage = _with_eu_rollup(inventory.coverage, params)
    weights, counts = window_weights(coverage, windows)
    if weights.height == 0:
        raise TradewatchError(
            f"no reporter has data in both the baseline ({month_text(windows.baseline_start)}–"
            f"{month_text(windows.baseline_end)}) and the recent window ({month_text(windows.recent_start)}–"
            f"{month_text(windows.recent_end)})"
        )
    register_weights(con, weights)
    try:
        source = RowSource(con, params, inventory, windows.baseline_start, windows.recent_end)
        six = series_stats(source)
        new_codes = codes_new_at_revision(six, params, windows)
        if new_codes:
            shown = ", ".join(sorted(new_codes)[:5]) + ("…" if len(new_codes) > 5 else "")
            notes.append(f"{len(new_codes)} HS-6 code(s) first appear at the HS 2022 revision ({params.hs_revision}) "
                         f"with no HS 2017 predecessor in the data ({shown}): their routes are not scored and they "
                         "are left out of HS-4 roll-ups")
        stats = with_headings(six, new_codes) if 4 in params.product_levels else six
        del six
        assembled = _assemble(con, params, windows, stats, counts, materialise=materialise)
        del stats
        comparable = ~((pl.col("level") == 6) & pl.col("product").is_in(sorted(new_codes)))
        routes = assembled.routes.with_columns(comparable=comparable)
        reference = pl.concat([routes.select(calibration.REFERENCE_COLUMNS),
                               assembled.narrow.select(calibration.REFERENCE_COLUMNS)])
        measured = calibration.yardsticks(reference, params, totals_growth(con, windows, params))
        del reference
        routes = with_excess(calibration.net_growth(routes, params, None, measured=measured), windows)
        routes = _add_shape(source, params, routes, counts, windows)
        placebo_frame, placebo_notes = placebo_legs(con, params, inventory, coverage, windows)
    finally:
        drop_temp(con)
    null = None
    if materialise == "restricted":
        narrow = calibration.net_growth(assembled.narrow, params, None, measured=measured)
        null = calibration.null_statistics(narrow, placebo_frame, params)
    notes += assembled.notes + placebo_notes + _yardstick_notes(measured.pair)
    omitted = dict(assembled.narrow.group_by("level").len().iter_rows())
    return RouteFrame(routes, assembled.unavailable, notes, windows, placebo_frame,
                      candidates=routes.height + assembled.narrow.height, null=null,
                      omitted={int(k): int(v) for k, v in omitted.items()})


def _with_eu_rollup(coverage: pl.DataFrame, params: DetectParams) -> pl.DataFrame:
    if not params.eu_rollup:
        return coverage
    from tradewatch.detect.config import country_groups

    eu = list(country_groups()["eu27"])
    extra = (coverage.filter(pl.col("reporter").is_in(eu) & (pl.col("flow") == "export"))
             .with_columns(pl.lit(EU_CODE).alias("reporter")).unique())
    return pl.concat([coverage, extra]).unique(maintain_order=True)


def with_excess(routes: pl.DataFrame, windows: Windows) -> pl.DataFrame:
    """Excess over the recent window (`recent` − `expected`, monthly, × recent months) and the
    substitution ratio (monthly excess over the origin→target monthly fall), from the v2 `expected`."""
    return routes.with_columns(
        excess_value=(pl.col("recent") - pl.col("expected")) * windows.recent_count,
        substitution_ratio=pl.when(pl.col("target_base") > pl.col("target_recent")).then(
            (pl.col("recent") - pl.col("expected")).clip(lower_bound=0.0)
            / (pl.col("target_base") - pl.col("target_recent"))),
    )


def _yardstick_notes(pairs: pl.DataFrame) -> list[str]:
    """One note per way the pairs' ordinary growth had to be measured other than from unrestricted goods
    (`pairs`: one row per origin→transit pair with its pair_basis, calibration.pair_yardsticks)."""
    notes = []
    for basis, count in pairs.group_by("pair_basis").len().sort("pair_basis").iter_rows():
        if basis != "unrestricted":
            notes.append(f"{count} origin→transit pair(s): ordinary growth from {calibration.YARDSTICK_BASES[basis]}")
    return notes


def placebo_windows(params: DetectParams, windows: Windows) -> Windows | None:
    """Windows of the placebo event, wholly before the real event: a recent window of the run's length (or,
    when the data before the event is short, half of it) ending the month before the event, and a baseline
    of up to params.baseline_months before that, cut at the data's first month; None when fewer than 6
    months fit in either."""
    before = months_between(windows.data_start, add_months(windows.event, -1))
    length = min(windows.recent_count, before // 2)
    if length < 6:
        return None
    recent_end = add_months(windows.event, -1)
    recent_start = add_months(windows.event, -length)
    baseline_end = add_months(recent_start, -1)
    baseline_start = max(windows.data_start, add_months(recent_start, -params.baseline_months))
    return Windows(recent_start, baseline_start, baseline_end, recent_start, recent_end, windows.data_start,
                   windows.data_end)


def placebo_legs(con: duckdb.DuckDBPyConnection, params: DetectParams, inventory: Inventory,
                 coverage: pl.DataFrame, windows: Windows) -> tuple[pl.DataFrame | None, list[str]]:
    """HS-6 origin→transit legs at the placebo event (origin_iso3, transit_iso3, product, base, growth_log):
    the same statistic as the real run's, on windows wholly before the real event; with notes."""
    placebo = placebo_windows(params, windows)
    if placebo is None:
        return None, ["no placebo windows before the event (too little data): the null rests on unrestricted "
                      "goods at the real event only"]
    weights, counts = window_weights(coverage, placebo)
    if weights.height == 0:
        return None, ["no reporter has data in both placebo windows: the null rests on unrestricted goods only"]
    register_weights(con, weights)
    stats = series_stats(RowSource(con, params, inventory, placebo.baseline_start, placebo.recent_end))
    legs, _ = _candidate_legs(_leg_frames(params, stats, counts))
    frame = legs.select(origin_iso3="exporter", transit_iso3="importer", product="product", base="base",
                        growth_log=_log_growth(pl.col("recent"), pl.col("base"), params.smoothing)).collect()
    note = (f"placebo event {month_text(placebo.event)} (baseline {month_text(placebo.baseline_start)}–"
            f"{month_text(placebo.baseline_end)}, recent {month_text(placebo.recent_start)}–"
            f"{month_text(placebo.recent_end)}) gives {frame.height:,} null statistics")
    return frame, [note]


def totals_growth(con: duckdb.DuckDBPyConnection, windows: Windows, params: DetectParams) -> pl.DataFrame | None:
    """Per origin→partner pair with all-goods export totals in table trade_totals (product_group 'TOTAL',
    monthly): totals_growth_log, the log growth (seasonally matched recent over baseline average) of the
    pair's *unrestricted* goods — the total less the restricted goods the warehouse holds for the pair (an
    all-goods total would carry the very diversions it is meant to net out). None without such totals."""
    exists = scalar(con, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'trade_totals'")
    if not exists:
        return None
    restricted = pl.DataFrame({"hs6": sorted(products.restricted_hs6(
        [products.read_user_list(path) for path in params.user_lists]))})
    con.register("tw_detect_restricted_arrow", restricted.to_arrow())
    try:
        monthly = con.sql("""
            WITH totals AS (
                SELECT reporter_iso3, partner_iso3, period, sum(value) AS value FROM trade_totals
                WHERE freq = 'M' AND flow = 'export' AND product_group = 'TOTAL' GROUP BY ALL
            ), restricted AS (
                SELECT t.reporter_iso3, t.partner_iso3, t.period, sum(t.value) AS value
                FROM trade_flows t JOIN tw_detect_restricted_arrow r ON left(t.product_code, 6) = r.hs6
                WHERE t.freq = 'M' AND t.flow = 'export' AND t.product_level = 8 AND t.currency = 'EUR'
                GROUP BY ALL
            )
            SELECT o.reporter_iso3 AS reporter, o.partner_iso3 AS partner, 'export' AS flow, o.period,
                   greatest(o.value - coalesce(r.value, 0), 0) AS value
            FROM totals o LEFT JOIN restricted r USING (reporter_iso3, partner_iso3, period)""").pl()
    finally:
        con.unregister("tw_detect_restricted_arrow")
    if monthly.height == 0:
        return None
    weights, _ = window_weights(monthly.select("reporter", "flow", "period"), windows)
    return (monthly.join(weights, on=["reporter", "flow", "period"])
            .group_by("reporter", "partner")
            .agg((pl.col("value") * pl.col("bw")).sum().alias("b"), (pl.col("value") * pl.col("rw")).sum().alias("r"))
            .filter((pl.col("b") > 0) & (pl.col("r") > 0))
            .select(origin_iso3="reporter", transit_iso3="partner", totals_growth_log=(pl.col("r") / pl.col("b")).log()))


@dataclass
class _Legs:
    """The legs of a run as reported by exporters and (mirror) importers, and who reports what."""

    reported: pl.LazyFrame
    mirrored: pl.LazyFrame
    exporters: set[str]
    importers: set[str]
    origins: list[str]
    excluded: set[str]


def _leg_frames(params: DetectParams, stats: pl.DataFrame, counts: pl.DataFrame) -> _Legs:
    """Series statistics split into exporter-reported and importer-reported (CIF brought to FOB) legs."""
    origins = list(params.origins) + ([EU_CODE] if params.eu_rollup else [])
    targets, co_targets = list(params.targets), list(params.co_targets)
    controls = [code for code in params.controls if code not in origins and code not in targets + co_targets]
    both = counts.filter((pl.col("n_base") > 0) & (pl.col("n_recent") > 0))
    reported = stats.lazy().filter(pl.col("flow") == "export").drop("flow").rename(
        {"reporter": "exporter", "partner": "importer"})
    mirrored = stats.lazy().filter(pl.col("flow") == "import").drop("flow").rename(
        {"reporter": "importer", "partner": "exporter"}).with_columns(
        (pl.col("base", "recent", "base_kgv", "recent_kgv") / params.cif_fob))
    # Declared control countries are the comparison group: a country cannot be both the yardstick and the
    # suspect, so they are not transit candidates either.
    return _Legs(reported, mirrored, set(both.filter(pl.col("flow") == "export")["reporter"].to_list()),
                 set(both.filter(pl.col("flow") == "import")["reporter"].to_list()), origins,
                 set(origins) | set(targets) | set(co_targets) | set(controls))


def _candidate_legs(legs: _Legs) -> tuple[pl.LazyFrame, list[str]]:
    """Origin→transit legs: the origin's export report, or for origins that do not report, the transit's
    import report (basis 'mirror'); and the silent origins."""
    leg_cols = ["exporter", "importer", "product", "level", "currency", "base", "recent", "base_kg", "base_kgv",
                "recent_kg", "recent_kgv"]
    from_reports = legs.reported.filter(pl.col("exporter").is_in(legs.origins) & pl.col("exporter").is_in(
        legs.exporters)).select(leg_cols).with_columns(pl.lit("exports").alias("basis"))
    silent = [o for o in legs.origins if o not in legs.exporters]
    from_mirror = legs.mirrored.filter(pl.col("exporter").is_in(silent) & pl.col("importer").is_in(
        legs.importers)).select(leg_cols).with_columns(pl.lit("mirror").alias("basis"))
    candidates = pl.concat([from_reports, from_mirror]).rename({"importer": "partner"}).filter(
        _valid_partner() & ~pl.col("partner").is_in(sorted(legs.excluded))
    ).rename({"partner": "importer"}).filter((pl.col("base") > 0) | (pl.col("recent") > 0))
    return candidates, silent


@dataclass
class _Assembled:
    """_assemble's answer: the full rows, the narrow rows of the routes not materialised (NARROW_COLUMNS),
    the features no route could have (name -> reason) and notes."""

    routes: pl.DataFrame
    narrow: pl.DataFrame
    unavailable: dict[str, str]
    notes: list[str]


# Features whose absence from every route makes them unavailable for the run (_unavailable_features).
AVAILABILITY = ("onward_growth_log", "onward_cover", "mirror_gap_log", "unit_value_change_log", "target_change",
                "co_target_change")
# What a route not materialised keeps: its identity, what the yardsticks read (calibration.REFERENCE_COLUMNS),
# what its net growth and null statistic need, and whether it has each AVAILABILITY feature.
NARROW_COLUMNS = (*calibration.REFERENCE_COLUMNS, "growth_log", "control_growth_log", "onward_growth_log")


def _assemble(con, params: DetectParams, windows: Windows, stats: pl.DataFrame, counts: pl.DataFrame, *,
              materialise: str = "all") -> _Assembled:
    """Series statistics -> one row per candidate route (origin, transit, target, product, level) with
    every leg joined and every feature computed (null where that route's data cannot support it). With
    `materialise` "restricted" only the restricted goods get full rows; the others come back narrow
    (NARROW_COLUMNS), computed by the same joins and expressions."""
    split = _leg_frames(params, stats, counts)
    controls = [code for code in params.controls
                if code not in split.origins and code not in list(params.targets) + list(params.co_targets)]
    notes: list[str] = []
    legs, silent = _candidate_legs(split)
    quiet = set(silent) & _present(stats, "partner")
    if quiet and legs.filter(pl.col("basis") == "mirror").select(pl.len()).collect().item() > 0:
        notes.append(f"origins that do not report ({', '.join(sorted(quiet))}) are read from their partners' "
                     "import reports, CIF/FOB adjusted")
    routes = legs.rename({"exporter": "origin_iso3", "importer": "transit_iso3"}).join(
        pl.LazyFrame({"target_iso3": list(params.targets)}), how="cross")
    # Which origins report to control partners at all: without any, the control feature is unavailable.
    control_reporters = set(
        stats.filter((pl.col("flow") == "export") & pl.col("partner").is_in(controls))["reporter"].unique().to_list())
    fx = fx_window_rates(con, windows)

    def featured(chosen: pl.LazyFrame) -> pl.LazyFrame:
        return _route_features(_choose_reports(_join_legs(chosen, split, params, controls), split, params,
                                               control_reporters), params, fx)

    restricted = _restricted_codes(stats, params)
    if materialise == "restricted":
        wide = _with_restricted(featured(routes.filter(pl.col("product").is_in(restricted))).collect(), restricted)
        narrow = featured(routes.filter(~pl.col("product").is_in(restricted))).select(
            *[c for c in NARROW_COLUMNS if c != "restricted"],
            *[pl.col(name).is_not_null().alias(f"has_{name}") for name in AVAILABILITY],
        ).with_columns(restricted=pl.lit(False)).collect()
    else:
        wide = _with_restricted(featured(routes).collect(), restricted)
        narrow = wide.head(0).select(*NARROW_COLUMNS,
                                     *[pl.lit(None, pl.Boolean).alias(f"has_{name}") for name in AVAILABILITY])
    available = {name: bool(wide[name].is_not_null().any()) or bool(narrow[f"has_{name}"].any())
                 for name in AVAILABILITY}
    unavailable = _unavailable_features(wide.height + narrow.height, available, split, params, controls,
                                        control_reporters, fx)
    return _Assembled(wide, narrow.drop([f"has_{name}" for name in AVAILABILITY]), unavailable, notes)


def _restricted_codes(stats: pl.DataFrame, params: DetectParams) -> list[str]:
    """The product codes of `stats` (HS-6 and HS-4) that are restricted goods: on the EU annexes, the CHPL
    or a user list."""
    restricted = products.restricted_hs6([products.read_user_list(path) for path in params.user_lists])
    return sorted(code for code in stats["product"].unique().to_list() if products.is_restricted(code, restricted))


def _join_legs(routes: pl.LazyFrame, legs: _Legs, params: DetectParams, controls: list[str]) -> pl.LazyFrame:
    """Joins every other leg a route needs: origin→target (as the origin reports it, and as the target
    reports it), co-targets and control countries summed, the origin's total, the onward leg (the transit's
    report and the target's), and the transit's import report of the o→t leg (the mirror)."""
    reported, mirrored = legs.reported, legs.mirrored
    keys = ["product", "level"]

    def pair_leg(frame: pl.LazyFrame, prefix: str, exporter: str, importer: str, currency: bool = False):
        columns = [pl.col("base").alias(f"{prefix}_base"), pl.col("recent").alias(f"{prefix}_recent")]
        if currency:
            columns.append(pl.col("currency").alias(f"{prefix}_currency"))
        return frame.select("exporter", "importer", *keys, *columns).rename(
            {"exporter": exporter, "importer": importer})

    def group_leg(partners: list[str], prefix: str) -> pl.LazyFrame:
        return (reported.filter(pl.col("importer").is_in(partners)).group_by("exporter", *keys)
                .agg(pl.col("base").sum().alias(f"{prefix}_base"), pl.col("recent").sum().alias(f"{prefix}_recent"))
                .rename({"exporter": "origin_iso3"}))

    target = ["origin_iso3", "target_iso3", *keys]
    onward = ["transit_iso3", "target_iso3", *keys]
    return (
        routes.join(pair_leg(reported, "target", "origin_iso3", "target_iso3"), on=target, how="left")
        .join(group_leg(list(params.co_targets), "co"), on=["origin_iso3", *keys], how="left")
        .join(group_leg(controls, "control"), on=["origin_iso3", *keys], how="left")
        .join(reported.group_by("exporter", *keys).agg(pl.col("base").sum().alias("origin_total_base"))
              .rename({"exporter": "origin_iso3"}), on=["origin_iso3", *keys], how="left")
        # The target leg from the target's own import reports when the origin does not report.
        .join(pair_leg(mirrored, "target_m", "origin_iso3", "target_iso3").rename(
            {"target_m_base": "target_base_m", "target_m_recent": "target_recent_m"}), on=target, how="left")
        .join(pair_leg(reported, "onward_x", "transit_iso3", "target_iso3", currency=True).rename(
            {"onward_x_base": "onward_base_x", "onward_x_recent": "onward_recent_x",
             "onward_x_currency": "onward_currency_x"}), on=onward, how="left")
        .join(pair_leg(mirrored, "onward_m", "transit_iso3", "target_iso3", currency=True).rename(
            {"onward_m_base": "onward_base_m", "onward_m_recent": "onward_recent_m",
             "onward_m_currency": "onward_currency_m"}), on=onward, how="left")
        .join(mirrored.select("exporter", "importer", *keys, pl.col("recent").alias("mirror_recent"),
                              pl.col("currency").alias("mirror_currency"))
              .rename({"exporter": "origin_iso3", "importer": "transit_iso3"}),
              on=["origin_iso3", "transit_iso3", *keys], how="left")
    )


def _choose_reports(routes: pl.LazyFrame, legs: _Legs, params: DetectParams,
                    control_reporters: set[str]) -> pl.LazyFrame:
    """For each leg, the report it is read from: the exporter's where it reports, else the importer's
    (mirror); a leg nobody reports stays null (unavailable), a reported leg without this product is 0."""
    origin_reports = pl.col("origin_iso3").is_in(list(legs.exporters))
    transit_exports = pl.col("transit_iso3").is_in(list(legs.exporters))
    transit_imports = pl.col("transit_iso3").is_in(list(legs.importers))
    target_imports = pl.col("target_iso3").is_in([r for r in params.targets if r in legs.importers])
    has_co = pl.lit(bool(params.co_targets))
    controls_known = pl.col("origin_iso3").is_in(list(control_reporters))
    return routes.with_columns(
        target_base=pl.when(origin_reports).then(pl.col("target_base").fill_null(0.0))
        .when(target_imports).then(pl.col("target_base_m").fill_null(0.0)),
        target_recent=pl.when(origin_reports).then(pl.col("target_recent").fill_null(0.0))
        .when(target_imports).then(pl.col("target_recent_m").fill_null(0.0)),
        co_base=pl.when(origin_reports & has_co).then(pl.col("co_base").fill_null(0.0)),
        co_recent=pl.when(origin_reports & has_co).then(pl.col("co_recent").fill_null(0.0)),
        control_base=pl.when(controls_known).then(pl.col("control_base").fill_null(0.0)),
        control_recent=pl.when(controls_known).then(pl.col("control_recent").fill_null(0.0)),
        onward_base=pl.when(transit_exports).then(pl.col("onward_base_x").fill_null(0.0))
        .when(target_imports).then(pl.col("onward_base_m").fill_null(0.0)),
        onward_recent=pl.when(transit_exports).then(pl.col("onward_recent_x").fill_null(0.0))
        .when(target_imports).then(pl.col("onward_recent_m").fill_null(0.0)),
        onward_currency=pl.when(transit_exports).then(pl.col("onward_currency_x"))
        .when(target_imports).then(pl.col("onward_currency_m")),
        mirror_recent=pl.when(origin_reports & (pl.col("basis") == "exports") & transit_imports)
        .then(pl.col("mirror_recent").fill_null(0.0)),
        # The onward currency falls back to the transit's currency in any report (for display only).
    ).with_columns(pl.col("onward_currency").fill_null(pl.col("mirror_currency")))


def _route_features(routes: pl.LazyFrame, params: DetectParams, fx: tuple[float, float] | None) -> pl.LazyFrame:
    """The per-route features of one leg or two (growths, changes, shares, unit values, cover, mirror gap),
    and the route's text id; cross-currency features need `fx` (USD per EUR in the two windows)."""
    c = params.smoothing

    def usd(currency: pl.Expr, window: int) -> pl.Expr:
        return (pl.when(currency == "EUR").then(pl.lit(fx[window] if fx else None, pl.Float64))
                .when(currency == "USD").then(pl.lit(1.0)).otherwise(pl.lit(None, pl.Float64)))

    return routes.with_columns(
        growth_log=_log_growth(pl.col("recent"), pl.col("base"), c),
        control_growth_log=_log_growth(pl.col("control_recent"), pl.col("control_base"), c),
        target_change=pl.when(pl.col("target_base") > 0).then(pl.col("target_recent") / pl.col("target_base") - 1),
        target_drop_log=-_log_growth(pl.col("target_recent"), pl.col("target_base"), c),
        russia_share=pl.when(pl.col("origin_total_base") > 0).then(
            pl.col("target_base") / pl.col("origin_total_base")),
        co_target_change=pl.when(pl.col("co_base") > 0).then(pl.col("co_recent") / pl.col("co_base") - 1),
        onward_growth_log=_log_growth(pl.col("onward_recent"), pl.col("onward_base"), c),
        unit_value_change_log=pl.when((pl.col("base_kg") > 0) & (pl.col("recent_kg") > 0) & (pl.col("base_kgv") > 0)
                                      & (pl.col("recent_kgv") > 0))
        .then(((pl.col("recent_kgv") / pl.col("recent_kg")) / (pl.col("base_kgv") / pl.col("base_kg"))).log()),
        onward_cover=pl.when(pl.col("onward_currency").is_not_null() & (pl.col("recent") > pl.col("base"))).then(
            ((pl.col("onward_recent") * usd(pl.col("onward_currency"), 1)
              - pl.col("onward_base") * usd(pl.col("onward_currency"), 0))
             / (pl.col("recent") * usd(pl.col("currency"), 1) - pl.col("base") * usd(pl.col("currency"), 0)))),
        mirror_gap_log=pl.when((pl.col("mirror_recent") > 0) & (pl.col("recent") > 0)).then(
            ((pl.col("recent") * usd(pl.col("currency"), 1))
             / (pl.col("mirror_recent") * usd(pl.col("mirror_currency"), 1))).log()),
    ).with_columns(
        route_id=route_ids(pl.col("origin_iso3"), pl.col("transit_iso3"), pl.col("target_iso3"), pl.col("product"),
                           pl.col("level")),
        did_log=pl.col("growth_log") - pl.max_horizontal(pl.col("control_growth_log").fill_null(0.0),
                                                          pl.lit(params.control_floor)),
    )


def _with_restricted(routes: pl.DataFrame, restricted: list[str]) -> pl.DataFrame:
    """Column `restricted`: the route's product is one of `restricted` (_restricted_codes)."""
    return routes.with_columns(restricted=pl.col("product").is_in(restricted))


def _unavailable_features(height: int, available: dict[str, bool], legs: _Legs, params: DetectParams,
                          controls: list[str], control_reporters: set[str], fx) -> dict[str, str]:
    """Feature name -> why no route could have it with this data (`height` candidate routes, `available`:
    whether any of them has each AVAILABILITY feature)."""
    targets, co_targets = "/".join(params.targets), list(params.co_targets)
    unavailable: dict[str, str] = {}

    def none_available(column: str) -> bool:
        return height > 0 and not available[column]

    if not control_reporters:
        unavailable["control_growth_log"] = ("no origin reports exports to any control country "
                                             f"({', '.join(controls[:6])}…): product-wide booms cannot be netted out")
        unavailable["did_log"] = "needs exports to control countries"
    if none_available("onward_growth_log"):
        unavailable["onward_growth_log"] = (f"no transit reports exports to {targets} and {targets} reports no "
                                            "imports in both windows")
    if none_available("onward_cover"):
        if "onward_growth_log" in unavailable:
            unavailable["onward_cover"] = "needs the onward transit→target leg"
        elif fx is None:
            unavailable["onward_cover"] = ("legs are in different currencies and the warehouse has no fx_rates table "
                                           "covering both windows")
        else:
            unavailable["onward_cover"] = "no route with a rise on the origin→transit leg has an onward leg"
    if none_available("mirror_gap_log"):
        if not legs.importers - set(params.targets):
            unavailable["mirror_gap_log"] = "no transit reports its imports, so there is no mirror to compare"
        elif fx is None:
            unavailable["mirror_gap_log"] = "mirror legs are in another currency and there is no fx_rates table"
        else:
            unavailable["mirror_gap_log"] = "no route has both an export and a mirror import report"
    if none_available("unit_value_change_log"):
        unavailable["unit_value_change_log"] = "no quantities (net_weight_kg) in the loaded data"
    if none_available("target_change"):
        unavailable["target_change"] = "no origin→target flows in the baseline"
    if none_available("co_target_change") and co_targets:
        unavailable["co_target_change"] = f"no origin→{'/'.join(co_targets)} flows in the baseline"
    return unavailable


def _present(stats: pl.DataFrame, column: str) -> set[str]:
    return set(stats[column].unique().to_list())


def screen(params: DetectParams) -> pl.Expr:
    """Routes worth the month-by-month look: a material rise net of the pair's ordinary growth and of control
    countries. Only these can be flagged."""
    return (pl.col("excess_value") >= params.screen_share * params.min_excess) & (pl.col("net_growth_log") > 0)


def _add_shape(source: RowSource, params: DetectParams, routes: pl.DataFrame,
               counts: pl.DataFrame, windows: Windows) -> pl.DataFrame:
    """Join persistence and spike_share of the o→t leg onto the screened routes; the others get null
    (not computed: they cannot be flagged)."""
    screened = routes.filter(screen(params))
    mirror = pl.col("basis") == "mirror"
    keys = screened.select(
        reporter=pl.when(mirror).then(pl.col("transit_iso3")).otherwise(pl.col("origin_iso3")),
        partner=pl.when(mirror).then(pl.col("origin_iso3")).otherwise(pl.col("transit_iso3")),
        flow=pl.when(mirror).then(pl.lit("import")).otherwise(pl.lit("export")),
        product=pl.col("product"), level=pl.col("level"),
        base=pl.col("expected") * pl.when(mirror).then(pl.lit(params.cif_fob)).otherwise(pl.lit(1.0)),
    ).unique(["reporter", "partner", "flow", "product", "level"], maintain_order=True)
    shape = shape_stats(source, keys, windows, params.band_floor, params.band).join(
        counts, on=["reporter", "flow"], how="left").with_columns(
        persistence=pl.col("months_above") / pl.col("n_recent")).select(
        "reporter", "partner", "flow", "product", "level", "persistence", "spike_share")
    return routes.with_columns(
        _reporter=pl.when(mirror).then(pl.col("transit_iso3")).otherwise(pl.col("origin_iso3")),
        _partner=pl.when(mirror).then(pl.col("origin_iso3")).otherwise(pl.col("transit_iso3")),
        _flow=pl.when(mirror).then(pl.lit("import")).otherwise(pl.lit("export")),
    ).join(shape.rename({"reporter": "_reporter", "partner": "_partner", "flow": "_flow"}),
           on=["_reporter", "_partner", "_flow", "product", "level"], how="left").drop("_reporter", "_partner", "_flow")


def origin_legs(con: duckdb.DuckDBPyConnection, params: DetectParams, windows: Windows | None = None, *,
                seasonal: bool = True, inventory: Inventory | None = None) -> tuple[pl.DataFrame, Windows]:
    """Only the origin→transit legs at HS-6 as the origins report them (origin_iso3, transit_iso3,
    product, currency, base, recent monthly averages), for the analysts' baseline rules. `seasonal`
    False averages the baseline months plainly."""
    inventory = inventory or take_inventory(con, params)
    windows = windows or compute_windows(params, inventory.data_start, inventory.data_end)
    weights, _counts = window_weights(inventory.coverage, windows, seasonal=seasonal)
    register_weights(con, weights)
    try:
        stats = series_stats(RowSource(con, params, inventory, windows.baseline_start, windows.recent_end))
    finally:
        drop_temp(con)
    excluded = set(params.origins) | set(params.targets) | set(params.co_targets) | set(params.controls)
    legs = (stats.lazy().filter((pl.col("flow") == "export") & pl.col("reporter").is_in(list(params.origins)))
            .filter(_valid_partner() & ~pl.col("partner").is_in(sorted(excluded)))
            .filter((pl.col("base") > 0) | (pl.col("recent") > 0))
            .select(origin_iso3="reporter", transit_iso3="partner", product="product", currency="currency",
                    base="base", recent="recent")
            .sort("origin_iso3", "transit_iso3", "product").collect())
    return legs, windows
