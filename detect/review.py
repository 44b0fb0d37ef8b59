"""Analyst review of flagged routes: list and filter a run's flags, one route's evidence, decisions and their history."""

# "Materially stronger" — when a dismissed route is raised again.
#
# A dismissal records the route's score (0-1, as the detection engine writes it) and excess value (origin->
# transit trade above what was expected over the recent window, in the route's currency) in the run it was
# reviewed against. In any later run the route is shown as 'reopened' (and counts as new) only when BOTH
#     score  >= score_then + MATERIAL_SCORE_GAP_SHARE * (1 - score_then)   (it closed at least a quarter of
#                                                                          the gap to the top score 1.0), and
#     excess >= excess_then * (1 + MATERIAL_EXCESS_GAIN)                   (excess value up 50 % or more).
# Both, because either alone moves with noise: scores are relative to the other candidates of a run, and
# excess value rises with ordinary price inflation. The score test is on the gap to 1.0 rather than a
# relative rise because the score is bounded: 0.80 can never rise by 25 %, but 0.80 -> 0.85 closes a
# quarter of its gap. When a value was not recorded at dismissal (null) or was not positive, its test
# passes when the current value is positive; at least one of the two recorded values must be positive, so a
# dismissal with no evidence recorded never reopens by itself. Otherwise the route stays 'dismissed'.

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import duckdb
import polars as pl

from tradewatch.flows import schema
from tradewatch.flows.core import products
from tradewatch.detect import route_rows
from tradewatch.flows.core.errors import InputError, TradewatchError
from tradewatch.flows.core.months import month_or_none
from tradewatch.flows.core.numbers import finite

MATERIAL_SCORE_GAP_SHARE = 0.25
MATERIAL_EXCESS_GAIN = 0.50
# Scores are stored rounded to six decimals; 0.80 + 0.25 * 0.20 must count as reaching 0.85.
_TOLERANCE = 1e-9

# A note is what an analyst checked and found: a paragraph or a few, not a document pasted in.
MAX_NOTE_CHARS = 4_000
MAX_REVIEWER_CHARS = 100
# Characters that act on a terminal instead of being shown (C0 and C1 controls, DEL: ANSI and OSC escapes
# start with ESC or U+009B) or reorder what is shown (bidirectional overrides). Tab and newline are text.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

DECISIONS = ("confirmed", "dismissed", "watch")
STATUSES = ("new", "reopened", "confirmed", "dismissed", "watch")
SORTS = {"score": "score", "excess": "excess_value", "growth": "growth"}

_ANOMALIES = schema.TABLES["anomalies"]
_REVIEWS = schema.TABLES["reviews"]

# The last decision on a route as `list_flags` shows it: shown name -> reviews column.
_DECISION_COLUMNS = {"reviewed_status": "status", "review_note": "note", "reviewed_by": "reviewer",
                     "reviewed_at": "reviewed_at"}

# The rows `list_flags` returns, in order; exports write exactly these columns with these dtypes. Every
# column but `status` (the status shown: 'new', 'reopened' or the decision) is a stored column, dtype
# from its declaration; `id` is anomalies.route_id.
FLAG_COLUMNS: dict[str, pl.DataType] = {
    "id": _ANOMALIES.field("route_id").polars_type,
    **_ANOMALIES.polars_schema(["run_id", "rank", "score"]),
    "status": pl.String(),
    **_ANOMALIES.polars_schema(["exploration"]),
    **_ANOMALIES.polars_schema([
        "origin_iso3", "transit_iso3", "target_iso3", "product_code", "product_level", "product_name", "tier",
        "currency", "baseline_start", "baseline_end", "recent_start", "recent_end", "baseline_value",
        "recent_value", "growth", "target_change", "onward_growth", "excess_value", "reasons"]),
    **{shown: _REVIEWS.field(column).polars_type for shown, column in _DECISION_COLUMNS.items()},
    **_ANOMALIES.polars_schema(["features_json"]),
}


