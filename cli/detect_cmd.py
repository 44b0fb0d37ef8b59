"""`tradewatch detect`: run detection (seeding the demo world into an empty warehouse) and print the flagged routes."""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tradewatch.cli.common import (AsOfOption, BaselineOption, DbOption, FdrOption, RecentOption, WideOption,
                                   one_line_errors, say,
                                   detect_default, window_options)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


# The stored columns of a flag that CSV and JSON output show, in this order: a choice by name among the
# columns declared for `anomalies` in tradewatch.flows.schema (_output_columns checks each name).
OUTPUT_COLUMNS = (
    "rank", "score", "origin_iso3", "transit_iso3", "target_iso3", "product_code", "product_name", "tier",
    "currency", "baseline_value", "recent_value", "growth", "target_change", "onward_growth", "excess_value",
    "reasons", "route_id", "exploration",
)


def _output_columns() -> tuple[str, ...]:
    """OUTPUT_COLUMNS, each checked to be a declared anomalies column (imported here: polars loads with it)."""
    from tradewatch.flows import schema

    return schema.TABLES["anomalies"].pick(*OUTPUT_COLUMNS)


def register(app: typer.Typer) -> None:
    app.command("detect")(detect)


@one_line_errors
def detect(
    db: DbOption = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="Show at most N flagged routes.")] = 20,
    event: Annotated[Optional[str], typer.Option(
        "--event", help=f"Month the restrictions took effect, YYYY-MM (default {detect_default('event')}).")] = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="TOML file overriding the detection defaults.")
    ] = None,
    as_of: AsOfOption = None,
    baseline_months: BaselineOption = None,
    recent_months: RecentOption = None,
    fdr: FdrOption = None,
    wide: WideOption = False,
    exploration_share: Annotated[Optional[float], typer.Option(
        "--exploration-share", metavar="SHARE", help="Share of the routes shown that come from just below the "
        "threshold for review, marked 'exploration' and never flagged (default "
        f"{detect_default('exploration_share')}; 0: none).")] = None,
    reproduce: Annotated[Optional[str], typer.Option(
        "--reproduce", metavar="RUN", help="Recompute stored run RUN (an id, a unique prefix or 'latest') on the data "
                                           "as it was when it ran, and say whether flags and scores are identical "
                                           "(read-only; exit 1 when they differ).")] = None,
) -> None:
    """Flag likely diversion routes (origin → transit → Russia) and print them best first.

    Routes are flagged by Benjamini–Hochberg at --fdr (at most that share of the flagged list is expected to be false) and ordered by their score: the learned ranker's calibrated probability (with ranker = false: 1 − p, p being the chance that an ordinary flow on the same origin → transit pair grows this much net of the pair's ordinary growth and of control countries).

    On an empty warehouse it first seeds the embedded synthetic demo world."""
    from tradewatch.detect import exploration, service

    if reproduce is not None:
        _reproduce(db, reproduce, given={"--event": event, "--config": config, "--as-of": as_of, "--fdr": fdr,
                                         "--baseline-months": baseline_months, "--recent-months": recent_months,
                                         "--exploration-share": exploration_share})
        return
    options = window_options(event, as_of, baseline_months, recent_months, fdr, config)
    outcome = service.detect(db, config=config, say=say, exploration_share=exploration_share, **options)
    event = outcome.run.params.event
    run = outcome.run
    if outcome.seeded:
        say(f"Seeded the demo world in {outcome.seed_s:.1f} s.")
    for note in run.notes:
        say(f"note: {note}")
    if run.unavailable:
        say("unavailable with this data: " + "; ".join(run.unavailable))
    rows = run.flagged.head(top).to_dicts()
    # the same share of the routes shown as of the run's: beside the top N flags, count(N) exploration routes
    explored = run.exploration.head(exploration.count(len(rows), run.params.exploration_share)).to_dicts()
    say(
        f"Run {run.run_id}: {run.flagged.height} of {run.candidates:,} candidate routes flagged "
        f"(event {event}); detection took {outcome.detect_s:.1f} s."
    )
    label = _demo_label() if outcome.demo else None
    if format is Format.json:
        typer.echo(json.dumps([_json_row(r, label) for r in rows + explored], indent=2, default=str,
                              ensure_ascii=False))
    elif format is Format.csv:
        import polars as pl

        columns = [c for c in _output_columns() if c in run.flagged.columns]
        frame = pl.concat([run.flagged.head(top).select(columns), run.exploration.head(len(explored)).select(columns)])
        if label:
            frame = frame.with_columns(data=pl.lit(label))
        typer.echo(frame.write_csv(), nl=False)
    else:
        _print_table(rows, event, run.flagged.height, wide, label)
        if explored:
            _print_table(explored, event, len(explored), wide, label, exploration=True)


