"""benchmarks/detect.py builds its warehouse chunk by chunk: the same rows as the one-shot demo frame, with
never more than one chunk of canonical (string) rows made at a time."""

from __future__ import annotations

import importlib.util
import math
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


def test_chunks_concatenate_to_the_one_shot_frame(one_shot):
    coded = demo.generate_coded(scale=SCALE)
    assert coded.rows.height == one_shot.height
    for size in (7_777, one_shot.height, 10 * one_shot.height):
        chunks = list(coded.chunks(size))
        assert len(chunks) == math.ceil(one_shot.height / size)
        assert all(chunk.height <= size for chunk in chunks)
        assert pl.concat(chunks).equals(one_shot)
    with pytest.raises(ValueError, match="max_rows"):
        next(coded.chunks(0))


def test_chunked_warehouse_equals_the_one_shot_frame_cut_and_chunks_bound_the_strings(bench, one_shot, tmp_path,
                                                                                    monkeypatch):
    assert one_shot.height > ROWS
    made: list[int] = []
    strings = demo._Coded.strings

    def recording(self, rows):
        made.append(rows.height)
        return strings(self, rows)

    monkeypatch.setattr(demo._Coded, "strings", recording)
    chunk_rows = 5_000
    db = tmp_path / "bench.duckdb"
    assert bench.build_warehouse(db, ROWS, chunk_rows=chunk_rows) == ROWS

    # Strings were made chunk by chunk, never for more than chunk_rows coded rows at once.
    assert len(made) == math.ceil(one_shot.height / chunk_rows)
    assert max(made) <= chunk_rows
    assert sum(made) == ROWS  # after the cut

    expected = one_shot.filter(pl.Series(bench.keep_mask(one_shot.height, ROWS)))
    assert expected.height == ROWS
    con = duckdb.connect(str(db), read_only=True)
    columns = ", ".join(schema.COLUMN_NAMES)
    stored = schema.conform(con.sql(f"SELECT {columns} FROM trade_flows").pl())
    totals = con.execute("SELECT count(*), sum(value), sum(net_weight_kg) FROM trade_flows").fetchall()[0]
    con.close()
    assert totals == (ROWS, expected["value"].sum(), expected["net_weight_kg"].sum())
    keys = list(schema.COLUMN_NAMES)
    assert stored.sort(keys).equals(expected.sort(keys))
    assert (db.parent / (db.name + ".rows")).read_text().split()[0] == str(ROWS)


def test_keep_mask_drops_exactly_the_overshoot(bench):
    keep = bench.keep_mask(1_000, 900)
    assert keep.sum() == 900
    assert (keep == bench.keep_mask(1_000, 900)).all()
    assert bench.keep_mask(500, 900).all()
