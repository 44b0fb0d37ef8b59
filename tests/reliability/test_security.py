"""Input that tries to get in: options and configuration bound as SQL parameters, data escaped in the HTML
report, the Comtrade key kept out of every output, downloads only from the configured hosts, files written
only under TRADEWATCH_HOME or paths the user named."""

from __future__ import annotations

import dataclasses

import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from corpus import GOOD_ROWS, ReviewCase, dat, review_cases, seven_zip
from reliability_helpers import TALLY, FAKE_KEY, assert_one_line_error, cli, files_under, home  # noqa: F401
from tradewatch.flows import download, ingest, warehouse
from tradewatch.flows.download import DownloadError, RetryPolicy

sys.path.insert(0, str(Path(__file__).parents[1] / "flows"))
from fakeserver import FakeServer, Reply  # noqa: E402

FIXTURES = Path(__file__).parents[1] / "flows" / "fixtures"
_spec = importlib.util.spec_from_file_location("review_world", Path(__file__).parents[1] / "detect" / "conftest.py")
world = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(world)

FAST = RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.02, timeout_s=3.0)
EVIL = "<script>alert('x')</script>"
INJECTIONS = ["KAZ' OR 1=1 --", "KAZ'; DROP TABLE anomalies; --", "x\") OR (\"1\"=\"1", "8542%' OR '%'='"]


@pytest.fixture
def server():
    with FakeServer() as fake:
        yield fake


@pytest.fixture(scope="module")
def _review_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("review") / "w.duckdb"
    world.build_review_warehouse(path)
    return path


@pytest.fixture
def review_db(_review_template, tmp_path) -> Path:
    path = tmp_path / "review" / "w.duckdb"
    path.parent.mkdir()
    shutil.copyfile(_review_template, path)
    return path


def _counts(db: Path) -> dict:
    with warehouse.opened(db, read_only=True) as con:
        return {table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("trade_flows", "runs", "anomalies", "reviews", "loads", "quarantine")}


# ------------------------------------------------------------------------------------------ SQL injection

@pytest.mark.parametrize("option", ["--transit", "--origin", "--product", "--tier"])
@pytest.mark.parametrize("attempt", INJECTIONS)
def test_flags_list_filters_refuse_what_is_not_a_code(review_db, option, attempt):
    # The CLI checks every filter before it reads anything (issue 15: a typo is an error, not "no route
    # matches"); the library binds them as parameters all the same (tests/detect/test_review.py).
    before = _counts(review_db)
    assert_one_line_error(cli("flags", "list", "--db", review_db, option, attempt, "--format", "json"), option)
    assert _counts(review_db) == before


@pytest.mark.parametrize("attempt", INJECTIONS[:2] + ["latest'; DROP TABLE runs; --", "run-2023-02%"])
def test_run_options_are_parameters(review_db, tmp_path, attempt):
    before = _counts(review_db)
    assert_one_line_error(cli("flags", "list", "--db", review_db, "--run", attempt), "--run", "no such run")
    assert_one_line_error(cli("report", "--db", review_db, "--run", attempt, "--out", tmp_path / "r.html"),
                          "--run", "no such run")
    assert_one_line_error(cli("flags", "show", world.ROUTE_CHIPS, "--db", review_db, "--run", attempt), "--run")
    assert_one_line_error(cli("flags", "show", attempt, "--db", review_db), "not flagged")
    assert not (tmp_path / "r.html").exists()
    assert _counts(review_db) == before


def test_review_note_and_reviewer_are_stored_as_text(review_db):
    note = "'); DELETE FROM anomalies; --"
    by = "o'brien\"; DROP TABLE reviews; --"
    result = cli("flags", "review", world.ROUTE_CHIPS, "--status", "watch", "--note", note, "--by", by,
                 "--db", review_db)
    assert result.exit_code == 0, result.stderr
    with warehouse.opened(review_db, read_only=True) as con:
        assert con.execute("SELECT note, reviewer FROM reviews").fetchall() == [(note, by)]
        assert con.execute("SELECT count(*) FROM anomalies").fetchone()[0] == _counts(review_db)["anomalies"] > 0


# ------------------------------------------------------------------------------------ review options

REVIEW_CASES = review_cases()
# What may reach a terminal from stored text: printable characters, newlines, and the box drawing around them.
_TERMINAL_SAFE = re.compile(r"[^\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]*")


