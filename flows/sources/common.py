"""What every source reader shares: the staging contract (typed rows with a `problem` column -> canonical
TEMP table + quarantine TEMP table), header sniffing, and SQL-safe literals."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from tradewatch.flows import schema
from tradewatch.flows.core.errors import InputError, TradewatchError


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
    # The canonical rows already written as Parquet (the reader's one pass; `table` is a view of it), which
    # the parse step takes as it is instead of copying `table`. It may hold further check columns, named
    # with a leading underscore, that the loaders never select.
    parquet: str | None = None


@dataclass
class Fetch:
    """One file to bring into the cache (or a local file to use as is) for one source and period: what a
    source module's plan() returns and the ingest steps take."""

    source: str
    period: str
    url: str | None = None
    dest: str | None = None
    local: str | None = None
    display_name: str | None = None
    request: dict | None = None  # a Comtrade unit of work (comtrade_api.Request as a dict)


def download_to_cache(item: Fetch, *, expect: Callable[[bytes], str | None] | None = None,
                      allowed_hosts: Iterable[str] = (),
                      progress: Callable[[int, int | None], None] | None = None) -> dict:
    """The usual way a source fetches to the cache: a local file as is, else download.fetch of its URL
    (retries, resume, checksum) with `expect` judging the head of the body. Returns {'path', 'status'
    ('local'|'downloaded'|'resumed'|'unchanged'), 'sha256'}. Raises DownloadError."""
    if item.local:
        return {"path": item.local, "status": "local", "sha256": None}
    from tradewatch.flows import download

    got = download.fetch(item.url, Path(item.dest), allowed_hosts=allowed_hosts, progress=progress, expect=expect)
    return {"path": str(got.path), "status": got.status, "sha256": got.sha256}


def sql_path(path: Path | str) -> str:
    """A path as a SQL string literal (single quotes doubled), only where DuckDB cannot bind a parameter
    (a view's definition); elsewhere bind it (`$path`, see used_parameters)."""
    return "'" + str(path).replace("'", "''") + "'"


def sql_text(value: str) -> str:
    """A text as a SQL string literal (single quotes doubled), only where DuckDB cannot bind a parameter."""
    return "'" + str(value).replace("'", "''") + "'"


def used_parameters(sql: str, values: Mapping[str, object]) -> dict[str, object]:
    """The named parameters among `values` that statement `sql` uses (`$name`): a reader builds its SQL
    from pieces, some of which use a value and some not, and DuckDB refuses a parameter left unused."""
    return {name: value for name, value in values.items() if re.search(rf"\${re.escape(name)}\b", sql)}


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
    # A lone \r ends a line too (old Mac exports), as it does for DuckDB's reader.
    first = re.split(rb"\r\n|\r|\n", stripped, maxsplit=1)[0]
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{where} line 1", "header is not UTF-8 text") from None
    delimiter = ","
    if text.count(";") > text.count(",") and text.count(";") > text.count("\t"):
        delimiter = ";"
    elif text.count("\t") > text.count(","):
        delimiter = "\t"
    try:
        columns = next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    except csv.Error as exc:
        raise InputError(f"{where} line 1", f"header cannot be split into columns ({exc})") from None
    if len(columns) < 2:
        raise InputError(f"{where} line 1", f"header {text[:60]!r} has fewer than two columns")
    return columns, delimiter


