"""benchmarks/detect.py builds its warehouse chunk by chunk: the same rows as the one-shot demo frame, with
never more than one chunk of canonical (string) rows made at a time."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tradewatch.detect import demo
from tradewatch.flows import schema

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCALE = 0.05  # the smallest scale the benchmark builds
ROWS = 40_000  # fewer than the world at SCALE holds, so the cut is exercised too


@pytest.fixture(scope="module")
def bench():
    """benchmarks/detect.py as a module (under another name: `detect` is also tradewatch's package)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("bench_detect_build", BENCHMARKS / "detect.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.fixture(scope="module")
def one_shot():
    return demo.generate_frame(scale=SCALE)


def test_chunks_together_are_the_one_shot_frame_and_each_is_bounded(one_shot):
    keys = list(one_shot.columns)
    for block in (97, 1_000, 10**6):
        chunks = list(demo.generate_chunks(scale=SCALE, block_series=block))
        assert all(chunk.height <= block * demo.MONTHS * 2 for chunk in chunks)
        assert pl.concat(chunks).sort(keys).equals(one_shot.sort(keys))
    assert len(list(demo.generate_chunks(scale=SCALE, block_series=97))) > 10
    with pytest.raises(ValueError, match="block_series"):
        next(demo.generate_chunks(scale=SCALE, block_series=0))


def test_chunked_warehouse_equals_the_one_shot_frame_cut_and_chunks_bound_the_strings(bench, one_shot, tmp_path,
                                                                                    monkeypatch):
    assert one_shot.height > ROWS
    made: list[int] = []
    strings = demo._canonical_strings

    def recording(rows, *args):
        made.append(rows.height)
        return strings(rows, *args)

    monkeypatch.setattr(demo, "_canonical_strings", recording)
    block = 200
    db = tmp_path / "bench.duckdb"
    assert bench.build_warehouse(db, ROWS, block_series=block) == ROWS

    # Canonical (string) rows were made chunk by chunk, never for more than `block` series at once.
    assert len(made) > 10
    assert max(made) <= block * demo.MONTHS * 2
    assert sum(made) == one_shot.height  # all generated, then cut in the warehouse

    # The same cut applied to the one-shot frame.
    expected_con = duckdb.connect()
    from tradewatch.flows import warehouse

    warehouse.migrate(expected_con)
    expected_con.register("one_shot", one_shot.to_arrow())
    expected_con.execute("INSERT INTO trade_flows BY NAME SELECT * FROM one_shot")
    expected_con.execute(bench.CUT, [one_shot.height - ROWS])
    columns = ", ".join(schema.COLUMN_NAMES)
    query = f"SELECT {columns} FROM trade_flows"
    expected = schema.conform(expected_con.sql(query).pl())
    expected_con.close()
    assert expected.height == ROWS
    con = duckdb.connect(str(db), read_only=True)
    stored = schema.conform(con.sql(query).pl())
    totals = con.execute("SELECT count(*), sum(value), sum(net_weight_kg) FROM trade_flows").fetchall()[0]
    con.close()
    assert totals == (ROWS, expected["value"].sum(), expected["net_weight_kg"].sum())
    keys = list(schema.COLUMN_NAMES)
    assert stored.sort(keys).equals(expected.sort(keys))
    assert (db.parent / (db.name + ".rows")).read_text().split()[0] == str(ROWS)


def test_world_scale_keeps_the_small_worlds_and_reaches_further_beyond_30m(bench):
    assert bench.world_scale(10_000) == 0.05
    assert bench.world_scale(10_000_000) == 10_000_000 / bench.ROWS_AT_SCALE_1
    assert bench.world_scale(100_000_000) == 1.2 * 100_000_000 / bench.ROWS_AT_SCALE_1