def _review_args(case: ReviewCase, db: Path) -> list:
    args = ["flags", "review", world.ROUTE_CHIPS if case.route is None else case.route, "--status", case.status,
            "--note", case.note, "--db", db]
    return args + (["--by", case.by] if case.by is not None else []) + (["--run", case.run] if case.run else [])


def _assert_terminal_safe(text: str, where: str) -> None:
    assert _TERMINAL_SAFE.fullmatch(text), f"{where}: a control character reached the output: " \
        f"{[hex(ord(c)) for c in set(text) if not _TERMINAL_SAFE.fullmatch(c)]}"


def test_review_corpus_covers_both_outcomes():
    assert {c.expect for c in REVIEW_CASES} == {"ok", "error"} and len(REVIEW_CASES) >= 45
    assert len({c.id for c in REVIEW_CASES}) == len(REVIEW_CASES)


@pytest.mark.parametrize("case", REVIEW_CASES, ids=[c.id for c in REVIEW_CASES])
def test_review_options_are_refused_in_one_line_or_stored_and_shown_safely(review_db, case):
    TALLY.tried("review", case.id, via="CLI")
    before = _counts(review_db)
    result = cli(*_review_args(case, review_db))
    if case.expect == "error":
        line = assert_one_line_error(result, case.text)
        assert line.isprintable(), repr(line)
        assert _counts(review_db) == before, "a refused review stores nothing"
        return
    assert result.exit_code == 0 and not result.stderr, result.stderr
    with warehouse.opened(review_db, read_only=True) as con:
        stored = con.execute("SELECT route_id, status, note, reviewer FROM reviews").fetchall()
    assert stored == [(world.ROUTE_CHIPS, case.status, case.stored, case.by or os.environ.get("USER") or "analyst")]
    _assert_terminal_safe(result.stdout, "flags review")
    outputs = {}
    for args in (["flags", "show", world.ROUTE_CHIPS], ["flags", "history", world.ROUTE_CHIPS], ["flags", "list"]):
        shown = cli(*args, "--db", review_db)
        assert shown.exit_code == 0, shown.stderr
        _assert_terminal_safe(shown.stdout, " ".join(args))
        outputs[args[1]] = shown.stdout
    assert case.stored.splitlines()[0].split("\t")[0][:40] in outputs["show"], "the note is shown, as text"


def test_review_notes_typed_in_are_escaped_in_the_report(review_db, tmp_path):
    """Hostile notes stored through `flags review` (the way notes get in) are text in the HTML report: in the
    table's title attributes and the route sections."""
    notes = {c.id: c.note for c in REVIEW_CASES}
    for route, note in ((world.ROUTE_CHIPS, notes["review-note-html"]),
                        (world.ROUTE_SCRIPT, notes["review-note-attribute-breakout"])):
        TALLY.tried("review", f"report-{route}", via="CLI")
        result = cli("flags", "review", route, "--status", "confirmed", "--note", note, "--db", review_db)
        assert result.exit_code == 0, result.stderr
    out = tmp_path / "report.html"
    assert cli("report", "--db", review_db, "--out", out, "--top", "5").exit_code == 0
    text = out.read_text(encoding="utf-8")
    page = _Tags()
    page.feed(text)  # asserts no on* attribute got in
    assert page.tags.count("script") == 1 and "img" not in page.tags
    assert "alert(1)" not in "".join(page.script_text) and "<script>alert(1)" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img" in text, "the note is shown, as text"
    assert '&#34; onmouseover=&#34;alert(3)&#34;' in text or "&quot; onmouseover=&quot;alert(3)&quot;" in text


def test_escapes_already_stored_do_not_reach_the_terminal(review_db):
    with warehouse.opened(review_db) as con:
        con.execute("INSERT INTO reviews VALUES (?, 'watch', ?, ?, now(), ?, 0.5, 1.0)",
                    [world.ROUTE_CHIPS, "\x1b]0;owned\x07\x1b[2Jnote", "\x1b[31mmallory", world.RUN_NEW])
    for args in (["flags", "show", world.ROUTE_CHIPS], ["flags", "history", world.ROUTE_CHIPS], ["flags", "list"]):
        shown = cli(*args, "--db", review_db)
        assert shown.exit_code == 0, shown.stderr
        _assert_terminal_safe(shown.stdout, " ".join(args))


