"""Every bad input of the corpus, through the library and through the real CLI: a one-line error naming the file
(and line) with the warehouse unchanged, or its bad rows quarantined with file, line and reason while the rest
loads, and the CLI saying how many."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus import GOOD_ROWS, Case, all_cases, dat, seven_zip
from reliability_helpers import (assert_one_line_error, cli, db_snapshot, home, seeded_db,  # noqa: F401
                                 seeded_status, seeded_template, snapshot, status_json)
from tradewatch.flows import archive, ingest, warehouse
from tradewatch.flows.core.errors import InputError, TradewatchError
from tradewatch.flows.sources import ecb

CASES = all_cases()
IDS = [c.id for c in CASES]
# Through the CLI: every refused or quarantined input, and one good file per reader (the library test covers
# the other accepted variants; each CLI run costs a warehouse open).
CLI_CASES = [c for c in CASES if c.expect != "ok" or c.id.endswith("-good")]


def _write(case: Case, tmp_path: Path) -> Path:
    path = tmp_path / "in" / case.id / case.name
    path.parent.mkdir(parents=True)
    path.write_bytes(case.content)
    return path


def _load(con, case: Case, path: Path):
    if case.reader == "ecb":
        return ecb.load_rates(con, path)
    return ingest.load_file(con, path)


def test_corpus_covers_every_reader_and_outcome():
    readers = {c.reader for c in CASES}
    assert readers == {"comext", "comext-7z", "comtrade-csv", "comtrade-json", "baci", "ecb"}
    for reader in readers:
        kinds = {c.expect for c in CASES if c.reader == reader}
        assert {"error", "ok"} <= kinds, (reader, kinds)
    assert len(IDS) == len(set(IDS))
    assert len(CASES) >= 140


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_library(case: Case, home, seeded_db, tmp_path, monkeypatch):
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    path = _write(case, tmp_path)
    con = warehouse.connect(seeded_db)
    try:
        before = snapshot(con)
        if case.expect == "error":
            with pytest.raises(InputError) as info:
                _load(con, case, path)
            message = str(info.value)
            assert "\n" not in message, "errors are one line"
            assert message.startswith(str(path)), f"the error names the file first: {message}"
            assert case.text in message, message
            if case.line is not None:
                assert f" line {case.line}:" in message, message
            assert snapshot(con) == before, "a refused file leaves the warehouse unchanged"
            return
        result = _load(con, case, path)
        if case.expect == "ok":
            assert (result.rows, result.quarantined) == (case.rows, 0)
            if case.total is not None:
                assert sum(result.value_sum.values()) == case.total
            return
        assert result.rows == case.rows and result.quarantined == case.count, result
        rows = con.execute("SELECT file, line, reason, raw FROM quarantine WHERE load_id = ? ORDER BY line",
                           [result.load_id]).fetchall()
        assert len(rows) == case.count
        assert all(r[0].startswith(str(path)) and r[1] is not None and case.text in r[2] for r in rows), rows
        assert rows[0][1] == case.line, f"line numbers count the header as line 1: {rows}"
        assert rows[0][3], "the raw row is kept"
        # the other rows loaded, and the seeded month is still there
        assert con.execute("SELECT count(*) FROM trade_flows WHERE period = DATE '2022-02-01'").fetchone()[0] == 3
    finally:
        con.close()


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli(case: Case, home, seeded_db, seeded_status, tmp_path, monkeypatch):
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    path = _write(case, tmp_path)
    before = seeded_status
    if case.reader == "ecb":
        result = cli("ingest", "ecb", "--file", path, "--db", seeded_db)
    else:
        result = cli("ingest", "files", path, "--db", seeded_db)
    if case.expect == "error":
        line = assert_one_line_error(result, str(path), case.text)
        if case.line is not None:
            assert f" line {case.line}:" in line
        assert status_json(seeded_db) == before, "status is the same after a refused file"
        return
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr and not result.error_lines()
    if case.reader == "ecb":
        quarantined = f", {case.count} quarantined" if case.expect == "quarantine" else ""
        assert f"{case.rows} months" in result.stdout and result.stdout.rstrip().endswith(
            f"2022-0{case.rows}{quarantined}"), result.stdout
        return
    if case.expect == "quarantine":
        assert f"{case.count} row(s) quarantined" in result.stderr, result.stderr
    else:
        assert "quarantined" not in result.stderr
    after = status_json(seeded_db)
    loaded = sum(r["rows"] for r in after["trade_flows"]) - sum(r["rows"] for r in before["trade_flows"])
    assert loaded == case.rows, (loaded, case)


def test_json_summary_names_quarantine_count(home, seeded_db, tmp_path):
    path = tmp_path / "full_202203.dat"
    path.write_bytes(dat(GOOD_ROWS + ["DE,ZZ,E,85423190,,,,,,,2,,,202203,1,,,", "DE,YY,E,85423190,,,,,,,2,,,202203,1,,,"]))
    result = cli("ingest", "files", path, "--db", seeded_db, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["totals"]["quarantined"] == 2 and report["files"][0]["quarantined"] == 2
    assert sum(report["files"][0]["reasons"].values()) == 2


def test_several_files_refuse_before_loading_any(home, seeded_db, tmp_path):
    """A wrong file among several is found before the first loads: nothing changes."""
    good = tmp_path / "a" / "full_202203.dat"
    bad = tmp_path / "b" / "full_202204.dat"
    good.parent.mkdir()
    bad.parent.mkdir()
    good.write_bytes(dat(GOOD_ROWS))
    bad.write_bytes(b"<html><body>404</body></html>")
    before = status_json(seeded_db)
    assert_one_line_error(cli("ingest", "files", good, bad, "--db", seeded_db), str(bad), "HTML")
    assert status_json(seeded_db) == before


def test_missing_path_and_folder_are_one_line(home, seeded_db, tmp_path):
    assert_one_line_error(cli("ingest", "files", tmp_path / "nope.dat", "--db", seeded_db), "nope.dat", "no such file")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("ingest", "files", tmp_path / "empty", "--db", seeded_db), "holds no files")
    assert_one_line_error(cli("ingest", "ecb", "--file", tmp_path / "nope.csv", "--db", seeded_db), "--file")


def test_db_option_pointing_at_a_data_file_is_one_line(home, tmp_path):
    not_a_db = tmp_path / "full_202203.dat"
    not_a_db.write_bytes(dat(GOOD_ROWS))
    before = not_a_db.read_bytes()
    assert_one_line_error(cli("status", "--db", not_a_db), str(not_a_db))
    assert_one_line_error(cli("ingest", "files", not_a_db, "--db", not_a_db), str(not_a_db))
    assert not_a_db.read_bytes() == before, "a file that is not a warehouse is never written"


def test_decompression_bomb_is_refused_before_writing(tmp_path):
    big = seven_zip({"full_202203.dat": b"0" * 5_000_000})
    path = tmp_path / "full_v2_202203.7z"
    path.write_bytes(big)
    with pytest.raises(InputError, match="limit"):
        archive.extract_single_member(path, tmp_path / "out", max_bytes=1_000_000)
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_bomb_guard_holds_when_the_archive_hides_its_size(tmp_path, monkeypatch):
    """An archive whose header does not state the expanded size is still stopped while it streams."""
    import py7zr

    path = tmp_path / "full_v2_202203.7z"
    path.write_bytes(seven_zip({"full_202203.dat": b"0" * 3_000_000}))
    real_list = py7zr.SevenZipFile.list

    def hide_sizes(self):
        infos = real_list(self)
        for info in infos:
            object.__setattr__(info, "uncompressed", None)
        return infos

    monkeypatch.setattr(py7zr.SevenZipFile, "list", hide_sizes)
    with pytest.raises(InputError, match="expands past the 1,000,000-byte limit"):
        archive.extract_single_member(path, tmp_path / "out", max_bytes=1_000_000)
    assert not any((tmp_path / "out").glob("*"))


def test_bad_limit_setting_is_one_line(home, seeded_db, tmp_path, monkeypatch):
    monkeypatch.setenv("TRADEWATCH_MAX_EXPANDED_BYTES", "lots")
    path = tmp_path / "full_v2_202203.7z"
    path.write_bytes(seven_zip({"full_202203.dat": dat(GOOD_ROWS)}))
    assert_one_line_error(cli("ingest", "files", path, "--db", seeded_db), "TRADEWATCH_MAX_EXPANDED_BYTES")


def test_traversal_member_writes_nothing_outside(tmp_path):
    path = tmp_path / "a" / "full_v2_202203.7z"
    path.parent.mkdir()
    path.write_bytes(seven_zip({"../evil.dat": dat(GOOD_ROWS)}))
    with pytest.raises(InputError):
        archive.extract_single_member(path, tmp_path / "a" / "out")
    assert not (tmp_path / "a" / "evil.dat").exists()
    assert not Path("/tmp/evil.dat").exists() or Path("/tmp/evil.dat").stat().st_mtime < path.stat().st_mtime


def test_quote_left_open_late_in_a_large_file_loses_no_row(home, tmp_path):
    """DuckDB's reader does not fail on a quote left open past its sniffing sample: it reads the rest of the
    file into one value. The loader must notice the rows it did not get and refuse the file."""
    rows = [f"DE,RU,E,{84000000 + i:08d},,,,,,,2,,,202203,{i + 1},,," for i in range(60_000)]
    rows[50_000] = rows[50_000].replace("DE,RU", 'DE,"RU')
    path = tmp_path / "full_202203.dat"
    path.write_bytes(dat(rows))
    con = warehouse.connect(tmp_path / "w.duckdb")
    try:
        with pytest.raises(InputError, match="line 50002: a double quote opened on this line is never closed"):
            ingest.load_file(con, path)
        assert warehouse.row_count(con) == 0
    finally:
        con.close()


def test_parse_file_refuses_like_load_file(home, tmp_path):
    """The pipeline's parse step reads through the same guarded readers."""
    path = tmp_path / "full_202203.dat"
    path.write_bytes(dat(GOOD_ROWS + ['DE,"AM,E,85423190,,,,,,,2,,,202203,1,,,', GOOD_ROWS[0].replace("KZ", "TR")]))
    with pytest.raises(InputError, match="line 5: a double quote"):
        ingest.parse_file(path)
    latin = tmp_path / "latin" / "full_202203.dat"
    latin.parent.mkdir()
    latin.write_bytes(dat(GOOD_ROWS).replace(b"DE,GE", "DÉ,GE".encode("latin-1")))
    with pytest.raises(InputError, match="line 4: is not UTF-8"):
        ingest.parse_file(latin)