def _reproduce(db, run: str, given: dict) -> None:
    """`detect --reproduce RUN`: the run's own parameters and data, recomputed and compared."""
    from tradewatch.detect import service
    from tradewatch.flows.core.errors import InputError

    extra = [name for name, value in given.items() if value is not None]
    if extra:
        raise InputError(f"--reproduce {run} {extra[0]}", "a reproduction uses the run's own parameters; "
                         "leave out the detection options")
    outcome = service.reproduce(db, run)
    revised = (f"; {outcome.revisions_since} revision(s) loaded since are left out" if outcome.revisions_since
               else "")
    say(f"Run {outcome.run_id} recomputed on the data as of load {outcome.vintage}{revised} "
        f"in {outcome.seconds:.1f} s.")
    if outcome.model_then != outcome.model_now:
        say(f"note: the run used model {outcome.model_then}; this tradewatch has {outcome.model_now}")
    if outcome.identical:
        explored = f" and {outcome.explored} exploration route(s)" if outcome.explored else ""
        typer.echo(f"identical: {outcome.flags} flag(s){explored}, the same routes, ranks and scores "
                   f"(largest score difference {outcome.max_score_change:.1e}); "
                   f"run hash {'equal' if outcome.same_hash else 'differs (loads or model recorded differently)'}.")
        return
    typer.echo(f"differs: the run stored {outcome.flags} flag(s), the recomputation gives {outcome.recomputed}: "
               f"{len(outcome.missing)} no longer flagged, {len(outcome.added)} newly flagged, {outcome.moved} at "
               f"another rank, largest score difference {outcome.max_score_change:.3g}.")
    raise typer.Exit(1)


def _demo_label() -> str:
    from tradewatch.flows.warehouse import DEMO_LABEL

    return DEMO_LABEL


def _json_row(row: dict, label: str | None = None) -> dict:
    out = {c: row.get(c) for c in _output_columns() if c in row}
    out["id"] = row.get("route_id")
    if label:
        out["data"] = label
    for key, value in list(out.items()):
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
    return out


def _print_table(rows: list[dict], event: str, total: int, wide: bool, label: str | None = None,
                 exploration: bool = False) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from tradewatch.cli.common import short_id, table_console
    from tradewatch.detect.report import growth_text
    from tradewatch.flows.core.numbers import change, money, score_text

    console, wide = table_console(wide)
    if not rows:
        console.print(f"No route is flagged for event {event}.")
        return
    title = (f"Flagged diversion routes, event {event}: recent monthly average vs the seasonally matched baseline"
             if wide else f"Flagged routes, event {event} (growth net of the pair's ordinary growth)")
    if exploration:
        title = ("EXPLORATION — not flagged: routes from just below the threshold, shown so that reviews also "
                 "teach the ranker what it does not yet believe")
    if label:
        title = f"{label.upper()} — {title}"
    table = Table(title=title, box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD)
    columns = [("#", "right"), ("score", "right"), ("route", "left"), ("product", "left")]
    columns += [("baseline → recent", "right")] if wide else []
    columns += [("growth", "right"), ("to target", "right") if wide else ("excess", "right"), ("id", "left")]
    columns += [("reason", "left")] if wide else []
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=name not in ("product", "reason"),
                         max_width=34 if name == "product" else None, ratio=1 if name == "reason" else None,
                         min_width=30 if name == "reason" else None)
    for row in rows:
        currency = row.get("currency")
        route = f"{row['origin_iso3']}→{row['transit_iso3']}→{row['target_iso3']}"
        cells = [str(row["rank"]), score_text(row["score"]), escape(route)]
        if wide:
            name = row.get("product_name") or ""
            tier = f" [tier {row['tier']}]" if row.get("tier") else ""
            cells += [escape(f"{row['product_code']}{tier} {name[:40]}" + ("…" if len(name) > 40 else "")),
                      f"{money(row.get('baseline_value'), currency)} → {money(row.get('recent_value'), currency)}",
                      growth_text(row), change(row.get("target_change")), short_id(row.get("route_id")),
                      escape(row.get("reasons") or "")]
        else:
            cells += [escape(row["product_code"]), growth_text(row), money(row.get("excess_value"), currency),
                      short_id(row.get("route_id"))]
        table.add_row(*cells)
    console.print(table)
    hint = "" if wide else "; --wide for products, values and reasons"
    if exploration:
        console.print(f"{len(rows)} exploration route(s), not flagged — review them like flags (`tradewatch flags "
                      "review ID`).", style="dim", markup=False)
        return
    console.print(f"{len(rows)} of {total} flagged shown — `tradewatch flags show ID` for the evidence{hint}.",
                  style="dim", markup=False)