@pytest.mark.parametrize("option, value", [("--reporters", "KAZ' OR 1=1 --"), ("--reporters", "KAZ;DROP TABLE loads"),
                                           ("--products", "8542' OR '1'='1"), ("--products", "8542;DROP TABLE loads")])
def test_comtrade_options_are_checked_before_any_request(home, server, tmp_path, option, value):
    args = {"--reporters": "KAZ", "--products": "8542"}
    args[option] = value
    db = tmp_path / "w.duckdb"
    result = cli("ingest", "comtrade", "--reporters", args["--reporters"], "--products", args["--products"],
                 "--from", "2022-01", "--to", "2022-01", "--base-url", server.url, "--task-runner", "none", "--db", db)
    assert_one_line_error(result, option)
    assert server.requests == [] and not db.exists()


@pytest.mark.parametrize("args, option", [(["detect", "--event", "2022-03' OR 1=1 --"], "--event"),
                                          (["ingest", "comext", "--from", "2022-03'; --", "--to", "2022-03"], "--from"),
                                          (["ingest", "comext", "--from", "2022", "--to", "2022", "--freq", "A'--"], "--freq")])
def test_other_options_are_validated(home, tmp_path, args, option):
    assert_one_line_error(cli(*args, "--db", tmp_path / "w.duckdb"), option)


def test_config_values_with_quotes_are_literals(home, tmp_path):
    """A detect configuration whose text values hold SQL: refused or matched literally, never run."""
    db = world.build_detectable_warehouse(tmp_path / "w.duckdb")
    before = _counts(db)
    config = tmp_path / "detect.toml"
    config.write_text('source_priority = ["comext\'; DROP TABLE trade_flows; --", "comext"]\n')
    result = cli("detect", "--db", db, "--config", config, "--top", "1")
    assert result.exit_code in (0, 2) and "Traceback" not in result.stderr, result.stderr
    assert _counts(db)["trade_flows"] == before["trade_flows"]
    config.write_text('origins = ["DEU\'); DROP TABLE trade_flows; --"]\n')
    assert_one_line_error(cli("detect", "--db", db, "--config", config), "origins")
    assert _counts(db)["trade_flows"] == before["trade_flows"]


def test_paths_with_quotes_and_semicolons_are_literals(tmp_path, monkeypatch):
    """TRADEWATCH_HOME, --db and data file paths reach DuckDB quoted, in every reader and the parse step."""
    home = tmp_path / "it's; DROP TABLE x; --home"
    monkeypatch.setenv("TRADEWATCH_HOME", str(home))
    folder = tmp_path / "o'brien; --data"
    folder.mkdir()
    shutil.copy(FIXTURES / "comtrade" / "breakdowns.csv", folder / "comtrade'; DROP.csv")
    (folder / "full_v2_202203.7z").write_bytes(seven_zip({"full_202203.dat": dat(GOOD_ROWS)}))
    shutil.copy(FIXTURES / "ecb" / "EXR_M.USD.EUR.SP00.A.csv", folder / "ecb'.csv")
    db = tmp_path / "w'; DROP TABLE trade_flows; --.duckdb"
    result = cli("ingest", "files", folder / "comtrade'; DROP.csv", folder / "full_v2_202203.7z", "--db", db, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["totals"]["rows"] > 3
    assert cli("ingest", "ecb", "--file", folder / "ecb'.csv", "--db", db).exit_code == 0
    parsed = ingest.parse_file(folder / "full_v2_202203.7z")
    assert parsed.rows == 3 and str(home) in parsed.canonical
    with warehouse.opened(db) as con:
        loaded = ingest.load_parsed(con, ingest.check_parsed(parsed), force=True)
        assert loaded.rows == 3
        assert con.execute("SELECT count(*) FROM loads WHERE file LIKE '%comtrade''; DROP.csv'").fetchone()[0] >= 1


# ------------------------------------------------------------------------------------- HTML report escaping

class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.plain_i = 0
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_script = tag == "script"
        if tag == "i" and not dict(attrs).get("style", "").startswith("background:"):
            self.plain_i += 1  # the report's own <i> are legend swatches with a background style
        for name, _ in attrs:
            assert not name.startswith("on"), f"an event handler attribute got in: {name}"

    def handle_endtag(self, tag):
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data):
        if self._in_script:
            self.script_text.append(data)


