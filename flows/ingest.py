"""The generic ingest runner over the registered sources (flows/sources: one module a source): recognise, stage, check, replace partitions, and the one task graph download → parse to Parquet → check → load that `ingest`, the Prefect flow and the pipeline run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Queue
from types import ModuleType

import duckdb

from tradewatch.flows.core import settings
from tradewatch.flows import archive, schema, warehouse
from tradewatch.flows.core.errors import InputError, TradewatchError
from tradewatch.flows.sources import registry
from tradewatch.flows.sources.common import Fetch, sql_path
from tradewatch.flows.core.months import month_labels

# Bump when a reader's output changes, so Parquet parsed by an older reader is not reused.
# 4: readers refuse files whose rows do not match their lines (a quote left open), non-UTF-8 text and
# files cut short, which version 3 could have parsed into partial Parquet.
# 5: the Comext reader writes its totals straight to Parquet, with two check columns (_source_rows, _flags).
PARSER_VERSION = "5"


@dataclass
class IngestResult(warehouse.LoadResult):
    """A LoadResult plus what the ingest summary reports beyond it."""

    confidential: int = 0  # rows kept under a confidential/unallocated partner Q-code
    reasons: dict[str, int] = field(default_factory=dict)  # quarantined rows by kind of reason
    not_available: int = 0  # observations the file marks not available (SDMX ':' or empty), skipped, never 0

    def summary(self) -> dict:
        data = asdict(self)
        data["value_sum"] = dict(self.value_sum)
        return data


def recognise(path: Path) -> ModuleType:
    """The source module that reads `path`, judged by content (then by name); a gzip file by the content
    inside it. Raises InputError."""
    head = _head(path)
    if head.startswith(archive.GZIP_MAGIC):
        head = archive.gunzip_head(path)
        if not head.strip():
            raise InputError(str(path), "gzip file holds nothing; expected Comext, Comtrade, BACI or Eurostat SDMX-CSV (DS-045409) data")
    for module in registry.SOURCES.values():
        if module.looks_like(path, head):
            return module
    # A source may know a file of its own that is not trade data (BACI's code tables, ECB rates).
    for module in registry.ALL.values():
        reason = module.not_trade_data(path, head) if hasattr(module, "not_trade_data") else None
        if reason:
            raise InputError(str(path), reason)
    stripped = head.lstrip(b"\xef\xbb\xbf").lstrip()[:200].lower()
    if stripped.startswith((b"<!doctype", b"<html")):
        raise InputError(str(path), "an HTML page, not data (an error page saved instead of the file?)")
    if b"\x00" in head[:4096]:
        raise InputError(str(path), "binary data (or UTF-16 text), not a recognised trade-data file; expected a Comext "
                         ".7z, or UTF-8 CSV/JSON")
    if stripped.startswith((b"{", b"[")):
        snippet = " ".join(head[:120].decode("utf-8", "replace").split())
        raise InputError(str(path), f"JSON without trade records (an error answer saved instead of data?): {snippet!r}")
    first = head.split(b"\n", 1)[0][:80].decode("utf-8", "replace").strip()
    raise InputError(str(path), f"not a recognised trade-data file (first line {first!r}); expected Comext .7z/.dat, "
                     "Comtrade CSV/JSON, BACI CSV, a BACI release zip or Eurostat SDMX-CSV (DS-045409)")


def _head(path: Path) -> bytes:
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
        raise InputError(str(path), "file is empty; expected Comext, Comtrade, BACI or Eurostat SDMX-CSV (DS-045409) data")
    return head


def already_loaded(con: duckdb.DuckDBPyConnection, file: str, checksum: str) -> bool:
    """True when this exact file content was loaded successfully and none of the partitions it replaced
    was replaced since by other content."""
    row = con.execute(
        """SELECT max(load_id) FROM loads WHERE checksum = ? AND status IN ('ok', 'empty')""", [checksum]
    ).fetchone()
    if row is None or row[0] is None:
        return False
    last = row[0]
    recorded = con.execute("SELECT count(*) FROM load_partitions WHERE load_id = ?", [last]).fetchone()[0]
    if recorded:
        newer = con.execute(
            """SELECT count(*) FROM load_partitions later
               JOIN load_partitions mine ON mine.load_id = ? AND later.source = mine.source AND later.freq = mine.freq
                    AND later.period = mine.period AND later.reporter_iso3 = mine.reporter_iso3
               JOIN loads l ON l.load_id = later.load_id AND l.status = 'ok'
               WHERE later.load_id > ? AND l.checksum IS DISTINCT FROM ?""",
            [last, last, checksum],
        ).fetchone()[0]
        return newer == 0
    # Loads from before partitions were recorded: any later load of the same periods may have replaced it.
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
    reader_options: dict | None = None,
    shrink_limit: float | None = warehouse.SHRINK_LIMIT,
) -> IngestResult:
    """Load one local source file into the open (writable) warehouse through the steps every ingest takes
    (parse to Parquet → check → load; the download step is the file as it is). Returns an IngestResult;
    status 'unchanged' when the same content was loaded before (unless `force`). A file that would shrink
    a loaded partition by more than `shrink_limit` is refused (ShrinkRefused; None: allowed, --allow-shrink).
    `reader_options` go to the source reader (BACI: country_codes=Path). Raises InputError for a file
    that cannot be read as a whole, or none of whose rows can (row-level problems go to quarantine), and
    TradewatchError when the warehouse cannot be written (a full disk): nothing of the file is stored then."""
    path = Path(path)
    got = {"path": str(path), "status": "local", "sha256": None, "display_name": display_name or str(path)}
    return load_local(con, got, source_label=source_label, force=force, reader_options=reader_options,
                      shrink_limit=shrink_limit)


def load_local(con: duckdb.DuckDBPyConnection, got: dict, *, source_label: str | None = None, force: bool = False,
               reader_options: dict | None = None, module: ModuleType | None = None,
               shrink_limit: float | None = warehouse.SHRINK_LIMIT) -> IngestResult:
    """parse_step → check_step → load_step for a file already on this disk (`got` as download_step returns
    it: 'path', 'display_name', 'sha256' or None; `module`: its reader when known, else recognised by
    content). Unchanged content is recognised before it is parsed. The
    Parquet is written to scratch and removed after the load: a local file is there to be read again, so
    keeping a second copy of it in the cache would only cost disk."""
    local = _prepare_local(got, source_label=source_label, reader_options=reader_options, module=module)
    try:
        if not force and already_loaded(con, local.where, local.checksum):
            return IngestResult(load_id=-1, file=local.where, source=local.label, status="unchanged")
        # One file at a time here: DuckDB's own memory limit, as the warehouse connection has; a bound
        # spills and slows a large month.
        return _load_prepared(con, _parse_local(local, memory_limit=None), shrink_limit=shrink_limit)
    finally:
        local.discard()


@dataclass
class _Local:
    """One local file on its way through load_local's steps: what it is, and once parsed, its scratch."""

    got: dict
    module: ModuleType
    where: str
    checksum: str
    label: str
    reader_options: dict | None
    scratch: Path | None = None
    parsed: ParsedFile | None = None
    unchanged: bool = False  # found loaded already when it was prepared (judged again when its turn comes)

    def discard(self) -> None:
        if self.scratch is not None:
            archive.remove_tree(self.scratch)
            self.scratch = None


