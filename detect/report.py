"""The shareable report of a detection run: one self-contained offline HTML file with inline SVG charts, and Prefect-artifact content."""

from __future__ import annotations

import functools
import html
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import jinja2
import polars as pl

from tradewatch.flows.core import products
from tradewatch.detect import review, review_curve, route_rows
from tradewatch.detect.export import output_path, write_atomically
from tradewatch.flows import warehouse
from tradewatch.flows.core import settings
from tradewatch.flows.core.numbers import finite, money, score_text, times

DEFAULT_TOP = 20
LEG_COLOURS = ("#1f77b4", "#d62728", "#2ca02c")  # origin→transit, origin→target, transit→target


def growth_text(route: dict) -> str:
    """The route's growth as '×3.2', or 'from zero' when nothing was traded in the baseline."""
    growth = route.get("growth")
    if growth is None and route.get("baseline_value") == 0 and (route.get("recent_value") or 0) > 0:
        return "from zero"
    return times(growth)


def _sort_value(value) -> str:
    """A number for the table's data-value attribute; non-finite and missing sort last."""
    if value is None or not isinstance(value, (int, float)):
        return ""
    if math.isinf(value):
        return "1e308" if value > 0 else "-1e308"
    if math.isnan(value):
        return ""
    return repr(float(value))


def _growth_sort_value(row: dict) -> str:
    # growth "from zero" is the steepest rise there is: sort it above every ratio
    return "1e308" if growth_text(row) == "from zero" else _sort_value(row.get("growth"))


# --- what goes into a report -------------------------------------------------------------------------------

@dataclass
class ReportData:
    run: dict
    event: date | None
    flags: pl.DataFrame
    coverage: list[dict]
    loads: list[dict]
    routes: list[review.RouteEvidence]  # every flagged route's evidence, best-ranked first
    generated_at: datetime
    demo: bool = False  # the warehouse holds the synthetic demo world
    open_charts: int = DEFAULT_TOP  # the best-ranked routes whose charts show open, with a value per month


def coverage(con: duckdb.DuckDBPyConnection) -> tuple[list[dict], list[dict]]:
    """Data coverage: per source, frequency and currency the first and last period, months, reporters,
    rows and value sum of `trade_flows`; and per source the loads (ok, failed, files, last finished)."""
    def rows(sql: str) -> list[dict]:
        cursor = con.execute(sql)
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    data = rows(
        """SELECT source, freq, currency,
                  CASE freq WHEN 'A' THEN strftime(min(period), '%Y') ELSE strftime(min(period), '%Y-%m') END
                      AS first_period,
                  CASE freq WHEN 'A' THEN strftime(max(period), '%Y') ELSE strftime(max(period), '%Y-%m') END
                      AS last_period,
                  count(DISTINCT period) AS periods, count(DISTINCT reporter_iso3) AS reporters,
                  count(*) AS rows, sum(value) AS value_sum
           FROM trade_flows GROUP BY source, freq, currency ORDER BY source, freq, currency"""
    )
    loads = rows(
        """SELECT source, count(*) FILTER (WHERE status = 'ok') AS ok,
                  count(*) FILTER (WHERE status = 'failed') AS failed,
                  count(DISTINCT file) AS files,
                  strftime(max(finished_at), '%Y-%m-%d %H:%M') AS last_finished
           FROM loads GROUP BY source ORDER BY source"""
    )
    return data, loads


def collect(
    con: duckdb.DuckDBPyConnection, run: str | None = "latest", *, top: int = DEFAULT_TOP,
    now: datetime | None = None,
) -> ReportData:
    """Everything a report shows for `run`: the run row, every flagged route with its review status,
    data coverage, and the evidence (leg series) of every flagged route; the `top` best-ranked show open."""
    from tradewatch.detect import features

    run_id = review.resolve_run(con, run)
    info = review.run_info(con, run_id)
    flags = review.list_flags(con, run=run_id, sort="score")
    data, loads = coverage(con)
    ranked = flags.sort("rank").to_dicts()
    evidence = []
    if ranked:
        # One view of the warehouse for the whole run: the charts read the rows the run scored.
        rates = features.monthly_usd_per_eur(con)
        with route_rows.RouteRows.for_run(con, info.get("params"), ranked[0]) as rows:
            rows.legs_of(ranked)  # every route's legs in one pass over the rows
            evidence = [review.chart_evidence(con, row, info, rows, rates) for row in ranked]
    return ReportData(
        run=info, event=review.event_month(info), flags=flags, coverage=data, loads=loads, routes=evidence,
        generated_at=(now or datetime.now(timezone.utc)).replace(tzinfo=None), demo=warehouse.is_demo(con),
        open_charts=max(0, top),
    )