def test_report_escapes_every_data_string(review_db, tmp_path, home):
    img = '<img src=x onerror="alert(1)">'
    with warehouse.opened(review_db) as con:
        con.execute("UPDATE anomalies SET product_name = ?, reasons = ?, tier = ?",
                    [f"chips {EVIL} & co", f"{img} surge </td></tr></table>", "1<b>"])
        con.execute("UPDATE anomalies SET transit_iso3 = ? WHERE route_id = ?", ["<i>", world.ROUTE_CARS])
        con.execute("UPDATE loads SET file = ? WHERE load_id = 1", [f"full_v2_{EVIL}.7z"])
        con.execute("UPDATE runs SET model_version = ?, params_json = ?",
                    [EVIL, json.dumps({"event": "2022-03", "note": "</script><script>alert(2)</script>"})])
        con.execute("INSERT INTO reviews VALUES (?, 'watch', ?, ?, now(), ?, 0.5, 1.0)",
                    [world.ROUTE_CHIPS, EVIL, img, world.RUN_NEW])
    out = tmp_path / "report.html"
    result = cli("report", "--db", review_db, "--out", out, "--top", "5")
    assert result.exit_code == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    page = _Tags()
    page.feed(text)
    assert page.tags.count("script") == 1, "only the report's own script"
    assert not {"img", "b"} & set(page.tags) and page.plain_i == 0, "no tag from the data"
    assert "alert" not in "".join(page.script_text)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text, "the data is shown, as text"
    assert "<script>alert" not in text and "<img" not in text


def test_terminal_and_csv_output_keep_markup_as_text(review_db):
    with warehouse.opened(review_db) as con:
        con.execute("UPDATE anomalies SET reasons = ?", ["[red]alarm[/red] " + EVIL])
    table = cli("flags", "list", "--db", review_db)
    assert table.exit_code == 0 and "[red]alarm[/red]" in table.stdout
    show = cli("flags", "show", world.ROUTE_CHIPS, "--db", review_db)
    assert show.exit_code == 0 and "[red]alarm[/red]" in show.stdout


# ------------------------------------------------------------------------------------- the Comtrade key

def _comtrade_records(query: dict) -> list[dict]:
    return [{"freqCode": "M", "period": query["period"], "reporterCode": int(query["reporterCode"]), "flowCode": flow,
             "partnerCode": partner, "partner2Code": 0, "cmdCode": query["cmdCode"], "customsCode": "C00",
             "motCode": 0, "primaryValue": 100.0 + partner % 7, "netWgt": 1.0}
            for flow in query["flowCode"].split(",") for partner in (643, 51, 417)]


def _scan_for_key(home: Path, db: Path | None) -> list[str]:
    found = [str(p) for p in files_under(home) if FAKE_KEY.encode() in p.read_bytes()]
    if db is not None and db.exists():
        with warehouse.opened(db, read_only=True) as con:
            columns = con.execute("""SELECT table_name, column_name FROM information_schema.columns
                                     WHERE data_type = 'VARCHAR' AND table_schema = 'main'""").fetchall()
            for table, column in columns:
                hits = con.execute(f'SELECT count(*) FROM "{table}" WHERE contains("{column}", ?)', [FAKE_KEY]).fetchone()[0]
                if hits:
                    found.append(f"{table}.{column}")
        found += [str(p) for p in db.parent.glob(db.name + "*") if FAKE_KEY.encode() in p.read_bytes()]
    return found


