"""What every source reader shares: the staging contract (typed rows with a `problem` column -> canonical
TEMP table + quarantine TEMP table), header sniffing, and SQL-safe literals."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import duckdb

from tradewatch.flows import schema
from tradewatch.flows.errors import InputError


@dataclass
class StageResult:
    """Staged rows of one file: `table` holds canonical rows, `quarantine_table` the rows refused."""

    table: str
    quarantine_table: str
    rows: int
    quarantined: int
    reasons: dict[str, int]
    # True when the reader itself guarantees one row per canonical key (it grouped by the key), so the
    # warehouse can skip its own duplicate-key scan — the costliest declared check on a large month.
    key_unique: bool = False


def sql_path(path: Path | str) -> str:
    """A path as a SQL string literal (single quotes doubled)."""
    return "'" + str(path).replace("'", "''") + "'"


def sql_text(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def read_header(path: Path, where: str, max_bytes: int = 1 << 16) -> tuple[list[str], str]:
    """First line of a delimited text file -> (column names, delimiter). Raises InputError for an empty
    file, a binary file, HTML/JSON where CSV was expected, or text that is not UTF-8."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(max_bytes)
    except OSError as exc:
        raise InputError(where, f"cannot read: {exc.strerror}") from None
    if not head.strip():
        raise InputError(where, "file is empty; expected a header line and data rows")
    if b"\x00" in head:
        raise InputError(where, "binary content; expected comma-separated text")
    stripped = head.lstrip(b"\xef\xbb\xbf").lstrip()
    lowered = stripped[:200].lower()
    if lowered.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        raise InputError(where, "an HTML/XML page, not data (an error page from the server?)")
    if stripped.startswith((b"{", b"[")):
        raise InputError(where, "JSON, not comma-separated data (an error body from the server?)")
    first = stripped.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{where} line 1", "header is not UTF-8 text") from None
    delimiter = ","
    if text.count(";") > text.count(",") and text.count(";") > text.count("\t"):
        delimiter = ";"
    elif text.count("\t") > text.count(","):
        delimiter = "\t"
    columns = next(csv.reader(io.StringIO(text), delimiter=delimiter))
    if len(columns) < 2:
        raise InputError(f"{where} line 1", f"header {text[:60]!r} has fewer than two columns")
    return columns, delimiter


def stage_from_typed(con: duckdb.DuckDBPyConnection, *, table: str, canonical_sql: str, where: str) -> StageResult:
    """From `{table}_typed` (columns line, raw, problem, …) build TEMP `{table}` with the canonical
    columns from `canonical_sql` and TEMP `{table}_quarantine` (file, line, reason, raw)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {schema.cast_sql()} FROM ({canonical_sql})")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table}_quarantine AS
            SELECT {sql_text(where)} AS file, CAST(line AS BIGINT) AS line, problem AS reason, raw
            FROM {table}_typed WHERE problem IS NOT NULL ORDER BY line"""
    )
    rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    reasons = summarise_quarantine(con, f"{table}_quarantine")
    quarantined = sum(reasons.values())
    con.execute(f"DROP TABLE {table}_typed")
    return StageResult(table=table, quarantine_table=f"{table}_quarantine", rows=rows,
                       quarantined=quarantined, reasons=reasons)


def summarise_quarantine(con: duckdb.DuckDBPyConnection, quarantine_table: str) -> dict[str, int]:
    """Quarantined rows counted by kind of reason (the offending value replaced by '…'), most frequent first."""
    return dict(
        con.execute(
            f"""SELECT regexp_replace(reason, ' (''[^'']*''|"[^"]*"|\\S+) (is|appears)', ' … \\2') AS kind, count(*)
                FROM {quarantine_table} GROUP BY kind ORDER BY count(*) DESC, kind"""
        ).fetchall()
    )