# --- reference data ------------------------------------------------------------------------------------
# Product names and CHPL tiers come from tradewatch.flows.core.products, the one place that reads
# data/chpl_2024-02-23.csv; a route's trade rows come from tradewatch.detect.route_rows, which reads them
# as the scoring does (including the HS 2017 -> 2022 correlation).

TIERS = ("1", "2", "3", "3.A", "3.B", "4", "4.A", "4.B")


# Each route's latest decision (the one that counts), as a subquery: the later of two at the same time wins.
LATEST_DECISIONS = """SELECT * FROM reviews
    QUALIFY row_number() OVER (PARTITION BY route_id ORDER BY reviewed_at DESC, rowid DESC) = 1"""


def printable(text) -> str:
    """`text` with every character that is not printable (controls, line breaks, bytes that were not UTF-8)
    written as its Python escape (\\x1b, \\n, \\udce9): shown on a terminal, it cannot act on it."""
    text = "" if text is None else str(text)
    return "".join(char if char.isprintable() and not 0xD800 <= ord(char) <= 0xDFFF
                   else char.encode("unicode_escape", "backslashreplace").decode("ascii") for char in text)


def shown(text, limit: int = 60) -> str:
    """User text as an error message quotes it: printable(), on one line, at most `limit` characters."""
    out = printable(text)
    return out if len(out) <= limit else out[:limit - 1] + "…"


def _utf8(text: str, where: str) -> str:
    """`text` unchanged, or InputError when it holds bytes that are not UTF-8 (arguments are decoded with
    surrogate escapes: such a byte arrives as U+DC80…U+DCFF)."""
    for index, char in enumerate(text):
        if 0xD800 <= ord(char) <= 0xDFFF:
            byte = f"byte 0x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else f"U+{ord(char):04X}"
            raise InputError(where, f"is not UTF-8 text ({byte} at character {index + 1}); expected UTF-8 text")
    return text


def checked_text(text: str | None, option: str, *, limit: int, lines: bool = True) -> str | None:
    """A note or name typed by a user, stripped (None when empty), as it may be stored and later shown on a
    terminal or in the report: UTF-8, at most `limit` characters, no control character (tab and, when
    `lines`, newline excepted; CRLF counts as a newline). InputError naming `option` otherwise."""
    if text is None:
        return None
    text = _utf8(str(text), option).replace("\r\n", "\n").strip()
    if len(text) > limit:
        raise InputError(option, f"{len(text):,} characters; expected at most {limit:,}")
    unsafe = _UNSAFE.search(text) or (None if lines else re.search("[\n\t]", text))
    if unsafe:
        raise InputError(option, f"holds control character U+{ord(unsafe.group()):04X} at character "
                         f"{unsafe.start() + 1}; expected plain text{'' if lines else ' on one line'} "
                         "(no terminal escapes)")
    return text or None


def check_tier(text: str, option: str = "--tier") -> str:
    """A CHPL tier as the filters take it ('3.a' -> '3.A', 'Tier 2' -> '2'); InputError for anything else."""
    wanted = (text or "").strip().upper().removeprefix("TIER").strip()
    if wanted not in TIERS:
        raise InputError(f"{option} {shown(text)}", f"expected a CHPL tier: {', '.join(TIERS)}")
    return wanted


def check_product(text: str, option: str = "--product") -> str:
    """An HS or CN code prefix of 2 to 8 digits (dots and spaces ignored); InputError for anything else."""
    code = (text or "").replace(".", "").replace(" ", "")
    if not (code.isdigit() and 2 <= len(code) <= 8):
        raise InputError(f"{option} {shown(text)}", "expected an HS or CN code (prefix) of 2 to 8 digits, e.g. 8542")
    return code


def tier_matches(tier: str | None, wanted: str) -> bool:
    """'1' matches tier 1; '3' matches 3.A and 3.B; '3.a' matches 3.A."""
    if tier is None:
        return False
    wanted = wanted.strip().upper().removeprefix("TIER").strip()
    return tier == wanted or tier.startswith(wanted + ".")


def country_name(iso3: str | None) -> str:
    from tradewatch.flows.core.countries import name

    return name(iso3) if iso3 else ""


