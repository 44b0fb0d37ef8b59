"""The canonical schema is declared once and everything else derives from it."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from tradewatch.flows import schema


def test_required_columns_declared_once_with_types():
    names = [f.name for f in schema.TRADE_FLOWS]
    assert len(names) == len(set(names))
    for required in ("source", "freq", "period", "reporter_iso3", "partner_iso3", "flow", "product_code",
                     "product_level", "value", "currency", "net_weight_kg", "quantity", "quantity_unit"):
        assert required in names
    types = {f.name: f.duckdb_type for f in schema.TRADE_FLOWS}
    assert types["period"] == "DATE" and types["value"] == "DOUBLE" and types["product_code"] == "VARCHAR"
    nullable = {f.name for f in schema.TRADE_FLOWS if f.nullable}
    assert nullable == {"net_weight_kg", "quantity", "quantity_unit"}
    assert set(schema.TRADE_FLOWS_KEY) <= set(names)


def test_ddl_and_polars_schema_agree():
    con = duckdb.connect()
    con.execute(schema.ddl("t", schema.TRADE_FLOWS))
    frame = con.sql("SELECT * FROM t").pl()
    assert list(frame.schema.keys()) == list(schema.COLUMN_NAMES)
    assert dict(frame.schema) == schema.polars_schema()


def test_conform_keeps_leading_zeros_and_orders_columns():
    frame = pl.DataFrame({
        "value": [1], "source": ["x"], "freq": ["M"], "period": ["2022-01-01"], "reporter_iso3": ["DEU"],
        "partner_iso3": ["KAZ"], "flow": ["export"], "product_code": ["010121"], "product_level": [6],
        "currency": ["EUR"], "net_weight_kg": [None], "quantity": [None], "quantity_unit": [None], "extra": [1],
    }).with_columns(pl.col("period").str.to_date())
    out = schema.conform(frame)
    assert out.columns == list(schema.COLUMN_NAMES)
    assert out["product_code"][0] == "010121"
    assert out.schema["value"] == pl.Float64 and out.schema["product_level"] == pl.Int8


def test_conform_names_missing_columns():
    with pytest.raises(ValueError, match="product_code"):
        schema.conform(pl.DataFrame({"source": ["x"]}))
