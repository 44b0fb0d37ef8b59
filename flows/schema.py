"""Every warehouse table declared once (fields with type, unit and meaning; key columns): DuckDB DDL,
polars dtypes, column lists and named INSERT statements are derived from the declarations in TABLES."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Field:
    name: str
    duckdb_type: str
    nullable: bool
    unit: str
    description: str

    @property
    def polars_type(self) -> pl.DataType:
        return _POLARS_TYPES[self.duckdb_type]


_POLARS_TYPES: dict[str, pl.DataType] = {
    "VARCHAR": pl.String(),
    "DATE": pl.Date(),
    "TINYINT": pl.Int8(),
    "INTEGER": pl.Int32(),
    "BIGINT": pl.Int64(),
    "DOUBLE": pl.Float64(),
    "TIMESTAMP": pl.Datetime("us"),
    "BOOLEAN": pl.Boolean(),
}

FREQS = ("M", "A")
FLOWS = ("export", "import", "re-export", "re-import")
CURRENCIES = ("EUR", "USD")
PRODUCT_LEVELS = (2, 4, 6, 8)

TRADE_FLOWS: tuple[Field, ...] = (
    Field("source", "VARCHAR", False, "", "where the row came from: comext, comtrade, baci, demo"),
    Field("freq", "VARCHAR", False, "", "'M' monthly or 'A' annual"),
    Field("period", "DATE", False, "", "first day of the month ('M') or of the year ('A')"),
    Field("reporter_iso3", "VARCHAR", False, "ISO 3166 alpha-3", "country that reported the flow"),
    Field("partner_iso3", "VARCHAR", False, "ISO 3166 alpha-3",
          "partner country; Comext confidential/unallocated Q-codes as Q??"),
    Field("flow", "VARCHAR", False, "", "export, import, re-export or re-import, seen from the reporter"),
    Field("product_code", "VARCHAR", False, "HS/CN code", "product code as text, leading zeros kept"),
    Field("product_level", "TINYINT", False, "digits", "2, 4, 6 (HS) or 8 (CN8) digits"),
    Field("value", "DOUBLE", False, "currency", "trade value in `currency`"),
    Field("currency", "VARCHAR", False, "ISO 4217", "EUR (Comext) or USD (Comtrade, BACI)"),
    Field("net_weight_kg", "DOUBLE", True, "kg", "net mass"),
    Field("quantity", "DOUBLE", True, "quantity_unit", "supplementary quantity"),
    Field("quantity_unit", "VARCHAR", True, "", "unit of `quantity`"),
)

# What a warehouse stores per row: the canonical fields a reader stages, then the load that stored the row
# (added by migration 6; NULL for rows stored before it, which count as present in every vintage).
TRADE_FLOWS_STORED: tuple[Field, ...] = (
    *TRADE_FLOWS,
    Field("load_id", "BIGINT", True, "", "the load that stored the row (loads.load_id); NULL: before vintages were kept"),
)

TRADE_FLOWS_KEY: tuple[str, ...] = (
    "source", "freq", "period", "reporter_iso3", "partner_iso3", "flow", "product_code",
)

# A partition is what one load replaces atomically: one source, one period, one reporter.
# Reporter is part of it because one Comtrade period arrives reporter by reporter.
PARTITION_KEY: tuple[str, ...] = ("source", "freq", "period", "reporter_iso3")

# Aggregates a source publishes beside (or instead of) product rows: all goods ('TOTAL', level 0) and HS
# chapters, headings, subheadings (levels 2, 4, 6). They live in their own table, never in trade_flows,
# so no sum over trade_flows counts a product twice (once as itself, once inside its chapter).
TOTAL_GROUP = "TOTAL"
TOTAL_LEVELS = (0, 2, 4, 6)

_SHARED = {f.name: f for f in TRADE_FLOWS}

TRADE_TOTALS: tuple[Field, ...] = (
    *(_SHARED[name] for name in ("source", "freq", "period", "reporter_iso3", "partner_iso3", "flow")),
    Field("product_group", "VARCHAR", False, "HS code or TOTAL",
          "'TOTAL' (all goods) or an HS chapter/heading/subheading code as text, leading zeros kept"),
    Field("product_level", "TINYINT", False, "digits", "0 for TOTAL, else 2, 4 or 6 digits"),
    _SHARED["value"],
    _SHARED["currency"],
    Field("obs_flag", "VARCHAR", True, "", "the source's observation flag (Eurostat: p provisional, e estimated, …)"),
    Field("load_id", "BIGINT", False, "", "the load that stored the row (loads.load_id)"),
)

TRADE_TOTALS_KEY: tuple[str, ...] = (
    "source", "freq", "period", "reporter_iso3", "partner_iso3", "flow", "product_group",
)


@dataclass(frozen=True)
class CanonicalTable:
    """A table of canonical rows that loads replace partition by partition (PARTITION_KEY)."""

    name: str
    fields: tuple[Field, ...]
    key: tuple[str, ...]
    product_column: str
    product_levels: tuple[int, ...]

    @property
    def staged_fields(self) -> tuple[Field, ...]:
        """Fields a reader stages; load_id, where the table has one, is filled in by the load."""
        return tuple(f for f in self.fields if f.name != "load_id")

    @property
    def staged_columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.staged_fields)


CANONICAL_TABLES: dict[str, CanonicalTable] = {
    "trade_flows": CanonicalTable("trade_flows", TRADE_FLOWS_STORED, TRADE_FLOWS_KEY, "product_code", PRODUCT_LEVELS),
    "trade_totals": CanonicalTable("trade_totals", TRADE_TOTALS, TRADE_TOTALS_KEY, "product_group", TOTAL_LEVELS),
}

QUARANTINE: tuple[Field, ...] = (
    Field("load_id", "BIGINT", False, "", "the load that met the row"),
    Field("file", "VARCHAR", False, "", "file the row came from"),
    Field("line", "BIGINT", True, "", "1-based line number in that file (header is line 1)"),
    Field("reason", "VARCHAR", False, "", "why the row was not loaded"),
    Field("raw", "VARCHAR", True, "", "the row as read"),
    Field("quarantined_at", "TIMESTAMP", False, "UTC", "when"),
)

COLUMN_NAMES: tuple[str, ...] = tuple(f.name for f in TRADE_FLOWS)

# --- the bookkeeping tables ------------------------------------------------------------------------------
# Column order is the order a warehouse holds them in: columns a later migration added come last.

LOADS: tuple[Field, ...] = (
    Field("load_id", "BIGINT", False, "", "the load (sequence load_ids); one row per source, freq and period it wrote"),
    Field("source", "VARCHAR", False, "", "the source read: comext, comtrade, baci, ecb, demo"),
    Field("freq", "VARCHAR", True, "", "'M' or 'A'; NULL for a failed or empty load"),
    Field("period", "DATE", True, "", "the period written; NULL for a failed or empty load and for ECB rates"),
    Field("reporters", "INTEGER", True, "countries", "distinct reporters written for the period"),
    Field("file", "VARCHAR", False, "", "the file loaded, as named to the user"),
    Field("checksum", "VARCHAR", True, "SHA-256 hex", "checksum of the file's bytes"),
    Field("rows", "BIGINT", True, "rows", "rows stored"),
    Field("value_sum", "DOUBLE", True, "currency", "sum of the stored rows' values"),
    Field("currency", "VARCHAR", True, "ISO 4217", "the currencies of the stored rows, comma-separated"),
    Field("quarantined", "BIGINT", True, "rows", "rows of the file quarantined by the load"),
    Field("started_at", "TIMESTAMP", False, "UTC", "when the load started"),
    Field("finished_at", "TIMESTAMP", True, "UTC", "when the load finished"),
    Field("status", "VARCHAR", False, "", "ok, empty, failed or refused (a replacement that would shrink a loaded partition)"),
    Field("message", "VARCHAR", True, "", "why a load failed or was empty; the series and months for ECB rates"),
)

LOAD_PARTITIONS: tuple[Field, ...] = (
    Field("load_id", "BIGINT", False, "", "the load that replaced the partition (loads.load_id)"),
    *(_SHARED[name] for name in PARTITION_KEY),
)

FX_RATES: tuple[Field, ...] = (
    Field("period", "DATE", False, "", "first day of the month the rate averages"),
    Field("base", "VARCHAR", False, "ISO 4217", "the currency priced (EUR)"),
    Field("quote", "VARCHAR", False, "ISO 4217", "the currency it is priced in (USD)"),
    Field("rate", "DOUBLE", False, "quote per base", "units of `quote` per one `base` (USD per EUR)"),
    Field("source", "VARCHAR", False, "", "where the rate came from: ecb"),
    Field("loaded_at", "TIMESTAMP", False, "UTC", "when the rate was stored"),
    Field("load_id", "BIGINT", True, "", "the load that stored the rate (loads.load_id); NULL: before vintages were kept"),
)

# --- vintages ----------------------------------------------------------------------------------------------
# A load that replaces rows keeps the rows it replaces in a history table: the same columns, and the load
# that superseded them. The data as of load W is then every row stored by a load <= W and not superseded by
# a load <= W (flows/vintages.py), so a past run is recomputed on the data it read.
SUPERSEDED_BY = Field("superseded_by", "BIGINT", False, "", "the load that replaced the row (loads.load_id)")

# Which table keeps the replaced rows of which: trade_flows, trade_totals and fx_rates are the data a run reads.
HISTORY_OF: dict[str, str] = {
    "trade_flows": "trade_flows_history",
    "trade_totals": "trade_totals_history",
    "fx_rates": "fx_rates_history",
}

RUNS: tuple[Field, ...] = (
    Field("run_id", "VARCHAR", False, "", "the run: start time, sequence number and the first characters of its hash"),
    Field("started_at", "TIMESTAMP", False, "UTC", "when the run started"),
    Field("finished_at", "TIMESTAMP", True, "UTC", "when the run was stored"),
    Field("params_json", "VARCHAR", False, "JSON", "the detection parameters and the run's windows"),
    Field("loads_json", "VARCHAR", True, "JSON",
          "the loads behind the data: a list of {source, freq, period, load_id, checksum}"),
    Field("model_version", "VARCHAR", True, "", "the detection model's version text"),
    Field("run_hash", "VARCHAR", True, "SHA-256 hex", "hash of parameters, loads and model: same hash, same flags"),
    Field("flagged", "INTEGER", True, "routes", "routes flagged"),
    Field("candidates", "INTEGER", True, "routes", "candidate routes scored"),
    Field("unavailable_json", "VARCHAR", True, "JSON",
          "features the data could not support: a list of {feature, reason}"),
    Field("notes_json", "VARCHAR", True, "JSON", "the run's notes (shortened windows, calibration): a list of texts"),
    Field("vintage", "BIGINT", True, "", "the data the run read: as of this load (loads.load_id); NULL before vintages"),
)

ANOMALIES: tuple[Field, ...] = (
    Field("run_id", "VARCHAR", False, "", "the run that flagged the route (runs.run_id)"),
    Field("route_id", "VARCHAR", False, "", "stable identity of the route across runs"),
    Field("rank", "INTEGER", False, "", "1 for the best-scored flag of the run"),
    Field("score", "DOUBLE", False, "0-1", "1 - p against the run's null"),
    Field("origin_iso3", "VARCHAR", False, "ISO 3166 alpha-3", "the country the goods leave"),
    Field("transit_iso3", "VARCHAR", False, "ISO 3166 alpha-3", "the country they pass through"),
    Field("target_iso3", "VARCHAR", False, "ISO 3166 alpha-3", "the restricted destination"),
    Field("product_code", "VARCHAR", False, "HS code", "the product, leading zeros kept"),
    Field("product_level", "TINYINT", False, "digits", "digits of product_code"),
    Field("currency", "VARCHAR", True, "ISO 4217", "currency of the values"),
    Field("baseline_start", "DATE", True, "", "first day of the baseline window"),
    Field("baseline_end", "DATE", True, "", "last day of the baseline window"),
    Field("recent_start", "DATE", True, "", "first day of the recent window"),
    Field("recent_end", "DATE", True, "", "last day of the recent window"),
    Field("baseline_value", "DOUBLE", True, "currency per month", "origin→transit trade in the baseline window"),
    Field("recent_value", "DOUBLE", True, "currency per month", "origin→transit trade in the recent window"),
    Field("growth", "DOUBLE", True, "ratio", "net growth of origin→transit (recent over baseline, net of the pair)"),
    Field("target_change", "DOUBLE", True, "share", "relative change of origin→target (-0.8: fell 80 %)"),
    Field("excess_value", "DOUBLE", True, "currency", "origin→transit trade above the expected band, recent window"),
    Field("features_json", "VARCHAR", True, "JSON", "the route's features, name -> value (null: unavailable)"),
    Field("reasons", "VARCHAR", True, "", "the flag in words with numbers"),
    Field("onward_growth", "DOUBLE", True, "ratio", "transit→target recent over baseline"),
    Field("product_name", "VARCHAR", True, "", "the product's name"),
    Field("tier", "VARCHAR", True, "CHPL tier", "the product's Common High Priority List tier, if listed"),
    Field("exploration", "BOOLEAN", True, "",
          "true: not flagged, shown for review from just below the threshold (exploration_share); false: a flag"),
)

REVIEWS: tuple[Field, ...] = (
    Field("route_id", "VARCHAR", False, "", "the route decided on (anomalies.route_id)"),
    Field("status", "VARCHAR", False, "", "confirmed, dismissed or watch"),
    Field("note", "VARCHAR", True, "", "the analyst's note"),
    Field("reviewer", "VARCHAR", True, "", "who decided"),
    Field("reviewed_at", "TIMESTAMP", False, "UTC", "when"),
    Field("run_id", "VARCHAR", True, "", "the run the decision was made against"),
    Field("score_at_review", "DOUBLE", True, "0-1", "the route's score in that run"),
    Field("excess_at_review", "DOUBLE", True, "currency", "the route's excess value in that run"),
)

SCHEMA_VERSION: tuple[Field, ...] = (
    Field("version", "INTEGER", False, "", "a migration applied"),
    Field("applied_at", "TIMESTAMP", False, "UTC", "when"),
)


@dataclass(frozen=True)
class Table:
    """One warehouse table: its fields in column order and the columns that identify a row (`key`);
    with `primary_key` the key is declared to DuckDB, otherwise it is a rule the writers keep."""

    name: str
    fields: tuple[Field, ...]
    key: tuple[str, ...] = ()
    primary_key: bool = False
    description: str = ""

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no column {name!r}")

    def ddl(self) -> str:
        return ddl(self.name, self.fields, self.key if self.primary_key else None)

    def polars_schema(self, columns: Iterable[str] | None = None) -> dict[str, pl.DataType]:
        """Column name -> polars dtype for `columns` (default all, in column order)."""
        names = self.columns if columns is None else tuple(columns)
        return {name: self.field(name).polars_type for name in names}

    def pick(self, *columns: str) -> tuple[str, ...]:
        """`columns` as given, checked to be columns of this table (a presentation's choice by name)."""
        for name in columns:
            self.field(name)
        return columns

    def checked(self, columns: Iterable[str]) -> tuple[str, ...]:
        """The columns an INSERT names: each a column of the table, none twice, every NOT NULL one there."""
        names = tuple(columns)
        unknown = [c for c in names if c not in self.columns]
        if unknown:
            raise ValueError(f"{self.name} has no column {', '.join(unknown)}")
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: a column is named twice in {', '.join(names)}")
        missing = [f.name for f in self.fields if not f.nullable and f.name not in names]
        if missing:
            raise ValueError(f"{self.name}: NOT NULL column {', '.join(missing)} not given")
        return names


TABLES: dict[str, Table] = {t.name: t for t in (
    Table("trade_flows", TRADE_FLOWS_STORED, TRADE_FLOWS_KEY, description="canonical product rows of every source"),
    Table("trade_totals", TRADE_TOTALS, TRADE_TOTALS_KEY, description="all-goods and chapter totals"),
    Table("trade_flows_history", (*TRADE_FLOWS_STORED, SUPERSEDED_BY), (*TRADE_FLOWS_KEY, "superseded_by"),
          description="trade_flows rows a later load replaced (vintages)"),
    Table("trade_totals_history", (*TRADE_TOTALS, SUPERSEDED_BY), (*TRADE_TOTALS_KEY, "superseded_by"),
          description="trade_totals rows a later load replaced (vintages)"),
    Table("fx_rates_history", (*FX_RATES, SUPERSEDED_BY), ("period", "base", "quote", "source", "superseded_by"),
          description="fx_rates a later load replaced (vintages)"),
    Table("loads", LOADS, ("load_id", "source", "freq", "period"), description="one row per load and period"),
    Table("load_partitions", LOAD_PARTITIONS, ("load_id", *PARTITION_KEY),
          description="the partitions each load replaced"),
    Table("quarantine", QUARANTINE, ("load_id", "file", "line"), description="rows a load refused, with why"),
    Table("fx_rates", FX_RATES, ("period", "base", "quote", "source"), True, "monthly exchange rates"),
    Table("runs", RUNS, ("run_id",), True, "detection runs"),
    Table("anomalies", ANOMALIES, ("run_id", "route_id"), True, "the routes each run flagged"),
    Table("reviews", REVIEWS, description="analysts' decisions on routes, oldest first"),
    Table("schema_version", SCHEMA_VERSION, ("version",), description="the migrations applied"),
)}


def insert_sql(table: str, columns: Iterable[str]) -> str:
    """A named INSERT into `table` of `columns`, bound by name: `INSERT INTO t (a, b) VALUES ($a, $b)`;
    pass the values as a dict. Columns left out are NULL; ValueError for an unknown column or a missing
    NOT NULL one."""
    names = TABLES[table].checked(columns)
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('$' + c for c in names)})"


