"""`tradewatch flags list|show|review|history`: triage flagged routes and keep the decisions."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tradewatch.cli.common import DbOption, WideOption, one_line_errors, say

flags_app = typer.Typer(
    name="flags",
    help="Review flagged routes: list and filter them, show one route's evidence, record decisions.",
    no_args_is_help=True,
)


class Status(str, Enum):
    new = "new"
    reopened = "reopened"
    confirmed = "confirmed"
    dismissed = "dismissed"
    watch = "watch"


class Decision(str, Enum):
    confirmed = "confirmed"
    dismissed = "dismissed"
    watch = "watch"


class Sort(str, Enum):
    score = "score"
    excess = "excess"
    growth = "growth"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


RunOption = Annotated[str, typer.Option("--run", help="Run id (or a unique prefix of one), or 'latest'.")]
RouteArgument = Annotated[str, typer.Argument(help="Route id from `tradewatch flags list` (a unique prefix will do).")]


def register(app: typer.Typer) -> None:
    app.add_typer(flags_app, name="flags")


@flags_app.command("list")
@one_line_errors
def list_flags(
    db: DbOption = None,
    run: RunOption = "latest",
    transit: Annotated[Optional[str], typer.Option("--transit", help="Transit country, ISO alpha-3 (KAZ).")] = None,
    origin: Annotated[Optional[str], typer.Option("--origin", help="Origin country, ISO alpha-3 (DEU).")] = None,
    product: Annotated[Optional[str], typer.Option("--product", help="Product code prefix: 8542 matches 854231.")] = None,
    tier: Annotated[Optional[str], typer.Option("--tier", help="CHPL tier: 1, 2, 3 (3.A and 3.B), 3.A, 4.B …")] = None,
    min_score: Annotated[Optional[float], typer.Option("--min-score", help="Only routes scoring at least this.")] = None,
    status: Annotated[Optional[Status], typer.Option("--status", help="Review status ('new' includes 'reopened').")] = None,
    sort: Annotated[Sort, typer.Option("--sort", help="Sort descending by score, excess value or growth.")] = Sort.score,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", min=1, help="At most N routes.")] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
    wide: WideOption = False,
) -> None:
    """List the flagged routes of a run with their review status, filtered and sorted."""
    from tradewatch.detect import export, review
    from tradewatch.flows.core import countries
    from tradewatch.flows import warehouse

    # Every filter is checked before the warehouse is opened: a typo is an error, not "no route matches".
    transit = countries.resolve(transit, "--transit") if transit is not None else None
    origin = countries.resolve(origin, "--origin") if origin is not None else None
    product = review.check_product(product) if product is not None else None
    tier = review.check_tier(tier) if tier is not None else None
    con = warehouse.connect(db, read_only=True, on_wait=say, demo=True)
    try:
        label = warehouse.DEMO_LABEL if warehouse.is_demo(con) else None
        frame = review.list_flags(
            con, run=run, transit=transit, origin=origin, product=product, tier=tier, min_score=min_score,
            status=status.value if status else None, sort=sort.value, limit=limit,
        )
    finally:
        con.close()
    if format is Format.table:
        if out is not None:
            from tradewatch.flows.core.errors import InputError

            raise InputError(f"--out {out}", "a table is for the terminal; use --format csv, json or parquet with --out")
        _print_flags(frame, wide, label)
        return
    if label:
        import polars as pl

        frame = frame.with_columns(data=pl.lit(label))
    text = export.write(frame, format.value, out)
    if text is not None:
        typer.echo(text, nl=False)
    else:
        say(f"Wrote {frame.height} routes to {out} ({format.value}).")


@flags_app.command("show")
@one_line_errors
def show(route: RouteArgument, db: DbOption = None,
         run: Annotated[Optional[str], typer.Option("--run", help="Run id or 'latest' (default: the latest run that flagged the route).")] = None,
         ) -> None:
    """Show the whole evidence for one route: features, the monthly series of each leg, product, tier, loads, decisions."""
    from tradewatch.detect import review
    from tradewatch.flows import warehouse

    con = warehouse.connect(db, read_only=True, on_wait=say, demo=True)
    try:
        evidence, revised = review.evidence_as_scored(con, route, run)
    finally:
        con.close()
    _print_evidence(evidence)
    _print_revised(evidence, revised)


def _print_revised(evidence, revised: list[dict]) -> None:
    """Revisions of the route's data after its last review (or its run), one line each."""
    if not revised:
        return
    from rich.console import Console

    console = Console()
    after = "its last review" if evidence.reviews else "this run"
    shown = ("the data as the run read it" if evidence.run.get("vintage") is not None
             else "today's data (the run predates vintages)")
    console.print(_plain(f"  data revised after {after}: the evidence above is {shown}"), style="bold", highlight=False)
    for item in revised:
        console.print(_plain(f"    {item['source']} {item['period']}: {item['rows_before']:,} row(s) of this route's "
                             f"legs replaced by load {item['load_id']} ({item['file']}) at "
                             f"{item['revised_at']:%Y-%m-%d %H:%M} UTC"), highlight=False)