def _prepare_local(got: dict, *, source_label: str | None, reader_options: dict | None,
                   module: ModuleType | None) -> _Local:
    module, where, checksum, label = _identify(Path(got["path"]), got.get("display_name"), source_label,
                                               got.get("sha256"), module)
    return _Local(got=got, module=module, where=where, checksum=checksum, label=label, reader_options=reader_options)


def _parse_local(local: _Local, *, memory_limit: str | None) -> _Local:
    """parse_step and check_step of a prepared local file into a scratch folder of its own."""
    local.scratch = _new_scratch()
    parsed = parse_step({**local.got, "sha256": local.checksum, "display_name": local.where},
                        source_label=local.label, reader_options=local.reader_options, module=local.module,
                        into=local.scratch, memory_limit=memory_limit)
    # A file named by hand loads with most of its rows refused (each quarantined with its line and
    # counted in the summary); downloads, which nobody looked at, are refused then (check_parsed).
    local.parsed = check_step(parsed, local.got, plausible_share=False)
    return local


def _load_prepared(con: duckdb.DuckDBPyConnection, local: _Local, *,
                   shrink_limit: float | None) -> IngestResult:
    return load_step(con, local.parsed, force=True, shrink_limit=shrink_limit)


def _identify(path: Path, display_name: str | None, source_label: str | None, checksum: str | None = None,
              module: ModuleType | None = None) -> tuple[ModuleType, str, str, str]:
    """(reader module, name shown in messages, SHA-256, source label) of one loadable file; a BACI release
    zip is refused here (it holds one file per year: load_release reads it). `checksum`: the SHA-256
    already known (a download's), not computed again; `module`: the reader already known (a release's
    member is BACI), not recognised again."""
    module = module or recognise(path)
    where = display_name or str(path)
    if _is_release(module, path):
        raise InputError(where, "a BACI release zip holds one file per year; load it with load_release "
                         "(`tradewatch ingest baci` or `ingest files`)")
    return module, where, checksum or archive.sha256(path), source_label or module.SOURCE


def _is_release(module: ModuleType, path: Path) -> bool:
    return hasattr(module, "is_release") and module.is_release(path)


def load_release(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    years: tuple[int, int] | None = None,
    force: bool = False,
    country_codes: Path | None = None,
    progress: Callable[[str, IngestResult | None], None] | None = None,
    shrink_limit: float | None = warehouse.SHRINK_LIMIT,
) -> list[IngestResult]:
    """Load the yearly data files inside a BACI release zip (those of `years`, first and last included,
    when given), one load per year named `zip:member`, each skipped when its content was loaded before
    (unless `force`), each through the same steps as any file (load_local). Codes come from
    `country_codes`, else the release's own country_codes_V*.csv. Members are extracted one at a time into
    scratch and removed after. `progress(name, result)` is called before (result None) and after each
    year. Stops at the first year that cannot be read; years before it stay loaded. InputError when no
    year of the release is in `years`."""
    from tradewatch.flows.sources import baci

    path = Path(path)
    chosen = load_release_plan(path, years)
    scratch = _new_scratch()
    try:
        codes = country_codes
        if codes is None and (member := baci.release_country_codes(path)):
            codes, _ = archive.extract_zip_member(path, member, scratch / "codes")
        results = []
        for member in chosen.values():
            where = f"{path}:{member}"
            if progress:
                progress(where, None)
            data, checksum = archive.extract_zip_member(path, member, scratch)
            try:
                result = load_local(con, {"path": str(data), "status": "local", "sha256": checksum,
                                          "display_name": where}, source_label=baci.SOURCE, force=force,
                                    reader_options={"country_codes": codes} if codes else None,
                                    module=baci, shrink_limit=shrink_limit)
            finally:
                data.unlink(missing_ok=True)  # a BACI year is ~300 MB: free the disk before the next
            results.append(result)
            if progress:
                progress(where, result)
        return results
    finally:
        archive.remove_tree(scratch)


