"""`tradewatch ui` through Starlette's TestClient on the small review warehouse: pages, filters, decisions shared
with the CLI, CSRF, token, headers, escaping, and a warehouse busy with another process's writes."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app as cli_app

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from starlette.testclient import TestClient  # noqa: E402

from tradewatch.cli import ui  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "review_fixture", Path(__file__).resolve().parents[1] / "detect" / "conftest.py"
)
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)

runner = CliRunner()
TOKEN = "s3cret-token-for-tests-0123456789"
HOLDER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])  # a writable connection: DuckDB's one writing process
print("holding", flush=True)
sys.stdin.read()
con.close()
"""


@pytest.fixture(scope="module")
def _template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ui") / "w.duckdb"
    fixture.build_review_warehouse(path)
    return path


@pytest.fixture
def db(_template, tmp_path) -> Path:
    path = tmp_path / "w.duckdb"
    path.write_bytes(_template.read_bytes())
    return path


def client(db, **kwargs) -> TestClient:
    return TestClient(ui.create_app(db, wait_s=kwargs.pop("wait_s", 0.3), **kwargs), base_url="http://127.0.0.1")


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)"', html)


def decide(browser: TestClient, route: str, status: str, note: str, by: str = "ann", **extra):
    page = browser.get(f"/routes/{route}", params={"run": fixture.RUN_NEW})
    form = {"csrf": csrf_of(page.text), "run": fixture.RUN_NEW, "status": status, "note": note, "by": by, **extra}
    return browser.post(f"/routes/{route}/review", data=form, follow_redirects=False)


def reviews_in(db: Path) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT route_id, status, note, reviewer FROM reviews ORDER BY reviewed_at").fetchall()
    finally:
        con.close()


def cli(*args: str):
    return runner.invoke(cli_app, list(args), env={"COLUMNS": "250"})


def test_pages_render_runs_flags_route_and_css(db):
    browser = client(db)
    runs = browser.get("/")
    assert runs.status_code == 200
    assert fixture.RUN_NEW in runs.text and fixture.RUN_OLD in runs.text
    flags = browser.get("/runs/latest")
    assert flags.status_code == 200
    assert set(row_ids(flags.text)) == {fixture.ROUTE_CHIPS, fixture.ROUTE_MODEMS, fixture.ROUTE_CARS,
                                        fixture.ROUTE_SCRIPT, fixture.ROUTE_LEDS}
    assert "5 of 5 flagged routes shown" in flags.text
    old = browser.get(f"/runs/{fixture.RUN_OLD[:12]}")  # a prefix, as --run takes
    assert len(row_ids(old.text)) == 3
    route = browser.get(f"/routes/{fixture.ROUTE_CHIPS}", params={"run": fixture.RUN_NEW})
    assert route.status_code == 200
    text = route.text
    assert text.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 1  # the report's leg chart
    assert 'class="event"' in text and "band-baseline" in text
    for leg in ("DEU→KAZ", "DEU→RUS", "KAZ→RUS"):
        assert leg in text
    # one currency per axis: the Comtrade leg in USD on a right axis of its own (no ECB rates loaded)
    assert "KAZ→RUS (USD, right axis)" in text and 'class="axis-title" x="58" y="14" text-anchor="end">EUR<' in text
    assert "USD legs on the right axis (no ECB rates loaded to convert them)" in text
    assert "onward_growth" in text and "unavailable: no transit→Russia data" in text  # a feature and why
    assert "full_v2_" in text and "comtrade_KAZ_" in text  # the loads the series came from
    assert 'id="no-history"' in text and 'id="decide"' in text
    css = browser.get("/ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css") and ".demo-banner" in css.text


def test_filters_and_sorting_like_flags_list(db):
    browser = client(db)
    assert set(row_ids(browser.get("/runs/latest", params={"transit": "KAZ"}).text)) == {
        fixture.ROUTE_CHIPS, fixture.ROUTE_CARS}
    assert set(row_ids(browser.get("/runs/latest", params={"origin": "Germany"}).text)) == {
        fixture.ROUTE_CHIPS, fixture.ROUTE_LEDS}
    assert row_ids(browser.get("/runs/latest", params={"product": "8517"}).text) == [fixture.ROUTE_MODEMS]
    by_excess = row_ids(browser.get("/runs/latest", params={"sort": "excess"}).text)
    listed = json.loads(cli("flags", "list", "--db", str(db), "--sort", "excess", "--format", "json").stdout)
    assert by_excess == [row["id"] for row in listed]
    tier = row_ids(browser.get("/runs/latest", params={"tier": "1"}).text)
    listed = json.loads(cli("flags", "list", "--db", str(db), "--tier", "1", "--format", "json").stdout)
    assert tier == [row["id"] for row in listed] and tier
    none = browser.get("/runs/latest", params={"transit": "KAZ", "product": "9999"})
    assert none.status_code == 200 and "No flagged route matches." in none.text
    bad = browser.get("/runs/latest", params={"transit": "KAZZ"})
    assert bad.status_code == 400 and "did you mean KAZ?" in bad.text and 'value="KAZZ"' in bad.text
    assert browser.get("/runs/latest", params={"sort": "nonsense"}).status_code == 400
    assert browser.get("/runs/no-such-run").status_code == 400


