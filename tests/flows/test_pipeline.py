"""The `pipeline` flow in-process: ingest from a loopback stand-in for Eurostat, idempotent re-runs, a revised month, detection and artifacts, Dask."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

COMEXT_HEADER = (
    "REPORTER,PARTNER,TRADE_TYPE,PRODUCT_NC,PRODUCT_SITC,PRODUCT_CPA21,PRODUCT_CPA22,PRODUCT_BEC,PRODUCT_BEC5,"
    "PRODUCT_SECTION,FLOW,STAT_PROCEDURE,SUPPL_UNIT,PERIOD,VALUE_EUR,VALUE_NAC,QUANTITY_KG,QUANTITY_SUPPL_UNIT"
)
REPORTERS = ("DE", "FR", "PL", "LT", "IT", "NL")
PARTNERS = ("RU", "KZ", "GE", "AM", "TR", "US")
PRODUCTS = ("85423190", "84713000", "85176200", "90138000", "88073000", "73181500")
# Planted diversion: after the event DE's exports of chips to Russia collapse and to Kazakhstan jump.
DIVERTED = ("DE", "KZ", "85423190")


def months_between(start: str, end: str) -> list[str]:
    year, month = int(start[:4]), int(start[5:])
    out = []
    while f"{year:04d}-{month:02d}" <= end:
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def comext_rows(month: str, *, bump: float = 1.0) -> list[str]:
    """Rows of one month in the real 18-column Comext layout; deterministic, with one planted route."""
    after = month >= "2022-03"
    lines = []
    for r_index, reporter in enumerate(REPORTERS):
        for p_index, partner in enumerate(PARTNERS):
            for k_index, product in enumerate(PRODUCTS):
                value = 10_000 * (1 + r_index) * (1 + p_index) + 1_000 * k_index + 37 * int(month[5:])
                if after and partner == "RU":
                    value *= 0.1
                if after and (reporter, partner, product) == DIVERTED:
                    value *= 25
                value = int(value * bump)
                lines.append(f"{reporter},{partner},E,{product},,,,,,,2,,,{month.replace('-', '')},{value},,,")
    return lines


def write_comext_7z(path: Path, month: str, *, bump: float = 1.0) -> Path:
    """A Comext bulk file full_v2_YYYYMM.7z holding full_YYYYMM.dat, as Eurostat publishes it."""
    import py7zr

    text = COMEXT_HEADER + "\n" + "\n".join(comext_rows(month, bump=bump)) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with py7zr.SevenZipFile(path, "w") as archive:
        archive.writef(io.BytesIO(text.encode()), f"full_{month.replace('-', '')}.dat")
    return path


class EurostatStandIn:
    """A loopback HTTP server answering the bulk facility's `/files?file=comext%2F…%2Ffull_v2_YYYYMM.7z`
    requests from a folder, with ETag / Last-Modified and 304 answers to conditional requests. Counts
    the files it actually sent (status 200). Its first `failures` requests get 503 (Retry-After: 0)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.sent: list[str] = []
        self.requests = 0
        self.failures = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                stand_in.requests += 1
                if stand_in.requests <= stand_in.failures:
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                query = parse_qs(urlparse(self.path).query)
                name = Path(query.get("file", [""])[0]).name
                path = stand_in.folder / name
                if not name or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = path.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                stand_in.sent.append(name)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", formatdate(path.stat().st_mtime, usegmt=True))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/eurostat/api/dissemination"

    def publish(self, month: str, *, bump: float = 1.0) -> Path:
        return write_comext_7z(self.folder / f"full_v2_{month.replace('-', '')}.7z", month, bump=bump)

    def __enter__(self) -> "EurostatStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def write_config(path: Path, base_url: str, start: str, end: str, extra: str = "") -> Path:
    path.write_text(
        f'[sources.comext]\nbase_url = "{base_url}"\nstart = "{start}"\nend = "{end}"\n'
        '[detect]\nevent = "2022-03"\nbaseline_months = 12\nrecent_months = 6\n' + extra
    )
    return path


# ------------------------------------------------------------------------------------------------ tests

FIRST, LAST = "2021-09", "2022-06"