def _stage_source(con: duckdb.DuckDBPyConnection, module: ModuleType, path: Path, *, table: str, source: str,
                  scratch: Path, where: str, reader_options: dict | None):
    """module.stage_file on `path`, or on its content decompressed into `scratch` when it is a gzip file
    (errors still name `where`, with line numbers of the content)."""
    if archive.is_gzip(path):
        path = archive.gunzip_to(path, scratch / "gunzip")
    return module.stage_file(con, path, table=table, source=source, scratch=scratch, display_name=where,
                             **(reader_options or {}))


@contextmanager
def _writing(where: str):
    """A DuckDB error while replacing partitions (a full disk, …) becomes one line: replace_partitions has
    rolled its transaction back, so nothing of the file is stored and the old partitions stay."""
    try:
        yield
    except duckdb.Error as exc:
        text = " ".join(str(exc).split())[:200]
        hint = "; free space there and run again" if "no space left" in text.lower() else ""
        raise TradewatchError(f"{where}: the warehouse could not be written, nothing from this file was stored "
                              f"({text}){hint}") from None


def _confidential_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    # Comext keeps confidential/unallocated partners as 'Q?Q' (see flows/countries.py).
    return int(con.execute(f"SELECT count(*) FROM {table} WHERE partner_iso3 LIKE 'Q_Q'").fetchone()[0])


def _with_details(loaded: warehouse.LoadResult, reasons: dict[str, int], confidential: int) -> IngestResult:
    result = IngestResult(**asdict(loaded), confidential=confidential, reasons=dict(reasons))
    result.message = "; ".join(f"{n} {reason}" for reason, n in list(reasons.items())[:3])
    return result


def _scratch_root() -> Path:
    root = settings.cache_dir() / "extract"
    root.mkdir(parents=True, exist_ok=True)
    # A process killed mid-load never reaches its cleanup; its scratch (a whole extracted month, ~400 MB)
    # would stay for good. Scratch folders carry their process id: remove those whose process is gone.
    for stale in root.glob("extract-*-*"):
        pid = stale.name.split("-")[1]
        if pid.isdigit() and not _process_alive(int(pid)):
            archive.remove_tree(stale)
    return root


def _new_scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix=f"extract-{os.getpid()}-", dir=_scratch_root()))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, but not ours to signal
    return True


def load_files(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[Path],
    *,
    source_label: str | None = None,
    force: bool = False,
    progress: Callable[[Path, warehouse.LoadResult], None] | None = None,
    reader_options: dict | None = None,
) -> list[IngestResult]:
    """Load several files in order, the next ones read meanwhile on worker threads (load_locals); stops at
    the first file that cannot be read (loads before it stay)."""
    files = [Path(path) for path in paths]
    gots = [{"path": str(path), "status": "local", "sha256": None, "display_name": str(path)} for path in files]
    by_name = {str(path): path for path in files}

    def told(name: str, result: IngestResult | None) -> None:
        if progress and result is not None:
            progress(by_name[name], result)

    return load_locals(con, gots, force=force, source_label=source_label, progress=told,
                       reader_options=[reader_options] * len(files))


def expand_paths(paths: Iterable[Path | str]) -> list[Path]:
    """Files named, and the data files inside named folders (sorted); InputError for a missing path.
    BACI's code tables found inside a folder are left out (they are read beside the data files)."""
    companions = registry.folder_companions()
    out: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                           and not p.name.endswith((".meta.json", ".part", ".parquet"))
                           and not p.name.startswith(companions))
            if not found:
                raise InputError(str(path), "folder holds no files")
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise InputError(str(path), "no such file or folder")
    return out


# ----------------------------------------------------------------------------------- parse to Parquet
# The Prefect flow parses files in parallel, away from the warehouse (one writer only), into Parquet in
# the cache; one task then loads the Parquet. These functions are that split, usable without Prefect.

@dataclass
class ParsedFile:
    """One source file read into canonical rows in Parquet: paths and counts only (cheap to pass between tasks)."""

    file: str
    path: str
    source: str
    checksum: str
    canonical: str
    quarantine: str
    rows: int
    quarantined: int
    confidential: int
    reasons: dict[str, int]
    by_product: bool = False  # replace only the products the file holds (see warehouse.replace_partitions)
    key_checked: bool = False  # check_parsed found every key once: loading need not group the rows again
    # Further canonical tables the reader staged (Eurostat SDMX totals): table name -> its Parquet path.
    also: dict[str, str] = field(default_factory=dict)
    not_available: int = 0  # observations the file marks not available (SDMX ':'), skipped
    # The reader grouped by the key itself and the Parquet was written for this load alone (parse_file
    # `into`): check_parsed need not group again. Never set for the shared cache, whose files may be
    # damaged at rest.
    reader_key_unique: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def parsed_dir() -> Path:
    return settings.cache_dir() / "parsed"