def default_report_path(run_id: str) -> Path:
    """$TRADEWATCH_HOME/reports/report-<run id>.html (characters unsafe in file names replaced)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._") or "run"
    return settings.reports_dir() / f"report-{safe}.html"


def write_report(
    con: duckdb.DuckDBPyConnection, run: str | None = "latest", out: Path | str | None = None, *,
    top: int = DEFAULT_TOP,
) -> Path:
    """Build the HTML report of `run` and write it to `out` (default: default_report_path). The file is
    written beside its target and renamed, so a failure leaves no partial report. Returns the path."""
    data = collect(con, run, top=top)
    text = render(data)
    if out is None:
        path = default_report_path(data.run["run_id"])
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        path = output_path(out, "an .html file path")
    write_atomically(path, lambda partial: partial.write_text(text, encoding="utf-8"), f"--out {out or path}")
    return path


# --- templates ----------------------------------------------------------------------------------------------------

@functools.cache
def _templates() -> jinja2.Environment:
    """The report's Jinja2 templates (package data in tradewatch.data/templates), autoescaped: every value a
    template shows is escaped for HTML text and attributes; a missing value is an error, not a blank."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("tradewatch.data", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )


def _macro(template: str, name: str):
    return getattr(_templates().get_template(template).module, name)


def _text(value) -> str:
    """A value as the text a page shows: None becomes ''."""
    return "" if value is None else str(value)


# --- SVG charts -------------------------------------------------------------------------------------------------

def _month_label(month: date) -> str:
    return month.strftime("%Y-%m")


def _px(value: float) -> str:
    return f"{value:.1f}"


@dataclass(frozen=True)
class _Series:
    """One leg as a chart draws it: its values in the currency of the axis it is drawn against."""

    leg: route_rows.Leg
    colour: str
    values: list[float | None]
    currency: str | None
    axis: str = "left"  # 'left' (the route's currency) or 'right' (the other currency, when not converted)
    converted_from: str | None = None  # the leg's own currency when its values were converted


@dataclass(frozen=True)
class _Canvas:
    """Where a leg chart's months (x) and values (y, per axis) land in its plot area."""

    months: list[date]
    left: int
    top: int
    plot_w: int
    plot_h: int
    y_max: float
    y_max_right: float | None = None  # the right axis's top, when a currency is drawn against it

    @property
    def right(self) -> int:
        return self.left + self.plot_w

    @property
    def bottom(self) -> int:
        return self.top + self.plot_h

    def x(self, index: float) -> float:
        return self.left + index * (self.plot_w / max(len(self.months) - 1, 1))

    def y(self, value: float, axis: str = "left") -> float:
        top = self.y_max_right if axis == "right" and self.y_max_right else self.y_max
        return self.top + self.plot_h - (value / top) * self.plot_h

    def index_of(self, day) -> float | None:
        """The month index of `day`; half a month outside the chart for days before or after it."""
        if not isinstance(day, date):
            return None
        month = day.replace(day=1)
        if month < self.months[0]:
            return -0.5
        if month > self.months[-1]:
            return len(self.months) - 0.5
        return float(self.months.index(month))


def _finite_float(value) -> float | None:
    return value if isinstance(value, float) and math.isfinite(value) else None


def _converted(values: list[float | None], months: list[date], source: str, target: str,
               usd_per_eur: dict[date, float]) -> list[float | None] | None:
    """`values` (by month) in `source` currency brought to `target` at the month's ECB rate (USD per EUR);
    None when the pair is not EUR/USD or a month with a value has no rate."""
    if {source, target} != {"EUR", "USD"}:
        return None
    if any(v is not None and month not in usd_per_eur for month, v in zip(months, values)):
        return None
    per_eur = source == "EUR"
    return [None if v is None else (v * usd_per_eur[m] if per_eur else v / usd_per_eur[m])
            for m, v in zip(months, values)]


