"""The DuckDB warehouse: connections (bounded wait on a busy writer), versioned migrations, atomic partition replace, pair totals for detection."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from tradewatch.flows.core import settings, stop
from tradewatch.flows import schema
from tradewatch.flows.core.errors import InputError, TradewatchError, WarehouseBusy
from tradewatch.flows.core.numbers import money

# Each migration is a list of statements; the warehouse records the highest version applied, so a newer
# tradewatch opens an older warehouse by applying the rest. Never edit a released migration: add one.
# The statements are history, written out as released (not derived from flows/schema.py, whose
# declarations describe the newest warehouse): tests/flows/test_warehouse.py proves that a fresh warehouse,
# and one made at every earlier version, ends with exactly the tables and columns of schema.TABLES. A new
# column or table is declared in schema.TABLES and added here by a new migration.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        # No PRIMARY KEY on trade_flows: DuckDB's ART index makes bulk loads slow and memory-hungry at
        # tens of millions of rows. Key uniqueness is a declared check on every staged load instead,
        # and a partition is always replaced whole, so the key stays unique.
        """CREATE TABLE IF NOT EXISTS trade_flows (
  source VARCHAR NOT NULL,
  freq VARCHAR NOT NULL,
  period DATE NOT NULL,
  reporter_iso3 VARCHAR NOT NULL,
  partner_iso3 VARCHAR NOT NULL,
  flow VARCHAR NOT NULL,
  product_code VARCHAR NOT NULL,
  product_level TINYINT NOT NULL,
  value DOUBLE NOT NULL,
  currency VARCHAR NOT NULL,
  net_weight_kg DOUBLE,
  quantity DOUBLE,
  quantity_unit VARCHAR
)""",
        """CREATE SEQUENCE IF NOT EXISTS load_ids START 1""",
        """CREATE TABLE IF NOT EXISTS loads (
            load_id BIGINT NOT NULL,
            source VARCHAR NOT NULL,
            freq VARCHAR,
            period DATE,
            reporters INTEGER,
            file VARCHAR NOT NULL,
            checksum VARCHAR,
            rows BIGINT,
            value_sum DOUBLE,
            currency VARCHAR,
            quarantined BIGINT,
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            status VARCHAR NOT NULL,
            message VARCHAR
        )""",
        """CREATE TABLE IF NOT EXISTS quarantine (
  load_id BIGINT NOT NULL,
  file VARCHAR NOT NULL,
  line BIGINT,
  reason VARCHAR NOT NULL,
  raw VARCHAR,
  quarantined_at TIMESTAMP NOT NULL
)""",
        """CREATE TABLE IF NOT EXISTS runs (
            run_id VARCHAR PRIMARY KEY,
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            params_json VARCHAR NOT NULL,
            loads_json VARCHAR,
            model_version VARCHAR,
            run_hash VARCHAR,
            flagged INTEGER,
            candidates INTEGER,
            unavailable_json VARCHAR
        )""",
        """CREATE TABLE IF NOT EXISTS anomalies (
            run_id VARCHAR NOT NULL,
            route_id VARCHAR NOT NULL,
            rank INTEGER NOT NULL,
            score DOUBLE NOT NULL,
            origin_iso3 VARCHAR NOT NULL,
            transit_iso3 VARCHAR NOT NULL,
            target_iso3 VARCHAR NOT NULL,
            product_code VARCHAR NOT NULL,
            product_level TINYINT NOT NULL,
            currency VARCHAR,
            baseline_start DATE,
            baseline_end DATE,
            recent_start DATE,
            recent_end DATE,
            baseline_value DOUBLE,
            recent_value DOUBLE,
            growth DOUBLE,
            target_change DOUBLE,
            excess_value DOUBLE,
            features_json VARCHAR,
            reasons VARCHAR,
            PRIMARY KEY (run_id, route_id)
        )""",
        """CREATE TABLE IF NOT EXISTS reviews (
            route_id VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            note VARCHAR,
            reviewer VARCHAR,
            reviewed_at TIMESTAMP NOT NULL,
            run_id VARCHAR,
            score_at_review DOUBLE,
            excess_at_review DOUBLE
        )""",
    ]),
    # Detection engine: a run's notes (shortened windows, …) and the display columns of a flag, so a
    # stored run rebuilds exactly the table that was printed.
    (2, [
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS notes_json VARCHAR",
        "ALTER TABLE anomalies ADD COLUMN IF NOT EXISTS onward_growth DOUBLE",
        "ALTER TABLE anomalies ADD COLUMN IF NOT EXISTS product_name VARCHAR",
        "ALTER TABLE anomalies ADD COLUMN IF NOT EXISTS tier VARCHAR",
    ]),
    # (Version 3 was reserved for the review workflow, which needed no schema change; versions only
    # have to increase, a gap is harmless.)
    # Exchange rates (ECB euro reference rates, monthly averages) so EUR- and USD-valued flows can be
    # compared; rate is units of `quote` per one `base` (USD per EUR), period the first day of the month.
    (4, [
        """CREATE TABLE IF NOT EXISTS fx_rates (
            period DATE NOT NULL,
            base VARCHAR NOT NULL,
            quote VARCHAR NOT NULL,
            rate DOUBLE NOT NULL,
            source VARCHAR NOT NULL,
            loaded_at TIMESTAMP NOT NULL,
            PRIMARY KEY (period, base, quote, source)
        )""",
        # Which partitions each load replaced, so "was this file's content loaded and not replaced
        # since?" is answered per reporter (Comtrade files arrive reporter by reporter).
        """CREATE TABLE IF NOT EXISTS load_partitions (
            load_id BIGINT NOT NULL,
            source VARCHAR NOT NULL,
            freq VARCHAR NOT NULL,
            period DATE NOT NULL,
            reporter_iso3 VARCHAR NOT NULL
        )""",
    ]),
    # All-goods and chapter totals (Eurostat DS-045409 SDMX-CSV: product TOTAL, HS 2/4/6), kept apart
    # from the product rows of trade_flows so nothing is counted twice; detection reads them as a pair's
    # all-goods yardstick when the warehouse holds only restricted goods.
    (5, [
        """CREATE TABLE IF NOT EXISTS trade_totals (
  source VARCHAR NOT NULL,
  freq VARCHAR NOT NULL,
  period DATE NOT NULL,
  reporter_iso3 VARCHAR NOT NULL,
  partner_iso3 VARCHAR NOT NULL,
  flow VARCHAR NOT NULL,
  product_group VARCHAR NOT NULL,
  product_level TINYINT NOT NULL,
  value DOUBLE NOT NULL,
  currency VARCHAR NOT NULL,
  obs_flag VARCHAR,
  load_id BIGINT NOT NULL
)""",
    ]),
    # Vintages: every row records the load that stored it, and a load that replaces rows keeps them in a
    # history table with the load that superseded them, so a run is recomputed on the data as it was
    # (flows/vintages.py). A run records the vintage it read. Rows stored before this migration have no
    # load (NULL) and count as present in every vintage until a load replaces them.
    (6, [
        "ALTER TABLE trade_flows ADD COLUMN IF NOT EXISTS load_id BIGINT",
        "ALTER TABLE fx_rates ADD COLUMN IF NOT EXISTS load_id BIGINT",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS vintage BIGINT",
        """CREATE TABLE IF NOT EXISTS trade_flows_history (
  source VARCHAR NOT NULL,
  freq VARCHAR NOT NULL,
  period DATE NOT NULL,
  reporter_iso3 VARCHAR NOT NULL,
  partner_iso3 VARCHAR NOT NULL,
  flow VARCHAR NOT NULL,
  product_code VARCHAR NOT NULL,
  product_level TINYINT NOT NULL,
  value DOUBLE NOT NULL,
  currency VARCHAR NOT NULL,
  net_weight_kg DOUBLE,
  quantity DOUBLE,
  quantity_unit VARCHAR,
  load_id BIGINT,
  superseded_by BIGINT NOT NULL
)""",
        """CREATE TABLE IF NOT EXISTS trade_totals_history (
  source VARCHAR NOT NULL,
  freq VARCHAR NOT NULL,
  period DATE NOT NULL,
  reporter_iso3 VARCHAR NOT NULL,
  partner_iso3 VARCHAR NOT NULL,
  flow VARCHAR NOT NULL,
  product_group VARCHAR NOT NULL,
  product_level TINYINT NOT NULL,
  value DOUBLE NOT NULL,
  currency VARCHAR NOT NULL,
  obs_flag VARCHAR,
  load_id BIGINT NOT NULL,
  superseded_by BIGINT NOT NULL
)""",
        """CREATE TABLE IF NOT EXISTS fx_rates_history (
  period DATE NOT NULL,
  base VARCHAR NOT NULL,
  quote VARCHAR NOT NULL,
  rate DOUBLE NOT NULL,
  source VARCHAR NOT NULL,
  loaded_at TIMESTAMP NOT NULL,
  load_id BIGINT,
  superseded_by BIGINT NOT NULL
)""",
    ]),
    # Exploration (issue 13): a run also stores a share of routes from just below the flag threshold for
    # review, marked here; every route stored before was a flag.
    (7, [
        "ALTER TABLE anomalies ADD COLUMN IF NOT EXISTS exploration BOOLEAN DEFAULT false",
    ]),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]


DEMO_LABEL = "synthetic demo data"

# A replacement that would lose more than this share of a loaded partition's rows or value is refused
# (a proxy that cut a file at a line boundary looks like a valid, smaller file) unless the caller allows it.
SHRINK_LIMIT = 0.5


class ShrinkRefused(InputError):
    """A load refused because it would replace loaded partitions with far fewer rows or far less value."""


def holds_trade_data(path: Path) -> bool:
    """Whether the warehouse file at `path` holds trade rows. A file another process is writing counts as
    holding them (it is in use), and so does one that cannot be read as a warehouse (not to be hidden)."""
    if not path.exists():
        return False
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return True
    try:
        return con.execute("SELECT 1 FROM trade_flows LIMIT 1").fetchone() is not None
    except duckdb.Error:
        return True
    finally:
        con.close()


def demo_in_use(db: Path | str | None) -> bool:
    """True when `db` is not given, the real warehouse holds no trade rows and the demo's warehouse exists:
    commands then read the demo's, and say so."""
    return db is None and settings.demo_db_path().exists() and not holds_trade_data(settings.default_db_path())


