"""The Prefect `ingest` flow: download → parse (Parquet) → check → one load, against a local Eurostat stand-in."""

from __future__ import annotations

import os
import shutil

import pytest

from ingest_helpers import STEPS, FIXTURES, Reply, home, record_steps, server  # noqa: F401  (fixtures)
from tradewatch.flows import ingest, warehouse
from tradewatch.flows.core.errors import TradewatchError

pytestmark = pytest.mark.slow

DAT = FIXTURES / "comext" / "full_202203.dat"


def _seven_zip(tmp_path, month: str) -> bytes:
    import py7zr

    dat = tmp_path / f"full_{month}.dat"
    dat.write_text(DAT.read_text().replace(",202203,", f",{month},"))
    archive = tmp_path / f"full_v2_{month}.7z"
    with py7zr.SevenZipFile(archive, "w") as zf:
        zf.write(dat, dat.name)
    return archive.read_bytes()


@pytest.fixture
def prefect_api(prefect_server, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    return prefect_server


def test_flow_downloads_parses_and_loads_once(home, server, tmp_path, prefect_api, monkeypatch):
    from tradewatch.flows import prefect_flows

    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)

    bodies = {m: _seven_zip(tmp_path, m) for m in ("202201", "202202", "202203")}
    attempts = {"202202": 0}

    def answer(path, query, headers):
        month = query.get("file", "").rsplit("full_v2_", 1)[-1].removesuffix(".7z")
        if month == "202202" and attempts["202202"] == 0:
            attempts["202202"] += 1
            return Reply(503, b"busy", {"Retry-After": "0"})
        return Reply(200, bodies[month], {"ETag": f'"{month}"'}) if month in bodies else None

    server.handle(answer)
    events = []
    items = ingest.plan_comext(["2022-01", "2022-02", "2022-03"], base_url=server.url)
    summary = prefect_flows.run_ingest_flow(items, home / "w.duckdb", on_event=lambda kind, **info: events.append(kind))
    assert summary["totals"]["rows"] == 18 and summary["totals"]["quarantined"] == 12
    assert summary["totals"]["confidential"] == 6 and summary["totals"]["downloads"] == {"downloaded": 3}
    assert events.count("loaded") == 3 and "download" in events
    # A temporary server this run might start would not try to send telemetry from an offline machine.
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert list((home / "cache" / "parsed").glob("*/canonical.parquet"))
    with warehouse.opened(home / "w.duckdb", read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT period) FROM trade_flows").fetchone()[0] == 3
    again = prefect_flows.run_ingest_flow(items, home / "w.duckdb")
    assert again["totals"]["unchanged"] == 3 and again["totals"]["downloads"] == {"unchanged": 3}


def test_flow_failure_loads_nothing(home, server, tmp_path, prefect_api):
    from tradewatch.flows import prefect_flows

    good = _seven_zip(tmp_path, "202201")
    server.handle(lambda path, query, headers: Reply(200, good) if "202201" in query.get("file", "")
                  else Reply(200, b"<html>maintenance</html>", {"Content-Type": "text/html"}))
    items = ingest.plan_comext(["2022-01", "2022-02"], base_url=server.url)
    with pytest.raises(TradewatchError, match="1 of 2 file.*HTML page"):
        prefect_flows.run_ingest_flow(items, home / "w.duckdb")
    with warehouse.opened(home / "w.duckdb") as con:
        assert warehouse.row_count(con) == 0


def test_dask_runner_from_local_files(home, tmp_path, prefect_api):
    pytest.importorskip("prefect_dask")
    from tradewatch.flows import prefect_flows

    shutil.copy(DAT, tmp_path / "full_202203.dat")
    items = ingest.plan_comext(["2022-03"], source_dir=tmp_path)
    summary = prefect_flows.run_ingest_flow(items, home / "w.duckdb", task_runner="dask")
    assert summary["totals"]["rows"] == 6


def test_a_failing_url_is_tried_the_configured_number_of_times_on_every_path(home, server, prefect_api, monkeypatch):
    """Retries live in one layer (download.fetch): the plain run, the Prefect ingest flow and the pipeline's
    download task each ask a failing server TRADEWATCH_RETRY_ATTEMPTS times in all, not that times the
    task's own retries."""
    from tradewatch.flows import pipeline, prefect_flows
    from tradewatch.flows.download import DownloadError

    monkeypatch.setenv("TRADEWATCH_RETRY_ATTEMPTS", "3")
    server.handle(lambda path, query, headers: Reply(503, b"busy", {"Retry-After": "0"}))
    items = ingest.plan_comext(["2022-01"], base_url=server.url)

    with pytest.raises(DownloadError, match="gave up after 3 attempt"):
        ingest.run_plain(home / "w.duckdb", items)
    assert len(server.requests) == 3

    server.requests.clear()
    with pytest.raises(TradewatchError, match="gave up after 3 attempt"):
        prefect_flows.run_ingest_flow(items, home / "w.duckdb")
    assert len(server.requests) == 3

    server.requests.clear()
    from dataclasses import asdict

    state = pipeline.download_month(asdict(items[0]), return_state=True)
    assert state.is_failed() and len(server.requests) == 3


