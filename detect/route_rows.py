"""The monthly rows of a route's three legs, read through features.RowSource exactly as the scoring reads them."""

# Evidence shown is evidence scored: `flags show`, the HTML report and the tests read a route's legs here,
# and this module reads them with the scoring's own pieces (features.take_inventory for the one source per
# reporter and flow, features.RowSource for the filters, the CN8 → HS-6 cut and the HS 2017 → 2022 split
# weights, features.window_weights for the seasonally matched averages). It repeats only the choice of which
# report a leg is read from (features.build_routes: the exporter's export report, else the importer's import
# report divided by params.cif_fob), because that choice lives inside a polars expression there.

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date

import duckdb
import polars as pl

from tradewatch.detect import features
from tradewatch.detect.config import DetectParams
from tradewatch.flows.core.errors import TradewatchError
from tradewatch.flows.core.months import month_or_none, parse_month

ROLES = ("transit", "target", "onward")  # origin→transit, origin→target, transit→target
DEFAULT_TARGET = "RUS"
KEYS = "tw_route_rows_keys"  # TEMP table of the legs being read


@dataclass
class Leg:
    """One leg's monthly series over the run's windows (baseline start … recent end), as scored.

    `values[i]` is the leg's value in month `months[i]` in `currency`: None where the reporter it is read
    from did not report that month (a blank in a sparkline), 0.0 where it reported and this product had no
    trade (▁). A mirror leg (basis 'mirror') is the importer's import report divided by `cif_fob`, i.e.
    brought to FOB as the scoring does; basis 'none' means no report can support the leg. `codes` are the
    HS-6 codes (HS 2022, after the HS 2017 mapping) whose rows were summed."""

    name: str
    exporter: str
    importer: str
    role: str = "transit"
    product: str = ""
    level: int = 6
    basis: str = "exports"  # 'exports', 'mirror' (the importer's imports) or 'none'
    reporter: str | None = None
    partner: str | None = None
    flow: str | None = None
    months: list[date] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    source: str | None = None
    currency: str | None = None
    cif_fob: float = 1.0
    codes: list[str] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return any(v is not None for v in self.values)

    def copy(self) -> "Leg":
        """A copy whose lists can be changed without changing this leg."""
        return replace(self, months=list(self.months), values=list(self.values), codes=list(self.codes))


# --- a stored run's parameters and windows ---------------------------------------------------------------

def run_params(stored: dict | None) -> tuple[DetectParams, dict]:
    """A stored run's parameters (runs.params_json parsed: DetectParams.to_dict() plus 'windows') as
    (DetectParams, windows dict of 'YYYY-MM' texts, possibly empty). Unknown keys are ignored."""
    stored = dict(stored or {})
    windows = stored.pop("windows", None)
    return DetectParams.from_dict(stored), windows if isinstance(windows, dict) else {}


def stored_windows(params: DetectParams, windows: dict | None, route: dict | None = None) -> features.Windows | None:
    """The windows a run scored with: from the run's stored windows ('YYYY-MM' texts), else from a route row
    of that run (anomalies baseline_start … recent_end, dates), else None."""
    keys = ("baseline_start", "baseline_end", "recent_start", "recent_end")
    for given in (windows or {}, route or {}):
        months = [month_or_none(given.get(key)) for key in keys]
        if all(months):
            event = parse_month(params.event)
            return features.Windows(event, *months, data_start=months[0], data_end=months[3])
    return None


# --- one run's view of the warehouse -------------------------------------------------------------------------

