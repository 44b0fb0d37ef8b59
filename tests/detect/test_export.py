"""Exports of flagged routes: CSV, JSON and Parquet read back equal; bad targets give one-line errors."""

from __future__ import annotations

import errno
import json
from datetime import datetime

import polars as pl
import pytest
from conftest import ROUTE_CARS, ROUTE_MODEMS, ROUTE_SCRIPT, RUN_OLD

from tradewatch.detect import export, review
from tradewatch.flows import warehouse
from tradewatch.flows.core.errors import InputError


@pytest.fixture
def flags(review_db) -> pl.DataFrame:
    con = warehouse.connect(review_db)
    try:
        # a note with the characters CSV and JSON must quote, and a decision time to the microsecond
        review.review(con, ROUTE_MODEMS, "dismissed", 'distributor "A, B"\nline two; ünïcode',
                      by="ann", run=RUN_OLD, now=datetime(2023, 2, 11, 8, 30, 15, 123456))
        review.review(con, ROUTE_CARS, "watch", "", by="bob", now=datetime(2023, 2, 12, 9, 0))
        return review.list_flags(con)
    finally:
        con.close()


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_file_exports_read_back_equal(flags, tmp_path, fmt):
    path = tmp_path / f"flags.{fmt}"
    assert export.write(flags, fmt, path) is None
    back = export.read(path, fmt, review.FLAG_COLUMNS)
    expected = export.finite_only(flags)
    assert back.schema == expected.schema
    assert back.equals(expected)
    assert back.height == 5 and back["id"].null_count() == 0
    assert not (tmp_path / f"flags.{fmt}.partial").exists()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_text_exports_read_back_equal(flags, fmt):
    text = export.write(flags, fmt)
    assert isinstance(text, str)
    assert export.read(text, fmt, review.FLAG_COLUMNS).equals(export.finite_only(flags))


def test_all_three_formats_agree(flags, tmp_path):
    frames = []
    for fmt in export.FORMATS:
        export.write(flags, fmt, tmp_path / f"x.{fmt}")
        frames.append(export.read(tmp_path / f"x.{fmt}", fmt, review.FLAG_COLUMNS))
    assert frames[0].equals(frames[1]) and frames[1].equals(frames[2])


def test_json_rows_carry_the_stable_id_and_no_non_finite_numbers(flags):
    rows = json.loads(export.write(flags, "json"))
    assert [row["id"] for row in rows] == flags["id"].to_list()
    script = next(row for row in rows if row["id"] == ROUTE_SCRIPT)
    assert script["growth"] is None  # +inf in the warehouse: JSON has no infinity
    modems = next(row for row in rows if row["id"] == ROUTE_MODEMS)
    assert modems["reviewed_at"] == "2023-02-11T08:30:15.123456" and modems["baseline_start"] == "2021-03-01"


def test_parquet_needs_a_file(flags):
    with pytest.raises(InputError, match="--out"):
        export.write(flags, "parquet")


def test_bad_targets_are_input_errors(flags, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        export.write(flags, "csv", tmp_path / "missing" / "x.csv")
    with pytest.raises(InputError, match="is a folder"):
        export.write(flags, "csv", tmp_path)
    with pytest.raises(InputError, match="--format xlsx"):
        export.write(flags, "xlsx", tmp_path / "x.xlsx")


def test_empty_selection_round_trips(tmp_path):
    empty = pl.DataFrame(schema=review.FLAG_COLUMNS)
    for fmt in export.FORMATS:
        export.write(empty, fmt, tmp_path / f"e.{fmt}")
        back = export.read(tmp_path / f"e.{fmt}", fmt, review.FLAG_COLUMNS)
        assert back.height == 0 and back.schema == empty.schema


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_partial(tmp_path):
    target = tmp_path / "flags.csv"
    target.write_text("the earlier export\n")

    def fill_the_disk(partial):
        partial.write_text("half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(InputError) as caught:
        export.write_atomically(target, fill_the_disk, f"--out {target}")
    assert str(caught.value) == f"--out {target}: cannot write: No space left on device"
    assert target.read_text() == "the earlier export\n"
    assert list(tmp_path.iterdir()) == [target]