def test_api_key_never_leaks(home, server, tmp_path, monkeypatch, caplog):
    """401 (the body echoes the key), 500 until giving up, 429 then success, success: the key goes only in
    the request header; never in output, logs, cache files, task parameters or the warehouse."""
    monkeypatch.setenv("COMTRADE_API_KEY", FAKE_KEY)
    caplog.set_level(logging.DEBUG)
    answers = {"mode": "401"}

    def answer(path, query, headers):
        if path != "/data/v1/get/C/M/HS":
            return Reply(404, b"no")
        if answers["mode"] == "401":
            return Reply(401, json.dumps({"statusCode": 401, "message": f"Access denied: key {FAKE_KEY}"}).encode())
        if answers["mode"] == "500":
            return Reply(500, f"upstream failed for {FAKE_KEY}".encode())
        if answers["mode"] == "429" and len(server.requests) % 2:
            return Reply(429, b"slow down", {"Retry-After": "0"})
        return Reply(200, json.dumps({"count": 6, "data": _comtrade_records(query), "error": ""}).encode(),
                     {"Content-Type": "application/json"})

    server.handle(answer)
    db = tmp_path / "w.duckdb"
    args = ["ingest", "comtrade", "--reporters", "KAZ", "--products", "854231", "--from", "2022-01", "--to", "2022-01",
            "--base-url", server.url, "--task-runner", "none", "--db", db]
    outputs = []
    for mode in ("401", "500"):
        answers["mode"] = mode
        result = cli(*args)
        # the 500s are retried, each retry said in a line of its own (host only) before the one error line
        retries = [line for line in result.stderr.splitlines() if line.startswith("retrying: ")]
        assert len(retries) == (2 if mode == "500" else 0), result.stderr
        assert_one_line_error(dataclasses.replace(result, stderr="\n".join(
            line for line in result.stderr.splitlines() if not line.startswith("retrying: "))), "HTTP " + mode)
        outputs.append(result.stdout + result.stderr)
    for mode in ("429", "ok"):
        answers["mode"] = mode
        result = cli(*args, "--force")
        assert result.exit_code == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    assert json.loads(cli("status", "--db", db, "--json").stdout)["trade_flows"][0]["rows"] == 6
    items = ingest.comtrade_items(["KAZ"], ["2022-01"], freq="M", products=["854231"], base_url=server.url)
    outputs.append(json.dumps([vars(item) for item in items]))  # what a Prefect task would be given
    for command in _all_help_commands():
        outputs.append(cli(*command, "--help").stdout)
    assert all(r.headers.get("Ocp-Apim-Subscription-Key") == FAKE_KEY for r in server.requests), "the key was sent"
    assert not [text for text in outputs if FAKE_KEY in text]
    assert FAKE_KEY not in caplog.text
    assert _scan_for_key(home, db) == []


def _all_help_commands() -> list[list[str]]:
    from tradewatch.cli.main import app

    commands = [[]]
    commands += [[c.name or c.callback.__name__] for c in app.registered_commands]
    for group in app.registered_groups:
        commands.append([group.name])
        commands += [[group.name, c.name or c.callback.__name__] for c in group.typer_instance.registered_commands]
    return commands


def test_key_is_not_sent_where_a_redirect_leads(home, monkeypatch):
    """A redirect to another host (here: the same machine under another name) gets no credentials."""
    monkeypatch.setenv("COMTRADE_API_KEY", FAKE_KEY)
    with FakeServer() as first, FakeServer() as second:
        target = second.url.replace("127.0.0.1", "localhost") + "/data"
        first.route("/data", Reply(302, b"", {"Location": target}))
        second.route("/data", Reply(200, b'{"data": []}'))
        download.fetch(f"{first.url}/data", home / "x.json", headers={"Ocp-Apim-Subscription-Key": FAKE_KEY},
                       policy=FAST, conditional=False)
        assert first.requests[0].headers.get("Ocp-Apim-Subscription-Key") == FAKE_KEY
        assert "Ocp-Apim-Subscription-Key" not in second.requests[0].headers


# ---------------------------------------------------------------------------------------- allowed hosts

@pytest.mark.parametrize("url", ["https://example.org/full_v2_202203.7z", "http://ec.europa.eu/x.7z",
                                 "ftp://ec.europa.eu/x.7z", "file:///etc/passwd", "https://ec.europa.eu.evil.example/x",
                                 "https://evil.example/?ec.europa.eu", "https://10.0.0.1/x", "//ec.europa.eu/x"])
def test_downloads_go_only_to_configured_hosts(home, url):
    with pytest.raises(DownloadError) as info:
        download.fetch(url, home / "cache" / "x.7z", policy=FAST)
    assert "\n" not in str(info.value) and ("allowed hosts" in str(info.value) or "http" in str(info.value))
    assert not (home / "cache").exists(), "nothing is created for a refused URL"


@pytest.mark.parametrize("location", ["https://example.org/full_v2_202203.7z", "http://169.254.169.254/latest/meta-data",
                                      "file:///etc/passwd"])