def test_refused_ecb_file_keeps_rates(home, seeded_db, tmp_path):
    path = tmp_path / "ecb.csv"
    path.write_bytes(b"TIME_PERIOD,OBS_VALUE\n2021-12,\n")
    before = db_snapshot(seeded_db)
    with pytest.raises(TradewatchError):
        with warehouse.opened(seeded_db) as con:
            ecb.load_rates(con, path)
    assert db_snapshot(seeded_db) == before


# ------------------------------------------------------------------------- Comtrade answers at the cap

def _serve_capped(server, partners=(643, 51, 417)):
    """A keyless Comtrade stand-in that, like the API, cuts every answer at maxRecords."""
    from fakeserver import Reply

    def answer(path, query, headers):
        if path != "/public/v1/preview/C/M/HS":
            return Reply(404, b"no")
        asked = [int(p) for p in query["partnerCode"].split(",")] if "partnerCode" in query else list(partners)
        records = [{"freqCode": "M", "period": period, "reporterCode": int(query["reporterCode"]), "flowCode": flow,
                    "partnerCode": partner, "partner2Code": 0, "cmdCode": cmd, "customsCode": "C00", "motCode": 0,
                    "primaryValue": float(partner), "netWgt": 1.0}
                   for period in query["period"].split(",") for cmd in query["cmdCode"].split(",")
                   for flow in query["flowCode"].split(",") for partner in asked if partner in partners]
        cap = int(query["maxRecords"])
        return Reply(200, json.dumps({"count": min(cap, len(records)), "data": records[:cap], "error": ""}).encode())

    server.handle(answer)