def bind(table: str, row: Mapping[str, object]) -> tuple[str, dict[str, object]]:
    """(statement, parameters) inserting one row of `table` given as column -> value:
    `con.execute(*schema.bind("loads", {...}))`."""
    return insert_sql(table, row), dict(row)


def insert_select_sql(table: str, expressions: Mapping[str, str], rest: str) -> str:
    """A named `INSERT INTO table (columns) SELECT expressions rest`: `expressions` maps each column written
    to the SQL giving its value (a column of the source, a constant or a `$name` parameter); `rest` is the
    FROM … clause. Columns left out are NULL; ValueError for an unknown column or a missing NOT NULL one."""
    names = TABLES[table].checked(expressions)
    select = ", ".join(f"{expressions[c]} AS {c}" for c in names)
    return f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} {rest}"


def ddl(table: str, fields: tuple[Field, ...], primary_key: tuple[str, ...] | None = None) -> str:
    """CREATE TABLE statement for `fields`; `primary_key` optional."""
    cols = [f"{f.name} {f.duckdb_type}{'' if f.nullable else ' NOT NULL'}" for f in fields]
    if primary_key:
        cols.append(f"PRIMARY KEY ({', '.join(primary_key)})")
    return f"CREATE TABLE IF NOT EXISTS {table} (\n  " + ",\n  ".join(cols) + "\n)"


def polars_schema(fields: tuple[Field, ...] = TRADE_FLOWS) -> dict[str, pl.DataType]:
    """Column name -> polars dtype, in declaration order."""
    return {f.name: f.polars_type for f in fields}


def cast_sql(fields: tuple[Field, ...] = TRADE_FLOWS) -> str:
    """A DuckDB select list casting each column of `fields` to its declared type."""
    return ", ".join(f"CAST({f.name} AS {f.duckdb_type}) AS {f.name}" for f in fields)


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast a frame holding the canonical columns to the declared dtypes and order; extra columns dropped."""
    missing = [c for c in COLUMN_NAMES if c not in frame.columns]
    if missing:
        raise ValueError(f"canonical columns missing: {', '.join(missing)}")
    return frame.select([pl.col(f.name).cast(f.polars_type) for f in TRADE_FLOWS])