def is_demo(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the open warehouse holds the synthetic demo world (rows loaded with source 'demo')."""
    try:
        return con.execute("SELECT 1 FROM loads WHERE source = 'demo' LIMIT 1").fetchone() is not None
    except duckdb.Error:
        return False


def resolve_db_path(db: Path | str | None, *, demo: bool = False) -> Path:
    """The warehouse path for a `--db` option value (None: the default under TRADEWATCH_HOME; with `demo`,
    the demo's own warehouse while the real one holds no trade rows)."""
    if db is None:
        path = settings.demo_db_path() if demo and demo_in_use(None) else settings.default_db_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(db).expanduser()
    if path.exists() and path.is_dir():
        raise InputError(f"--db {db}", "is a folder; expected a .duckdb file path")
    if not path.parent.exists():
        raise InputError(f"--db {db}", f"folder {path.parent} does not exist")
    if path.exists() and path.stat().st_size and not _is_duckdb_file(path):
        raise InputError(f"--db {db}", "is not a tradewatch warehouse (not a DuckDB database file); expected the "
                         ".duckdb file tradewatch made, or a new path for a new warehouse")
    return path


def _is_duckdb_file(path: Path) -> bool:
    """Whether `path` starts like a DuckDB database file (its magic bytes 'DUCK' after the header checksum)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(12)[8:12] == b"DUCK"
    except OSError:
        return True  # unreadable: let the open say why


def lock_wait_s() -> float:
    """Seconds to wait for another writer: $TRADEWATCH_LOCK_WAIT_S (a number ≥ 0), default 30."""
    import os

    text = os.environ.get("TRADEWATCH_LOCK_WAIT_S", "").strip()
    if not text:
        return 30.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise TradewatchError(f"TRADEWATCH_LOCK_WAIT_S={text!r}: expected a number of seconds ≥ 0")
    return value


def _tell_stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text or "resource temporarily" in text)


def connect(
    db: Path | str | None = None,
    *,
    read_only: bool = False,
    wait_s: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    demo: bool = False,
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse. Writable connections create and migrate it. While another process writes,
    wait up to `wait_s` seconds (default $TRADEWATCH_LOCK_WAIT_S, else 30), calling `on_wait` once with a
    message (default: the message on stderr, so every command says why it pauses), then raise
    WarehouseBusy. A read-only open of a missing warehouse raises TradewatchError. With `demo` and no `db`,
    the demo's own warehouse is opened while the real one holds no trade rows (reading and reviewing the
    demo; never for loading data)."""
    wait_s = lock_wait_s() if wait_s is None else wait_s
    on_wait = on_wait or _tell_stderr
    path = resolve_db_path(db, demo=demo)
    if read_only and not path.exists():
        if db is not None:  # `detect` refuses an explicit --db without data: the demo lives only in its own
            raise TradewatchError(f"--db {db}: no warehouse here yet; load data into it with `tradewatch ingest … "
                                  f"--db {db}` (`tradewatch detect` without --db shows the {DEMO_LABEL})")
        raise TradewatchError(f"{path}: no warehouse here yet; run `tradewatch detect` or `tradewatch ingest` first")
    deadline = time.monotonic() + wait_s
    told = False
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise TradewatchError(f"{path}: cannot open warehouse: {str(exc).splitlines()[0]}") from None
            if time.monotonic() >= deadline:
                raise WarehouseBusy(
                    f"{path}: another tradewatch process is writing the warehouse; waited {wait_s:.0f} s, try again later"
                ) from None
            if not told and on_wait is not None:
                on_wait(f"{path} is being written by another process; waiting up to {wait_s:.0f} s …")
                told = True
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        except duckdb.Error as exc:
            raise TradewatchError(f"{path}: cannot open warehouse: {str(exc).splitlines()[0]}") from None
    if _foreign_database(con):
        con.close()
        raise InputError(f"--db {db}" if db is not None else str(path),
                         "is a DuckDB database but not a tradewatch warehouse (its tables are not tradewatch's); "
                         "expected the .duckdb file tradewatch made, or a new path for a new warehouse")
    if read_only:
        version = schema_version(con)
        if version < SCHEMA_VERSION:
            con.close()
            raise TradewatchError(
                f"{path}: warehouse schema version {version} is older than {SCHEMA_VERSION}; open it once for writing to migrate"
            )
    else:
        migrate(con)
    return con


def _foreign_database(con: duckdb.DuckDBPyConnection) -> bool:
    """True for a database holding tables but no `schema_version` (another program's DuckDB file): tradewatch
    must not add its tables to it, nor read it as a warehouse."""
    names = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()").fetchall()}
    return bool(names) and "schema_version" not in names


@contextmanager
def opened(db: Path | str | None = None, **kwargs):
    """Context manager around connect()."""
    con = connect(db, **kwargs)
    try:
        yield con
    finally:
        con.close()


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    # fetchall, not fetchone: DuckDB keeps a half-read result open and refuses the next con.sql().
    return int(con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] or 0)


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply the migrations this warehouse has not seen, each in its own transaction. Returns the version."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)")
    current = schema_version(con)
    for version, statements in MIGRATIONS:
        if version <= current:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in statements:
                con.execute(statement)
            con.execute(*schema.bind("schema_version", {"version": version, "applied_at": _now()}))
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        current = version
    return current


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass
class LoadResult:
    """What one file load did: partitions replaced, rows, value sums by currency, quarantined rows."""

    load_id: int
    file: str
    source: str
    rows: int = 0
    partitions: int = 0
    periods: list[str] = field(default_factory=list)
    value_sum: dict[str, float] = field(default_factory=dict)
    quarantined: int = 0
    status: str = "ok"
    message: str = ""