# --- runs ---------------------------------------------------------------------------------------------

def resolve_run(con: duckdb.DuckDBPyConnection, run: str | None = "latest") -> str:
    """The run_id for 'latest' (the most recent finished run; None means latest), an exact run id or a
    unique prefix of one. Raises TradewatchError when there is no run and InputError for an unknown id."""
    if run is None or run.strip().lower() == "latest":
        row = con.execute(
            "SELECT run_id FROM runs ORDER BY finished_at IS NULL, coalesce(finished_at, started_at) DESC,"
            " started_at DESC LIMIT 1"
        ).fetchone()
        if row is None:
            empty = con.execute("SELECT 1 FROM trade_flows LIMIT 1").fetchone() is None
            raise TradewatchError("no detection run in this warehouse yet" + (
                " and no trade data to run one on; load some with `tradewatch ingest …`, then `tradewatch detect`"
                if empty else "; run `tradewatch detect` first"))
        return row[0]
    text = _utf8(run, f"--run {shown(run)}").strip()
    rows = con.execute(
        "SELECT run_id FROM runs WHERE run_id = ? UNION SELECT run_id FROM runs WHERE starts_with(run_id, ?)"
        " ORDER BY run_id", [text, text]
    ).fetchall()
    exact = [r[0] for r in rows if r[0] == text]
    if exact:
        return exact[0]
    if len(rows) == 1:
        return rows[0][0]
    if not rows:
        raise InputError(f"--run {shown(run)}", "no such run; expected 'latest' or a run id from `tradewatch flags list`")
    raise InputError(f"--run {shown(run)}", f"matches {len(rows)} runs; give more characters of the run id")


