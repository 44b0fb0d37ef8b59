"""The pipeline's configured scope (reporters and/or product prefixes) cut out of a parsed file."""

from __future__ import annotations

import duckdb
import pytest

from ingest_helpers import FIXTURES, home  # noqa: F401  (fixture)
from tradewatch.flows import ingest, pipeline

DAT = FIXTURES / "comext" / "full_202203.dat"


def _rows(parsed) -> list[tuple[str, str]]:
    con = duckdb.connect()
    try:
        return con.execute("SELECT reporter_iso3, product_code FROM read_parquet(?) ORDER BY ALL",
                           [parsed.canonical]).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("scope", ["reporters", "products", "both"])
def test_a_scope_of_reporters_or_products_alone_or_both_keeps_exactly_its_rows(home, scope):
    parsed = ingest.parse_file(DAT)
    everything = _rows(parsed)
    reporter, product = everything[0][0], everything[0][1]
    reporters = [reporter] if scope in ("reporters", "both") else []
    products = [product[:4]] if scope in ("products", "both") else []
    scoped = pipeline._apply_scope(parsed, reporters, products)
    expected = [row for row in everything if (not reporters or row[0] in reporters)
                and (not products or row[1].startswith(products[0]))]
    assert expected and _rows(scoped) == expected
    assert len(expected) < len(everything) or scope == "products"
    assert scoped.rows == len(expected) and scoped.checksum != parsed.checksum