def next_load_id(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT nextval('load_ids')").fetchall()[0][0])


def check_staged(con: duckdb.DuckDBPyConnection, staged: str, where: str, *, key_unique: bool = False,
                 table: str = "trade_flows") -> None:
    """Declared checks on staged rows of canonical table `table` (trade_flows or trade_totals): one scan for
    the row rules, one GROUP BY for the key unless the reader guarantees it with `key_unique`. Raises
    InputError naming `where` and the first problem."""
    spec = schema.CANONICAL_TABLES[table]
    product = spec.product_column
    rules = [
        ("value < 0 OR isnan(value) OR isinf(value)", f"{product} || ' ' || value",
         "value {} is not a finite non-negative number (product, value)"),
        (f"freq NOT IN {schema.FREQS}", "freq", f"freq {{}} is not one of {', '.join(schema.FREQS)}"),
        (f"flow NOT IN {schema.FLOWS}", "flow", f"flow {{}} is not one of {', '.join(schema.FLOWS)}"),
        (f"currency NOT IN {schema.CURRENCIES}", "currency",
         f"currency {{}} is not one of {', '.join(schema.CURRENCIES)}"),
        # Level 0 is the all-goods total ('TOTAL'), which only trade_totals allows.
        ((f"product_level NOT IN {spec.product_levels} OR NOT (product_level = 0 AND {product} = "
          f"'{schema.TOTAL_GROUP}' OR product_level > 0 AND length({product}) = product_level)"),
         "'''' || " + product + " || ''' for level ' || product_level",
         "product code {} does not have the digits of its level"),
        ("length(reporter_iso3) <> 3 OR length(partner_iso3) <> 3", "reporter_iso3 || '/' || partner_iso3",
         "country codes {} are not alpha-3"),
    ]
    # Counting is cheap; building an example text for every row is not: fetch one only for a failed rule.
    counts = con.execute(f"SELECT {', '.join(f'count_if({c})' for c, _, _ in rules)} FROM {staged}").fetchall()[0]
    for (condition, example, message), failed in zip(rules, counts):
        if failed:
            found = con.execute(f"SELECT {example} FROM {staged} WHERE {condition} LIMIT 1").fetchall()[0][0]
            raise InputError(where, message.format(repr(found)))
    if key_unique:
        return
    key = ", ".join(spec.key)
    # As many distinct key hashes as rows proves every key distinct (equal keys hash alike), and one integer
    # column is cheaper to count than grouping every key column; only when it fails, group to name the key.
    if con.execute(f"SELECT count(*) = count(DISTINCT hash({key})) FROM {staged}").fetchall()[0][0]:
        return
    duplicate = con.execute(f"SELECT {key}, count(*) FROM {staged} GROUP BY ALL HAVING count(*) > 1 LIMIT 1").fetchall()
    if duplicate:
        row = duplicate[0]
        raise InputError(where, f"duplicate key {'/'.join(str(x) for x in row[:-1])} appears {row[-1]} times")


def replace_partitions(
    con: duckdb.DuckDBPyConnection,
    staged: str,
    *,
    file: str,
    checksum: str | None,
    source: str,
    quarantine_table: str | None = None,
    load_id: int | None = None,
    key_unique: bool = False,
    by_product: bool = False,
    table: str = "trade_flows",
    also: Mapping[str, str] | None = None,
    shrink_limit: float | None = SHRINK_LIMIT,
) -> LoadResult:
    """Replace, in one transaction, every (source, freq, period, reporter) partition present in the
    staged table `staged` (the staged columns of canonical table `table`: trade_flows or trade_totals)
    with its rows, and record one `loads` row per (source, freq, period) and one `load_partitions` row per
    partition. `also` maps further canonical tables to their staged tables, replaced in the same
    transaction (a file holding product rows and totals). Declared checks run first (`key_unique`: the
    reader guarantees unique keys); a failure changes nothing and records a failed load.
    With `by_product`, only the (partition, product) pairs the staged rows hold are replaced, so a file
    that covers some products of a reporter-month (a Comtrade query for a product list) does not delete the
    products an earlier file loaded. The result counts rows and sums values (per currency) over every
    table loaded. The rows replaced are kept in the table's history table (schema.HISTORY_OF) with this
    load as `superseded_by`. A replacement losing more than `shrink_limit` of a loaded partition's rows or
    value raises ShrinkRefused and is recorded as a refused load (None: no limit, e.g. --allow-shrink)."""
    with stop.writing(file):
        return _replace_partitions(con, staged, file=file, checksum=checksum, source=source,
                                   quarantine_table=quarantine_table, load_id=load_id, key_unique=key_unique,
                                   by_product=by_product, table=table, also=also, shrink_limit=shrink_limit)


def _replace_partitions(con, staged, *, file, checksum, source, quarantine_table, load_id, key_unique, by_product,
                        table, also, shrink_limit) -> LoadResult:
    load_id = load_id if load_id is not None else next_load_id(con)
    started = _now()
    result = LoadResult(load_id=load_id, file=file, source=source)
    pieces = [(schema.CANONICAL_TABLES[table], staged)]
    pieces += [(schema.CANONICAL_TABLES[name], rows) for name, rows in (also or {}).items()]
    try:
        for spec, rows in pieces:
            check_staged(con, rows, file, key_unique=key_unique, table=spec.name)
    except InputError as exc:
        _record_failure(con, load_id, source, file, checksum, started, str(exc))
        raise
    _collect_partitions(con, pieces)
    if shrink_limit is not None:
        try:
            _refuse_shrink(con, pieces, file=file, by_product=by_product, limit=shrink_limit)
        except ShrinkRefused as exc:
            con.execute("DROP TABLE _partitions")
            _record_failure(con, load_id, source, file, checksum, started, str(exc), status="refused")
            raise
    quarantined = 0
    if quarantine_table:
        quarantined = con.execute(f"SELECT count(*) FROM {quarantine_table}").fetchall()[0][0]
    con.execute("BEGIN TRANSACTION")
    try:
        for spec, rows in pieces:
            _replace_rows(con, spec, rows, load_id=load_id, by_product=by_product)
        _store_quarantine(con, quarantine_table, load_id, started)
        _record_loads(con, load_id, source=source, file=file, checksum=checksum, quarantined=quarantined,
                      started=started)
        con.execute("COMMIT")
    except Exception as exc:
        _roll_back(con, exc, load_id, source, file, checksum, started)
        raise
    _fill_result(con, result)
    result.quarantined = quarantined
    con.execute("DROP TABLE _partitions")
    return result


def replace_by_key(con: duckdb.DuckDBPyConnection, table: str, staged: str, *, file: str, checksum: str | None,
                   source: str, freq: str | None = None, quarantine_table: str | None = None,
                   load_id: int | None = None, message: str = "") -> LoadResult:
    """Replace, in one transaction, the rows of keyed table `table` (fx_rates) whose key the staged table
    `staged` holds with the staged rows (its columns: the table's, without loaded_at and load_id); the
    rows replaced are kept in the table's history table (schema.HISTORY_OF) superseded by this load. Also
    stores the rows of `quarantine_table` (file, line, reason, raw) and records the one `loads` row of the
    load (`freq`, no period; `message`). The tables of canonical trade rows go through replace_partitions
    instead. A DuckDB error rolls everything back, records a failed load and is raised."""
    spec = schema.TABLES[table]
    load_id = load_id if load_id is not None else next_load_id(con)
    started = _now()
    columns = [c for c in spec.columns if c not in ("loaded_at", "load_id")]
    on_key = " AND ".join(f"t.{c} = s.{c}" for c in spec.key)
    stored = ", ".join(spec.columns)
    with stop.writing(file):
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"""INSERT INTO {schema.HISTORY_OF[table]} ({stored}, superseded_by)
                            SELECT {', '.join('t.' + c for c in spec.columns)}, ? FROM {table} t
                            SEMI JOIN {staged} s ON {on_key}""", [load_id])
            con.execute(f"DELETE FROM {table} t USING {staged} s WHERE {on_key}")
            con.execute(schema.insert_select_sql(table, {**{c: c for c in columns}, "loaded_at": "$now",
                                                         "load_id": "$load_id"}, f"FROM {staged}"),
                        {"now": started, "load_id": load_id})
            quarantined = _store_quarantine(con, quarantine_table, load_id, started)
            rows = con.execute(f"SELECT count(*) FROM {staged}").fetchall()[0][0]
            con.execute(*schema.bind("loads", {
                "load_id": load_id, "source": source, "freq": freq, "file": file, "checksum": checksum,
                "rows": rows, "quarantined": quarantined, "started_at": started, "finished_at": _now(),
                "status": "ok", "message": message}))
            con.execute("COMMIT")
        except Exception as exc:
            _roll_back(con, exc, load_id, source, file, checksum, started)
            raise
    return LoadResult(load_id=load_id, file=file, source=source, rows=rows, quarantined=quarantined)


