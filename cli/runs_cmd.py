"""`tradewatch runs`: the detection runs in the warehouse, newest first, with the ids `--run` takes."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from tradewatch.cli.common import DbOption, one_line_errors, say


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)


@one_line_errors
def runs(
    db: DbOption = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", min=1, help="At most N runs (newest first).")] = 20,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
) -> None:
    """List detection runs: id, time, event, windows, data read, flags, model. Read-only."""
    from tradewatch.detect import export, runs as runs_lib
    from tradewatch.flows import warehouse

    con = warehouse.connect(db, read_only=True, on_wait=say, demo=True)
    try:
        total = con.execute("SELECT count(*) FROM runs").fetchone()[0]
        frame = runs_lib.list_runs(con, limit=limit)
    finally:
        con.close()
    if format is not Format.table:
        typer.echo(export.write(frame, format.value, None), nl=False)
        return
    _print_runs(frame, total)


def _print_runs(frame, total: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if frame.height == 0:
        console.print("No detection run yet: `tradewatch detect` makes one.")
        return
    table = Table(title="Detection runs, newest first")
    for name, justify in (("run", "left"), ("started (UTC)", "left"), ("event", "left"), ("baseline", "left"),
                          ("recent", "left"), ("data", "left"), ("flagged", "right"), ("model", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for row in frame.iter_rows(named=True):
        flagged = "–" if row["flagged"] is None else f"{row['flagged']:,} of {row['candidates'] or 0:,}"
        table.add_row(row["run_id"], f"{row['started_at']:%Y-%m-%d %H:%M}", row["event"] or "–",
                      row["baseline"] or "–", row["recent"] or "–", row["data"] or "–", flagged,
                      _model(row["model_version"]))
    console.print(table, markup=False)
    console.print(f"{frame.height} of {total} run(s) shown. `--run ID` (or a unique prefix) picks one in "
                  "`flags list`, `flags show` and `report`.", style="dim", markup=False)


def _model(version: str | None) -> str:
    """'tradewatch-detect/2.0 …; ranker ranker-1dd96b3eb46e sha256:…' as '2.0 + ranker-1dd96b3eb46e'."""
    if not version:
        return "–"
    statistic = version.split(" ")[0].removeprefix("tradewatch-detect/")
    ranker = version.split("; ranker ")[1].split(" ")[0] if "; ranker " in version else None
    return f"{statistic} + {ranker}" if ranker else statistic