def chart_series(evidence: review.RouteEvidence) -> list[_Series]:
    """The route's legs as its chart draws them: one currency per axis. The left axis is the route's
    currency; a leg in another currency is converted to it at the ECB monthly rates when fx_rates covers
    its months (EUR/USD), else drawn against a right axis labelled with its own currency."""
    route_currency = evidence.route.get("currency") or next(
        (leg.currency for leg in evidence.legs if leg.available and leg.currency), None)
    rates = getattr(evidence, "usd_per_eur", None) or {}
    series, right = [], None
    for leg, colour in zip(evidence.legs, LEG_COLOURS):
        if not leg.available or not leg.currency or leg.currency == route_currency or route_currency is None:
            series.append(_Series(leg, colour, list(leg.values), leg.currency or route_currency))
            continue
        values = _converted(leg.values, evidence.months, leg.currency, route_currency, rates)
        if values is not None:
            series.append(_Series(leg, colour, values, route_currency, converted_from=leg.currency))
        elif right in (None, leg.currency):
            right = leg.currency
            series.append(_Series(leg, colour, list(leg.values), leg.currency, axis="right"))
        else:  # a third currency: no axis is left for it
            series.append(_Series(leg, colour, [None] * len(leg.values), leg.currency, axis="none"))
    return series


def _axis_top(series: list[_Series], axis: str, extra: float | None = None) -> float:
    values = [v for s in series if s.axis == axis for v in s.values if v is not None and math.isfinite(v)]
    if extra is not None:
        values.append(extra)
    return max(values, default=0.0) or 1.0


def _canvas(evidence: review.RouteEvidence, series: list[_Series], width: int, height: int) -> _Canvas:
    two_axes = any(s.axis == "right" for s in series)
    left, right, top, bottom = 64, 64 if two_axes else 12, 22, 40
    return _Canvas(months=evidence.months, left=left, top=top, plot_w=width - left - right,
                   plot_h=height - top - bottom,
                   y_max=_axis_top(series, "left", _finite_float(evidence.route.get("baseline_value"))),
                   y_max_right=_axis_top(series, "right") if two_axes else None)


def _bands(canvas: _Canvas, route: dict) -> list[dict]:
    """The shaded baseline and recent windows, clipped to the plot."""
    bands = []
    for key, css in (("baseline", "band-baseline"), ("recent", "band-recent")):
        start, end = canvas.index_of(route.get(f"{key}_start")), canvas.index_of(route.get(f"{key}_end"))
        if start is None or end is None:
            continue
        x0, x1 = max(canvas.left, canvas.x(start - 0.5)), min(canvas.right, canvas.x(end + 0.5))
        if x1 > x0:
            bands.append({"css": css, "label": key, "x": _px(x0), "y": canvas.top, "width": _px(x1 - x0),
                          "height": canvas.plot_h, "label_x": _px(x0 + 3), "label_y": canvas.top + 11})
    return bands


def _grid(canvas: _Canvas, currency: str | None, right_currency: str | None) -> list[dict]:
    """Grid lines at 0, half and the top of the value axis, with their money labels (and the right axis's
    labels in its own currency when there is one)."""
    lines = []
    for fraction in (0, 0.5, 1):
        value = canvas.y_max * fraction
        line = {"x1": canvas.left, "x2": canvas.right, "y": _px(canvas.y(value)), "tick_x": canvas.left - 6,
                "tick_y": _px(canvas.y(value) + 4), "text": money(value, currency), "right": None}
        if canvas.y_max_right:
            line["right"] = {"x": canvas.right + 6, "text": money(canvas.y_max_right * fraction, right_currency)}
        lines.append(line)
    return lines


def _axis_titles(canvas: _Canvas, currency: str | None, right_currency: str | None) -> list[dict]:
    """The currency over each value axis: 'EUR' on the left, and the right axis's currency when drawn."""
    titles = [{"x": canvas.left - 6, "y": canvas.top - 8, "anchor": "end", "text": currency or "value"}]
    if canvas.y_max_right:
        titles.append({"x": canvas.right + 6, "y": canvas.top - 8, "anchor": "start", "text": right_currency})
    return titles


def _month_ticks(canvas: _Canvas) -> list[dict]:
    """The first month (YYYY-MM) and every January (YYYY) under the axis."""
    return [
        {"x": _px(canvas.x(index)), "y": canvas.bottom + 16,
         "text": _month_label(month) if index == 0 else str(month.year)}
        for index, month in enumerate(canvas.months) if month.month == 1 or index == 0
    ]


