"""Backups of the warehouse: EXPORT DATABASE to Parquet with a verified manifest, and IMPORT DATABASE into a new file swapped in whole."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from tradewatch.flows import warehouse
from tradewatch.flows.core.errors import InputError, TradewatchError, WarehouseBusy

MANIFEST = "manifest.json"
FORMAT = "tradewatch-backup/1"
# The files EXPORT DATABASE writes besides one Parquet file per table; IMPORT DATABASE executes them.
SCRIPTS = ("schema.sql", "load.sql")
SEQUENCE = "load_ids"
LOAD_ID = "load_id"

_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
                  "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
_FLOAT_TYPES = {"FLOAT", "DOUBLE"}
_COPY_LINE = re.compile(r"^COPY (?P<table>.+?) FROM '(?P<path>[^']+)' \(FORMAT 'parquet'.*\);$")


@dataclass
class BackupResult:
    """What one backup wrote: the folder, the warehouse read, its tables' rows, whether it was the demo."""

    out: Path
    source: Path
    schema_version: int
    tables: dict[str, int]
    next_load_id: int | None
    demo: bool = False
    bytes: int = 0


@dataclass
class RestoreResult:
    """What one restore did: the warehouse written, its tables' rows, the next load id, the file kept aside."""

    target: Path
    source: Path
    schema_version: int
    tables: dict[str, int]
    next_load_id: int | None
    created_at: str
    demo: bool = False
    kept: Path | None = None


# ---------------------------------------------------------------------------------------------- statistics


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _relation(key: str) -> str:
    """The SQL name of catalog table `key` ('name' in main, 'schema.name' elsewhere)."""
    return ".".join(_quote(part) for part in key.split(".", 1)) if "." in key else _quote(key)