def _roll_back(con: duckdb.DuckDBPyConnection, exc: Exception, load_id: int, source: str, file: str,
               checksum: str | None, started: datetime) -> None:
    """After `exc` inside a load's transaction: roll it back and record the load as failed."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # a dead connection has rolled back already; keep the original error in front
    _record_failure(con, load_id, source, file, checksum, started, str(exc).splitlines()[0])


def _store_quarantine(con: duckdb.DuckDBPyConnection, quarantine_table: str | None, load_id: int,
                      started: datetime) -> int:
    """Inside the caller's transaction: the rows of `quarantine_table` (file, line, reason, raw) into
    quarantine under `load_id`. Returns how many."""
    if not quarantine_table:
        return 0
    con.execute(schema.insert_select_sql("quarantine", {
        "load_id": "$load_id", "file": "file", "line": "line", "reason": "reason", "raw": "raw",
        "quarantined_at": "$started"}, f"FROM {quarantine_table}"), {"load_id": load_id, "started": started})
    return con.execute(f"SELECT count(*) FROM {quarantine_table}").fetchall()[0][0]


def _collect_partitions(con: duckdb.DuckDBPyConnection, pieces: list[tuple[schema.CanonicalTable, str]]) -> None:
    """TEMP _partitions: per canonical table, partition and currency of the staged rows, their count and
    value sum (one pass over each staged table gives the statistics for `loads` and the partitions)."""
    part_cols = ", ".join(schema.PARTITION_KEY)
    selects = [f"""SELECT '{spec.name}' AS canonical_table, {part_cols}, currency, count(*) AS rows,
                          sum(value) AS value_sum FROM {rows} GROUP BY ALL""" for spec, rows in pieces]
    con.execute(f"CREATE OR REPLACE TEMP TABLE _partitions AS {' UNION ALL '.join(selects)}")


def _replaced(spec: schema.CanonicalTable, staged: str, by_product: bool) -> tuple[str, str]:
    """(relation p, condition on t and p): the rows of table `spec` (alias t) a load of `staged` replaces —
    whole partitions, or with `by_product` the (partition, product) pairs the staged rows hold."""
    part_cols = ", ".join(schema.PARTITION_KEY)
    match = " AND ".join(f"t.{c} = p.{c}" for c in schema.PARTITION_KEY)
    product = spec.product_column
    if by_product:
        return f"(SELECT DISTINCT {part_cols}, {product} FROM {staged})", f"{match} AND t.{product} = p.{product}"
    return f"(SELECT DISTINCT {part_cols} FROM _partitions WHERE canonical_table = '{spec.name}')", match


def _replace_rows(con: duckdb.DuckDBPyConnection, spec: schema.CanonicalTable, staged: str, *, load_id: int,
                  by_product: bool) -> None:
    """Inside the caller's transaction: make the partitions (or partition × product pairs) of `staged` in
    table `spec` hold exactly the staged rows. A revision usually changes few rows, so only those change:
    stored rows the staged ones do not repeat exactly (changed or gone) move to the history table,
    superseded by `load_id`; staged rows not stored exactly (changed or new) are inserted with `load_id`;
    identical rows stay, with the load that first stored them (so every vintage keeps them)."""
    replaced, condition = _replaced(spec, staged, by_product)
    columns = ", ".join(spec.staged_columns)
    fresh = staged  # nothing stored there yet: every staged row is new
    if con.execute(f"SELECT 1 FROM {spec.name} t SEMI JOIN {replaced} p ON {condition} LIMIT 1").fetchall():
        stored = ", ".join(f.name for f in spec.fields)
        hashes = (f"hash({', '.join('t.' + c for c in spec.key)}) AS kh, "
                  f"hash({', '.join('t.' + c for c in spec.staged_columns)}) AS h")
        # Each row stands as two 64-bit hashes, of its key and of every staged column (NULLs hash alike): a
        # stored row with no staged row of the same key hash and row hash is gone or changed, a staged row
        # with no such stored row is new or changed. Joins on two integers instead of set differences over
        # every column both ways (2-3x faster, benchmarks/vintages.py). A change is missed only if a row's
        # old and new versions hash alike: odds 2⁻⁶⁴ per changed row (10⁻¹³ for a 5-million-row month).
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _old AS
                        SELECT t.rowid AS rid, {hashes} FROM {spec.name} t SEMI JOIN {replaced} p ON {condition}""")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _changed AS
                        SELECT rid FROM _old ANTI JOIN (SELECT {hashes} FROM {staged} t) n USING (kh, h)""")
        con.execute(f"""INSERT INTO {schema.HISTORY_OF[spec.name]} ({stored}, superseded_by)
                        SELECT {stored}, ? FROM {spec.name} WHERE rowid IN (SELECT rid FROM _changed)""", [load_id])
        con.execute(f"DELETE FROM {spec.name} WHERE rowid IN (SELECT rid FROM _changed)")
        fresh = f"""(SELECT {', '.join('n.' + c for c in spec.staged_columns)}
                     FROM (SELECT {hashes}, t.* FROM {staged} t) n ANTI JOIN _old USING (kh, h))"""
    con.execute(f"INSERT INTO {spec.name} ({columns}, load_id) SELECT {columns}, ? FROM {fresh}", [load_id])
    for scratch in ("_old", "_changed"):
        con.execute(f"DROP TABLE IF EXISTS {scratch}")


def _refuse_shrink(con: duckdb.DuckDBPyConnection, pieces: list[tuple[schema.CanonicalTable, str]], *, file: str,
                   by_product: bool, limit: float) -> None:
    """ShrinkRefused naming `file`, the worst partition and both numbers when a staged partition holds fewer
    than (1 - limit) of the rows or of the value its loaded version holds (for `by_product`, of the
    products it replaces). Partitions not loaded before are new, not shrinking."""
    part_cols = ", ".join(schema.PARTITION_KEY)
    keep = 1.0 - limit
    for spec, staged in pieces:
        replaced, condition = _replaced(spec, staged, by_product)
        found = con.execute(f"""
            WITH old AS (SELECT {', '.join('t.' + c for c in schema.PARTITION_KEY)}, count(*) AS rows,
                                sum(t.value) AS value, any_value(t.currency) AS currency
                         FROM {spec.name} t SEMI JOIN {replaced} p ON {condition} GROUP BY ALL),
                 new AS (SELECT {part_cols}, sum(rows) AS rows, sum(value_sum) AS value FROM _partitions
                         WHERE canonical_table = '{spec.name}' GROUP BY ALL)
            SELECT old.source, CASE old.freq WHEN 'A' THEN strftime(old.period, '%Y') ELSE strftime(old.period, '%Y-%m') END,
                   old.reporter_iso3, old.rows, old.value, new.rows, new.value, old.currency,
                   count(*) OVER () AS partitions
            FROM old JOIN new USING ({part_cols})
            WHERE new.rows < old.rows * {keep!r} OR (old.value > 0 AND new.value < old.value * {keep!r})
            ORDER BY least(new.rows / old.rows, CASE WHEN old.value > 0 THEN new.value / old.value ELSE 1 END)
            LIMIT 1""").fetchall()
        if not found:
            continue
        source, period, reporter, old_rows, old_value, new_rows, new_value, currency, partitions = found[0]
        others = f" ({partitions - 1:,} more partitions like it)" if partitions > 1 else ""
        what = "rows" if spec.name == "trade_flows" else f"{spec.name} rows"
        raise ShrinkRefused(file, (
            f"refused: it would replace {source} {period} {reporter}, loaded with {old_rows:,} {what} worth "
            f"{money(old_value, currency)}, with {new_rows:,} worth {money(new_value, currency)}{others}: more than "
            f"{limit:.0%} lost, which a truncated file also looks like; pass --allow-shrink to load it anyway"))


def _record_loads(con: duckdb.DuckDBPyConnection, load_id: int, *, source: str, file: str, checksum: str | None,
                  quarantined: int, started: datetime) -> None:
    """Inside the caller's transaction: the `loads` rows (one per source, freq, period; an 'empty' one when
    nothing was staged) and the `load_partitions` rows of this load, from TEMP _partitions."""
    finished = _now()
    given = {"load_id": load_id, "file": file, "checksum": checksum, "quarantined": quarantined,
             "started_at": started, "finished_at": finished}
    con.execute(schema.insert_select_sql("loads", {
        **{name: f"${name}" for name in given},
        "source": "source", "freq": "freq", "period": "period", "reporters": "count(DISTINCT reporter_iso3)",
        "rows": "sum(rows)", "value_sum": "sum(value_sum)", "currency": "string_agg(DISTINCT currency, ',')",
        "status": "'ok'",
    }, "FROM _partitions GROUP BY source, freq, period ORDER BY period"), given)
    con.execute(schema.insert_select_sql(
        "load_partitions", {"load_id": "$load_id", **{c: c for c in schema.PARTITION_KEY}},
        f"FROM (SELECT DISTINCT {', '.join(schema.PARTITION_KEY)} FROM _partitions)"), {"load_id": load_id})
    if con.execute("SELECT count(*) FROM _partitions").fetchall()[0][0] == 0:
        con.execute(*schema.bind("loads", {**given, "source": source, "reporters": 0, "rows": 0, "value_sum": 0,
                                           "status": "empty", "message": "no rows to load"}))


def _fill_result(con: duckdb.DuckDBPyConnection, result: LoadResult) -> None:
    """Rows, value sums per currency, partitions and periods of the load just committed, from _partitions."""
    part_cols = ", ".join(schema.PARTITION_KEY)
    stats = con.execute("SELECT currency, sum(rows), sum(value_sum) FROM _partitions GROUP BY currency").fetchall()
    result.rows = int(sum(r[1] for r in stats))
    result.value_sum = {r[0]: float(r[2]) for r in stats}
    result.partitions = con.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT {part_cols} FROM _partitions)").fetchall()[0][0]
    result.periods = [r[0] for r in con.execute(
        "SELECT DISTINCT strftime(period, '%Y-%m') p FROM _partitions ORDER BY p").fetchall()]


def _record_failure(con, load_id, source, file, checksum, started, message, status: str = "failed") -> None:
    try:
        con.execute(*schema.bind("loads", {
            "load_id": load_id, "source": source, "file": file, "checksum": checksum, "rows": 0, "value_sum": 0,
            "quarantined": 0, "started_at": started, "finished_at": _now(), "status": status,
            "message": message[:500]}))
    except duckdb.Error:
        pass


def status_rows(con: duckdb.DuckDBPyConnection, table: str = "trade_flows") -> list[dict]:
    """Per source, freq and period of canonical table `table` (trade_flows or trade_totals; for trade_totals
    also per product_group and product_level, since adding TOTAL to its chapters would count goods twice):
    rows, value sum, currency, reporters, and the latest successful load. [] when the table does not exist
    (trade_totals in a warehouse read before migration 5)."""
    spec = schema.CANONICAL_TABLES[table]
    if not has_table(con, spec.name):
        return []
    groups = "product_group, product_level, " if spec.name == "trade_totals" else ""
    shown = "".join(f"d.{g.strip()}, " for g in groups.split(",") if g.strip())
    sql = f"""
        WITH data AS (
            SELECT source, freq, period, {groups}currency, count(*) AS rows, sum(value) AS value_sum,
                   count(DISTINCT reporter_iso3) AS reporters
            FROM {spec.name} GROUP BY ALL
        ), last_load AS (
            SELECT source, freq, period, arg_max(file, finished_at) AS file, max(finished_at) AS loaded_at
            FROM loads WHERE status = 'ok' GROUP BY ALL
        )
        SELECT d.source, d.freq, CASE d.freq WHEN 'A' THEN strftime(d.period, '%Y') ELSE strftime(d.period, '%Y-%m') END AS period,
               {shown}d.rows, d.value_sum, d.currency, d.reporters, l.file,
               strftime(l.loaded_at, '%Y-%m-%d %H:%M:%S') AS loaded_at
        FROM data d LEFT JOIN last_load l USING (source, freq, period)
        ORDER BY d.source, d.freq, d.period, {shown}d.currency
    """
    cursor = con.execute(sql)
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """True when the warehouse holds a table called `name`."""
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [name]).fetchall()[0][0])


PAIR_TOTALS_COLUMNS = ("reporter_iso3", "partner_iso3", "flow", "period", "value", "currency")


def pair_totals(con: duckdb.DuckDBPyConnection, *, first: date, last: date, product_group: str = "TOTAL") -> pl.DataFrame:
    """Monthly trade of one product group (default 'TOTAL', all goods; or an HS chapter such as '27') per
    reporter → partner pair and flow, from trade_totals, for the months from the one holding `first` to
    the one holding `last`, both included. Returns a polars frame with columns reporter_iso3 and
    partner_iso3 (ISO alpha-3, String), flow ('export'/'import' seen from the reporter, String), period
    (Date, first day of the month), value (Float64, in `currency`), currency (String, 'EUR'), ordered by
    reporter, partner, flow, period; only monthly rows valued in EUR. Empty, with the same columns and
    dtypes, when the table is missing or holds nothing for the request."""
    dtypes = schema.polars_schema(schema.TRADE_TOTALS)
    empty = pl.DataFrame(schema={name: dtypes[name] for name in PAIR_TOTALS_COLUMNS})
    if not has_table(con, "trade_totals"):
        return empty
    frame = con.sql(
        f"""SELECT {', '.join(PAIR_TOTALS_COLUMNS)} FROM trade_totals
            WHERE freq = 'M' AND currency = 'EUR' AND product_group = $group
                  AND period >= date_trunc('month', $first::DATE) AND period <= $last::DATE
            ORDER BY reporter_iso3, partner_iso3, flow, period""",
        params={"group": product_group, "first": first, "last": last},
    ).pl()
    return frame.cast(empty.schema) if frame.height else empty


def row_count(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT count(*) FROM trade_flows").fetchall()[0][0])