class RouteRows:
    """The scoring's view of the warehouse for one run's parameters and windows, built once and reused for
    many routes: the inventory (one source per reporter and flow), the window weights and a RowSource over
    baseline start … recent end (so the HS 2017 split weights are the run's). Holds TEMP tables on `con`
    until `close()` (also a context manager). When the warehouse cannot support detection at all, every
    leg is unavailable and `reason` says why."""

    def __init__(self, con: duckdb.DuckDBPyConnection, params: DetectParams,
                 windows: features.Windows | None = None) -> None:
        self.con, self.params, self.windows, self.reason = con, params, windows, None
        self.source: features.RowSource | None = None
        self._read: dict[tuple, Leg] = {}
        try:
            inventory = features.take_inventory(con, params)
            self.windows = windows or features.compute_windows(params, inventory.data_start, inventory.data_end)
        except TradewatchError as exc:
            self.reason = str(exc)
            return
        self.coverage = _with_eu(inventory.coverage, params).filter(
            pl.col("period").is_between(self.windows.baseline_start, self.windows.recent_end))
        weights, counts = features.window_weights(self.coverage, self.windows)
        both = counts.filter((pl.col("n_base") > 0) & (pl.col("n_recent") > 0))
        self.exporters = set(both.filter(pl.col("flow") == "export")["reporter"].to_list())
        self.importers = set(both.filter(pl.col("flow") == "import")["reporter"].to_list())
        self._covered = {
            (reporter, flow): (sorted(set(group["period"].to_list())), group["source"][0], group["currency"][0])
            for (reporter, flow), group in self.coverage.group_by("reporter", "flow")}
        features.register_weights(con, weights)
        self.source = features.RowSource(con, params, inventory, self.windows.baseline_start, self.windows.recent_end)

    @classmethod
    def for_run(cls, con: duckdb.DuckDBPyConnection, stored_params: dict | None,
                route: dict | None = None) -> "RouteRows":
        """The view of a stored run from its parsed params_json (and, for runs that stored no windows, one
        of its anomalies rows)."""
        params, windows = run_params(stored_params)
        return cls(con, params, stored_windows(params, windows, route))

    def close(self) -> None:
        """Drop the TEMP tables this view made on its connection."""
        if self.source is not None:
            features.drop_temp(self.con)
            self.con.execute(f"DROP TABLE IF EXISTS {KEYS}")
            self.source = None

    def __enter__(self) -> "RouteRows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def legs(self, route: dict) -> list[Leg]:
        """The three legs of `route` (a dict with origin_iso3, transit_iso3, target_iso3, product_code or
        product; product_level or level) in ROLES order, each on its reporter's covered months. Fresh
        copies: a caller may change them."""
        return self.legs_of([route])[0]

    def legs_of(self, routes: list[dict]) -> list[list[Leg]]:
        """The legs of many routes (dicts as for `legs`), read in one pass over the rows and kept, so that
        later `legs` calls for these routes read nothing (for a report's top routes)."""
        planned = [self._plan_route(route) for route in routes]
        missing = [leg for legs in planned for leg in legs
                   if leg.reporter is not None and _leg_key(leg) not in self._read]
        if missing and self.source is not None:
            self._fill(missing)
        return [[self._read.get(_leg_key(leg), leg).copy() for leg in legs] for legs in planned]

    def _plan_route(self, route: dict) -> list[Leg]:
        """The three legs of a route with their reports chosen and no rows read yet."""
        origin, transit = route["origin_iso3"], route["transit_iso3"]
        target = route.get("target_iso3") or DEFAULT_TARGET
        product = str(route.get("product_code") or route.get("product"))
        level = int(route.get("product_level") or route.get("level") or len(product))
        return [self._plan(role, exporter, importer, product, level)
                for role, exporter, importer in zip(ROLES, (origin, origin, transit), (transit, target, target))]

    def _plan(self, role: str, exporter: str, importer: str, product: str, level: int) -> Leg:
        """Which report a leg is read from, by features.build_routes's rules: the exporter's export report when
        it reports exports in both windows; else the importer's import report (for the origin→target and
        onward legs only the target's) when it reports imports in both windows; else none."""
        leg = Leg(name=f"{exporter}→{importer}", exporter=exporter, importer=importer, role=role,
                  product=product, level=level, basis="none")
        if self.source is None:
            return leg
        mirror_ok = importer in self.importers and (role == "transit" or importer in self.params.targets)
        if exporter in self.exporters:
            leg.basis, leg.reporter, leg.partner, leg.flow = "exports", exporter, importer, "export"
        elif mirror_ok:
            leg.basis, leg.reporter, leg.partner, leg.flow = "mirror", importer, exporter, "import"
            leg.cif_fob = float(self.params.cif_fob)
        return leg

    def _fill(self, legs: list[Leg]) -> None:
        """Monthly sums of the legs' rows from the RowSource (one query for all of them), on each reporter's
        covered months; stored in self._read by leg key."""
        keys = pl.DataFrame([(leg.reporter, leg.partner, leg.flow, leg.product, leg.level) for leg in legs],
                            schema={"reporter": pl.String, "partner": pl.String, "flow": pl.String,
                                    "product": pl.String, "level": pl.Int32}, orient="row").unique()
        self.con.register("tw_route_rows_keys_arrow", keys.to_arrow())
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {KEYS} AS SELECT * FROM tw_route_rows_keys_arrow")
        self.con.unregister("tw_route_rows_keys_arrow")
        # Two equi-joins (HS-6 keys on the code, HS-4 keys on its heading), as features.shape_stats does.
        rows = self.con.execute(f"""
            WITH m AS ({self.source.sql()})
            SELECT k.reporter, k.partner, k.flow, k.product, m.period, m.hs6, sum(m.value) AS value
            FROM m JOIN {KEYS} k ON k.level = 6 AND k.reporter = m.reporter AND k.partner = m.partner
                                AND k.flow = m.flow AND k.product = m.hs6
            GROUP BY ALL
            UNION ALL
            SELECT k.reporter, k.partner, k.flow, k.product, m.period, m.hs6, sum(m.value) AS value
            FROM m JOIN {KEYS} k ON k.level = 4 AND k.reporter = m.reporter AND k.partner = m.partner
                                AND k.flow = m.flow AND k.product = left(m.hs6, 4)
            GROUP BY ALL""").fetchall()
        # An HS-4 route is the sum of its HS-6 codes, less those the scoring leaves out of roll-ups.
        excluded = self._new_codes() if any(leg.level == 4 for leg in legs) else set()
        found: dict[tuple, list[tuple]] = {}
        for reporter, partner, flow, product, period, hs6, value in rows:
            if not (len(product) == 4 and hs6 in excluded):
                found.setdefault((reporter, partner, flow, product), []).append((period, hs6, float(value or 0.0)))
        for leg in legs:
            mine = found.get((leg.reporter, leg.partner, leg.flow, leg.product), [])
            by_month: dict[date, float] = {}
            for period, _, value in mine:
                by_month[period] = by_month.get(period, 0.0) + value
            months, leg.source, leg.currency = self._covered.get((leg.reporter, leg.flow), ([], None, None))
            leg.months = list(months)
            leg.values = [by_month.get(m, 0.0) / leg.cif_fob for m in leg.months]
            leg.codes = sorted({hs6 for _, hs6, _ in mine})
            self._read[_leg_key(leg)] = leg

    def _new_codes(self) -> set[str]:
        """HS-6 codes under the HS-4 keys that the scoring leaves out of HS-4 roll-ups
        (features.codes_new_at_revision: rows after the HS 2022 revision, none before, over every reporter
        with both windows), when the baseline reaches back before the revision."""
        revision = parse_month(self.params.hs_revision)
        if not self.windows.baseline_start < revision <= self.windows.recent_end:
            return set()
        rows = self.con.execute(f"""
            SELECT m.hs6, count(*) FILTER (WHERE m.period < ?) AS before,
                   count(*) FILTER (WHERE m.period >= ?) AS after
            FROM ({self.source.sql()}) m
            JOIN {features.WEIGHTS} w ON w.reporter = m.reporter AND w.flow = m.flow AND w.period = m.period
            WHERE left(m.hs6, 4) IN (SELECT product FROM {KEYS} WHERE level = 4)
            GROUP BY m.hs6""", [revision, revision]).fetchall()
        return {code for code, before, after in rows if before == 0 and after > 0}