def parse_downloaded(got: dict, *, display_name: str | None = None, **options) -> ParsedFile:
    """parse_file for what download_fetch returned (`options` go to parse_file). The SHA-256 of a body just
    downloaded, or of a local file known to the caller, is not computed again; a copy kept from before (304)
    is hashed afresh, as it may have changed on disk since. When the file cannot be read, a conditionally
    downloaded copy is forgotten, or the next run's conditional request (304) would keep the broken file."""
    fresh = got.get("status") in ("downloaded", "resumed", "local")
    with _forget_refused(got):
        return parse_file(got["path"], display_name=display_name, checksum=got.get("sha256") if fresh else None,
                          **options)


@contextmanager
def _forget_refused(got: dict | None):
    """An InputError inside forgets the downloaded copy `got` (not a local file, nor a Comtrade answer,
    which is asked again unconditionally): a body cut short without a Content-Length looks complete until
    it is read, and the next run's conditional request (304) would otherwise keep the broken file."""
    try:
        yield
    except InputError:
        if got and got.get("sha256") and got.get("status") != "local":
            from tradewatch.flows import download

            download.forget(Path(got["path"]))
        raise


def parse_file(path: Path | str, *, display_name: str | None = None, source_label: str | None = None,
               reader_options: dict | None = None, memory_limit: str | None = "1GB", checksum: str | None = None,
               module: ModuleType | None = None, into: Path | None = None) -> ParsedFile:
    """Read one source file (recognised by content, unless its reader `module` is given) into canonical
    rows and quarantine rows, written as Parquet under the cache (reused when the same content was parsed
    before by this reader version), or into the folder `into` (written afresh, no manifest: the caller
    removes it). Uses its own in-memory DuckDB, so several files can be parsed at once (each within
    `memory_limit`; None: DuckDB's default, 80 % of RAM, for one file at a time). Raises InputError."""
    path = Path(path)
    module, where, checksum, label = _identify(path, display_name, source_label, checksum, module)
    if into is None:
        folder = parsed_dir() / f"{label}-{checksum[:32]}-{_variant(reader_options)}-v{PARSER_VERSION}"
        cached = _cached_parse(folder / "parsed.json", where, path)
        if cached:
            return cached
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(into)
    scratch = _new_scratch()
    spill = scratch / "spill"
    spill.mkdir()
    con = duckdb.connect()
    try:
        # A real Comext month is ~400 MB of text: bound memory and let DuckDB spill to the cache disk.
        # Paths under TRADEWATCH_HOME are configuration: quoted as literals, never spliced raw.
        if memory_limit:
            con.execute("SET memory_limit = ?", [memory_limit])
        con.execute("SET temp_directory = ?", [str(spill)])
        staged = _stage_source(con, module, path, table="parsed", source=label, scratch=scratch, where=where,
                               reader_options=reader_options)
        confidential = _confidential_rows(con, staged.table)
        canonical, quarantine, also = _write_parquet(con, staged, folder)
        parsed = ParsedFile(file=where, path=str(path), source=label, checksum=checksum, canonical=str(canonical),
                            quarantine=str(quarantine), rows=staged.rows, quarantined=staged.quarantined,
                            confidential=confidential, reasons=dict(staged.reasons),
                            by_product=getattr(module, "REPLACE_BY_PRODUCT", False), also=also,
                            not_available=getattr(staged, "not_available", 0),
                            reader_key_unique=into is not None and bool(staged.key_unique))
        if into is None:
            (folder / "parsed.json").write_text(parsed.to_json())
        return parsed
    finally:
        con.close()
        archive.remove_tree(scratch)


def _variant(reader_options: dict | None) -> str:
    """The reader options' part of a parse cache folder's name."""
    if not reader_options:
        return "plain"
    options = json.dumps({k: str(v) for k, v in sorted(reader_options.items())})
    return hashlib.sha256(options.encode()).hexdigest()[:8]


def _cached_parse(manifest: Path, where: str, path: Path) -> ParsedFile | None:
    """The ParsedFile a manifest in the parse cache records, named `where`, when its Parquet is still there."""
    if not manifest.exists():
        return None
    try:
        cached = ParsedFile(**json.loads(manifest.read_text()))
    except (ValueError, TypeError):
        return None
    if not (Path(cached.canonical).exists() and Path(cached.quarantine).exists()):
        return None
    cached.file, cached.path = where, str(path)
    return cached