@pytest.fixture(scope="module")
def prefect_api(prefect_server):
    """Flows in this module report to the session's loopback Prefect server (one start for all tests)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = prefect_server  # Dask worker processes inherit it
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        yield prefect_server
    if old is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = old


@pytest.fixture
def eurostat(tmp_path):
    with EurostatStandIn(tmp_path / "eurostat") as stand_in:
        for month in months_between(FIRST, LAST):
            stand_in.publish(month)
        yield stand_in


def warehouse_counts(db: Path) -> dict:
    from tradewatch.flows import warehouse

    with warehouse.opened(db, read_only=True) as con:
        return {
            "rows": con.execute("SELECT count(*) FROM trade_flows").fetchone()[0],
            "ok_loads": con.execute("SELECT count(*) FROM loads WHERE status = 'ok'").fetchone()[0],
            "periods": [r[0] for r in con.execute(
                "SELECT DISTINCT strftime(period, '%Y-%m') p FROM trade_flows ORDER BY p").fetchall()],
            "value_by_period": dict(con.execute(
                "SELECT strftime(period, '%Y-%m'), sum(value) FROM trade_flows GROUP BY ALL").fetchall()),
            "runs": con.execute("SELECT count(*) FROM runs").fetchone()[0],
        }


def assert_artifacts_published(outcome) -> None:
    """The run's flow run carries the `flagged-routes` table artifact and the markdown summary."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tradewatch.flows.pipeline import ARTIFACT_KEY, MARKDOWN_ARTIFACT_KEY

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[outcome.flow_run_id])))
    by_key = {a.key: a for a in artifacts}
    assert by_key[ARTIFACT_KEY].type == "table"
    assert outcome.summary["run_id"] in by_key[ARTIFACT_KEY].description
    assert by_key[MARKDOWN_ARTIFACT_KEY].type == "markdown"
    assert outcome.summary["run_id"] in by_key[MARKDOWN_ARTIFACT_KEY].data


def test_pipeline_is_incremental_idempotent_and_replaces_a_revised_month(prefect_api, eurostat, tmp_path):
    from tradewatch.flows.pipeline import run_pipeline

    db = tmp_path / "w.duckdb"
    config = write_config(tmp_path / "pipeline.toml", eurostat.base_url, FIRST, "2022-08")

    first_outcome = run_pipeline(config, db)
    first = first_outcome.summary
    expected_months = months_between(FIRST, LAST)
    assert first["ingest"]["downloaded"] == len(expected_months)
    assert first["ingest"]["missing"] == ["2022-07", "2022-08"], "months not published yet are skipped"
    counts = warehouse_counts(db)
    assert counts["periods"] == expected_months
    assert counts["rows"] == len(expected_months) * len(REPORTERS) * len(PARTNERS) * len(PRODUCTS)
    assert counts["ok_loads"] == len(expected_months)
    assert Path(first["report"]).is_file()
    assert first["run_id"] and first["candidates"] > 0
    assert_artifacts_published(first_outcome)

    # Nothing new: nothing transferred, nothing loaded, the same rows.
    sent_before = len(eurostat.sent)
    second = run_pipeline(config, db).summary
    assert second["ingest"]["downloaded"] == 0
    assert len(eurostat.sent) == sent_before
    assert second["ingest"]["loaded"] == [] and len(second["ingest"]["unchanged"]) == len(expected_months)
    again = warehouse_counts(db)
    assert {k: again[k] for k in ("rows", "ok_loads", "periods", "value_by_period")} == \
        {k: counts[k] for k in ("rows", "ok_loads", "periods", "value_by_period")}

    # Eurostat revises 2022-05: only that month is fetched again and its partitions replaced.
    eurostat.publish("2022-05", bump=2.0)
    third = run_pipeline(config, db).summary
    assert third["ingest"]["downloaded"] == 1
    assert eurostat.sent[-1] == "full_v2_202205.7z"
    assert third["ingest"]["periods"] == ["2022-05"]
    revised = warehouse_counts(db)
    assert revised["rows"] == counts["rows"], "a replaced partition does not duplicate rows"
    assert revised["ok_loads"] == counts["ok_loads"] + 1
    assert revised["value_by_period"]["2022-05"] == pytest.approx(2 * counts["value_by_period"]["2022-05"], rel=1e-3)
    assert {m: v for m, v in revised["value_by_period"].items() if m != "2022-05"} == \
        {m: v for m, v in counts["value_by_period"].items() if m != "2022-05"}

    # A "revision" of 2022-04 worth a tenth of the month (a file cut short looks like this) is refused:
    # the month keeps its rows, the refusal is recorded, in the run's summary and in its Prefect artifact.
    eurostat.publish("2022-04", bump=0.1)
    fourth_outcome = run_pipeline(config, db)
    fourth = fourth_outcome.summary
    assert fourth["ingest"]["loaded"] == [] and len(fourth["refused"]) == 1
    assert fourth["refused"][0].startswith("full_v2_202204.7z: refused: it would replace comext 2022-04 ")
    assert "--allow-shrink" in fourth["refused"][0] and "\n" not in fourth["refused"][0]
    after = warehouse_counts(db)
    assert after["value_by_period"] == revised["value_by_period"] and after["rows"] == revised["rows"]
    from tradewatch.flows import warehouse

    with warehouse.opened(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM loads WHERE status = 'refused' AND file = 'full_v2_202204.7z'"
                           ).fetchone()[0] == 1
    markdown = _artifact(fourth_outcome, "markdown")
    assert "1 revised file(s) refused" in markdown and "full_v2_202204.7z: refused" in markdown


