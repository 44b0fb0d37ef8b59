"""`tradewatch report`: write the self-contained HTML report of a detection run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tradewatch.cli.common import DbOption, one_line_errors, say


def register(app: typer.Typer) -> None:
    app.command("report")(report)


@one_line_errors
def report(
    db: DbOption = None,
    run: Annotated[str, typer.Option("--run", help="Run id (or a unique prefix of one), or 'latest'.")] = "latest",
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="HTML file to write (default: $TRADEWATCH_HOME/reports/report-<run>.html)."),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="Show the charts of the N best-ranked routes open, with a value per month (every flagged route has a chart; the others are collapsed).")] = 20,
) -> None:
    """Write one self-contained HTML report (works offline): run, coverage, counts, a sortable table, charts."""
    from tradewatch.detect import report as report_lib
    from tradewatch.flows import warehouse

    from tradewatch.detect import review
    from tradewatch.flows import vintages

    con = warehouse.connect(db, read_only=True, on_wait=say, demo=True)
    try:
        # The evidence drawn is the evidence scored: the data the run read, even after a revision.
        run_id = review.resolve_run(con, run)
        if vintages.as_run_read(con, review.run_info(con, run_id).get("vintage")):
            say(f"Data were revised after run {run_id}: the report shows the data as that run read them.")
        path = report_lib.write_report(con, run_id, out, top=top)
    finally:
        con.close()
    say(f"Report written ({path.stat().st_size / 1024:,.0f} KiB); open it in any browser, no network needed.")
    typer.echo(str(path))