def _baseline_average(canvas: _Canvas, route: dict) -> dict | None:
    value = _finite_float(route.get("baseline_value"))
    if value is None:
        return None
    return {"x1": canvas.left, "x2": canvas.right, "y": _px(canvas.y(value)),
            "text": money(value, route.get("currency"))}


def _leg_line(canvas: _Canvas, series: _Series, points: bool = True) -> dict | None:
    """One leg as a path (broken where a month has no value) and, with `points`, a dot per month with a
    value (its value on hover)."""
    path, dots, pen_down = [], [], False
    for index, value in enumerate(series.values):
        if value is None or not math.isfinite(value):
            pen_down = False
            continue
        x, y = _px(canvas.x(index)), _px(canvas.y(value, series.axis))
        path.append(f'{"L" if pen_down else "M"}{x},{y}')
        if points:
            dots.append({"cx": x, "cy": y, "month": _month_label(canvas.months[index]),
                         "text": money(value, series.currency)})
        pen_down = True
    if not path:
        return None
    return {"d": " ".join(path), "colour": series.colour, "name": _series_name(series), "points": dots}


def _series_name(series: _Series) -> str:
    if series.axis == "right":
        return f"{series.leg.name} ({series.currency}, right axis)"
    if series.converted_from:
        return f"{series.leg.name} ({series.converted_from} converted to {series.currency})"
    return series.leg.name


def currency_note(series: list[_Series]) -> str:
    """What the chart says about its currencies: one axis, converted legs, or two axes."""
    left = next((s.currency for s in series if s.axis == "left" and s.currency), None)
    converted = sorted({s.converted_from for s in series if s.converted_from})
    right = next((s.currency for s in series if s.axis == "right"), None)
    missing = [s.leg.name for s in series if s.axis == "none"]
    note = f"values in {left or 'the route currency'}"
    if converted:
        note += (f"; {' and '.join(converted)} legs converted to {left} at the ECB's monthly reference rates "
                 "(fx_rates)")
    if right:
        note += f" on the left axis; {right} legs on the right axis (no ECB rates loaded to convert them)"
    if missing:
        note += f"; not drawn (a third currency): {', '.join(missing)}"
    return note


def _event_marker(canvas: _Canvas, event: date | None) -> dict | None:
    if event is None or not canvas.months[0] <= event <= canvas.months[-1]:
        return None
    x = canvas.x(canvas.months.index(event))
    return {"x": _px(x), "y1": canvas.top, "y2": canvas.bottom, "label_x": _px(x + 3),
            "label_y": canvas.bottom + 30, "month": _month_label(event)}


def leg_chart(evidence: review.RouteEvidence, *, width: int = 1100, height: int = 260,
              points: bool = True) -> dict | None:
    """What the leg chart of a route draws, as plain values for the `leg_chart` template macro (None when the
    route has no monthly rows): baseline window shaded, recent window tinted, the route's baseline monthly
    average as a dashed line, the event month as a red line, one line per leg, one currency per axis
    (chart_series); `points`: a dot with its value per month."""
    if not evidence.months:
        return None
    series = chart_series(evidence)
    canvas = _canvas(evidence, series, width, height)
    route = evidence.route
    currency = next((s.currency for s in series if s.axis == "left" and s.currency), route.get("currency"))
    right_currency = next((s.currency for s in series if s.axis == "right"), None)
    legs = [_leg_line(canvas, one, points) for one in series if one.axis != "none"]
    return {
        "width": width, "height": height, "label": f"{_chart_label(evidence)}; {currency_note(series)}",
        "bands": _bands(canvas, route), "grid": _grid(canvas, currency, right_currency),
        "titles": _axis_titles(canvas, currency, right_currency),
        "month_ticks": _month_ticks(canvas), "average": _baseline_average(canvas, route),
        "legs": [leg for leg in legs if leg is not None], "event": _event_marker(canvas, evidence.event),
        "axis": {"x1": canvas.left, "x2": canvas.right, "y": canvas.bottom},
        "right_axis": ({"x": canvas.right, "y1": canvas.top, "y2": canvas.bottom}
                       if canvas.y_max_right else None),
        "note": currency_note(series),
    }


def leg_chart_svg(evidence: review.RouteEvidence, *, width: int = 1100, height: int = 260) -> str:
    """An inline SVG line chart of a route's three legs by month (see `leg_chart`); a short note instead
    when the route has no monthly trade rows."""
    return str(_macro("charts.svg.j2", "leg_chart")(leg_chart(evidence, width=width, height=height)))