@flags_app.command("review")
@one_line_errors
def review_route(
    route: RouteArgument,
    status: Annotated[Decision, typer.Option("--status", help="Your decision.")],
    note: Annotated[str, typer.Option("--note", help="Why: what you checked, what you found.")],
    by: Annotated[Optional[str], typer.Option("--by", help="Reviewer (default: $USER, else 'analyst').")] = None,
    run: Annotated[Optional[str], typer.Option("--run", help="Run whose evidence you reviewed (default: the latest that flagged the route).")] = None,
    db: DbOption = None,
) -> None:
    """Record a decision on a route (confirmed, dismissed or watch) with a note; it outlives later runs."""
    from tradewatch.detect import review
    from tradewatch.flows import warehouse

    if not note.strip():
        from tradewatch.flows.core.errors import InputError

        raise InputError("--note", "expected a note saying what you checked and what you found")
    con = warehouse.connect(db, on_wait=say, demo=True)
    try:
        record = review.review(con, route, status.value, note, by=by, run=run)
    finally:
        con.close()
    typer.echo(
        f"{record['route_id']}: {record['status']} by {record['reviewer']} at "
        f"{record['reviewed_at']:%Y-%m-%d %H:%M:%S} UTC (run {record['run_id']}, score {_num(record['score_at_review'])},"
        f" excess {_num(record['excess_at_review'])})"
    )


@flags_app.command("history")
@one_line_errors
def history(route: RouteArgument, db: DbOption = None) -> None:
    """Every decision recorded on a route, oldest first."""
    from tradewatch.detect import review
    from tradewatch.flows import warehouse

    con = warehouse.connect(db, read_only=True, on_wait=say, demo=True)
    try:
        rows = review.history(con, route)
    finally:
        con.close()
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not rows:
        console.print(f"No decision recorded on route {route} yet.")
        return
    table = Table(title=f"Decisions on route {rows[0]['route_id']} (times UTC)")
    for name in ("when (UTC)", "status", "by", "note", "run", "score then", "excess then"):
        table.add_column(name, overflow="fold", no_wrap=name in ("when (UTC)", "status"))
    for row in rows:
        table.add_row(f"{row['reviewed_at']:%Y-%m-%d %H:%M:%S}", _plain(row["status"]), _plain(row["reviewer"]),
                      _plain(row["note"]), _plain(row["run_id"]), _num(row["score_at_review"]),
                      _num(row["excess_at_review"]))
    console.print(table)


# --- rendering ------------------------------------------------------------------------------------------------

