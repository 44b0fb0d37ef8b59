"""Every bad input gets a one-line error naming the file (or its rows go to quarantine with a reason), and the
warehouse is unchanged by a refused file: same status, same row counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus import GOOD_ROWS, comext_cases, dat, seven_zip
from tradewatch.flows import archive, ingest, warehouse
from tradewatch.flows.errors import InputError

CASES = comext_cases()


def _snapshot(con):
    return (
        warehouse.status_rows(con),
        con.execute("SELECT count(*), sum(value) FROM trade_flows").fetchone(),
    )


@pytest.fixture
def loaded(tmp_path):
    """A warehouse holding one good month from another reporter, so we can see it is untouched."""
    con = warehouse.connect(tmp_path / "w.duckdb")
    seed = tmp_path / "seed" / "full_202202.dat"
    seed.parent.mkdir()
    seed.write_bytes(dat(GOOD_ROWS).replace(b"202203", b"202202"))
    ingest.load_file(con, seed)
    yield con
    con.close()


@pytest.mark.parametrize("case_id, name, content, expectation", CASES, ids=[c[0] for c in CASES])
def test_bad_input(loaded, tmp_path, case_id, name, content, expectation):
    path = tmp_path / "in" / name
    path.parent.mkdir()
    path.write_bytes(content)
    before = _snapshot(loaded)
    if expectation[0] == "error":
        with pytest.raises(InputError) as info:
            ingest.load_file(loaded, path)
        message = str(info.value)
        assert "\n" not in message, "errors are one line"
        assert str(path) in message, f"the error names the file: {message}"
        assert expectation[1] in message
        assert _snapshot(loaded) == before, "a refused file leaves the warehouse unchanged"
    elif expectation[0] == "quarantine":
        _, count, reason = expectation
        result = ingest.load_file(loaded, path)
        assert result.quarantined == count
        rows = loaded.execute(
            "SELECT file, line, reason FROM quarantine WHERE load_id = ?", [result.load_id]).fetchall()
        assert len(rows) == count
        assert all(reason in r[2] and r[1] is not None and str(path) in r[0] for r in rows)
        assert rows[0][1] == len(GOOD_ROWS) + 2, "line number counts the header as line 1"
        assert result.rows == len(GOOD_ROWS)
        assert loaded.execute(
            "SELECT count(*) FROM trade_flows WHERE period = DATE '2022-02-01'").fetchone()[0] == len(GOOD_ROWS)
    else:
        result = ingest.load_file(loaded, path)
        assert result.rows == expectation[1] and result.quarantined == 0


def test_decompression_bomb_is_refused(tmp_path):
    big = seven_zip({"full_202203.dat": b"0" * 5_000_000})
    path = tmp_path / "full_v2_202203.7z"
    path.write_bytes(big)
    with pytest.raises(InputError, match="limit"):
        archive.extract_single_member(path, tmp_path / "out", max_bytes=1_000_000)
    assert not any((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_traversal_member_writes_nothing_outside(tmp_path):
    path = tmp_path / "a" / "full_v2_202203.7z"
    path.parent.mkdir()
    path.write_bytes(seven_zip({"../evil.dat": dat(GOOD_ROWS)}))
    with pytest.raises(InputError):
        archive.extract_single_member(path, tmp_path / "a" / "out")
    assert not (tmp_path / "a" / "evil.dat").exists()
    assert not Path("/tmp/evil.dat").exists() or Path("/tmp/evil.dat").stat().st_mtime < path.stat().st_mtime
