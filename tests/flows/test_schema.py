"""The canonical schema is declared once and everything else derives from it."""

from __future__ import annotations

import datetime as dt

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


def test_every_table_is_declared_with_meaning_and_known_types():
    assert set(schema.TABLES) == {"trade_flows", "trade_totals", "loads", "load_partitions", "quarantine", "fx_rates",
                                  "runs", "anomalies", "reviews", "schema_version", *schema.HISTORY_OF.values()}
    # What a reader stages, then the load that stored the row; a history table adds the load that replaced it.
    assert schema.TABLES["trade_flows"].fields == (*schema.TRADE_FLOWS, schema.TABLES["trade_flows"].field("load_id"))
    for table, history in schema.HISTORY_OF.items():
        assert schema.TABLES[history].fields == (*schema.TABLES[table].fields, schema.SUPERSEDED_BY)
    assert schema.TABLES["trade_totals"].fields == schema.TRADE_TOTALS
    for table in schema.TABLES.values():
        assert len(set(table.columns)) == len(table.columns), table.name
        assert set(table.key) <= set(table.columns), table.name
        for f in table.fields:
            assert f.description and f.duckdb_type in schema._POLARS_TYPES, (table.name, f.name)
        if table.primary_key:
            assert not any(table.field(c).nullable for c in table.key), table.name


def test_each_tables_ddl_and_polars_schema_agree():
    con = duckdb.connect()
    for table in schema.TABLES.values():
        con.execute(table.ddl())
        frame = con.sql(f"SELECT * FROM {table.name}").pl()
        assert dict(frame.schema) == table.polars_schema(), table.name
    assert schema.TABLES["anomalies"].polars_schema(["rank", "product_level"]) == {"rank": pl.Int32(),
                                                                                   "product_level": pl.Int8()}


def test_named_inserts_bind_values_by_column_name():
    con = duckdb.connect()
    con.execute(schema.TABLES["reviews"].ddl())
    # The order of the dict does not matter; columns left out are NULL.
    con.execute(*schema.bind("reviews", {"reviewed_at": dt.datetime(2023, 1, 2), "status": "watch", "route_id": "r1"}))
    assert con.execute("SELECT * FROM reviews").fetchall() == [
        ("r1", "watch", None, None, dt.datetime(2023, 1, 2), None, None, None)]
    assert schema.insert_sql("reviews", ["route_id", "status", "reviewed_at"]) == (
        "INSERT INTO reviews (route_id, status, reviewed_at) VALUES ($route_id, $status, $reviewed_at)")
    con.execute("CREATE TEMP TABLE src AS SELECT 'r2' AS id, TIMESTAMP '2023-01-03' AS ts")
    con.execute(schema.insert_select_sql("reviews", {"route_id": "id", "status": "$status", "reviewed_at": "ts"},
                                         "FROM src"), {"status": "confirmed"})
    assert con.execute("SELECT route_id, status, reviewed_at FROM reviews WHERE route_id = 'r2'").fetchall() == [
        ("r2", "confirmed", dt.datetime(2023, 1, 3))]


@pytest.mark.parametrize("columns, message", [
    (["route_id", "status", "reviewed_at", "colour"], "no column colour"),
    (["route_id", "status"], "NOT NULL column reviewed_at"),
    (["route_id", "status", "reviewed_at", "status"], "named twice"),
])
def test_named_inserts_refuse_unknown_missing_or_repeated_columns(columns, message):
    with pytest.raises(ValueError, match=message):
        schema.insert_sql("reviews", columns)


def test_a_presentation_picks_declared_columns_by_name():
    assert schema.TABLES["anomalies"].pick("rank", "score") == ("rank", "score")
    with pytest.raises(KeyError, match="no column 'colour'"):
        schema.TABLES["anomalies"].pick("rank", "colour")