def _write_parquet(con: duckdb.DuckDBPyConnection, staged, folder: Path) -> tuple[Path, Path, dict[str, str]]:
    """Write the staged canonical rows, the quarantine and any further canonical tables the reader staged
    (`staged.also`, e.g. SDMX totals for trade_totals, in that table's staged columns) as Parquet in `folder`."""
    canonical = folder / "canonical.parquet"
    quarantine = folder / "quarantine.parquet"
    columns = ", ".join(schema.COLUMN_NAMES)
    if getattr(staged, "parquet", None):
        # The reader wrote its rows as Parquet in its one pass: moved, not read and written again.
        shutil.move(staged.parquet, canonical)
    else:
        con.execute(f"COPY (SELECT {columns} FROM {staged.table}) TO ? (FORMAT parquet)", [str(canonical)])
    con.execute(f"COPY (SELECT file, line, reason, raw FROM {staged.quarantine_table}) TO ? (FORMAT parquet)",
                [str(quarantine)])
    also = {}
    for name, table in (getattr(staged, "also", None) or {}).items():
        target = folder / f"{name}.parquet"
        con.execute(f"COPY (SELECT {', '.join(schema.CANONICAL_TABLES[name].staged_columns)} FROM {table}) "
                    "TO ? (FORMAT parquet)", [str(target)])
        also[name] = str(target)
    return canonical, quarantine, also


def check_parsed(parsed: ParsedFile, *, plausible_share: bool = True) -> ParsedFile:
    """The declared checks (unique key, non-negative finite values, known codes and levels) on parsed
    Parquet, plus a plausible row count: some rows read, and (with `plausible_share`) fewer than half of
    them refused. Raises InputError."""
    if parsed.rows == 0 and parsed.quarantined > 0:
        _refuse_unreadable(parsed)
    if plausible_share and parsed.quarantined > parsed.rows:
        raise InputError(parsed.file, f"{parsed.quarantined:,} rows refused against {parsed.rows:,} read: "
                         "implausible for this source; first reasons: " + "; ".join(list(parsed.reasons)[:2]))
    con = duckdb.connect()
    try:
        # A view cannot hold a bound parameter (DuckDB: "this type of statement can't be prepared"): the
        # Parquet paths, ours under the cache, are quoted as literals (sql_path) here and in load_parsed.
        con.execute(f"CREATE VIEW staged AS SELECT * FROM read_parquet({sql_path(parsed.canonical)})")
        warehouse.check_staged(con, "staged", parsed.file, key_unique=parsed.reader_key_unique)
        for name, path in parsed.also.items():
            con.execute(f"CREATE OR REPLACE VIEW staged_also AS SELECT * FROM read_parquet({sql_path(path)})")
            warehouse.check_staged(con, "staged_also", parsed.file, table=name)
    finally:
        con.close()
    return dataclasses.replace(parsed, key_checked=True)


def _refuse_unreadable(parsed: ParsedFile) -> None:
    # A file none of whose rows can be read is the wrong file or a broken one; loading it as "empty" would
    # mark its checksum loaded and hide it from the next run. Named by its first refused line.
    con = duckdb.connect()
    try:
        line, reason = con.execute("SELECT line, reason FROM read_parquet(?) ORDER BY line LIMIT 1",
                                   [parsed.quarantine]).fetchone()
    finally:
        con.close()
    raise InputError(f"{parsed.file} line {line}" if line is not None else parsed.file,
                     f"no row could be read ({parsed.quarantined:,} refused); the first: {reason}")


def load_parsed(con: duckdb.DuckDBPyConnection, parsed: ParsedFile, *, force: bool = False,
                shrink_limit: float | None = warehouse.SHRINK_LIMIT) -> IngestResult:
    """Replace the partitions of one parsed file in the open (writable) warehouse and record the load.
    A file that came through check_parsed (`key_checked`) is not grouped again to look for repeated keys;
    any other gets every declared check here."""
    if not force and already_loaded(con, parsed.file, parsed.checksum):
        return IngestResult(load_id=-1, file=parsed.file, source=parsed.source, status="unchanged")
    load_id = warehouse.next_load_id(con)
    table = f"stage_{load_id}"
    try:
        # Views, not copies: the checks, the partition statistics and the insert read the Parquet itself,
        # which shortens the time the warehouse is held for writing.
        con.execute(f"CREATE TEMP VIEW {table} AS SELECT * FROM read_parquet({sql_path(parsed.canonical)})")
        con.execute(f"CREATE TEMP VIEW {table}_quarantine AS SELECT * FROM read_parquet({sql_path(parsed.quarantine)})")
        also = {}
        for name, path in parsed.also.items():
            also[name] = f"{table}_{name}"
            con.execute(f"CREATE TEMP VIEW {also[name]} AS SELECT * FROM read_parquet({sql_path(path)})")
        with _writing(parsed.file):
            loaded = warehouse.replace_partitions(con, table, file=parsed.file, checksum=parsed.checksum,
                                                  source=parsed.source, quarantine_table=f"{table}_quarantine",
                                                  load_id=load_id, key_unique=parsed.key_checked,
                                                  by_product=parsed.by_product, also=also or None,
                                                  shrink_limit=shrink_limit)
        result = _with_details(loaded, parsed.reasons, parsed.confidential)
        result.not_available = parsed.not_available
        return result
    finally:
        for view in ("", "_quarantine", *(f"_{name}" for name in parsed.also)):
            con.execute(f"DROP VIEW IF EXISTS {table}{view}")


# ------------------------------------------------------------------------------------ per-source runs

def month_range(first: str, last: str, *, option_from: str = "--from", option_to: str = "--to") -> list[str]:
    """YYYY-MM months from `first` to `last` inclusive; InputError naming the options when reversed."""
    months = month_labels(first, last)
    if not months:
        raise InputError(f"{option_from} {first} {option_to} {last}", "--from is after --to")
    return months