def list_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every table of the open warehouse (schema_version included), 'name' in schema main, 'schema.name'
    elsewhere, sorted. Read from the catalog, so a table added by a later migration is backed up too."""
    rows = con.execute("""SELECT schema_name, table_name FROM duckdb_tables()
                          WHERE database_name = current_database() AND NOT temporary
                          ORDER BY schema_name <> 'main', schema_name, table_name""").fetchall()
    return [name if schema_name == "main" else f"{schema_name}.{name}" for schema_name, name in rows]


def relation_stats(con: duckdb.DuckDBPyConnection, relation: str) -> dict:
    """One scan of `relation` (a table or a read_parquet(…) call; SQL text built from catalog names or our
    own paths): rows, per numeric column its sum (integers exactly, floats as a compensated sum, NaN and
    ±inf kept), and a fingerprint of the content (the sum of the rows' hashes, independent of row order)."""
    columns = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    sums = []
    for name, kind, *_ in columns:
        if kind in _INTEGER_TYPES:
            sums.append((name, f"sum({_quote(name)})::HUGEINT"))
        elif kind in _FLOAT_TYPES or kind.startswith("DECIMAL"):
            sums.append((name, f"fsum({_quote(name)}::DOUBLE)"))
    selects = ["count(*)", "sum(hash(_row))::HUGEINT", *(sql for _, sql in sums)]
    row = con.execute(f"SELECT {', '.join(selects)} FROM {relation} _row").fetchall()[0]
    return {
        "rows": int(row[0]),
        "fingerprint": None if row[1] is None else str(row[1]),
        "sums": {name: (None if value is None else int(value) if isinstance(value, int) else float(value))
                 for (name, _), value in zip(sums, row[2:])},
    }


def _same_number(expected, found) -> bool:
    if expected is None or found is None:
        return expected is None and found is None
    if isinstance(expected, float) or isinstance(found, float):
        if math.isnan(expected) or math.isnan(found):
            return math.isnan(expected) and math.isnan(found)
        # A floating-point sum depends slightly on the order DuckDB's threads add in; a real difference
        # (a changed value) is far larger than this.
        return math.isclose(expected, found, rel_tol=1e-9, abs_tol=1e-6)
    return expected == found


def stats_difference(expected: dict, found: dict, *, compare_fingerprint: bool = True) -> str | None:
    """What differs between two relation_stats results, in words, or None when they match."""
    if expected["rows"] != found["rows"]:
        return f"{found['rows']:,} rows, expected {expected['rows']:,}"
    if set(expected["sums"]) != set(found["sums"]):
        return f"numeric columns {sorted(found['sums'])}, expected {sorted(expected['sums'])}"
    for column, value in expected["sums"].items():
        if not _same_number(value, found["sums"][column]):
            return f"sum of {column} is {found['sums'][column]!r}, expected {value!r}"
    if compare_fingerprint and expected.get("fingerprint") != found.get("fingerprint"):
        return "content differs (row fingerprint), though counts and sums match"
    return None


def _sequences(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """Per sequence of the warehouse, the value its next nextval() returns (read without taking one)."""
    rows = con.execute("""SELECT sequence_name, start_value, increment_by, last_value FROM duckdb_sequences()
                          WHERE database_name = current_database() AND NOT temporary""").fetchall()
    return {name: {"next_value": int(start if last is None else last + step)} for name, start, step, last in rows}


def _max_load_id(con: duckdb.DuckDBPyConnection, tables: list[str]) -> int | None:
    """The largest load id any table records (every table with a load_id column), None when none does."""
    found = []
    for key in tables:
        names = [c[0] for c in con.execute(f"DESCRIBE {_relation(key)}").fetchall()]
        if LOAD_ID in names:
            found.append(con.execute(f"SELECT max({LOAD_ID}) FROM {_relation(key)}").fetchall()[0][0])
    found = [int(value) for value in found if value is not None]
    return max(found) if found else None


# -------------------------------------------------------------------------------------------------- backup


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_out(out: Path) -> None:
    """OUT must be a new folder (or an empty one) in a folder that exists."""
    if out.exists() or out.is_symlink():
        if not out.is_dir() or any(out.iterdir()):
            raise InputError(str(out), "already exists; expected a new (or empty) folder for the backup")
    if not out.parent.is_dir():
        raise InputError(str(out), f"folder {out.parent} does not exist; expected OUT inside an existing folder")


def _parquet_files(folder: Path) -> dict[str, str]:
    """Table → Parquet file name, read from the load.sql EXPORT DATABASE wrote (it names the files)."""
    files = {}
    for line in (folder / "load.sql").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        match = _COPY_LINE.match(line.strip())
        if not match:
            raise InputError(str(folder / "load.sql"), f"unexpected statement {line.strip()[:80]!r}; expected "
                             "only COPY … FROM '<table>.parquet' lines")
        parts = re.findall(r'"((?:[^"]|"")*)"|([^."]+)', match["table"])
        name = ".".join(quoted.replace('""', '"') or bare for quoted, bare in parts)
        files[name] = Path(match["path"]).name
    return files


def _snapshot(con: duckdb.DuckDBPyConnection, scratch: Path) -> tuple[dict[str, dict], dict[str, dict], int, bool]:
    """In one read transaction: every table's statistics, the sequences, the schema version, whether it
    is the demo, and EXPORT DATABASE of that same state into `scratch`."""
    con.execute("BEGIN TRANSACTION")
    try:
        tables = {key: relation_stats(con, _relation(key)) for key in list_tables(con)}
        sequences = _sequences(con)
        version = warehouse.schema_version(con)
        demo = warehouse.is_demo(con)
        con.execute(f"EXPORT DATABASE '{_sql_text(scratch)}' (FORMAT parquet, COMPRESSION zstd)")
    finally:
        con.execute("ROLLBACK")
    return tables, sequences, version, demo


def _sql_text(path: Path) -> str:
    return str(path).replace("'", "''")


def _parquet_stats(reader: duckdb.DuckDBPyConnection, folder: Path, file: str) -> dict:
    return relation_stats(reader, f"read_parquet('{_sql_text(folder / file)}')")


def _verify_export(scratch: Path, tables: dict[str, dict]) -> dict[str, str]:
    """Re-read each Parquet file of the export and compare it with the statistics taken before; returns
    table → file name. Raises TradewatchError naming the file and what differs."""
    files = _parquet_files(scratch)
    if set(files) != set(tables):
        raise TradewatchError(f"{scratch}: the export holds tables {sorted(files)}, expected {sorted(tables)}")
    with duckdb.connect() as reader:
        for key, file in files.items():
            difference = stats_difference(tables[key], _parquet_stats(reader, scratch, file))
            if difference:
                raise TradewatchError(f"{scratch / file}: the exported file reads back with {difference}")
    return files


def _fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def backup(db: Path | str | None, out: Path | str, *, demo: bool = False,
           on_wait: Callable[[str], None] | None = None) -> BackupResult:
    """Back up the warehouse `db` (a --db value; None: the default, or with `demo` the demo's while the real
    one holds no trade rows) into the new folder `out`: one Parquet file per table (zstd), DuckDB's
    schema.sql and load.sql, and manifest.json (versions, time, source, per table its rows, numeric sums,
    fingerprint and file SHA-256, the sequences). Waits for a writing process like every reader
    (warehouse.connect), then reads one consistent snapshot. The folder is written beside `out` and renamed
    onto it only once the Parquet files read back with the same counts and sums: never a half backup."""
    out = Path(out).expanduser().absolute()
    _check_out(out)
    source = warehouse.resolve_db_path(db, demo=demo).absolute()
    scratch = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        con = warehouse.connect(db, read_only=True, on_wait=on_wait, demo=demo)
        try:
            tables, sequences, version, is_demo = _snapshot(con, scratch)
        finally:
            con.close()
        files = _verify_export(scratch, tables)
        manifest = _manifest(scratch, source, tables, files, sequences, version, is_demo)
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _fsync_folder(scratch)
        _rename_into(scratch, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    size = sum(path.stat().st_size for path in out.iterdir())
    return BackupResult(out=out, source=source, schema_version=version, demo=is_demo, bytes=size,
                        tables={key: stats["rows"] for key, stats in tables.items()},
                        next_load_id=sequences.get(SEQUENCE, {}).get("next_value"))


def _rename_into(scratch: Path, out: Path) -> None:
    try:
        os.rename(scratch, out)  # onto a missing or empty folder: atomic on one file system
    except OSError as exc:
        raise InputError(str(out), f"cannot be made the backup folder ({exc.strerror}); expected a new "
                         "(or empty) folder") from None


def _manifest(scratch: Path, source: Path, tables: dict[str, dict], files: dict[str, str],
              sequences: dict[str, dict], version: int, is_demo: bool) -> dict:
    from importlib.metadata import PackageNotFoundError, version as package_version

    try:
        tradewatch_version = package_version("tradewatch")
    except PackageNotFoundError:
        tradewatch_version = "unknown"
    return {
        "format": FORMAT,
        "tradewatch_version": tradewatch_version,
        "duckdb_version": duckdb.__version__,
        "schema_version": version,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": str(source),
        "demo": is_demo,
        "tables": {key: {**stats, "file": files[key], "sha256": _sha256(scratch / files[key])}
                   for key, stats in tables.items()},
        "scripts": {name: _sha256(scratch / name) for name in SCRIPTS},
        # EXPORT DATABASE writes each sequence with its next value (DuckDB 2.0), and restore checks it
        # continues after the restored load ids; the value is kept here too, so a restore can tell.
        "sequences": sequences,
    }


# ------------------------------------------------------------------------------------------------- restore


def read_manifest(source: Path) -> dict:
    """The manifest of backup folder `source`, checked for shape. Raises InputError naming the file."""
    where = source / MANIFEST
    if not source.is_dir():
        raise InputError(str(source), "is not a folder; expected a backup folder written by `tradewatch backup`")
    if not where.is_file():
        raise InputError(str(where), "is missing; expected the manifest `tradewatch backup` writes")
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(str(where), f"is not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise InputError(str(where), f"format is {found!r}, expected {FORMAT!r}")
    for key, kind in (("tables", dict), ("scripts", dict), ("sequences", dict), ("schema_version", int),
                      ("created_at", str), ("duckdb_version", str)):
        if not isinstance(manifest.get(key), kind):
            raise InputError(str(where), f"`{key}` is missing or not a {kind.__name__}")
    for key, entry in manifest["tables"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("rows"), int)
                and isinstance(entry.get("sums"), dict) and isinstance(entry.get("sha256"), str)
                and "/" not in entry["file"] and entry["file"] not in ("", ".", "..")):
            raise InputError(str(where), f"table {key!r}: expected file, sha256, rows and sums")
    if manifest["schema_version"] > warehouse.SCHEMA_VERSION:
        raise InputError(str(where), f"schema version {manifest['schema_version']} is newer than this "
                         f"tradewatch's {warehouse.SCHEMA_VERSION}; restore it with a newer tradewatch")
    return manifest


def verify_backup(source: Path, manifest: dict) -> None:
    """Every file of the backup against the manifest: the scripts' and Parquet files' SHA-256, then each
    Parquet file's rows and numeric sums. Raises InputError naming the first file that differs."""
    files = {**{name: digest for name, digest in manifest["scripts"].items()},
             **{entry["file"]: entry["sha256"] for entry in manifest["tables"].values()}}
    for name in SCRIPTS:
        if name not in files:
            raise InputError(str(source / MANIFEST), f"lists no checksum for {name}")
    for name, digest in files.items():
        path = source / name
        if not path.is_file():
            raise InputError(str(path), "is missing; expected it as the manifest lists it")
        if _sha256(path) != digest:
            raise InputError(str(path), f"SHA-256 {_sha256(path)[:12]}… differs from the manifest's {digest[:12]}…; "
                             "the file was changed or truncated after the backup")
    listed = _parquet_files(source)
    if set(listed) != set(manifest["tables"]):
        raise InputError(str(source / "load.sql"), f"loads tables {sorted(listed)}, the manifest lists "
                         f"{sorted(manifest['tables'])}")
    for key, entry in manifest["tables"].items():
        if listed[key] != entry["file"]:
            raise InputError(str(source / "load.sql"), f"loads table {key} from {listed[key]}, the manifest "
                             f"names {entry['file']}")
    same_duckdb = manifest["duckdb_version"] == duckdb.__version__
    with duckdb.connect() as reader:
        for key, entry in manifest["tables"].items():
            path = source / entry["file"]
            try:
                found = _parquet_stats(reader, source, entry["file"])
            except duckdb.Error as exc:
                raise InputError(str(path), f"cannot be read as Parquet ({str(exc).splitlines()[0]})") from None
            difference = stats_difference(entry, found, compare_fingerprint=same_duckdb)
            if difference:
                raise InputError(str(path), f"table {key} has {difference} in the manifest")


def _holds_data(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows per table of an open warehouse, for the tables that hold any (schema_version aside)."""
    counts = {}
    for key in list_tables(con):
        if key != "schema_version":
            rows = con.execute(f"SELECT count(*) FROM {_relation(key)}").fetchall()[0][0]
            if rows:
                counts[key] = int(rows)
    return counts


def _guard_target(target: Path, *, force: bool, on_wait) -> duckdb.DuckDBPyConnection | None:
    """A read-only connection held on the existing target while the restore runs, so no other process
    starts writing the file about to be replaced (None when there is no target yet). Waits for a writer
    like every command; refuses a target that holds data unless `force`."""
    if not target.exists():
        return None
    try:
        con = warehouse.connect(target, read_only=True, on_wait=on_wait)
    except WarehouseBusy as exc:
        raise WarehouseBusy(f"{exc}; nothing was restored") from None
    except TradewatchError:
        # An older schema or a file that is no warehouse: still hold it if DuckDB can open it at all.
        try:
            con = duckdb.connect(str(target), read_only=True)
        except duckdb.Error:
            if not force:
                raise InputError(str(target), "exists and cannot be read as a warehouse; pass --force to "
                                 f"replace it (it is kept as {_kept_name(target).name})") from None
            return None
    try:
        held = _holds_data(con)
    except duckdb.Error:
        held = {"(unreadable)": 1}
    if held and not force:
        con.close()
        largest = sorted(held.items(), key=lambda item: (-item[1], item[0]))[:4]
        shown = ", ".join(f"{key} {rows:,} rows" for key, rows in largest)
        raise InputError(str(target), f"holds data ({shown}); pass --force to replace it (it is kept as "
                         f"{_kept_name(target).name})")
    return con


def _kept_name(target: Path) -> Path:
    return target.with_name(target.name + ".before-restore")


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _import(scratch: Path, source: Path, manifest: dict) -> tuple[dict[str, int], int | None, int]:
    """IMPORT DATABASE `source` into the new file `scratch`, compare every table with the manifest, make
    load_ids continue after the restored load ids, migrate to this tradewatch's schema and close (a
    checkpoint: no .wal is left). Returns rows per table, the next load id and the schema version."""
    con = duckdb.connect(str(scratch))
    try:
        con.execute(f"IMPORT DATABASE '{_sql_text(source)}'")
        tables = list_tables(con)
        if set(tables) != set(manifest["tables"]):
            raise TradewatchError(f"{source}: the import made tables {sorted(tables)}, the manifest lists "
                                  f"{sorted(manifest['tables'])}")
        same_duckdb = manifest["duckdb_version"] == duckdb.__version__
        for key in tables:
            difference = stats_difference(manifest["tables"][key], relation_stats(con, _relation(key)),
                                          compare_fingerprint=same_duckdb)
            if difference:
                raise TradewatchError(f"{source}: table {key} restored with {difference}")
        next_load_id = _continue_sequence(con, tables, manifest)
        version = warehouse.migrate(con)
        con.execute("CHECKPOINT")
        rows = {key: manifest["tables"][key]["rows"] for key in tables}
    finally:
        con.close()
    if _wal(scratch).exists():  # a clean close checkpoints; a log left over would be lost in the swap
        raise TradewatchError(f"{_wal(scratch)}: the restored warehouse was not checkpointed; nothing was restored")
    return rows, next_load_id, version


def _continue_sequence(con: duckdb.DuckDBPyConnection, tables: list[str], manifest: dict) -> int | None:
    """Make load_ids return, next, more than every restored load id and no less than the backup's next
    value (so the next ingest gets a fresh id); returns that next value (None without the sequence)."""
    recorded = manifest["sequences"].get(SEQUENCE, {}).get("next_value")
    present = _sequences(con).get(SEQUENCE, {}).get("next_value")
    if recorded is None and present is None:
        return None
    largest = _max_load_id(con, tables)
    wanted = max(value for value in (recorded, present, None if largest is None else largest + 1, 1)
                 if value is not None)
    if present != wanted:
        con.execute(f"CREATE OR REPLACE SEQUENCE {SEQUENCE} START {int(wanted)}")
    return wanted


def _swap(scratch: Path, target: Path, *, keep: bool) -> Path | None:
    """Put `scratch` in place of `target` with one rename. With `keep`, the old file (and its .wal) stays
    as <target>.before-restore: a hard link made first, so the target path never goes missing."""
    kept = None
    if keep and target.exists():
        kept = _kept_name(target)
        for stale in (kept, _wal(kept)):
            stale.unlink(missing_ok=True)
        try:
            os.link(target, kept)
        except OSError:
            shutil.copy2(target, kept)
        if _wal(target).exists():
            os.replace(_wal(target), _wal(kept))
    else:
        # Checked to hold no data; its log must not be replayed onto the restored file.
        _wal(target).unlink(missing_ok=True)
    os.replace(scratch, target)
    return kept


def restore(source: Path | str, db: Path | str | None = None, *, force: bool = False,
            on_wait: Callable[[str], None] | None = None) -> RestoreResult:
    """Restore backup folder `source` into warehouse `db` (a --db value; None: the default warehouse, or the
    demo's own for a backup of the synthetic demo). The manifest and every file are verified first; a
    target holding data is refused unless `force` (then kept as <target>.before-restore). The backup is
    imported into a new file beside the target, compared with the manifest again, and renamed onto the
    target in one step: a failure leaves the target as it was."""
    source = Path(source).expanduser().absolute()
    manifest = read_manifest(source)
    verify_backup(source, manifest)
    if db is None and manifest.get("demo"):
        from tradewatch.flows.core import settings

        target = settings.demo_db_path().absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
    else:
        target = warehouse.resolve_db_path(db).absolute()
    guard = _guard_target(target, force=force, on_wait=on_wait)
    scratch = target.parent / f".{target.name}.restore-{os.getpid()}.duckdb"
    try:
        for stale in (scratch, _wal(scratch)):
            stale.unlink(missing_ok=True)
        tables, next_load_id, version = _import(scratch, source, manifest)
        kept = _swap(scratch, target, keep=force)
    finally:
        if guard is not None:
            guard.close()
        for stale in (scratch, _wal(scratch)):
            stale.unlink(missing_ok=True)
    return RestoreResult(target=target, source=source, schema_version=version, tables=tables,
                         next_load_id=next_load_id, created_at=manifest["created_at"],
                         demo=bool(manifest.get("demo")), kept=kept)