def test_plain_run_flow_and_pipeline_call_the_same_steps_in_the_same_order(home, tmp_path, prefect_api, monkeypatch):
    """One task graph: `ingest --task-runner none`, the Prefect ingest flow and the pipeline's tasks all run
    ingest.download_step → parse_step → check_step → load_step for a file, and none re-implements a step."""
    from dataclasses import asdict

    from tradewatch.flows import pipeline, prefect_flows

    calls = record_steps(monkeypatch)
    steps = list(STEPS)
    shutil.copy(DAT, tmp_path / "full_202203.dat")
    items = ingest.plan_comext(["2022-03"], source_dir=tmp_path)

    plain = ingest.run_plain(home / "plain.duckdb", items)
    assert calls == steps and plain.totals["rows"] == 6

    calls.clear()
    flow = prefect_flows.run_ingest_flow(items, home / "flow.duckdb")
    assert calls == steps and flow["totals"]["rows"] == 6

    calls.clear()
    downloaded = pipeline.download_month.fn(asdict(items[0]))
    parsed = pipeline.parse_month.fn(downloaded, [], [])
    loaded = pipeline.load_parsed_files([parsed], str(home / "pipeline.duckdb"))
    assert calls == steps and loaded["rows"] == 6


def test_the_temporary_server_is_given_two_minutes_to_start_unless_the_user_said(monkeypatch):
    # Prefect's own 20 s failed runs on a busy machine ("Timed out while attempting to connect to ephemeral
    # Prefect API server"); Prefect reads its settings at import, so the flows set it around the call.
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as TIMEOUT

    from tradewatch.flows.prefect_flows import SERVER_START_TIMEOUT_S, patient_server

    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    before = TIMEOUT.value()
    with patient_server():
        assert TIMEOUT.value() == SERVER_START_TIMEOUT_S == 120
    assert TIMEOUT.value() == before
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "7")
    with patient_server():
        assert TIMEOUT.value() == before  # the user's value is Prefect's own business: not overridden


def test_the_ingest_fan_out_runs_on_a_dask_cluster_of_two_workers(home, tmp_path, prefect_api):
    # A real cluster address, as `--dask-address tcp://…` gives it: here a LocalCluster of two worker
    # processes on loopback. Downloads and parses spread over both; the one load stays in this process.
    pytest.importorskip("prefect_dask")
    from distributed import Client, LocalCluster, get_task_stream

    from tradewatch.flows import prefect_flows

    months = ["2022-01", "2022-02", "2022-03", "2022-04", "2022-05", "2022-06"]
    for month in months:
        (tmp_path / f"full_{month.replace('-', '')}.dat").write_text(
            DAT.read_text().replace(",202203,", f",{month.replace('-', '')},"))
    items = ingest.plan_comext(months, source_dir=tmp_path)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        with get_task_stream(client) as stream:
            summary = prefect_flows.run_ingest_flow(items, home / "w.duckdb", task_runner="dask",
                                                    dask_address=cluster.scheduler_address)
        workers = {task["worker"] for task in stream.data}
        assert set(client.scheduler_info()["workers"]) >= workers
    assert summary["totals"]["rows"] == 6 * len(months) and summary["totals"]["files"] == len(months)
    assert len(workers) == 2, f"tasks ran on {workers}"
    con = warehouse.connect(home / "w.duckdb", read_only=True)
    try:
        assert con.execute("SELECT count(DISTINCT period) FROM trade_flows").fetchall()[0][0] == len(months)
    finally:
        con.close()


def test_quiet_keeps_prefect_console_lines_off_stderr_for_the_block_only():
    # `ingest …` and `pipeline run` print one line per failure themselves; Prefect's console handler would
    # add a task's traceback under it (a signal test caught "Query interrupted" with its whole stack).
    # Prefect's console handler is bound to whatever stderr was when logging was set up (under pytest, a
    # capture object), so its output is read here from a buffer put in its place.
    import io
    import logging

    from prefect.logging.configuration import ensure_logging_setup

    from tradewatch.flows.prefect_flows import prefect_console

    ensure_logging_setup()
    consoles = [h for h in logging.getLogger().handlers if type(h).__name__ == "PrefectConsoleHandler"]
    assert consoles, "Prefect's console handler is on the root logger"
    buffer, saved = io.StringIO(), [(h.stream, getattr(h, "console", None) and h.console.file) for h in consoles]
    for handler in consoles:
        handler.stream = buffer
        if getattr(handler, "console", None) is not None:
            handler.console.file = buffer
    logger = logging.getLogger("prefect")  # propagates to the root's console handler (run loggers also try the API)
    try:
        with prefect_console(quiet=True):
            logger.error("quiet-block line")
        with prefect_console(quiet=False):
            logger.error("verbose-block line")
        logger.error("after-block line")
    finally:
        for handler, (stream, file) in zip(consoles, saved):
            handler.stream = stream
            if file is not None:
                handler.console.file = file
    err = buffer.getvalue()
    assert "quiet-block line" not in err
    assert "verbose-block line" in err and "after-block line" in err