def years_between(first: str, last: str) -> list[str]:
    """YYYY years covering `first`..`last` (YYYY or YYYY-MM)."""
    y1, y2 = int(first[:4]), int(last[:4])
    if y2 < y1:
        raise InputError(f"--from {first} --to {last}", "--from is after --to")
    return [str(y) for y in range(y1, y2 + 1)]


def plan(source: str, *args, **kwargs) -> list[Fetch]:
    """What to bring into the cache for one source: its module's plan() (see sources/registry.py)."""
    return registry.module(source).plan(*args, **kwargs)


def plan_comext(periods: list[str], *, base_url: str | None = None, source_dir: Path | None = None) -> list[Fetch]:
    """sources.comext.plan: one Fetch per period, local (`source_dir`) or from Eurostat (or `base_url`)."""
    return plan("comext", periods, base_url=base_url, source_dir=source_dir)


def comtrade_items(reporters: list[str], periods: list[str], *, freq: str, products: list[str] | None,
                   base_url: str | None = None) -> list[Fetch]:
    """sources.comtrade.plan: one Fetch per Comtrade unit of work (reporter × group of periods)."""
    return plan("comtrade", reporters, periods, freq=freq, products=products, base_url=base_url)


def download_fetch(item: Fetch, *, allowed_hosts: Iterable[str] = (),
                   progress: Callable[[int, int | None], None] | None = None) -> dict:
    """Bring one Fetch into the cache with its source module's fetch(). Returns {'path', 'status'
    ('local'|'downloaded'|'resumed'|'unchanged'), 'sha256'}. Raises DownloadError (retries included:
    download.fetch is the one layer that retries) or ComtradeError."""
    return registry.module(item.source).fetch(item, allowed_hosts=allowed_hosts, progress=progress)


# ------------------------------------------------------------------------------ the one task graph
# download → parse to Parquet → check → load. run_plain calls these steps in turn for each file; the
# Prefect `ingest` flow (prefect_flows.py) and the pipeline (pipeline.py) wrap each one as a task and add
# only orchestration (parallelism, events, months not published yet, the configured scope). The rules
# (retries: download.fetch's alone; which copies are forgotten; the declared checks) live here.


def download_step(item: Fetch, *, allowed_hosts: Iterable[str] = (),
                  progress: Callable[[int, int | None], None] | None = None) -> dict:
    """Step 1: bring one planned file into the cache (download_fetch). Returns {'path', 'status',
    'sha256', 'display_name'}, what the parse step takes."""
    got = download_fetch(item, allowed_hosts=allowed_hosts, progress=progress)
    return {**got, "display_name": item.display_name or got["path"]}


def parse_step(downloaded: dict, **options) -> ParsedFile:
    """Step 2: read the cached file into canonical and quarantine Parquet (parse_downloaded; `options`:
    parse_file's source_label, reader_options, module, into)."""
    return parse_downloaded(downloaded, display_name=downloaded["display_name"], **options)


def check_step(parsed: ParsedFile, downloaded: dict | None = None, *, plausible_share: bool = True) -> ParsedFile:
    """Step 3: the declared checks (check_parsed); a refused download is forgotten as in step 2."""
    with _forget_refused(downloaded):
        return check_parsed(parsed, plausible_share=plausible_share)


def load_step(con: duckdb.DuckDBPyConnection, parsed: ParsedFile, *, force: bool = False,
              shrink_limit: float | None = warehouse.SHRINK_LIMIT) -> IngestResult:
    """Step 4, the one writer: replace the file's partitions in the open warehouse (load_parsed)."""
    return load_parsed(con, parsed, force=force, shrink_limit=shrink_limit)


# ------------------------------------------------------------------------- several files: parse ahead
# Several files are read (downloaded, decompressed, parsed, checked: each in its own DuckDB, which lets go
# of the GIL, as LZMA and hashing do) on worker threads while the one writer loads the finished ones, in
# the order given. At most `workers` files are read ahead of the one being loaded, so memory and scratch
# disk do not grow with the number of files.

PARSE_WORKERS_ENV = "TRADEWATCH_PARSE_WORKERS"
# The DuckDB memory bound of each file read beside others (alone, a file gets DuckDB's default).
PARALLEL_PARSE_MEMORY = "1GB"


def parse_workers() -> int:
    """How many files are read at once ahead of the writer: $TRADEWATCH_PARSE_WORKERS, else the number of
    cores (at most 4: a month read with a bounded memory needs about 1.3 GB). 1 reads file by file."""
    given = os.environ.get(PARSE_WORKERS_ENV, "").strip()
    if given:
        if not given.isdigit() or int(given) < 1:
            raise InputError(f"{PARSE_WORKERS_ENV}={given}", "expected a whole number of at least 1")
        return int(given)
    return max(1, min(4, os.cpu_count() or 1))