def test_csv_export_has_the_filtered_rows_with_ids(db):
    browser = client(db)
    response = browser.get(f"/runs/{fixture.RUN_NEW}/flags.csv", params={"transit": "KAZ"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {row["id"] for row in rows} == {fixture.ROUTE_CHIPS, fixture.ROUTE_CARS}
    assert all(row["run_id"] == fixture.RUN_NEW for row in rows)


def test_a_decision_in_the_browser_shows_in_flags_list_and_back(db):
    browser = client(db)
    stored = decide(browser, fixture.ROUTE_CHIPS, "confirmed", "matches the customs case", by="maria")
    assert stored.status_code == 303
    assert reviews_in(db) == [(fixture.ROUTE_CHIPS, "confirmed", "matches the customs case", "maria")]
    after = browser.get(stored.headers["location"])
    assert "Decision stored: confirmed." in after.text and "maria" in after.text
    assert 'id="by" required maxlength="100" value="maria"' in after.text  # this browser's name, filled in
    listed = {row["id"]: row for row in json.loads(cli("flags", "list", "--db", str(db), "--format", "json").stdout)}
    assert listed[fixture.ROUTE_CHIPS]["status"] == "confirmed"
    assert listed[fixture.ROUTE_CHIPS]["reviewed_by"] == "maria"

    done = cli("flags", "review", fixture.ROUTE_MODEMS, "--db", str(db), "--status", "watch",
               "--note", "asked customs", "--by", "olga")
    assert done.exit_code == 0, done.output
    page = browser.get(f"/routes/{fixture.ROUTE_MODEMS}").text
    assert "asked customs" in page and "olga" in page and '<span id="status" class="status status-watch">watch</span>' in page
    watched = browser.get("/runs/latest", params={"status": "watch"})
    assert row_ids(watched.text) == [fixture.ROUTE_MODEMS]


def test_a_decision_needs_a_note_a_name_and_a_known_status(db):
    browser = client(db)
    for form, message in ((dict(note="  "), "expected a note"), (dict(by=""), "expected the name"),
                          (dict(status="burn"), "expected one of confirmed, dismissed, watch")):
        values = {"status": "confirmed", "note": "checked", "by": "ann", **form}
        response = decide(browser, fixture.ROUTE_CHIPS, values.pop("status"), values.pop("note"), values.pop("by"))
        assert response.status_code == 400 and message in response.text and "NOT stored" in response.text
    assert reviews_in(db) == []


def test_a_post_without_the_sessions_csrf_token_is_refused(db):
    browser = client(db)
    form = {"run": fixture.RUN_NEW, "status": "dismissed", "note": "n", "by": "eve"}
    assert browser.post(f"/routes/{fixture.ROUTE_CHIPS}/review", data=form).status_code == 403
    page = browser.get(f"/routes/{fixture.ROUTE_CHIPS}")
    other = client(db)  # another session's token does not fit this one
    other.get("/")
    forged = other.post(f"/routes/{fixture.ROUTE_CHIPS}/review", data={**form, "csrf": csrf_of(page.text)})
    assert forged.status_code == 403 and "nothing was stored" in forged.text
    assert reviews_in(db) == []


def test_with_a_token_every_request_needs_it(db):
    browser = client(db, token=TOKEN)
    assert browser.get("/").status_code == 401
    assert browser.get("/ui.css").status_code == 401
    assert browser.get("/", params={"token": "wrong"}).status_code == 401
    assert browser.post(f"/routes/{fixture.ROUTE_CHIPS}/review", data={}).status_code == 401
    header = client(db, token=TOKEN)
    assert header.get("/", headers={ui.TOKEN_HEADER: TOKEN}).status_code == 200
    first = browser.get("/runs/latest", params={"token": TOKEN, "transit": "KAZ"}, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/runs/latest?transit=KAZ"  # token out of the URL
    assert TOKEN not in first.headers["set-cookie"]
    assert browser.get("/runs/latest").status_code == 200  # the cookie carries it now
    assert decide(browser, fixture.ROUTE_CHIPS, "watch", "token session", by="kim").status_code == 303
    assert len(reviews_in(db)) == 1


def test_security_headers_on_every_response_and_loopback_host_names_only(db):
    browser = client(db)
    for response in (browser.get("/"), browser.get("/nowhere"), browser.get("/routes/nope"),
                     client(db, token=TOKEN).get("/")):
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    assert browser.get("/", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding
    assert browser.get("/", headers={"host": "localhost:8765"}).status_code == 200
    assert "<script" not in browser.get("/runs/latest").text


@pytest.mark.parametrize("path", ["/routes/..%2F..%2Fpyproject.toml", "/runs/..%2F..%2Fpyproject.toml",
                                  "/ui.css/../../pyproject.toml", "/templates/ui/base.html.j2", "/static/ui.css"])
def test_no_url_reaches_the_filesystem(db, path):
    response = client(db).get(path)
    assert response.status_code in (400, 404)
    assert "[build-system]" not in response.text and "{%" not in response.text


def test_data_with_markup_is_escaped(db):
    browser = client(db)
    flags = browser.get("/runs/latest").text
    route = browser.get(f"/routes/{fixture.ROUTE_SCRIPT}").text
    for page in (flags, route):
        assert fixture.EVIL not in page
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    decide(browser, fixture.ROUTE_CHIPS, "watch", fixture.EVIL, by="<b>x</b>")
    page = browser.get(f"/routes/{fixture.ROUTE_CHIPS}").text
    assert fixture.EVIL not in page and "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_demo_data_is_labelled(db):
    import duckdb

    con = duckdb.connect(str(db))
    con.execute("UPDATE loads SET source = 'demo' WHERE load_id = 1")
    con.close()
    browser = client(db)
    for path in ("/", "/runs/latest", f"/routes/{fixture.ROUTE_CHIPS}"):
        assert "Synthetic demo data" in browser.get(path).text
    rows = list(csv.DictReader(io.StringIO(browser.get("/runs/latest/flags.csv").text)))
    assert {row["data"] for row in rows} == {"synthetic demo data"}


def test_a_busy_warehouse_is_a_503_and_a_decision_is_stored_whole_or_not_at_all(db):
    browser = client(db, wait_s=0.5)
    page = browser.get(f"/routes/{fixture.ROUTE_CHIPS}", params={"run": fixture.RUN_NEW})
    form = {"csrf": csrf_of(page.text), "run": fixture.RUN_NEW, "status": "dismissed",
            "note": "licensed distributor, end use verified", "by": "maria"}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        for path in ("/", "/runs/latest", f"/routes/{fixture.ROUTE_CHIPS}", "/runs/latest/flags.csv"):
            busy = browser.get(path)
            assert busy.status_code == 503 and ui.BUSY_TITLE in busy.text and "try again" in busy.text, path
        refused = browser.post(f"/routes/{fixture.ROUTE_CHIPS}/review", data=form, follow_redirects=False)
        assert refused.status_code == 503
        assert "Your decision was NOT stored" in refused.text and ui.BUSY_TITLE in refused.text
        assert "licensed distributor, end use verified</textarea>" in refused.text  # the note is kept to resubmit
        assert 'value="maria"' in refused.text
    finally:
        holder.stdin.close()
        holder.wait(timeout=20)
    assert reviews_in(db) == []
    stored = browser.post(f"/routes/{fixture.ROUTE_CHIPS}/review", data=form, follow_redirects=False)
    assert stored.status_code == 303
    assert reviews_in(db) == [(fixture.ROUTE_CHIPS, "dismissed", "licensed distributor, end use verified", "maria")]


def test_a_thousand_flagged_routes_render_on_one_page(db):
    import duckdb
    import polars as pl

    from tradewatch.flows import schema

    con = duckdb.connect(str(db))
    rows = [fixture._route(fixture.RUN_NEW, f"r-synthetic-{n:04d}", 10 + n, 0.5 - n / 10_000, "DEU", "KAZ",
                           "854231", 1_000.0 + n, 2.0, f"synthetic anomaly {n}") for n in range(1000)]
    con.register("synthetic", pl.DataFrame(rows).to_arrow())  # one INSERT … SELECT, not 1,000 statements
    con.execute(schema.insert_select_sql("anomalies", {name: name for name in rows[0]}, "FROM synthetic"))
    con.close()
    page = client(db).get("/runs/latest")
    assert page.status_code == 200 and len(row_ids(page.text)) == 1005


def test_the_command_refuses_other_hosts_without_a_token(db):
    result = cli("ui", "--db", str(db), "--host", "0.0.0.0")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == ["error: --host 0.0.0.0: serving beyond this machine needs --token SECRET (or $TRADEWATCH_UI_TOKEN)"]
    short = cli("ui", "--db", str(db), "--host", "0.0.0.0", "--token", "abc")
    assert short.exit_code == 2 and "at least 16 characters" in short.output
    missing = cli("ui", "--db", str(db.parent / "none.duckdb"))
    assert missing.exit_code == 2 and "no warehouse here yet" in missing.output
    assert "ui" in cli("--help").output


def test_the_command_serves_with_a_token_on_loopback(db):
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tradewatch.cli.main", "ui", "--db", str(db), "--port", str(port)],
                              env={**__import__("os").environ, "TRADEWATCH_UI_TOKEN": TOKEN},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            try:
                first = httpx.get(f"{base}/", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert first.status_code == 401 and "server" not in first.headers
        with httpx.Client(base_url=base, timeout=10) as browser:
            page = browser.get("/runs/latest", params={"token": TOKEN}, follow_redirects=True)
            assert page.status_code == 200 and len(row_ids(page.text)) == 5
            assert browser.get(f"/routes/{fixture.ROUTE_CHIPS}").status_code == 200
    finally:
        server.terminate()
        try:
            _, err = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate()
    assert f"tradewatch ui on http://127.0.0.1:{port}/?token=…" in err and TOKEN not in err