def _artifact(outcome, kind: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[outcome.flow_run_id])))
    return next(a.data for a in artifacts if a.type == kind)


def test_scope_keeps_only_the_configured_reporters_and_products(prefect_api, eurostat, tmp_path):
    from tradewatch.flows import warehouse
    from tradewatch.flows.pipeline import ingest_new_months
    from tradewatch.flows.pipeline_config import load_config

    db = tmp_path / "w.duckdb"
    config = write_config(tmp_path / "pipeline.toml", eurostat.base_url, "2022-01", "2022-02",
                          extra='[scope]\nreporters = ["DE", "FRA"]\nproducts = ["8542", "88"]\n')
    summary = ingest_new_months(load_config(config).to_dict(), str(db))
    assert summary["periods"] == ["2022-01", "2022-02"]
    with warehouse.opened(db, read_only=True) as con:
        reporters = {r[0] for r in con.execute("SELECT DISTINCT reporter_iso3 FROM trade_flows").fetchall()}
        products = {r[0] for r in con.execute("SELECT DISTINCT product_code FROM trade_flows").fetchall()}
        rows = con.execute("SELECT count(*) FROM trade_flows").fetchone()[0]
    assert reporters == {"DEU", "FRA"}
    assert products == {"85423190", "88073000"}
    assert rows == 2 * 2 * len(PARTNERS) * 2


def test_a_damaged_month_fails_the_run_in_one_line_and_loads_nothing(prefect_api, eurostat, tmp_path):
    from tradewatch.flows.core.errors import TradewatchError
    from tradewatch.flows.pipeline import run_pipeline

    db = tmp_path / "w.duckdb"
    config = write_config(tmp_path / "pipeline.toml", eurostat.base_url, "2022-01", "2022-03")
    # A truncated upload: the 7z signature, then garbage.
    (eurostat.folder / "full_v2_202202.7z").write_bytes(b"7z\xbc\xaf\x27\x1c" + b"\x00\x04" + b"garbage" * 40)
    with pytest.raises(TradewatchError) as failed:
        run_pipeline(config, db)
    message = str(failed.value)
    assert "full_v2_202202.7z" in message and "\n" not in message
    if db.exists():
        assert warehouse_counts(db)["rows"] == 0, "no month is loaded when one of them cannot be read"


@pytest.mark.slow
def test_pipeline_runs_on_a_dask_local_cluster(prefect_api, eurostat, tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] is in the test extra")
    pytest.importorskip("prefect_dask", reason="prefect-dask is in the test extra")
    from tradewatch.flows.pipeline import run_pipeline

    db = tmp_path / "w.duckdb"
    config = write_config(tmp_path / "pipeline.toml", eurostat.base_url, FIRST, LAST)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client, distributed.get_task_stream(client) as stream:
            outcome = run_pipeline(config, db, task_runner="dask", dask_address=cluster.scheduler_address)
    ran = [(task["key"], task["worker"]) for task in stream.data]
    # Downloads and parses ran on the cluster's workers; the one load ran in the flow's process.
    assert sum("download_month" in str(key) for key, _ in ran) == len(months_between(FIRST, LAST))
    assert sum("parse_month" in str(key) for key, _ in ran) == len(months_between(FIRST, LAST))
    assert not [key for key, _ in ran if "load_parsed" in str(key)]
    assert outcome.summary["ingest"]["loaded"] == [f"full_v2_{m.replace('-', '')}.7z" for m in months_between(FIRST, LAST)]
    assert len({worker for key, worker in ran if "download_month" in str(key)}) == 2
    assert outcome.summary["ingest"]["downloaded"] == len(months_between(FIRST, LAST))
    assert warehouse_counts(db)["periods"] == months_between(FIRST, LAST)


def test_config_overrides_only_the_keys_given(tmp_path):
    from tradewatch.flows.pipeline_config import load_config

    defaults = load_config()
    assert (defaults.cron, defaults.event, defaults.task_runner, defaults.sources[0].start) == \
        ("0 6 15 * *", "2022-03", "thread", "2020-01")
    config = tmp_path / "sub" / "p.toml"
    config.parent.mkdir()
    config.write_text('[sources.comext]\nstart = "2019-06"\nend = "2019-08"\n[publish]\nreport_dir = "out"\n'
                      '[detect]\nrecent_months = 6\n')
    loaded = load_config(config)
    assert loaded.sources[0].start == "2019-06" and loaded.sources[0].base_url == defaults.sources[0].base_url
    assert loaded.report_dir == config.parent / "out", "relative to the config file, not the worker's folder"
    assert loaded.detect_overrides == {"recent_months": 6} and loaded.cron == defaults.cron