def _in_order(items: list, work: Callable, *, workers: int, discard: Callable = lambda result: None) -> Iterator[Future]:
    """Futures of work(item) for `items`, yielded in order. With workers > 1 the work runs on that many
    threads, at most `workers` items ahead of the one the caller takes; each future is done (or raises its
    error, through .result()) when the caller asks for it. Results of items never taken (the caller
    stopped) go to `discard` once done, work not started is cancelled."""
    if workers <= 1 or len(items) <= 1:
        for item in items:
            future: Future = Future()
            try:
                future.set_result(work(item))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                if not isinstance(exc, Exception):
                    raise
                future.set_exception(exc)
            yield future
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tradewatch-read")
    abandoned = threading.Event()
    waiting: deque[Future] = deque()
    ahead = iter(items)

    def guarded(item):
        return None if abandoned.is_set() else work(item)

    def submit() -> None:
        for item in ahead:
            waiting.append(pool.submit(guarded, item))
            return

    try:
        for _ in range(workers):
            submit()
        while waiting:
            future = waiting.popleft()
            future.exception()  # wait for it, whatever it ended with
            submit()
            yield future
    finally:
        abandoned.set()
        for future in waiting:
            if not future.cancel():
                future.add_done_callback(lambda done: done.exception() is None and done.result() is not None
                                         and discard(done.result()))
        # Wait for the reads already running (a stop or an error comes at most one read late): when this
        # returns no thread is still working and every scratch folder is gone.
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class RunSummary:
    """What one ingest run did, per file, plus totals for the summary table."""

    results: list[IngestResult] = field(default_factory=list)
    downloads: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def totals(self) -> dict:
        ok = [r for r in self.results if r.status != "unchanged"]
        return {
            "files": len(self.results),
            "rows": sum(r.rows for r in ok),
            "partitions": sum(r.partitions for r in ok),
            "quarantined": sum(r.quarantined for r in ok),
            "confidential": sum(r.confidential for r in ok),
            "unchanged": sum(1 for r in self.results if r.status == "unchanged"),
            "not_available": sum(r.not_available for r in ok),
            "value_sum": _merge_sums(r.value_sum for r in ok),
            "downloads": dict(self.downloads),
            "errors": list(self.errors),
        }

    def to_dict(self) -> dict:
        return {"totals": self.totals, "files": [r.summary() for r in self.results]}


