"""The canonical trade-flow and trade-total schemas, declared once; DuckDB DDL and polars dtypes are derived from them."""

from __future__ import annotations

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
    "trade_flows": CanonicalTable("trade_flows", TRADE_FLOWS, TRADE_FLOWS_KEY, "product_code", PRODUCT_LEVELS),
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