@pytest.fixture
def comtrade_server():
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "flows"))
    from fakeserver import FakeServer

    with FakeServer() as fake:
        yield fake


def _comtrade_cli(server, db):
    return cli("ingest", "comtrade", "--reporters", "KAZ", "--products", "854231", "--from", "2022-01", "--to",
               "2022-01", "--base-url", server.url, "--task-runner", "none", "--db", db)


def test_comtrade_answers_at_the_cap_are_split_until_complete(home, seeded_db, comtrade_server, monkeypatch):
    from tradewatch.flows import comtrade_api

    monkeypatch.setattr(comtrade_api, "PREVIEW_CAP", 2)
    _serve_capped(comtrade_server)
    result = _comtrade_cli(comtrade_server, seeded_db)
    assert result.exit_code == 0, result.stderr
    assert len(comtrade_server.requests) > 3, "capped answers were asked again in parts"
    rows = [r for r in status_json(seeded_db)["trade_flows"] if r["source"] == "comtrade"]
    assert [(r["period"], r["rows"], r["value_sum"]) for r in rows] == [("2022-01", 6, 2 * (643 + 51 + 417))], \
        "every record of the capped answers is stored: none lost to the cap"


def test_comtrade_answer_at_the_cap_that_cannot_be_split_is_refused(home, seeded_db, seeded_status, comtrade_server,
                                                                    monkeypatch):
    from tradewatch.flows import comtrade_api

    monkeypatch.setattr(comtrade_api, "PREVIEW_CAP", 1)
    _serve_capped(comtrade_server)
    result = _comtrade_cli(comtrade_server, seeded_db)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    # the keyless-preview notice, then the one error line
    assert result.exit_code == 2 and len(lines) == 2 and "keyless preview" in lines[0], result.stderr
    assert lines[1].startswith("error: ") and "1-record cap" in lines[1] and "refusing to store a truncated" in lines[1]
    assert status_json(seeded_db) == seeded_status