def _merge_sums(sums: Iterable[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in sums:
        for currency, value in item.items():
            out[currency] = out.get(currency, 0.0) + value
    return out


EventFn = Callable[..., None]


def run_plain(db: Path | str | None, items: list[Fetch], *, force: bool = False, allowed_hosts: Iterable[str] = (),
              on_event: EventFn | None = None, keep_going: bool = False,
              shrink_limit: float | None = warehouse.SHRINK_LIMIT) -> RunSummary:
    """The ingest task graph in this process, without Prefect: for each item in order, download_step →
    parse_step → check_step → load_step (the steps and rules of the `ingest` flow), one writer.
    `on_event(kind, **info)` gets 'download', 'download-progress', 'downloaded', 'parse', 'load',
    'loaded', 'failed'. Stops at the first failure (files loaded before it stay) unless `keep_going`."""
    emit = on_event or (lambda kind, **info: None)
    summary = RunSummary()
    con = warehouse.connect(db)
    workers = parse_workers()
    counting = threading.Lock()

    def read(item: Fetch) -> ParsedFile:  # on a reading thread: download_step → parse_step → check_step
        name = _item_name(item)
        emit("download", item=item, name=name)
        got = download_step(item, allowed_hosts=allowed_hosts,
                            progress=lambda done, total: emit("download-progress", name=name, done=done, total=total))
        with counting:  # a download counts even when its file then fails to parse
            summary.downloads[got["status"]] = summary.downloads.get(got["status"], 0) + 1
        emit("downloaded", name=name, status=got["status"])
        emit("parse", name=got["display_name"])
        return check_step(parse_step(got), got)

    try:
        with closing(_in_order(list(items), read, workers=workers)) as reads:
            for item, future in zip(items, reads):
                try:
                    _load_item(con, item, future, summary, emit, force=force, shrink_limit=shrink_limit)
                except TradewatchError as exc:
                    summary.errors.append(str(exc))
                    emit("failed", name=_item_name(item), error=str(exc))
                    if not keep_going:
                        raise
    finally:
        con.close()
    return summary


def _item_name(item: Fetch) -> str:
    return item.display_name or item.local or item.url or item.period


def _load_item(con: duckdb.DuckDBPyConnection, item: Fetch, future: Future, summary: RunSummary, emit: EventFn, *,
               force: bool, shrink_limit: float | None = warehouse.SHRINK_LIMIT) -> None:
    """load_step of one file read on a reading thread (its error, if it failed, is raised here)."""
    name = _item_name(item)
    parsed = future.result()
    emit("load", name=name)
    result = load_step(con, parsed, force=force, shrink_limit=shrink_limit)
    summary.results.append(result)
    emit("loaded", name=name, result=result)


def ingest_paths(db: Path | str | None, paths: Iterable[Path | str], *, force: bool = False,
                 country_codes: Path | None = None, years: tuple[int, int] | None = None,
                 on_event: EventFn | None = None, shrink_limit: float | None = warehouse.SHRINK_LIMIT) -> RunSummary:
    """`tradewatch ingest files`: load each file (folders expanded), recognised by content, in this
    process (no Prefect), through the steps every ingest takes (download_step: the file as it is;
    parse_step → check_step → load_step, see load_local). BACI files use `country_codes` when given; a
    BACI release zip loads each of its years (those of `years` when given) as its own load `zip:member`.
    `on_event` gets 'load' and 'loaded' per file or year. Stops at the first unreadable file; loads before
    it stay committed."""
    files = expand_paths(paths)
    modules = {}
    for path in files:
        modules[path] = recognise(path)  # refuse a wrong file before loading any
        if _is_release(modules[path], path):
            load_release_plan(path, years)  # a release without the years asked for fails here too
    emit = on_event or (lambda kind, **info: None)

    def progress(name: str, result: IngestResult | None) -> None:  # one file, or one year of a release
        if result is None:
            emit("load", name=name)
        else:
            emit("loaded", name=name, result=result)

    summary = RunSummary()
    codes = Path(country_codes) if country_codes else None
    con = warehouse.connect(db)
    try:
        index = 0
        while index < len(files):
            path = files[index]
            if _is_release(modules[path], path):
                summary.results.extend(load_release(con, path, years=years, force=force, country_codes=codes,
                                                    progress=progress, shrink_limit=shrink_limit))
                index += 1
                continue
            # The files up to the next release zip: read ahead on worker threads, loaded in order.
            run = []
            while index < len(files) and not _is_release(modules[files[index]], files[index]):
                run.append(files[index])
                index += 1
            gots = [download_step(Fetch(modules[f].SOURCE, "", local=str(f), display_name=str(f))) for f in run]
            options = [{"country_codes": codes} if codes and modules[f].SOURCE == "baci" else None for f in run]
            summary.results.extend(load_locals(con, gots, force=force, modules=[modules[f] for f in run],
                                               reader_options=options, shrink_limit=shrink_limit, progress=progress))
    finally:
        con.close()
    return summary


def load_locals(con: duckdb.DuckDBPyConnection, gots: list[dict], *, force: bool = False,
                modules: list[ModuleType | None] | None = None, reader_options: list[dict | None] | None = None,
                source_label: str | None = None, shrink_limit: float | None = warehouse.SHRINK_LIMIT,
                progress: Callable[[str, IngestResult | None], None] | None = None) -> list[IngestResult]:
    """load_local for each of `gots` (download_step results of local files) in order, the next files
    identified, hashed, parsed and checked on parse_workers() threads while this thread loads (one
    writer), at most that many files ahead. Each file is judged unchanged before it is parsed and again
    when its turn comes (a file before it in the list may have replaced its partitions). `progress(name,
    result)` is called before (result None) and after each load. Stops at the first file that cannot be
    read (its error raised at its turn; loads before it stay committed)."""
    count = len(gots)
    modules = modules or [None] * count
    reader_options = reader_options or [None] * count
    workers = parse_workers()
    memory = PARALLEL_PARSE_MEMORY if workers > 1 and count > 1 else None
    cursors: Queue = Queue()
    for _ in range(min(workers, count)):
        cursors.put(con.cursor())  # one connection a reading thread, made here (a connection is one thread's)

    def read(i: int) -> _Local:
        local = _prepare_local(gots[i], source_label=source_label, reader_options=reader_options[i], module=modules[i])
        if not force:
            cursor = cursors.get()
            try:
                local.unchanged = already_loaded(cursor, local.where, local.checksum)
            finally:
                cursors.put(cursor)
        if not local.unchanged:
            try:
                _parse_local(local, memory_limit=memory)
            except BaseException:
                local.discard()
                raise
        return local

    results = []
    try:
        with closing(_in_order(list(range(count)), read, workers=workers, discard=_Local.discard)) as reads:
            for got, future in zip(gots, reads):
                name = got.get("display_name") or got["path"]
                if progress:
                    progress(name, None)
                local = future.result()
                try:
                    if not force and already_loaded(con, local.where, local.checksum):
                        result = IngestResult(load_id=-1, file=local.where, source=local.label, status="unchanged")
                    else:
                        if local.parsed is None:  # judged unchanged when read ahead, no longer now
                            _parse_local(local, memory_limit=None)
                        result = _load_prepared(con, local, shrink_limit=shrink_limit)
                finally:
                    local.discard()
                results.append(result)
                if progress:
                    progress(name, result)
    finally:
        while not cursors.empty():
            cursors.get().close()
    return results


def load_release_plan(path: Path, years: tuple[int, int] | None = None) -> dict[int, str]:
    """Year -> member of a BACI release zip that load_release would load (sources.baci.release_plan)."""
    from tradewatch.flows.sources import baci

    return baci.release_plan(path, years)


def ingest_ecb(db: Path | str | None, *, file: Path | None = None, base_url: str | None = None,
               force: bool = False) -> dict:
    """Download the ECB USD-per-EUR monthly series (or read `file`) and load it into fx_rates. Returns
    the RatesResult as a dict plus the download status."""
    from urllib.parse import urlsplit

    from tradewatch.flows.sources import ecb

    (item,) = ecb.plan(file=file, base_url=base_url)
    # As for the other sources, a --base-url the user named is an allowed host (https unless loopback).
    allowed = [urlsplit(base_url).hostname or ""] if base_url and file is None else []
    got = download_fetch(item, allowed_hosts=allowed)
    with warehouse.opened(db) as con:
        result = ecb.load_rates(con, Path(got["path"]), display_name=item.display_name, force=force)
    return {**asdict(result), "download": got["status"]}
