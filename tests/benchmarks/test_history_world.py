"""benchmarks/history_world.py: a tiny world of real Comext shape, written month by month into canonical
rows and as a .7z bulk file that `tradewatch ingest files` loads to the same rows."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
MONTH = date(2023, 12, 1)


@pytest.fixture(scope="module")
def hw():
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import history_world
    finally:
        sys.path.remove(str(BENCHMARKS))
    return history_world


@pytest.fixture(scope="module")
def world(hw):
    """One tiny world's generator connection; each test attaches its own warehouses under its own names."""
    built = hw.World(rows_per_month=3000, products=300)
    con = duckdb.connect()
    built.build(con)
    yield built, con
    con.close()


def _warehouse(path: Path):
    from tradewatch.flows import warehouse

    con = warehouse.connect(path)
    warehouse.migrate(con)
    return con


def test_catalogue_has_real_shape(hw, world):
    built, con = world
    partners = {r[0] for r in con.execute("SELECT a2 FROM hw_par").fetchall()}
    assert built.stats["reporters"] == 27 and 230 <= built.stats["partners"] <= 250
    assert {"RU", "BY", "KZ", "KG", "AM", "GE", "UZ", "TR", "AE", "CN", "HK", "DE", "US"} <= partners
    full = hw._products(9000, 17)
    codes = full["code"]
    assert len(set(codes)) == 9000 and all(len(c) == 8 and c.isdigit() for c in codes)
    chapters = {c[:2] for c in codes}
    assert len(chapters) >= 90 and "77" not in chapters and "00" not in chapters
    assert 1000 < sum(full["restricted"]) < 4000  # the real annex codes are part of it


def test_month_is_sparse_heavy_tailed_with_both_flows(hw, world, tmp_path):
    built, gen = world
    con = _warehouse(tmp_path / "w.duckdb")
    con.close()
    gen.execute(f"ATTACH '{tmp_path / 'w.duckdb'}' AS wh")
    rows = hw.write_warehouse_month(gen, built, MONTH, schema_name="wh")
    assert 2500 <= rows <= 3500
    stats = gen.execute("""SELECT count(DISTINCT reporter_iso3), count(DISTINCT partner_iso3), count(DISTINCT product_code),
                                  count(DISTINCT flow), min(value), max(value) / median(value)
                           FROM wh.trade_flows WHERE source = 'comext'""").fetchone()
    assert stats[0] == 27 and stats[1] > 100 and stats[2] > 250 and stats[3] == 2
    assert stats[4] >= 1 and stats[5] > 100  # a heavy tail
    cells = 27 * built.stats["partners"] * 300 * 2
    assert rows / cells < 0.02
    top = gen.execute("""SELECT sum(value) FILTER (WHERE rank <= count_all / 100) / sum(value) FROM (
        SELECT value, row_number() OVER (ORDER BY value DESC) AS rank, count(*) OVER () AS count_all
        FROM wh.trade_flows WHERE source = 'comext')""").fetchone()[0]
    assert top > 0.2  # the largest 1% of rows hold more than a fifth of the value
    sources = dict(gen.execute("SELECT source, any_value(currency) FROM wh.trade_flows GROUP BY ALL").fetchall())
    assert sources == {"comext": "EUR", "comtrade": "USD"}
    loads = gen.execute("SELECT source, rows FROM wh.loads ORDER BY source").fetchall()
    assert loads[0] == ("comext", rows)
    gen.execute("DETACH wh")


def test_7z_loads_to_the_canonical_rows(hw, world, tmp_path):
    from tradewatch.cli.main import app

    built, gen = world
    archive, keys = hw.write_7z_month(gen, built, MONTH, tmp_path / "files")
    assert archive.name == "full_v2_202312.7z" and not list((tmp_path / "files").glob("*.dat"))
    gen.execute("CREATE TEMP TABLE expected AS " + hw.month_sql(built, MONTH))
    assert keys == gen.execute("SELECT count(*) FROM expected").fetchone()[0]
    done = CliRunner().invoke(app, ["ingest", "files", str(archive), "--db", str(tmp_path / "in.duckdb"), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["files"][0]["quarantined"] == 0
    gen.execute(f"ATTACH '{tmp_path / 'in.duckdb'}' AS loaded (READ_ONLY)")
    assert gen.execute("SELECT count(*) FROM loaded.trade_flows").fetchone()[0] == keys
    # The same keys and values (procedures summed back), not only the same count, Qatar (QA) included.
    differ = gen.execute("""SELECT count(*) FROM (
        SELECT r3, p3, code, CASE flow WHEN 1 THEN 'import' ELSE 'export' END, v::DOUBLE FROM expected
        EXCEPT SELECT reporter_iso3, partner_iso3, product_code, flow, value FROM loaded.trade_flows)""").fetchone()[0]
    assert differ == 0
    gen.execute("DROP TABLE expected")
    gen.execute("DETACH loaded")


def test_qatar_loads_as_qatar(tmp_path):
    from tradewatch.flows import ingest

    header = ("REPORTER,PARTNER,TRADE_TYPE,PRODUCT_NC,PRODUCT_SITC,PRODUCT_CPA21,PRODUCT_CPA22,PRODUCT_BEC,"
              "PRODUCT_BEC5,PRODUCT_SECTION,FLOW,STAT_PROCEDURE,SUPPL_UNIT,PERIOD,VALUE_EUR,VALUE_NAC,QUANTITY_KG,"
              "QUANTITY_SUPPL_UNIT")
    dat = tmp_path / "full_202312.dat"
    dat.write_text(header + "\nDE,QA,E,84713000,,,,,,,2,1,,202312,1000,,10,\n")
    ingest.ingest_paths(tmp_path / "w.duckdb", [dat])
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    assert con.execute("SELECT partner_iso3 FROM trade_flows").fetchall() == [("QAT",)]


def test_written_month_by_month(hw, world, tmp_path):
    """A month depends on the universe and its own date only: written alone or after another, the same
    rows; nothing of an earlier month stays in the generator's connection."""
    built, gen = world
    for name in ("a", "b"):
        _warehouse(tmp_path / f"{name}.duckdb").close()
        gen.execute(f"ATTACH '{tmp_path / name}.duckdb' AS {name}")
    hw.write_warehouse_month(gen, built, date(2023, 11, 1), schema_name="a")
    hw.write_warehouse_month(gen, built, MONTH, schema_name="a")
    hw.write_warehouse_month(gen, built, MONTH, schema_name="b")
    temp = {r[0] for r in gen.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()}
    assert temp == {"hw_rep", "hw_par", "hw_prod", "hw_universe"}
    columns = "source, period, reporter_iso3, partner_iso3, flow, product_code, value, net_weight_kg"
    only_a = gen.execute(f"""SELECT count(*) FROM (SELECT {columns} FROM a.trade_flows WHERE period = '{MONTH}'
                             EXCEPT SELECT {columns} FROM b.trade_flows)""").fetchone()[0]
    assert only_a == 0 and gen.execute("SELECT count(*) FROM b.trade_flows WHERE period <> ?", [MONTH]).fetchone()[0] == 0
    assert hw.months(3) == [date(2023, 10, 1), date(2023, 11, 1), date(2023, 12, 1)]
