"""Library entry point for loading source files into the warehouse: recognise the file, stage it, replace its partitions."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import duckdb

from tradewatch.flows import archive, settings, warehouse
from tradewatch.flows.errors import InputError
from tradewatch.flows.sources import registry


def recognise(path: Path) -> ModuleType:
    """The source module that reads `path`, judged by content (then by name). Raises InputError."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except FileNotFoundError:
        raise InputError(str(path), "no such file") from None
    except IsADirectoryError:
        raise InputError(str(path), "is a folder; expected a data file") from None
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror}") from None
    if not head.strip():
        raise InputError(str(path), "file is empty; expected Comext, Comtrade or BACI data")
    for module in registry.SOURCES.values():
        if module.looks_like(path, head):
            return module
    stripped = head.lstrip(b"\xef\xbb\xbf").lstrip()[:200].lower()
    if stripped.startswith((b"<!doctype", b"<html")):
        raise InputError(str(path), "an HTML page, not data (an error page saved instead of the file?)")
    first = head.split(b"\n", 1)[0][:80].decode("utf-8", "replace").strip()
    raise InputError(str(path), f"not a recognised trade-data file (first line {first!r}); expected Comext .7z/.dat, "
                     "Comtrade CSV/JSON or BACI CSV")


def already_loaded(con: duckdb.DuckDBPyConnection, file: str, checksum: str) -> bool:
    """True when this exact file content was loaded successfully and nothing replaced it since."""
    row = con.execute(
        """SELECT max(load_id) FROM loads WHERE checksum = ? AND status IN ('ok', 'empty')""", [checksum]
    ).fetchone()
    if row is None or row[0] is None:
        return False
    last = row[0]
    # A later successful load of any of the same periods from another file may have replaced it.
    newer = con.execute(
        """SELECT count(*) FROM loads l JOIN loads mine ON mine.load_id = ? AND l.source = mine.source
           AND l.freq = mine.freq AND l.period = mine.period
           WHERE l.load_id > ? AND l.status = 'ok' AND l.checksum IS DISTINCT FROM ?""",
        [last, last, checksum],
    ).fetchone()[0]
    return newer == 0


def load_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    source_label: str | None = None,
    force: bool = False,
    display_name: str | None = None,
) -> warehouse.LoadResult:
    """Load one source file into the open (writable) warehouse. Returns the LoadResult; status
    'unchanged' when the same content was loaded before (unless `force`). Raises InputError for a file
    that cannot be read as a whole; row-level problems go to quarantine."""
    path = Path(path)
    module = recognise(path)
    where = display_name or str(path)
    checksum = archive.sha256(path)
    label = source_label or module.SOURCE
    if not force and already_loaded(con, where, checksum):
        return warehouse.LoadResult(load_id=-1, file=where, source=label, status="unchanged")
    load_id = warehouse.next_load_id(con)
    table = f"stage_{load_id}"
    scratch = Path(tempfile.mkdtemp(prefix="extract-", dir=_scratch_root()))
    try:
        staged = module.stage_file(con, path, table=table, source=label, scratch=scratch, display_name=where)
        result = warehouse.replace_partitions(
            con, staged.table, file=where, checksum=checksum, source=label,
            quarantine_table=staged.quarantine_table, load_id=load_id,
        )
        result.message = "; ".join(f"{n} {reason}" for reason, n in list(staged.reasons.items())[:3])
        return result
    finally:
        for suffix in ("", "_quarantine", "_typed"):
            con.execute(f"DROP TABLE IF EXISTS {table}{suffix}")
        archive.remove_tree(scratch)


def _scratch_root() -> Path:
    root = settings.cache_dir() / "extract"
    root.mkdir(parents=True, exist_ok=True)
    return root


def load_files(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[Path],
    *,
    source_label: str | None = None,
    force: bool = False,
    progress: Callable[[Path, warehouse.LoadResult], None] | None = None,
) -> list[warehouse.LoadResult]:
    """Load several files in order; stops at the first file that cannot be read (loads before it stay)."""
    results = []
    for path in paths:
        result = load_file(con, Path(path), source_label=source_label, force=force)
        results.append(result)
        if progress:
            progress(Path(path), result)
    return results