def bar_chart(items: list[tuple[str, int]], *, width: int = 420, bar: int = 18) -> dict | None:
    """A horizontal bar chart of (label, count) as plain values for the `bar_chart` macro; None when empty."""
    if not items:
        return None
    label_w, gap = 170, 4
    biggest = max(count for _, count in items) or 1
    bars = []
    for index, (label, count) in enumerate(items):
        y0 = 2 + index * (bar + gap)
        length = (width - label_w - 40) * count / biggest
        bars.append({"label": label, "count": count, "label_x": label_w - 6, "text_y": y0 + bar - 5,
                     "x": label_w, "y": y0, "length": _px(length), "height": bar, "count_x": _px(label_w + length + 4)})
    return {"width": width, "height": len(items) * (bar + gap) + 4, "bars": bars}


def bar_chart_svg(items: list[tuple[str, int]], *, width: int = 420, bar: int = 18) -> str:
    """A horizontal bar chart (label, count), inline SVG."""
    return str(_macro("charts.svg.j2", "bar_chart")(bar_chart(items, width=width, bar=bar)))


def _route_title(route: dict) -> str:
    return " → ".join(review.country_name(route.get(k)) for k in ("origin_iso3", "transit_iso3", "target_iso3"))


def _chart_label(evidence: review.RouteEvidence) -> str:
    return f"Monthly trade of {evidence.route['product_code']} on {_route_title(evidence.route)}"


# --- the HTML page: plain values for templates/report.html.j2 ---------------------------------------------------

_TABLE_COLUMNS = (
    # key, header, numeric
    ("rank", "#", True), ("score", "score", True), ("status", "status", False), ("origin", "origin", False),
    ("transit", "transit", False), ("product", "product", False), ("tier", "tier", False),
    ("baseline", "baseline /mo", True), ("recent", "recent /mo", True), ("growth", "growth", True),
    ("excess", "excess", True), ("reasons", "reasons", False), ("id", "id", False),
)
_COVERAGE_COLUMNS = (
    ("source", "source", False), ("freq", "freq", False), ("currency", "currency", False),
    ("first_period", "first", False), ("last_period", "last", False), ("periods", "periods", True),
    ("reporters", "reporters", True), ("rows", "rows", True), ("value_sum", "value sum", True),
)
_LOADS_COLUMNS = (
    ("source", "source", False), ("ok", "loads ok", True), ("failed", "failed", True),
    ("files", "files", True), ("last_finished", "last finished (UTC)", False),
)
NOT_ON_CHPL = "not on CHPL"


def _stamp(value) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if isinstance(value, datetime) else ("" if value is None else str(value))


def _window(start, end, rows: list[dict], which: str) -> str:
    """'2020-03 … 2022-02' from the run's stored windows, else from the flagged rows."""
    if not (start and end) and rows:
        first, last = rows[0].get(f"{which}_start"), rows[0].get(f"{which}_end")
        start, end = (f"{first:%Y-%m}" if first else None), (f"{last:%Y-%m}" if last else None)
    return f"{start} … {end}" if start and end else "–"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _css(numeric: bool) -> str:
    return "num" if numeric else ""