def test_redirect_to_another_host_is_refused(home, server, tmp_path, location):
    server.route("/full_v2_202203.7z", Reply(302, b"", {"Location": location}))
    result = cli("ingest", "comext", "--from", "2022-03", "--to", "2022-03", "--base-url", f"{server.url}/{{file}}",
                 "--task-runner", "none", "--db", tmp_path / "w.duckdb")
    assert_one_line_error(result, "full_v2_202203.7z")
    assert any(word in result.stderr for word in ("allowed hosts", "expected https", "not an http"))
    assert len(server.requests) == 1 and not list((home / "cache").rglob("*.7z"))


def test_base_url_must_be_https_unless_loopback(home, tmp_path):
    assert_one_line_error(cli("ingest", "ecb", "--base-url", "http://example.org/service", "--db", tmp_path / "w.duckdb"),
                          "expected https")
    assert_one_line_error(cli("ingest", "ecb", "--base-url", "ftp://example.org/service", "--db", tmp_path / "w.duckdb"),
                          "--base-url")


# --------------------------------------------------------------------------------- where files are written

def test_files_are_written_only_under_home_or_named_paths(tmp_path, monkeypatch):
    user_home, tw_home, cwd, scratch = (tmp_path / name for name in ("user", "tw", "cwd", "tmpdir"))
    for folder in (user_home, cwd, scratch):
        folder.mkdir()
    inputs, out, dbdir = tmp_path / "in", tmp_path / "out", tmp_path / "db"
    for folder in (inputs, out, dbdir):
        folder.mkdir()
    shutil.copy(FIXTURES / "comext" / "full_202203.dat", inputs)
    shutil.copy(FIXTURES / "comtrade" / "breakdowns.json", inputs)
    shutil.copytree(FIXTURES / "baci", inputs / "baci")
    shutil.copy(FIXTURES / "ecb" / "EXR_M.USD.EUR.SP00.A.csv", inputs)
    (inputs / "full_v2_202204.7z").write_bytes(seven_zip({"full_202204.dat": dat(GOOD_ROWS).replace(b"202203", b"202204")}))
    db = world.build_detectable_warehouse(dbdir / "w.duckdb")
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.setenv("TRADEWATCH_HOME", str(tw_home))
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(cwd)
    before = {p: p.stat().st_mtime_ns for p in files_under(tmp_path)}

    steps = [
        # the small fixture month replaces the test world's bigger one: a shrink, allowed here (this test is
        # about where files are written; the shrink guard has its own tests)
        ["ingest", "files", inputs / "full_202203.dat", inputs / "breakdowns.json", inputs / "baci",
         inputs / "full_v2_202204.7z", "--allow-shrink", "--db", db],
        ["ingest", "ecb", "--file", inputs / "EXR_M.USD.EUR.SP00.A.csv", "--db", db],
        ["status", "--db", db],
        ["detect", "--db", db, "--top", "3"],
        ["flags", "list", "--db", db, "--format", "csv", "--out", out / "flags.csv"],
        ["report", "--db", db, "--out", out / "report.html"],
        ["report", "--db", db],
    ]
    for step in steps:
        result = cli(*step)
        assert result.exit_code == 0, (step, result.stderr)
    parsed = ingest.parse_file(inputs / "full_v2_202204.7z")  # the pipeline's parse step: Parquet in the cache
    assert Path(parsed.canonical).is_relative_to(tw_home)

    after = files_under(tmp_path)
    new_or_changed = {p for p in after if before.get(p) != p.stat().st_mtime_ns}
    allowed = [tw_home, out]
    outside = sorted(str(p) for p in new_or_changed
                     if not any(p.is_relative_to(a) for a in allowed) and not p.name.startswith("w.duckdb"))
    assert outside == [], f"written outside TRADEWATCH_HOME and the named paths: {outside}"
    assert {p.name for p in files_under(out)} == {"flags.csv", "report.html"}
    assert list((tw_home / "reports").glob("report-*.html")), "the default report goes under TRADEWATCH_HOME"
    assert not files_under(cwd) and not files_under(user_home) and not files_under(scratch)
    assert not [p for p in (tw_home / "cache" / "extract").iterdir()], "no scratch left after the loads"
    assert os.listdir(dbdir) and all(name.startswith("w.duckdb") for name in os.listdir(dbdir))
