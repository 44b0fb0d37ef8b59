"""`tradewatch backup OUT` and `tradewatch restore IN`: the warehouse to verified Parquet and back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tradewatch.cli.common import DbOption, one_line_errors, say

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)


@one_line_errors
def backup(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="A new (or empty) folder for the backup.", show_default=False)],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Back up the warehouse to a folder of Parquet files (zstd) with a manifest of every table's rows and
    sums, checked by reading the files back. Waits for a process writing the warehouse, then copies one
    consistent snapshot; the folder appears only when complete."""
    from tradewatch.flows import backup as backup_lib
    from tradewatch.flows.warehouse import DEMO_LABEL

    result = backup_lib.backup(db, out, demo=True, on_wait=say)
    if as_json:
        typer.echo(json.dumps({
            "out": str(result.out), "source": str(result.source), "schema_version": result.schema_version,
            "tables": result.tables, "next_load_id": result.next_load_id, "demo": result.demo,
            "bytes": result.bytes}, indent=2))
        return
    what = f" ({DEMO_LABEL}: the demo's own warehouse, not real trade data)" if result.demo else ""
    typer.echo(f"Backed up {result.source}{what} to {result.out}")
    _print_tables(result.tables)
    typer.echo(f"Verified: every Parquet file reads back with the rows and sums of the snapshot; "
               f"{_size(result.bytes)}. Restore with `tradewatch restore {result.out}`.")


@one_line_errors
def restore(
    source: Annotated[Path, typer.Argument(metavar="IN", help="A backup folder written by `tradewatch backup`.", show_default=False)],
    db: DbOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a warehouse that holds data (kept as "
                                        "<file>.before-restore).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Restore a backup into the warehouse (default: $TRADEWATCH_HOME/tradewatch.duckdb; a backup of the
    demo goes to the demo's own). Every file is checked against the manifest first; the backup is imported
    into a new file, checked again and swapped in whole. A warehouse holding data is replaced only with
    --force."""
    from tradewatch.flows import backup as backup_lib
    from tradewatch.flows.warehouse import DEMO_LABEL

    result = backup_lib.restore(source, db, force=force, on_wait=say)
    if as_json:
        typer.echo(json.dumps({
            "target": str(result.target), "source": str(result.source), "schema_version": result.schema_version,
            "tables": result.tables, "next_load_id": result.next_load_id, "created_at": result.created_at,
            "demo": result.demo, "kept": None if result.kept is None else str(result.kept)}, indent=2))
        return
    what = f" ({DEMO_LABEL})" if result.demo else ""
    typer.echo(f"Restored {result.source}{what}, backed up {result.created_at}, into {result.target}")
    _print_tables(result.tables)
    typer.echo("Verified: every file against the manifest, and every restored table's rows and sums."
               + (f" Next load id: {result.next_load_id}." if result.next_load_id is not None else ""))
    if result.kept is not None:
        typer.echo(f"The warehouse it replaced is kept as {result.kept}.")


def _print_tables(tables: dict[str, int]) -> None:
    width = max((len(name) for name in tables), default=0)
    for name, rows in tables.items():
        typer.echo(f"  {name:<{width}}  {rows:>12,} rows")


def _size(count: int) -> str:
    return f"{count / 1e6:,.1f} MB" if count >= 1e6 else f"{count / 1e3:,.0f} kB"
