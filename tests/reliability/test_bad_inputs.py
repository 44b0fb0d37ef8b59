"""Every bad input of the corpus, through the library and through the real CLI: a one-line error naming the file
(and line) with the warehouse unchanged, or its bad rows quarantined with file, line and reason while the rest
loads, and the CLI saying how many."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus import (EXECUTED, MISSING, GOOD_ROWS, Case, ConfigCase, ModelCase, all_cases, config_cases, dat,
                    model_cases, seven_zip)
from reliability_helpers import (TALLY, assert_one_line_error, cli, db_snapshot, home, seeded_db,  # noqa: F401
                                 seeded_status, seeded_template, snapshot, status_json)
from tradewatch.flows import archive, ingest, warehouse
from tradewatch.flows.core.errors import InputError, TradewatchError
from tradewatch.flows.sources import ecb

CASES = all_cases()
CONFIG_CASES = config_cases()
MODEL_CASES = model_cases()
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
    assert readers == {"comext", "comext-7z", "comtrade-csv", "comtrade-json", "baci", "ecb", "comext-sdmx"}
    for reader in readers:
        kinds = {c.expect for c in CASES if c.reader == reader}
        assert {"error", "ok"} <= kinds, (reader, kinds)
    assert len(IDS) == len(set(IDS))
    assert len(CASES) >= 190


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_library(case: Case, home, seeded_db, tmp_path, monkeypatch):
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    path = _write(case, tmp_path)
    TALLY.tried(case.reader, case.id)
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
        skipped = getattr(result, "not_available", 0)
        if case.records is not None:
            # every record of an accepted file is stored, quarantined or counted as not available: none lost
            assert result.rows + result.quarantined + skipped == case.records, (result, case.records)
            TALLY.rows(case.records, result.rows + result.quarantined + skipped)
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
    TALLY.tried(case.reader, case.id, via="CLI")
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
    loaded = sum(r["rows"] for table in ("trade_flows", "trade_totals") for r in after[table]) \
        - sum(r["rows"] for table in ("trade_flows", "trade_totals") for r in before[table])
    assert loaded == case.rows, (loaded, case)


@pytest.mark.parametrize("variant", ["as-is", "crlf", "bom", "truncated"])
def test_real_sdmx_sample_head_loads_whole_or_is_refused(variant, shared_data, home, seeded_db, tmp_path):
    """The first 200 observations of the real DS-045409 extract (../shared/data/comext_sdmx), as downloaded and
    as a Windows editor or a cut download leaves them: every observation stored, or the file refused."""
    from corpus import SDMX_HEADER

    real = shared_data / "comext_sdmx" / "ds-045409_totals_M_2020-2022.csv"
    lines = real.read_bytes().splitlines()[:201]
    assert lines[0].decode() == SDMX_HEADER, "the corpus uses the real header"
    content = b"\n".join(lines) + b"\n"
    content = {"as-is": content, "crlf": content.replace(b"\n", b"\r\n"), "bom": b"\xef\xbb\xbf" + content,
               "truncated": content[:-25]}[variant]
    path = tmp_path / "ds-045409_totals_M_2020-2022.csv"
    path.write_bytes(content)
    TALLY.tried("comext-sdmx", f"real-head-{variant}")
    with warehouse.opened(seeded_db) as con:
        before = snapshot(con)
        if variant == "truncated":
            with pytest.raises(InputError, match="line 201: .*truncated"):
                ingest.load_file(con, path)
            assert snapshot(con) == before
            return
        result = ingest.load_file(con, path)
        assert (result.rows, result.quarantined, result.not_available) == (200, 0, 0)
        TALLY.rows(200, result.rows)
        stored = con.execute("SELECT count(*), sum(value) FROM trade_totals").fetchone()
    expected = sum(float(line.rsplit(b",", 2)[1]) for line in lines[1:])
    assert stored == (200, expected)


@pytest.mark.parametrize("content", [b"", b"REPORTER;PERIOD\nDE;2022-03\n"], ids=["empty", "unrecognised"])
def test_refused_files_name_the_sdmx_reader_among_those_expected(tmp_path, content):
    path = tmp_path / "ds-045409_2022-03.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match="SDMX"):
        ingest.recognise(path)


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


# ------------------------------------------------------------------------------------ configuration files

def _config_path(case: ConfigCase, tmp_path: Path) -> Path:
    path = tmp_path / "config" / f"{case.id}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if case.content is None:
        path.mkdir()
    elif case.content != MISSING:
        path.write_bytes(case.content)
    return path


def _read_config(case: ConfigCase, path: Path):
    from tradewatch.detect.config import DetectParams
    from tradewatch.flows.pipeline_config import load_config

    return DetectParams.from_toml(path) if case.target == "detect" else load_config(path)


def _check_config_message(case: ConfigCase, path: Path, message: str) -> None:
    """One printable line: the file (and line), the key, what was expected."""
    where = f"--config {path}" if case.content in (None, MISSING) else str(path)
    where += f" line {case.line}: " if case.line else ": "
    assert "\n" not in message and message.isprintable(), repr(message)
    assert message.startswith(where), (where, message)
    assert message[len(where):].startswith(case.key), (case.key, message)
    assert case.text in message, message
    assert len(message) < 1000, "the offending value is quoted, not dumped"


def test_config_corpus_covers_both_files_and_outcomes():
    assert {(c.target, c.expect) for c in CONFIG_CASES} == {(t, e) for t in ("detect", "pipeline") for e in ("ok", "error")}
    assert len({c.id for c in CONFIG_CASES}) == len(CONFIG_CASES) >= 90


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.id for c in CONFIG_CASES])
def test_config_library(case: ConfigCase, tmp_path):
    TALLY.tried("config", case.id)
    path = _config_path(case, tmp_path)
    if case.expect == "ok":
        read = _read_config(case, path)
        if case.check is not None:
            assert getattr(read, case.check[0]) == case.check[1]
        return
    with pytest.raises(InputError) as info:
        _read_config(case, path)
    _check_config_message(case, path, str(info.value))


CONFIG_ERRORS = [c for c in CONFIG_CASES if c.expect == "error"]


@pytest.mark.parametrize("case", CONFIG_ERRORS, ids=[c.id for c in CONFIG_ERRORS])
def test_config_cli(case: ConfigCase, home, seeded_db, tmp_path):
    """`detect --config` and `pipeline run --config` refuse the file in one line before the warehouse is
    opened: its bytes are the same after, and no write-ahead log was left."""
    TALLY.tried("config", case.id, via="CLI")
    path = _config_path(case, tmp_path)
    before = seeded_db.read_bytes()
    if case.target == "detect":
        result = cli("detect", "--db", seeded_db, "--config", path)
    else:
        # --dask-address with --task-runner thread is refused right after the file is read: a file wrongly
        # accepted fails the message check instead of starting a pipeline that would download
        result = cli("pipeline", "run", "--db", seeded_db, "--config", path, "--task-runner", "thread",
                     "--dask-address", "tcp://127.0.0.1:9")
    line = assert_one_line_error(result)
    _check_config_message(case, path, line.removeprefix("error: "))
    assert seeded_db.read_bytes() == before and not list(seeded_db.parent.glob("*.wal"))


# ----------------------------------------------------------------------------------------- model files

@pytest.fixture(scope="module")
def shipped_model(tmp_path_factory) -> Path:
    """A copy of the shipped ranker folder (the shipped files are never changed: checked at the end)."""
    import hashlib
    import shutil

    from tradewatch.detect import ranker

    source = ranker.shipped_dir()
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in source.iterdir()}
    copy = tmp_path_factory.mktemp("model") / "shipped"
    shutil.copytree(source, copy)
    yield copy
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in source.iterdir()} == before


def _model_folder(case: ModelCase, shipped_model: Path, tmp_path: Path) -> Path:
    import shutil

    folder = tmp_path / "m" / "model"
    shutil.copytree(shipped_model, folder)
    case.change(folder)
    return folder


def test_model_corpus_covers_both_outcomes():
    assert {c.expect for c in MODEL_CASES} == {"ok", "error"} and len(MODEL_CASES) >= 35
    assert len({c.id for c in MODEL_CASES}) == len(MODEL_CASES)


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c.id for c in MODEL_CASES])
def test_model_library_and_cli(case: ModelCase, home, shipped_model, tmp_path):
    """ranker.load and `tradewatch model status --model`: a changed folder is refused in one line naming the
    file; nothing in it is unpickled or run."""
    from tradewatch.detect import ranker

    TALLY.tried("model", case.id)
    TALLY.tried("model", case.id, via="CLI")
    folder = _model_folder(case, shipped_model, tmp_path)
    status = cli("model", "status", "--model", folder)
    if case.expect == "ok":
        assert ranker.load(folder).version.startswith("ranker-")
        assert status.exit_code == 0 and status.stdout.startswith("Ranker ranker-"), status.stderr
    else:
        with pytest.raises(TradewatchError) as info:
            ranker.load(folder)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{folder / case.file}: "), message
        assert case.text in message, message
        assert assert_one_line_error(status) == f"error: {message}"
    assert not (folder.parent / EXECUTED).exists(), "a payload in the model folder ran"


def test_a_user_ranker_is_found_through_tradewatch_home_and_checked(home, shipped_model):
    """Without --model, `model status` and detection use TRADEWATCH_HOME/model when it holds a manifest:
    the same checks apply there."""
    import shutil

    from corpus import _flip_byte

    TALLY.tried("model", "home-model-tampered", via="CLI")
    folder = home / "model"
    shutil.copytree(shipped_model, folder)
    assert cli("model", "status").stdout.splitlines()[1].strip() == f"from {folder}"
    _flip_byte(folder)
    assert_one_line_error(cli("model", "status"), str(folder / "ranker.skops"), "SHA-256")