def _num(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def _money(value, currency) -> str:
    from tradewatch.flows.core.numbers import money

    return money(value, currency)


def _plain(text) -> str:
    """Data shown in a rich table must not be read as rich markup ('[red]' in a reason), nor reach the
    terminal as control characters (an escape sequence in a note stored by another tool): both are shown
    as text."""
    from rich.markup import escape

    from tradewatch.detect.review import printable

    lines = ("" if text is None else str(text)).split("\n")  # a note's own line breaks stay line breaks
    return escape("\n".join(printable(line) for line in lines))


def _print_flags(frame, wide: bool = False, label: str | None = None) -> None:
    from rich import box
    from rich.table import Table

    from tradewatch.cli.common import short_id, table_console
    from tradewatch.detect.report import growth_text
    from tradewatch.flows.core.numbers import change, score_text

    console, wide = table_console(wide)
    if frame.height == 0:
        console.print("No flagged route matches.")
        return
    run_id = frame["run_id"][0]
    if wide:
        names = ("id", "#", "score", "status", "route", "product", "tier", "baseline → recent", "growth",
                 "to target", "excess", "reasons")
    else:
        names = ("id", "score", "status", "route", "product", "tier", "growth", "excess")
    title = f"Flagged routes in run {_plain(run_id)} (monthly averages, route currency)"
    table = Table(title=f"{label.upper()} — {title}" if label else title,
                  box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD)
    for name in names:
        table.add_column(name, justify="right" if name in ("#", "score", "growth", "to target", "excess",
                                                           "baseline → recent") else "left",
                         overflow="fold", no_wrap=not wide and name != "product")
    for row in frame.iter_rows(named=True):
        currency = row["currency"]
        route = _plain(f"{row['origin_iso3']}→{row['transit_iso3']}→{row['target_iso3']}")
        if not wide:
            table.add_row(short_id(row["id"]), score_text(row["score"]), _status_cell(row), route,
                          _plain(row["product_code"]), _plain(row["tier"] or "–"), growth_text(row),
                          _money(row["excess_value"], currency))
            continue
        name = row["product_name"] or ""
        product = f"{row['product_code']} {name[:36]}" + ("…" if len(name) > 36 else "")
        table.add_row(
            _plain(row["id"]), str(row["rank"]), score_text(row["score"]), _status_cell(row), route,
            _plain(product), _plain(row["tier"] or "–"),
            f"{_money(row['baseline_value'], currency)} → {_money(row['recent_value'], currency)}",
            growth_text(row), change(row["target_change"]), _money(row["excess_value"], currency),
            _plain(row["reasons"]),
        )
    console.print(table)
    hint = "" if wide else "; --wide for values and reasons"
    console.print(f"{frame.height} route(s). `tradewatch flags show ID` for the evidence of one{hint}.",
                  style="dim", markup=False)


def _status_cell(row: dict) -> str:
    """The status shown, and 'EXPLORATION' for a route from just below the threshold (not a flag)."""
    return _plain(row["status"]) + (" · EXPLORATION" if row.get("exploration") else "")


def _print_evidence(evidence) -> None:
    """`flags show`: a route's facts, its features, its legs month by month, the loads and the decisions."""
    from rich.console import Console

    console = Console()
    console.rule(f"Route {_plain(evidence.route['route_id'])}")
    console.print(_facts_table(evidence))
    console.print(_features_table(evidence))
    _print_legs(console, evidence)
    _print_loads(console, evidence.loads)
    _print_decisions(console, evidence.reviews)
    _print_similar(console, evidence)


def _print_similar(console, evidence) -> None:
    """How past decisions bear on this route: those on routes via the same transit in the same heading,
    and whether the ranker that scored the run learned from analysts' decisions."""
    similar = evidence.similar or {}
    counts = similar.get("counts") or {}
    if counts:
        words = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        console.print(_plain(f"  similar routes via {similar['transit']} in HS {similar['heading']}: {words}"),
                      highlight=False)
    model = evidence.model or ""
    if "; ranker " in model:
        from tradewatch.detect import ranker

        try:
            manifest = ranker.load().manifest
        except Exception:  # the model may have changed since; the run's model_version still names its own
            manifest = {}
        used = ((manifest.get("training") or {}).get("reviews") or {}).get("used", 0)
        same = manifest.get("sha256") and manifest["sha256"] in model
        taught = f"learned from {used} analysts' decisions" if used else "learned from no analyst's decisions"
        console.print(_plain(f"  the run's ranker {taught}" if same else
                             "  the run's ranker is not the one installed now (see `tradewatch model status`)"),
                      highlight=False)


def _facts_table(evidence):
    """Route, product, tier, status, run, rank and score, windows, growth, excess, reasons."""
    from rich.table import Table

    from tradewatch.detect import review
    from tradewatch.detect.report import growth_text
    from tradewatch.flows.core.numbers import change, score_text

    route, run = evidence.route, evidence.run
    currency = route.get("currency")
    countries = " → ".join(
        f"{route[key]} {review.country_name(route[key])}" for key in ("origin_iso3", "transit_iso3", "target_iso3")
    )
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    facts.add_row("route", _plain(countries))
    facts.add_row("product", _plain(f"{route['product_code']} {evidence.product_name or '(no name in the HS nomenclature)'}"))
    facts.add_row("CHPL tier", _plain(evidence.tier or "not on the Common High Priority List"))
    facts.add_row("status", _plain(evidence.status))
    if route.get("exploration"):
        facts.add_row("EXPLORATION", "not flagged: shown from just below the threshold (exploration_share) so that "
                                     "reviews also teach the ranker; a decision on it is a label like any other")
    facts.add_row("run", _plain(f"{run['run_id']} (event {evidence.event:%Y-%m})" if evidence.event else run["run_id"]))
    meaning = ("the ranker's calibrated probability" if "ranker_probability" in (evidence.features or {})
               else "1 − p")
    facts.add_row("rank, score", f"{route['rank']}, {score_text(route['score'])} ({meaning}; see the p_value and "
                                 "q_value features)")
    moved = (evidence.features or {}).get("ranker_moved_by")
    if moved:
        from tradewatch.detect.ranker import feature_words

        facts.add_row("ranker moved by", _plain(", ".join(f"{feature_words(name)} {effect:+.2f}"
                                                          for name, effect in moved)))
    facts.add_row("baseline", _plain(f"{_money(route.get('baseline_value'), currency)}/month "
                                     f"({_span(route.get('baseline_start'), route.get('baseline_end'))})"))
    facts.add_row("recent", _plain(f"{_money(route.get('recent_value'), currency)}/month "
                                   f"({_span(route.get('recent_start'), route.get('recent_end'))})"))
    facts.add_row("growth", f"{growth_text(route)}; to target {change(route.get('target_change'))}")
    facts.add_row("excess", _money(route.get("excess_value"), currency))
    facts.add_row("reasons", _plain(route.get("reasons") or ""))
    return facts


def _features_table(evidence):
    from rich.table import Table

    features = Table(title="Features", title_justify="left")
    features.add_column("feature")
    features.add_column("value", justify="right")
    features.add_column("meaning", overflow="fold")
    for name, value in evidence.features.items():
        features.add_row(_plain(name), *_feature_cells(evidence, name, value))
    return features


def _feature_cells(evidence, name: str, value) -> tuple[str, str]:
    """A feature's value and meaning as shown: unavailable ones say why, non-finite ones say so."""
    meaning = evidence.descriptions.get(name, "")
    if value is None:
        why = evidence.unavailable.get(name, "")
        text = "unavailable" + (f": {why}" if why else " for this route with this data")
        return "–", _plain(f"{meaning} — {text}" if meaning else text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _plain(value), _plain(meaning)
    if not math.isfinite(value):
        return _plain(value), _plain(f"{meaning} (not finite)")
    return (f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"), _plain(meaning)


_LEG_LABEL_WIDTH = 24


def _print_legs(console, evidence) -> None:
    """Each leg as a sparkline over the months, then the window markers and the month axis."""
    from tradewatch.detect import review

    console.print("[bold]Monthly trade on each leg[/bold] (each leg scaled to its own maximum; "
                  "blank: no data from that source; ▲ event month, ─ baseline, ━ recent months)")
    months = evidence.months
    if not months:
        console.print("  no monthly trade rows for this route in the warehouse")
        return
    for leg in evidence.legs:
        console.print(f"  {leg.name:<{_LEG_LABEL_WIDTH}}{_leg_line(leg, len(months))}", markup=False, highlight=False)
    console.print(f"  {'':<{_LEG_LABEL_WIDTH}}{review.marker_line(months, evidence.event, evidence.route)}",
                  markup=False, highlight=False)
    console.print(f"  {'':<{_LEG_LABEL_WIDTH}}{_axis(months, evidence.event)}", markup=False, highlight=False)


def _leg_line(leg, month_count: int) -> str:
    """A leg's sparkline and note (source, currency, basis, maximum, last value), or dots when it has no data."""
    from tradewatch.detect import review

    if not leg.available:
        return f"{'·' * month_count}  no data in the warehouse"
    finite = [v for v in leg.values if v is not None]
    note = (f"{leg.source} {leg.currency}{', mirror' if leg.basis == 'mirror' else ''}; "
            f"max {_money(max(finite), leg.currency)}, last {_money(finite[-1], leg.currency)}")
    return f"{review.sparkline(leg.values)}  {_plain(note)}"


def _print_loads(console, loads: list[dict]) -> None:
    console.print("[bold]Loads the series came from[/bold]")
    if not loads:
        console.print("  none recorded")
    from tradewatch.detect import review

    for line in review.load_lines(loads):
        console.print(f"  {_plain(line)}", highlight=False)


def _print_decisions(console, reviews: list[dict]) -> None:
    console.print("[bold]Decisions[/bold]")
    if not reviews:
        console.print("  none yet: `tradewatch flags review ID --status confirmed|dismissed|watch --note TEXT`")
    for item in reviews:
        console.print(_plain(f"  {item['reviewed_at']:%Y-%m-%d %H:%M} UTC {item['status']} by {item['reviewer']}: "
                             f"{item['note'] or ''} (run {item['run_id']}, score {_num(item['score_at_review'])})"),
                      highlight=False)


def _span(start, end) -> str:
    if start is None or end is None:
        return "–"
    return f"{start:%Y-%m} … {end:%Y-%m}"


def _axis(months, event) -> str:
    """Month labels under the chart: the first month, the event month, the last month."""
    line = [" "] * len(months)

    def put(index: int, text: str) -> None:
        start = max(0, min(index, len(line) - len(text)))
        if all(ch == " " for ch in line[max(0, start - 1):start + len(text) + 1]):
            line[start:start + len(text)] = list(text)

    put(0, f"{months[0]:%Y-%m}")
    if event in months:
        put(months.index(event), f"{event:%Y-%m}")
    put(len(months) - 1, f"{months[-1]:%Y-%m}")
    return "".join(line).rstrip()