@pytest.mark.parametrize("text, expected", [
    ('[run]\ndask_address = "tcp://10.0.0.5:8786"\n', "only applies with run.task_runner"),
    ('[sources.comext]\nstart = "2022-05"\nend = "2022-01"\n', "before start"),
    ('[sources.comtrade]\nenabled = true\n', "unknown source"),
    ('[sources.comext]\nenabled = false\n', "no source is enabled"),
    ('[scope]\nreporters = ["Germany"]\n', "not a country code"),
    ('[scope]\nproducts = [8471]\n', "not a product code"),
    ('[schedule]\ntimezone = "Mars/Olympus"\n', "schedule.timezone"),
    ('[publish]\nartifact_rows = 0\n', "publish.artifact_rows"),
])
def test_config_errors_name_the_file_and_key(tmp_path, text, expected):
    from tradewatch.flows.core.errors import InputError
    from tradewatch.flows.pipeline_config import load_config

    config = tmp_path / "p.toml"
    config.write_text(text)
    with pytest.raises(InputError) as failed:
        load_config(config)
    assert str(failed.value).startswith(str(config)) and expected in str(failed.value)


def test_source_months_run_to_the_current_month():
    from datetime import date

    from tradewatch.flows.pipeline_config import source_months

    assert source_months("2021-11", None, today=date(2022, 2, 14)) == ["2021-11", "2021-12", "2022-01", "2022-02"]
    assert source_months("2022-01", "2022-01") == ["2022-01"]


def test_a_month_not_published_is_told_by_the_http_status_not_by_the_words(monkeypatch, tmp_path):
    from tradewatch.flows import ingest, pipeline
    from tradewatch.flows.download import DownloadError

    monkeypatch.setenv("TRADEWATCH_HOME", str(tmp_path))
    item = {"source": "comext", "period": "2022-09", "url": "https://ec.europa.eu/x", "dest": str(tmp_path / "x"),
            "local": None, "display_name": "full_v2_202209.7z", "request": None}

    def refuse(status, message):
        def fetch(*args, **kwargs):
            raise DownloadError(message, status=status)
        return fetch

    monkeypatch.setattr(ingest, "download_fetch", refuse(404, "https://ec.europa.eu/x: not there"))
    assert pipeline.download_month.fn(item)["status"] == "missing"
    # A refusal whose words happen to contain ': HTTP 404' is still a refusal.
    monkeypatch.setattr(ingest, "download_fetch", refuse(400, "https://ec.europa.eu/x: HTTP 400: ': HTTP 404'"))
    with pytest.raises(DownloadError):
        pipeline.download_month.fn(item)


def _detect_and_publish(db: Path, reports: Path) -> tuple[dict, dict]:
    """The pipeline's detect and publish tasks in a flow of their own: the detection and its artifacts by kind."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tradewatch.flows import pipeline

    @flow(name="detect-and-publish")
    def detect_and_publish() -> dict:
        detection = pipeline.detect_routes(str(db), "2022-03", {}, str(reports), 5)
        pipeline.publish(detection)
        return detection

    state = detect_and_publish(return_state=True)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    return state.result(), {a.type: a for a in artifacts}


def test_artifacts_of_a_run_on_the_demo_warehouse_say_synthetic_demo_data(prefect_api, tmp_path):
    import importlib.util

    from tradewatch.flows import ingest, warehouse
    from tradewatch.flows.warehouse import DEMO_LABEL

    spec = importlib.util.spec_from_file_location("review_fixture", Path(__file__).parents[1] / "detect" / "conftest.py")
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    demo_db = fixture.build_detectable_warehouse(tmp_path / "demo.duckdb")
    con = warehouse.connect(demo_db)
    try:  # labelled 'demo' the way demo.seed_warehouse loads the synthetic world's files
        ingest.load_file(con, Path(__file__).parent / "fixtures" / "comext" / "full_202203.dat", source_label="demo")
        assert warehouse.is_demo(con)
    finally:
        con.close()
    detection, artifacts = _detect_and_publish(demo_db, tmp_path / "reports")
    assert detection["demo"] is True and detection["table"]
    assert artifacts["markdown"].data.startswith(f"**{DEMO_LABEL.capitalize()}**")
    assert DEMO_LABEL in artifacts["markdown"].description and DEMO_LABEL in artifacts["table"].description
    import json

    rows = json.loads(artifacts["table"].data) if isinstance(artifacts["table"].data, str) else artifacts["table"].data
    assert rows and all(row["data"] == DEMO_LABEL for row in rows)
    real_db = fixture.build_detectable_warehouse(tmp_path / "real.duckdb")
    detection, artifacts = _detect_and_publish(real_db, tmp_path / "reports")
    assert detection["demo"] is False
    assert all(DEMO_LABEL not in (a.data if isinstance(a.data, str) else json.dumps(a.data)) + a.description
               for a in artifacts.values())