def _count_text(value) -> str:
    """A number in the coverage tables: thousands separated; two decimals below 100."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return _text(value)


def _rows_table(rows: list[dict], columns: tuple[tuple[str, str, bool], ...], empty: str) -> dict:
    """A plain table (coverage, loads) as header (label, css) and rows of cells (text, css)."""
    return {
        "empty": empty,
        "columns": [(label, _css(numeric)) for _, label, numeric in columns],
        "rows": [[(_count_text(row.get(key)) if numeric else _text(row.get(key)), _css(numeric))
                  for key, _, numeric in columns] for row in rows],
    }


def _run_context(data: ReportData, rows: list[dict]) -> dict:
    """The page header and the run parameters: run, event, windows, times, model, counts, notes, parameters."""
    run = data.run
    params = run.get("params") or {}
    windows = params.get("windows") if isinstance(params.get("windows"), dict) else {}
    run_pairs = [
        ("run", run["run_id"]), ("event month", params.get("event")),
        ("baseline window", _window(windows.get("baseline_start"), windows.get("baseline_end"), rows, "baseline")),
        ("recent window", _window(windows.get("recent_start"), windows.get("recent_end"), rows, "recent")),
        ("started (UTC)", _stamp(run.get("started_at"))), ("finished (UTC)", _stamp(run.get("finished_at"))),
        ("model version", run.get("model_version")), ("run hash", run.get("run_hash")),
        ("candidate routes", run.get("candidates")), ("flagged routes", run.get("flagged")),
    ]
    notes = review.parse_json(run.get("notes_json"), [])
    return {
        "title": f"tradewatch report — run {run['run_id']}",
        "run_id": run["run_id"],
        "event": _text(params.get("event") or "–"),
        "candidates": _text(run.get("candidates") if run.get("candidates") is not None else "–"),
        "flagged": sum(not row.get("exploration") for row in rows),
        "explored": sum(bool(row.get("exploration")) for row in rows),
        "generated": data.generated_at.strftime("%Y-%m-%d %H:%M"),
        "run_pairs": [(key, _text(value)) for key, value in run_pairs],
        "notes": [_text(note) for note in notes] if isinstance(notes, list) else [],
        "unavailable": [(name, _text(why)) for name, why in review.unavailable_map(run.get("unavailable")).items()],
        "param_pairs": [(key, value if isinstance(value, str) else json.dumps(value))
                        for key, value in sorted(params.items()) if key not in ("event", "windows")],
    }


def _tier_label(tier: str) -> str:
    return tier if tier == NOT_ON_CHPL else f"Tier {tier}"


def _counts_context(rows: list[dict]) -> dict:
    """The bar charts by transit country and by CHPL tier, and the options of the table's three filters."""
    transits = Counter(row["transit_iso3"] for row in rows)
    tiers = Counter(row.get("tier") or NOT_ON_CHPL for row in rows)
    statuses = Counter(row["status"] for row in rows)
    tier_order = sorted(tiers, key=lambda tier: (tier == NOT_ON_CHPL, tier))
    transit_options = [
        {"value": code, "label": f"{review.country_name(code)} ({code})", "count": count}
        for code, count in sorted(transits.items(), key=lambda item: review.country_name(item[0]))
    ]
    tier_options = [{"value": "none" if tier == NOT_ON_CHPL else tier, "label": _tier_label(tier),
                     "count": tiers[tier]} for tier in tier_order]
    status_options = [{"value": status, "label": status, "count": statuses[status]}
                      for status in review.STATUSES if statuses.get(status)]
    return {
        "transit_bars": bar_chart([(f"{review.country_name(code)} ({code})", count)
                                   for code, count in transits.most_common()]),
        "tier_bars": bar_chart([(_tier_label(tier), tiers[tier]) for tier in tier_order]),
        "selects": [{"label": "Transit", "id": "transit-filter", "options": transit_options},
                    {"label": "Tier", "id": "tier-filter", "options": tier_options},
                    {"label": "Status", "id": "status-filter", "options": status_options}],
    }


def _status_title(row: dict) -> str:
    """'confirmed by ann 2024-05-01 10:00 UTC: note' for a reviewed route, else ''."""
    if not row.get("reviewed_at"):
        return ""
    return (f"{row.get('reviewed_status')} by {row.get('reviewed_by')} "
            f"{row.get('reviewed_at'):%Y-%m-%d %H:%M} UTC: {row.get('review_note') or ''}")


def _flag_row(row: dict, anchors: dict[str, str]) -> dict:
    """One row of the sortable table: the texts shown and the numbers it sorts by (data-value)."""
    currency = row.get("currency")
    origin, transit = row["origin_iso3"], row["transit_iso3"]
    product = f"{row['product_code']} {row.get('product_name') or ''}".strip()
    return {
        "id": row["id"], "transit": transit, "tier_key": row.get("tier") or "none", "status": row["status"],
        "exploration": bool(row.get("exploration")),
        "rank": _text(row["rank"]), "rank_sort": _sort_value(row["rank"]), "link": anchors.get(row["id"], ""),
        "score": score_text(row["score"]), "score_sort": _sort_value(row["score"]),
        "status_title": _status_title(row),
        "origin": origin, "origin_name": review.country_name(origin),
        "transit_name": review.country_name(transit),
        "product": _shorten(product, 70), "product_name": _text(row.get("product_name")),
        "tier": _text(row.get("tier") or "–"),
        "baseline": money(row.get("baseline_value"), currency), "baseline_sort": _sort_value(row.get("baseline_value")),
        "recent": money(row.get("recent_value"), currency), "recent_sort": _sort_value(row.get("recent_value")),
        "growth": growth_text(row), "growth_sort": _growth_sort_value(row),
        "excess": money(row.get("excess_value"), currency), "excess_sort": _sort_value(row.get("excess_value")),
        "reasons": _text(row.get("reasons")),
    }