def stage_from_typed(con: duckdb.DuckDBPyConnection, *, table: str, canonical_sql: str, where: str,
                     params: Mapping[str, object] | None = None) -> StageResult:
    """From `{table}_typed` (columns line, raw, problem, …) build TEMP `{table}` with the canonical
    columns from `canonical_sql` (its `$name` parameters bound from `params`) and TEMP
    `{table}_quarantine` (file, line, reason, raw)."""
    statement = f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {schema.cast_sql()} FROM ({canonical_sql})"
    con.execute(statement, used_parameters(statement, params or {}))
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table}_quarantine AS
            SELECT ? AS file, CAST(line AS BIGINT) AS line, problem AS reason, raw
            FROM {table}_typed WHERE problem IS NOT NULL ORDER BY line""", [where]
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


# ------------------------------------------------------------------------------ reading whole files safely

OPEN_QUOTE = ("a double quote opened on this line is never closed, so the lines after it would be read as one "
              "value; expected balanced double quotes")


@contextmanager
def reading(path: Path, where: str) -> Iterator[None]:
    """Inside this block a DuckDB error met while reading `path` becomes one InputError naming `where` and,
    when it can be found, the line: text that is not UTF-8, a quote never closed, a row the CSV reader
    cannot split. Running out of memory or disk becomes a TradewatchError (the file is not to blame)."""
    try:
        yield
    except duckdb.Error as exc:
        raise read_error(exc, path, where) from None


def read_error(exc: duckdb.Error, path: Path, where: str) -> TradewatchError:
    """The one-line error for a DuckDB error met while reading `path` (shown as `where`)."""
    text = str(exc)
    lower = text.lower()
    if isinstance(exc, duckdb.OutOfMemoryException) or "no space left" in lower or "out of memory" in lower:
        return TradewatchError(f"{where}: ran out of memory or disk space while reading ({_gist(text)}); "
                               "free space under TRADEWATCH_HOME and try again")
    if re.search(r"invalid unicode|not utf-?8|valid utf-?8", lower):
        line = first_non_utf8_line(path)
        return InputError(f"{where} line {line}" if line else where,
                          "is not UTF-8 text (Latin-1 or another encoding?); expected UTF-8: save the file as UTF-8")
    line = open_quote_line(path)
    if line:
        return InputError(f"{where} line {line}", OPEN_QUOTE)
    found = re.search(r"\bline:?\s*(\d+)", text, re.IGNORECASE)
    return InputError(f"{where} line {found.group(1)}" if found else where,
                      f"cannot be read as delimited text ({_gist(text)})")


def _gist(text: str) -> str:
    """The first line of a DuckDB message without its error-class prefix or the (scratch) path it names."""
    first = text.strip().splitlines()[0] if text.strip() else "no detail"
    first = re.sub(r"^[A-Za-z ]*Error:\s*", "", first)
    first = re.sub(r'"[^"]*[/\\][^"]*"', "the file", first)
    return " ".join(first.split())[:160]


def _text_lines(path: Path) -> Iterator[str]:
    # Universal newlines: \n, \r\n and a lone \r all end a line, as for DuckDB's reader.
    with open(path, encoding="utf-8", errors="replace", newline=None) as handle:
        yield from handle


def first_non_utf8_line(path: Path) -> int | None:
    """1-based number of the first line of `path` that is not valid UTF-8, or None."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def open_quote_line(path: Path) -> int | None:
    """1-based number of the first line that ends inside a double-quoted value (an odd count of quotes
    leaves the value open into the next line), or None. Our sources never put line breaks in values."""
    inside, opened = False, 0
    for number, line in enumerate(_text_lines(path), start=1):
        if line.count('"') % 2:
            inside = not inside
            if inside:
                opened = number
        if inside and line.endswith("\n"):
            return opened
    return opened if inside else None


def newline_count(path: Path, chunk: int = 1 << 23) -> tuple[int, bytes]:
    """(count of b'\\n', last byte) of a file, streamed. For check_complete's `counted`, run it on a thread
    while DuckDB reads the same file (DuckDB lets go of the GIL while it parses): it then adds no wall time."""
    count, last = 0, b""
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            count += block.count(b"\n")
            last = block[-1:]
    return count, last


def check_complete(path: Path, where: str, records: int, columns: int, delimiter: str = ",", *,
                   counted: tuple[int, bytes] | None = None) -> None:
    """Refuse a delimited file (header + `records` rows as DuckDB read them) whose rows do not match its
    lines, which is how a quote left open swallows the lines after it without an error, or whose last line
    is cut short without a line break (a truncated file). Costs one streamed count of line breaks, unless
    `counted` (from newline_count) is given."""
    newlines, last = counted if counted is not None else newline_count(path)
    lines = newlines + (1 if last not in (b"\n", b"") else 0)
    if lines != records + 1:
        # DuckDB skips empty lines and accepts a lone \r as a line break: count lines as it does.
        lines = sum(1 for line in _text_lines(path) if line.rstrip("\n"))
        if lines != records + 1:
            line = open_quote_line(path)
            if line:
                raise InputError(f"{where} line {line}", OPEN_QUOTE)
            raise InputError(where, f"{records:,} rows were read but the file has {max(lines - 1, 0):,} non-empty "
                             "lines after the header; expected one row per line")
    if records and last not in (b"\n", b"\r"):
        with open(path, "rb") as handle:
            size = handle.seek(0, io.SEEK_END)
            handle.seek(max(0, size - (1 << 16)))
            tail = handle.read().replace(b"\r\n", b"\n").replace(b"\r", b"\n").rsplit(b"\n", 1)[-1]
        fields = len(next(csv.reader([tail.decode("utf-8", "replace")], delimiter=delimiter), []))
        if fields < columns:
            raise InputError(f"{where} line {lines}", f"has {fields} of {columns} fields and the file ends without a "
                             "line break: the file looks truncated (a download cut short?)")