def _leg_key(leg: Leg) -> tuple:
    return leg.reporter, leg.partner, leg.flow, leg.product, leg.level, leg.basis


def _with_eu(coverage: pl.DataFrame, params: DetectParams) -> pl.DataFrame:
    """The inventory's coverage plus, with params.eu_rollup, the EU (features.EU_CODE) as an exporter
    covering every month an EU member reports exports (as features.build_routes does)."""
    if not params.eu_rollup:
        return coverage
    from tradewatch.detect.config import country_groups

    eu = list(country_groups()["eu27"])
    extra = (coverage.filter(pl.col("reporter").is_in(eu) & (pl.col("flow") == "export"))
             .with_columns(pl.lit(features.EU_CODE).alias("reporter")).unique())
    return pl.concat([coverage, extra]).unique(maintain_order=True)


# --- the API the rest of tradewatch uses ----------------------------------------------------------------------

def route_series(con: duckdb.DuckDBPyConnection, params: DetectParams, route: dict,
                 windows: features.Windows | None = None) -> list[Leg]:
    """The three legs of one route (origin→transit, origin→target, transit→target) as the scoring read them
    for `params` and `windows` (None: the windows the data gives now). For many routes of one run, use one
    RouteRows instead (it reads the inventory and the HS 2017 mapping once)."""
    with RouteRows(con, params, windows) as rows:
        return rows.legs(route)


def window_averages(leg: Leg, windows: features.Windows, *, seasonal: bool = True) -> tuple[float | None, float | None]:
    """(baseline, recent) monthly averages of a leg in its currency, with features.window_weights over the
    months its reporter covered: the seasonally matched baseline average and the plain recent average,
    equal to the scored `base`/`recent` (origin→transit), `target_base`/`target_recent` and
    `onward_base`/`onward_recent`. (None, None) when the leg has no report or misses a window."""
    covered = [(m, v) for m, v in zip(leg.months, leg.values) if v is not None]
    if not covered:
        return None, None
    coverage = pl.DataFrame({"reporter": ["leg"] * len(covered), "flow": ["leg"] * len(covered),
                             "period": [m for m, _ in covered]}, schema={"reporter": pl.String, "flow": pl.String,
                                                                          "period": pl.Date})
    weights, _counts = features.window_weights(coverage, windows, seasonal=seasonal)
    if weights.height == 0:
        return None, None
    by_month = dict(covered)
    base = sum(by_month[p] * bw for p, bw in zip(weights["period"].to_list(), weights["bw"].to_list()))
    recent = sum(by_month[p] * rw for p, rw in zip(weights["period"].to_list(), weights["rw"].to_list()))
    return base, recent