def _table_columns() -> list[dict]:
    return [{"key": key, "label": label, "type": "num" if numeric else "text", "css": _css(numeric)}
            for key, label, numeric in _TABLE_COLUMNS]


def _leg_note(series: _Series) -> str:
    leg = series.leg
    if not leg.available:
        return "no data in the warehouse"
    basis = (f"mirror: importer's imports ÷ {leg.cif_fob:g} CIF/FOB" if leg.basis == "mirror" else "exports")
    drawn = {"right": "; right axis", "none": "; not drawn"}.get(series.axis, "")
    if series.converted_from:
        drawn = f"; drawn in {series.currency} at ECB monthly rates"
    return f"{leg.source}, {leg.currency}, {basis}{drawn}"


def _route_section(index: int, evidence: review.RouteEvidence, anchor: str, *, open_chart: bool = True) -> dict:
    """One flagged route's section: title, facts, reasons, chart and legend. A chart that is not
    `open_chart` is drawn without per-month dots and shows collapsed (a report of 1,000 flags stays small)."""
    route = evidence.route
    currency = route.get("currency")
    return {
        "index": index, "anchor": anchor, "title": _route_title(route), "product_code": _text(route["product_code"]),
        "product_name": _shorten(evidence.product_name or "", 90),
        "score": score_text(route["score"]), "status": _text(evidence.status),
        "exploration": bool(route.get("exploration")),
        "baseline": money(route.get("baseline_value"), currency), "recent": money(route.get("recent_value"), currency),
        "growth": growth_text(route), "excess": money(route.get("excess_value"), currency),
        "tier": _text(evidence.tier), "reasons": _text(route.get("reasons")),
        "chart": leg_chart(evidence, points=open_chart), "open": open_chart,
        "legend": [{"colour": one.colour, "name": one.leg.name, "note": _leg_note(one)}
                   for one in chart_series(evidence)],
    }


def page_context(data: ReportData) -> dict:
    """Everything the report page shows, as plain values for templates/report.html.j2 (numbers formatted)."""
    rows = data.flags.sort("rank").to_dicts()
    anchors = {evidence.route["route_id"]: f"route-{index}" for index, evidence in enumerate(data.routes, 1)}
    return {
        **_run_context(data, rows),
        "demo_banner": (f"{warehouse.DEMO_LABEL.capitalize()}: the embedded demo world, with planted routes and "
                        "real country names; not real statistics") if data.demo else None,
        "coverage": _rows_table(data.coverage, _COVERAGE_COLUMNS, "The warehouse holds no trade rows."),
        "loads": _rows_table(data.loads, _LOADS_COLUMNS, "No loads recorded."),
        **_counts_context(rows),
        "review_curve": review_curve.report_context(),
        "columns": _table_columns(),
        "rows": [_flag_row(row, anchors) for row in rows],
        "open_charts": min(data.open_charts, len(data.routes)),
        "sections": [_route_section(index, evidence, anchors[evidence.route["route_id"]],
                                    open_chart=index <= data.open_charts)
                     for index, evidence in enumerate(data.routes, 1)],
    }


def render(data: ReportData) -> str:
    """The report page for collected `data`: one HTML document with inline CSS, JS and SVG."""
    return _templates().get_template("report.html.j2").render(page_context(data))



def build_report(con: duckdb.DuckDBPyConnection, run: str | None = "latest", *, top: int = DEFAULT_TOP) -> str:
    """The report HTML of `run` as text (see `write_report` to write it to a file)."""
    return render(collect(con, run, top=top))


# --- Prefect artifact content (the flow module publishes it; no Prefect import here) -------------------------------

def _flagged_frame(run) -> pl.DataFrame:
    if isinstance(run, pl.DataFrame):
        return run
    flagged = run.get("flagged") if isinstance(run, dict) else getattr(run, "flagged", None)
    if flagged is None:
        return pl.DataFrame()
    return flagged if isinstance(flagged, pl.DataFrame) else pl.DataFrame(flagged)