def run_info(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    """The `runs` row of `run_id` as a dict, with params_json, loads_json and unavailable_json parsed
    (keys params, loads, unavailable)."""
    cursor = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
    names = [c[0] for c in cursor.description]
    row = cursor.fetchone()
    if row is None:
        raise InputError(f"--run {run_id}", "no such run")
    info = dict(zip(names, row))
    info["params"] = parse_json(info.get("params_json"), {})
    info["loads"] = parse_json(info.get("loads_json"), [])
    info["unavailable"] = parse_json(info.get("unavailable_json"), [])
    return info


def event_month(info: dict) -> date | None:
    """The event month of a run (params 'event', YYYY-MM) as its first day; None when absent."""
    return month_or_none((info.get("params") or {}).get("event"))


def parse_json(text, default):
    """A stored JSON text (runs.params_json, features_json, …) parsed; `default` when it is empty or not JSON."""
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


# --- decisions ------------------------------------------------------------------------------------------

def materially_stronger(
    score_then: float | None, excess_then: float | None, score_now: float | None, excess_now: float | None,
) -> bool:
    """True when a dismissed route's evidence grew materially since its dismissal (see the module notes):
    the score (0-1) closed at least MATERIAL_SCORE_GAP_SHARE of its gap to 1.0 and the excess value rose
    at least MATERIAL_EXCESS_GAIN (relative)."""

    score_then, excess_then = finite(score_then), finite(excess_then)
    score_now, excess_now = finite(score_now), finite(excess_now)
    if score_now is None or excess_now is None:
        return False
    if not ((score_then or 0) > 0 or (excess_then or 0) > 0):
        return False
    if score_then is None or score_then <= 0:
        score_grew = score_now > 0
    else:
        # a score at or above 1.0 has no gap left: it must not fall
        score_grew = score_now >= score_then + MATERIAL_SCORE_GAP_SHARE * max(0.0, 1.0 - score_then) - _TOLERANCE
    if excess_then is None or excess_then <= 0:
        excess_grew = excess_now > 0
    else:
        excess_grew = excess_now >= excess_then * (1 + MATERIAL_EXCESS_GAIN) * (1 - _TOLERANCE)
    return score_grew and excess_grew


def effective_status(
    decision: str | None, score_then: float | None, excess_then: float | None,
    score_now: float | None, excess_now: float | None,
) -> str:
    """The status shown for a flagged route: 'new' without a decision, the decision itself, or
    'reopened' for a dismissal whose evidence became materially stronger."""
    if decision is None:
        return "new"
    if decision == "dismissed" and materially_stronger(score_then, excess_then, score_now, excess_now):
        return "reopened"
    return decision


def default_reviewer() -> str:
    return os.environ.get("USER") or os.environ.get("USERNAME") or "analyst"


def resolve_route(con: duckdb.DuckDBPyConnection, route: str) -> str:
    """The route_id for an exact id or a unique prefix of one seen in any run; InputError otherwise."""
    text = _utf8(route, f"route {shown(route)}").strip()
    if not text:
        raise InputError("route id", "empty; expected an id from `tradewatch flags list`")
    if con.execute("SELECT 1 FROM anomalies WHERE route_id = ? LIMIT 1", [text]).fetchone():
        return text
    rows = con.execute(
        "SELECT DISTINCT route_id FROM anomalies WHERE starts_with(route_id, ?) ORDER BY 1 LIMIT 6", [text]
    ).fetchall()
    if not rows:
        raise InputError(f"route {shown(route)}", "not flagged in any run; expected an id from `tradewatch flags list`")
    if len(rows) > 1:
        raise InputError(f"route {shown(route)}", "matches several routes; give more characters of the id")
    return rows[0][0]


def _route_row(con: duckdb.DuckDBPyConnection, route_id: str, run_id: str | None) -> dict | None:
    """The anomalies row of the route in `run_id`, or in the latest run that flagged it when run_id is None."""
    columns = ", ".join(f"a.{c}" for c in _ANOMALIES.columns)
    if run_id is not None:
        cursor = con.execute(f"SELECT {columns} FROM anomalies a WHERE a.route_id = ? AND a.run_id = ?",
                             [route_id, run_id])
    else:
        cursor = con.execute(
            f"SELECT {columns} FROM anomalies a JOIN runs r USING (run_id) WHERE a.route_id = ?"
            " ORDER BY coalesce(r.finished_at, r.started_at) DESC LIMIT 1", [route_id])
    row = cursor.fetchone()
    return dict(zip(_ANOMALIES.columns, row)) if row else None


def review(
    con: duckdb.DuckDBPyConnection,
    route: str,
    status: str,
    note: str | None,
    *,
    by: str | None = None,
    run: str | None = None,
    now: datetime | None = None,
) -> dict:
    """Record a decision ('confirmed', 'dismissed' or 'watch') on a route (id or unique prefix) with a
    note, author (default $USER or 'analyst') and time (UTC, default now). The route's score and excess
    value in `run` (default: the latest run that flagged it) are stored with it for the
    'materially stronger' rule. Returns the stored review as a dict."""
    status = (status or "").strip().lower()
    if status not in DECISIONS:
        raise InputError(f"--status {shown(status)}", f"expected one of {', '.join(DECISIONS)}")
    note = checked_text(note, "--note", limit=MAX_NOTE_CHARS)
    by = checked_text(by, "--by", limit=MAX_REVIEWER_CHARS, lines=False)
    route_id = resolve_route(con, route)
    run_id = resolve_run(con, run) if run is not None else None
    row = _route_row(con, route_id, run_id)
    if row is None:
        raise InputError(f"route {shown(route)}", f"not flagged in run {run_id}")
    when = (now or datetime.now(timezone.utc))
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    record = {
        "route_id": route_id,
        "status": status,
        "note": note,
        "reviewer": by or default_reviewer(),
        "reviewed_at": when,
        "run_id": row["run_id"],
        "score_at_review": row["score"],
        "excess_at_review": row["excess_value"],
    }
    con.execute(*schema.bind("reviews", record))
    return record


def history(con: duckdb.DuckDBPyConnection, route: str) -> list[dict]:
    """Every decision on a route (id or unique prefix), oldest first: status, note, reviewer,
    reviewed_at (UTC), run_id, score_at_review, excess_at_review."""
    route_id = resolve_route(con, route)
    cursor = con.execute(
        f"SELECT {', '.join(_REVIEWS.columns)} FROM reviews WHERE route_id = ? ORDER BY reviewed_at, rowid", [route_id]
    )
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


# --- listing ----------------------------------------------------------------------------------------------

@dataclass
class FlagQuery:
    """Filters for `list_flags`. Country codes are ISO alpha-3; `product` is a code prefix; `tier` a
    CHPL tier ('1', '3', '3.A'); `status` one of STATUSES ('new' also matches 'reopened')."""

    run: str | None = "latest"
    transit: str | None = None
    origin: str | None = None
    product: str | None = None
    tier: str | None = None
    min_score: float | None = None
    status: str | None = None
    sort: str = "score"
    limit: int | None = None


def list_flags(con: duckdb.DuckDBPyConnection, query: FlagQuery | None = None, **filters) -> pl.DataFrame:
    """The flagged routes of a run (default latest) matching the filters, with product name, CHPL tier,
    review status and last decision, sorted descending by score, excess value or growth (nulls last).
    Columns and dtypes: FLAG_COLUMNS; `id` is the route's stable id. Values are in the route's
    currency; growth and target_change as the detection engine wrote them."""
    query = query or FlagQuery(**filters)
    if query.sort not in SORTS:
        raise InputError(f"--sort {query.sort}", f"expected one of {', '.join(SORTS)}")
    if query.status is not None and query.status not in STATUSES:
        raise InputError(f"--status {query.status}", f"expected one of {', '.join(STATUSES)}")
    if query.limit is not None and query.limit < 1:
        raise InputError(f"--limit {query.limit}", "expected a positive number of rows")
    run_id = resolve_run(con, query.run)
    # Every user value is a bound parameter; only fixed column names are spliced.
    where, params = ["a.run_id = ?"], [run_id]
    if query.transit:
        where.append("a.transit_iso3 = ?")
        params.append(query.transit.strip().upper())
    if query.origin:
        where.append("a.origin_iso3 = ?")
        params.append(query.origin.strip().upper())
    if query.product:
        where.append("starts_with(a.product_code, ?)")
        params.append(query.product.strip())
    if query.min_score is not None:
        where.append("a.score >= ?")
        params.append(float(query.min_score))
    columns = ", ".join(f"a.{c}" for c in _ANOMALIES.columns)
    decision = ", ".join(f"r.{column} AS {shown}" for shown, column in _DECISION_COLUMNS.items())
    sql = f"""
        WITH last_review AS ({LATEST_DECISIONS})
        SELECT {columns}, {decision}, r.score_at_review, r.excess_at_review
        FROM anomalies a LEFT JOIN last_review r USING (route_id)
        WHERE {' AND '.join(where)}
        ORDER BY a.rank
    """
    cursor = con.execute(sql, params)
    names = [c[0] for c in cursor.description]
    rows = []
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        row["id"] = row.pop("route_id")
        row["exploration"] = bool(row["exploration"])  # NULL: stored before exploration, when every row was a flag
        row["status"] = effective_status(row["reviewed_status"], row.pop("score_at_review"),
                                         row.pop("excess_at_review"), row["score"], row["excess_value"])
        row["product_name"] = row["product_name"] or products.product_name(row["product_code"])
        # The CHPL tier is a fact about the product, shown even when the run did not weigh it.
        row["tier"] = row["tier"] or products.chpl_tier(row["product_code"])
        if query.tier and not tier_matches(row["tier"], query.tier):
            continue
        if query.status and not (row["status"] == query.status
                                 or (query.status == "new" and row["status"] == "reopened")):
            continue
        rows.append(row)
    frame = pl.DataFrame(rows, schema=FLAG_COLUMNS, orient="row") if rows else pl.DataFrame(schema=FLAG_COLUMNS)
    key = SORTS[query.sort]
    # NaN sorts above every number in polars; treat it like a missing value.
    frame = frame.sort(
        [pl.col(key).fill_nan(None), pl.col("rank")], descending=[True, False], nulls_last=True
    )
    if query.limit is not None:
        frame = frame.head(query.limit)
    return frame


# --- one route's evidence -------------------------------------------------------------------------------

# The legs' rows are owned by route_rows; Leg is re-exported here for the renderers.
Leg = route_rows.Leg


@dataclass
class RouteEvidence:
    """Everything known about one flagged route in one run."""

    route: dict
    run: dict
    event: date | None
    product_name: str | None
    tier: str | None
    features: dict
    unavailable: dict
    legs: list[Leg]
    months: list[date]
    loads: list[dict]
    reviews: list[dict]
    status: str
    descriptions: dict = field(default_factory=dict)  # feature name -> what it measures
    similar: dict = field(default_factory=dict)  # past decisions on similar routes (similar_decisions)
    model: str | None = None  # what scored the run (runs.model_version), and whether reviews taught it
    usd_per_eur: dict = field(default_factory=dict)  # ECB rate by month of `months` (fx_rates), for the charts


def _month_axis(legs: list[Leg], route: dict) -> list[date]:
    """Every month (first days) from the earliest to the latest of the legs' months and the route's
    baseline_start and recent_end."""
    months = {m for leg in legs for m in leg.months}
    for key in ("baseline_start", "recent_end"):
        if isinstance(route.get(key), date):
            months.add(route[key].replace(day=1))
    if not months:
        return []
    first, last = min(months), max(months)
    axis, current = [], first
    while current <= last:
        axis.append(current)
        current = date(current.year + (current.month == 12), current.month % 12 + 1, 1)
    return axis


def _align(leg: Leg, axis: list[date]) -> None:
    by_month = dict(zip(leg.months, leg.values))
    leg.values = [by_month.get(m) for m in axis]
    leg.months = list(axis)


def route_legs(con: duckdb.DuckDBPyConnection, route: dict, run: dict | None = None, *,
               rows: route_rows.RouteRows | None = None) -> tuple[list[Leg], list[date]]:
    """The three legs of an anomalies row (origin→transit, origin→target, transit→target) as the run scored
    them (route_rows, with the parameters and windows of `run`, a run_info dict; default the row's own run),
    on one month axis (the run's baseline start … recent end). `rows` reuses one run's RouteRows."""
    if rows is not None:
        legs = rows.legs(route)
    else:
        info = run if run is not None else run_info(con, route["run_id"])
        with route_rows.RouteRows.for_run(con, info.get("params"), route) as own:
            legs = own.legs(route)
    axis = _month_axis(legs, route)
    for leg in legs:
        _align(leg, axis)
    return legs, axis


def _loads_for(con, legs: list[Leg]) -> list[dict]:
    """The successful loads holding the months drawn for the legs (latest load per source and month),
    grouped by file; [] when no leg has a month with data."""
    wanted = sorted({f"{leg.source}|{m:%Y-%m}" for leg in legs if leg.source
                     for m, v in zip(leg.months, leg.values) if v is not None})
    if not wanted:
        return []
    # A bound list, not a temp table: this also runs on read-only connections.
    cursor = con.execute(
        """
        WITH latest AS (
            SELECT * FROM loads
            WHERE status = 'ok' AND freq = 'M' AND list_contains(?, source || '|' || strftime(period, '%Y-%m'))
            QUALIFY row_number() OVER (PARTITION BY source, period, file ORDER BY finished_at DESC) = 1
        )
        SELECT source, file, min(load_id) AS first_load_id, max(load_id) AS last_load_id,
               strftime(min(period), '%Y-%m') AS first_month, strftime(max(period), '%Y-%m') AS last_month,
               count(DISTINCT period) AS months, max(finished_at) AS loaded_at
        FROM latest GROUP BY source, file ORDER BY source, first_month, file
        """,
        [wanted],
    )
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def unavailable_map(unavailable: list[dict] | None) -> dict[str, str]:
    """A run's unavailable features as the engine stores them (runs.unavailable_json parsed: a list of
    {feature, reason}) as feature name -> reason."""
    return {str(item["feature"]): str(item.get("reason") or "") for item in unavailable or []}


def show_route(con: duckdb.DuckDBPyConnection, route: str, run: str | None = None, *,
               rows: route_rows.RouteRows | None = None, usd_per_eur: dict | None = None) -> RouteEvidence:
    """The whole evidence for one route (id or unique prefix) in `run` (default: the latest run that
    flagged it): the anomalies row, features (None = unavailable, with the run's reason when it gave
    one), the monthly series of the three legs exactly as the run scored them (route_rows), product
    name, CHPL tier, source loads, review history, the status `flags list` shows and the ECB rates of the
    months drawn. `rows`, a RouteRows of that run, and `usd_per_eur` (features.monthly_usd_per_eur), save
    re-reading the warehouse when showing many routes."""
    route_id = resolve_route(con, route)
    run_id = resolve_run(con, run) if run is not None else None
    row = _route_row(con, route_id, run_id)
    if row is None:
        raise InputError(f"route {shown(route)}", f"not flagged in run {run_id}")
    info = run_info(con, row["run_id"])
    features = parse_json(row.get("features_json"), {})
    if not isinstance(features, dict):
        features = {"features": features}
    unavailable = unavailable_map(info.get("unavailable"))
    legs, axis = route_legs(con, row, info, rows=rows)
    reviews = history(con, route_id)
    last = reviews[-1] if reviews else None
    status = effective_status(
        last["status"] if last else None, last and last["score_at_review"], last and last["excess_at_review"],
        row["score"], row["excess_value"],
    )
    return RouteEvidence(
        route=row, run=info, event=event_month(info),
        product_name=row["product_name"] or products.product_name(row["product_code"]),
        tier=row["tier"] or products.chpl_tier(row["product_code"]), features=features, unavailable=unavailable,
        legs=legs, months=axis, loads=_loads_for(con, legs), reviews=reviews, status=status,
        descriptions=_feature_descriptions(), similar=similar_decisions(con, row), model=info.get("model_version"),
        usd_per_eur=_rates_of(con, axis, usd_per_eur),
    )


def _rates_of(con: duckdb.DuckDBPyConnection, months: list[date], usd_per_eur: dict | None) -> dict:
    """The ECB USD-per-EUR rates of `months` that fx_rates holds (read when `usd_per_eur` is not given)."""
    from tradewatch.detect import features as feature_module

    rates = feature_module.monthly_usd_per_eur(con) if usd_per_eur is None else usd_per_eur
    return {month: rates[month] for month in months if month in rates}


def chart_evidence(con: duckdb.DuckDBPyConnection, flag: dict, info: dict, rows: route_rows.RouteRows,
                   usd_per_eur: dict) -> RouteEvidence:
    """What a chart of one flagged route needs, for a report of many: a `list_flags` row of run `info`
    (run_info) with its three legs exactly as the run scored them (route_legs through `rows`, that run's
    RouteRows), its month axis, status, product name, tier and the ECB rates of its months. Features,
    loads, decisions and similar routes are left empty (show_route reads them, a query each)."""
    route = {**flag, "route_id": flag["id"]}
    legs, axis = route_legs(con, route, info, rows=rows)
    return RouteEvidence(
        route=route, run=info, event=event_month(info), product_name=flag.get("product_name"),
        tier=flag.get("tier"), features={}, unavailable={}, legs=legs, months=axis, loads=[], reviews=[],
        status=flag["status"], usd_per_eur=_rates_of(con, axis, usd_per_eur), model=info.get("model_version"),
    )


def evidence_as_scored(con: duckdb.DuckDBPyConnection, route: str,
                       run: str | None = None) -> tuple[RouteEvidence, list[dict]]:
    """The route's evidence (show_route) on the data its run read — the run's vintage, when data were
    revised since — and the revisions of the route's rows loaded after its last review (after its run,
    when never reviewed), as flows.vintages.revised_since gives them. `flags show` and `tradewatch ui`
    show exactly this."""
    from tradewatch.flows import vintages

    evidence = show_route(con, route, run=run)
    row, vintage = evidence.route, evidence.run.get("vintage")
    legs = dict(origin=row["origin_iso3"], transit=row["transit_iso3"], target=row["target_iso3"],
                product_code=row["product_code"])
    if vintages.as_run_read(con, vintage):
        try:
            evidence = show_route(con, evidence.route["route_id"], run=evidence.run["run_id"])
        finally:
            vintages.drop_as_of(con)
    since = evidence.reviews[-1]["reviewed_at"] if evidence.reviews else evidence.run.get("finished_at")
    return evidence, vintages.revised_since(con, **legs, since=since)


def load_lines(loads: list[dict]) -> list[str]:
    """The loads a route's series came from (RouteEvidence.loads) as one line per source: file count,
    months, load ids and the files (first and last when there are more than three)."""
    by_source: dict[str, list[dict]] = {}
    for item in loads:
        by_source.setdefault(str(item.get("source", "run")), []).append(item)
    lines = []
    for source, items in by_source.items():
        files = [item["file"] for item in items]
        named = ", ".join(files) if len(files) <= 3 else f"{files[0]} … {files[-1]}"
        first = min(item["first_month"] for item in items)
        last = max(item["last_month"] for item in items)
        ids = sorted({item["first_load_id"] for item in items} | {item["last_load_id"] for item in items})
        lines.append(f"{source}: {len(files)} file(s), months {first} … {last}, load ids {ids[0]}–{ids[-1]}: {named}")
    return lines


def similar_decisions(con: duckdb.DuckDBPyConnection, route: dict) -> dict:
    """The latest decision on each other route via the same transit in the same HS-4 heading (the routes an
    analyst would call alike): {"transit", "heading", "counts": {status: routes}}."""
    heading = str(route["product_code"])[:4]
    rows = con.execute(f"""
        WITH latest AS ({LATEST_DECISIONS}),
        routes AS (SELECT DISTINCT route_id, transit_iso3, product_code FROM anomalies)
        SELECT l.status, count(*) FROM latest l JOIN routes r USING (route_id)
        WHERE r.transit_iso3 = ? AND substr(r.product_code, 1, 4) = ? AND l.route_id <> ?
        GROUP BY l.status ORDER BY l.status""", [route["transit_iso3"], heading, route["route_id"]]).fetchall()
    return {"transit": route["transit_iso3"], "heading": heading, "counts": dict(rows)}


def _feature_descriptions() -> dict[str, str]:
    from tradewatch.detect import features as feature_module

    from tradewatch.detect import calibration

    bases = ", ".join(calibration.YARDSTICK_BASES)
    return {**dict(feature_module.FEATURES),
            "basis": "origin→transit leg read from the origin's exports or (mirror) the transit's imports",
            "pair_basis": f"how the pair's ordinary growth was measured: {bases} (the run's notes say more)",
            "null_basis": "whose null statistics set the scale: the pair's own, its origin's, or the run's"}


# --- drawing a leg in a terminal ----------------------------------------------------------------------------

_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None]) -> str:
    """One character per value: eight block heights scaled from 0 to the series maximum; a blank for a
    month without data; '▁' for zero."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    top = max(finite, default=0.0)
    out = []
    for value in values:
        if value is None or not math.isfinite(value):
            out.append(" ")
        elif top <= 0:
            out.append(_BLOCKS[0])
        else:
            out.append(_BLOCKS[min(len(_BLOCKS) - 1, max(0, math.ceil(value / top * len(_BLOCKS)) - 1))])
    return "".join(out)


def marker_line(months: list[date], event: date | None, route: dict) -> str:
    """A line under the sparklines: '▲' at the event month, '─' over baseline months, '━' over recent months."""

    def within(month: date, start, end) -> bool:
        return isinstance(start, date) and isinstance(end, date) and start.replace(day=1) <= month <= end

    out = []
    for month in months:
        if event is not None and month == event:
            out.append("▲")
        elif within(month, route.get("recent_start"), route.get("recent_end")):
            out.append("━")
        elif within(month, route.get("baseline_start"), route.get("baseline_end")):
            out.append("─")
        else:
            out.append(" ")
    return "".join(out)