def _attribute(run, name: str, default=None):
    if isinstance(run, dict):
        return run.get(name, default)
    return getattr(run, name, default)


def _finite(value):
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def artifact_table(run, top: int = DEFAULT_TOP) -> list[dict]:
    """The top flagged routes of a detection result (an object or dict with `flagged`, a polars frame
    of anomalies rows best first; or the frame itself) as JSON-ready rows for a Prefect table artifact:
    rank, id, score, origin, transit, target, product, product name, CHPL tier, currency, baseline and
    recent monthly values, growth, excess value, reasons. Non-finite numbers become None."""
    frame = _flagged_frame(run)
    if frame.is_empty():
        return []
    if "rank" in frame.columns:
        frame = frame.sort("rank")
    out = []
    for row in frame.head(top).to_dicts():
        code = str(row.get("product_code") or "")
        out.append({
            "rank": row.get("rank"),
            "id": row.get("route_id") or row.get("id"),
            "score": _finite(row.get("score")),
            "origin": row.get("origin_iso3"),
            "transit": row.get("transit_iso3"),
            "target": row.get("target_iso3"),
            "product": code,
            "product_name": row.get("product_name") or (products.product_name(code) if code else None),
            "tier": row.get("tier") if row.get("tier") is not None else (products.chpl_tier(code) if code else None),
            "currency": row.get("currency"),
            "baseline_value": _finite(row.get("baseline_value")),
            "recent_value": _finite(row.get("recent_value")),
            "growth": _finite(row.get("growth")),
            "excess_value": _finite(row.get("excess_value")),
            "reasons": row.get("reasons"),
        })
    return out


def _md(value) -> str:
    """Text safe in a Markdown table cell: HTML escaped, pipes escaped, one line."""
    text = " ".join(str("" if value is None else value).split())
    return html.escape(text, quote=True).replace("|", "\\|")


def artifact_markdown(run, top: int = DEFAULT_TOP) -> str:
    """A Markdown summary of a detection result (same input as `artifact_table`): run id, event,
    flagged/candidate counts, counts by transit country, and a table of the top routes."""
    frame = _flagged_frame(run)
    run_id = _attribute(run, "run_id", None) if not isinstance(run, pl.DataFrame) else None
    params = _attribute(run, "params", None) if not isinstance(run, pl.DataFrame) else None
    event = _attribute(run, "event", None) if not isinstance(run, pl.DataFrame) else None
    if event is None and params is not None:
        event = params.get("event") if isinstance(params, dict) else getattr(params, "event", None)
    candidates = _attribute(run, "candidates", None) if not isinstance(run, pl.DataFrame) else None
    rows = artifact_table(run, top=top)
    lines = [f"# Flagged diversion routes{' — run ' + _md(run_id) if run_id else ''}", ""]
    summary = f"**{frame.height}** routes flagged"
    if candidates is not None:
        summary += f" of {candidates:,} candidates"
    if event:
        summary += f" (event {_md(event)})"
    lines += [summary + ".", ""]
    if frame.height and "transit_iso3" in frame.columns:
        counts = Counter(frame["transit_iso3"].to_list()).most_common(10)
        lines += ["By transit country: " + ", ".join(f"{_md(review.country_name(c))} ({_md(c)}) {n}" for c, n in counts),
                  ""]
    if not rows:
        lines.append("No route is flagged.")
        return "\n".join(lines) + "\n"
    lines += [f"Top {len(rows)}:", "",
              "| # | score | route | product | tier | baseline → recent /mo | growth | excess | reasons | id |",
              "|---:|---:|---|---|---|---:|---:|---:|---|---|"]
    for row in rows:
        route = f"{row['origin']} → {row['transit']} → {row['target']}"
        product = f"{row['product']} {_shorten(row['product_name'] or '', 50)}".strip()
        score = score_text(row["score"]) if isinstance(row["score"], (int, float)) else "–"
        lines.append(
            f"| {_md(row['rank'])} | {score} | {_md(route)} | {_md(product)} | {_md(row['tier'] or '–')} | "
            f"{_md(money(row['baseline_value'], row['currency']))} → {_md(money(row['recent_value'], row['currency']))} | "
            f"{_md(growth_text(row))} | {_md(money(row['excess_value'], row['currency']))} | "
            f"{_md(_shorten(row['reasons'] or '', 120))} | `{_md(row['id'])}` |"
        )
    return "\n".join(lines) + "\n"
