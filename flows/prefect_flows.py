"""The Prefect flow `ingest` (sources × periods: download → parse → check → one load); the only ingest module that imports Prefect."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.futures import wait

from tradewatch.flows.core import settings
from tradewatch.flows import ingest
from tradewatch.flows.warehouse import SHRINK_LIMIT
from tradewatch.flows.core.errors import InputError, TradewatchError

FLOW_NAME = "ingest"
# Events from tasks reach the caller's progress display through this table (thread runner only: tasks
# on a Dask cluster run elsewhere and simply report nothing).
_EVENT_SINKS: dict[str, Callable[..., None]] = {}


def _emit(token: str | None, kind: str, **info) -> None:
    sink = _EVENT_SINKS.get(token or "")
    if sink is not None:
        sink(kind, **info)


# No task retries: download.fetch is the one layer that retries a download (TRADEWATCH_RETRY_ATTEMPTS,
# backoff, Retry-After), for this flow as for the plain run and the pipeline. Retrying the task as well
# would multiply the attempts on a failing server.
@task(name="download")
def download_task(item: dict, token: str | None = None) -> dict:
    """Bring one file into the cache (resumable, checksummed, skipped when unchanged); returns its path and status."""
    fetch = ingest.Fetch(**{k: v for k, v in item.items() if k != "allowed_hosts"})
    name = fetch.display_name or fetch.url or fetch.local
    _emit(token, "download", name=name)
    got = ingest.download_step(fetch, allowed_hosts=item.get("allowed_hosts") or (),
                               progress=lambda done, total: _emit(token, "download-progress", name=name,
                                                                  done=done, total=total))
    _emit(token, "downloaded", name=name, status=got["status"])
    return got


@task(name="parse")
def parse_task(downloaded: dict, token: str | None = None) -> dict:
    """Read one cached file into canonical Parquet + quarantine Parquet; returns the ParsedFile as a dict."""
    _emit(token, "parse", name=downloaded["display_name"])
    return asdict(ingest.parse_step(downloaded))


@task(name="check")
def check_task(parsed: dict, downloaded: dict | None = None) -> dict:
    """The declared checks on one parsed file; raises InputError naming the file."""
    return asdict(ingest.check_step(ingest.ParsedFile(**parsed), downloaded))


@task(name="load")
def load_task(db: str | None, parsed: list[dict], force: bool = False, token: str | None = None,
              shrink_limit: float | None = SHRINK_LIMIT) -> list[dict]:
    """The single writer: replace each file's partitions in the warehouse and record the loads."""
    from tradewatch.flows import warehouse

    out = []
    with warehouse.opened(db, wait_s=600.0) as con:
        for item in parsed:
            _emit(token, "load", name=item["file"])
            result = ingest.load_step(con, ingest.ParsedFile(**item), force=force, shrink_limit=shrink_limit)
            _emit(token, "loaded", name=item["file"], result=result)
            out.append(result.summary())
    return out


@flow(name=FLOW_NAME, log_prints=False)
def ingest_flow(items: list[dict], db: str | None = None, force: bool = False, token: str | None = None,
                shrink_limit: float | None = SHRINK_LIMIT) -> dict:
    """The ingest task graph (flows/ingest.py: download_step → parse_step → check_step → load_step) as
    tasks: download every item and parse each in parallel (download.fetch retries; the tasks do not),
    check, then load all in one task. Returns the run summary (totals and per-file results) as a dict."""
    downloads = [download_task.submit(item, token) for item in items]
    parses = [parse_task.submit(future, token) for future in downloads]
    checks = [check_task.submit(parsed, downloaded) for parsed, downloaded in zip(parses, downloads)]
    wait(checks)
    failures = []
    checked = []
    download_status: dict[str, int] = {}
    for stages in zip(downloads, parses, checks):
        # The first stage that failed holds the real reason; later stages only say "upstream failed".
        # Ask each future for its result rather than its state: on Dask the state reported can lag behind
        # a task that has finished, which once made a good file count as failed.
        reason = next((r for r in map(_failure, stages) if r is not None), None)
        if reason is not None:
            failures.append(reason)
            continue
        checked.append(stages[-1].result())
        status = stages[0].result()["status"]
        download_status[status] = download_status.get(status, 0) + 1
    if failures:
        # Nothing is loaded when any file failed: the warehouse keeps a consistent set of months.
        raise TradewatchError(f"{len(failures)} of {len(items)} file(s) failed; nothing loaded. First: {failures[0]}")
    results = load_task(db, checked, force, token, shrink_limit)
    totals = _totals(results)
    totals["downloads"] = download_status
    return {"totals": totals, "files": results}


def _failure(future) -> str | None:
    """The first line of the error a task future ended with (waiting for it), or None when it succeeded."""
    try:
        future.result()
    except Exception as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def _totals(results: list[dict]) -> dict:
    ok = [r for r in results if r["status"] != "unchanged"]
    value_sum: dict[str, float] = {}
    for r in ok:
        for currency, value in r["value_sum"].items():
            value_sum[currency] = value_sum.get(currency, 0.0) + value
    return {
        "files": len(results), "rows": sum(r["rows"] for r in ok), "partitions": sum(r["partitions"] for r in ok),
        "quarantined": sum(r["quarantined"] for r in ok), "confidential": sum(r["confidential"] for r in ok),
        "unchanged": sum(1 for r in results if r["status"] == "unchanged"), "value_sum": value_sum, "errors": [],
    }


def make_task_runner(kind: str, address: str | None = None):
    """'thread' (default: a thread pool) or 'dask' (prefect-dask; the scheduler at `address`, else a
    temporary local cluster). InputError for another kind or a missing prefect-dask."""
    if kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max(2, min(8, (os.cpu_count() or 2) * 2)))
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise InputError("--task-runner dask", "needs the optional extra: pip install 'tradewatch[dask]'") from None
        return DaskTaskRunner(address=address) if address else DaskTaskRunner()
    raise InputError(f"--task-runner {kind}", "expected thread, dask or none")


def run_ingest_flow(items: list[ingest.Fetch], db: Path | str | None = None, *, force: bool = False,
                    shrink_limit: float | None = SHRINK_LIMIT,
                    task_runner: str = "thread", dask_address: str | None = None,
                    allowed_hosts: list[str] | None = None,
                    on_event: Callable[..., None] | None = None, quiet: bool = False) -> dict:
    """Run the `ingest` flow over `items` in this process (Prefect starts a temporary server when
    PREFECT_API_URL is unset). Returns the flow's summary dict; raises TradewatchError when a file failed.
    `quiet` keeps Prefect's console log lines off stderr."""
    if dask_address and task_runner != "dask":
        raise InputError(f"--dask-address {dask_address}", "only applies with --task-runner dask")
    runner = make_task_runner(task_runner, dask_address)
    settings.offline_prefect_server()
    token = uuid.uuid4().hex
    if on_event is not None:
        _EVENT_SINKS[token] = on_event
    payload = [{**asdict(item), "allowed_hosts": list(allowed_hosts or [])} for item in items]
    temporary_server_apart()
    try:
        with prefect_console(quiet=quiet), patient_server():
            return ingest_flow.with_options(task_runner=runner)(payload, str(db) if db else None, force, token,
                                                                shrink_limit)
    finally:
        _EVENT_SINKS.pop(token, None)


@contextmanager
def prefect_console(*, quiet: bool) -> Iterator[None]:
    """With `quiet`, raise Prefect's console handlers to CRITICAL for the block (the CLI prints one line
    per failure itself; a task's traceback would bury it); logs still reach the Prefect API. The old
    levels come back afterwards."""
    if not quiet:
        yield
        return
    import logging

    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    changed = []
    for logger in (logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                                         if n.startswith("prefect"))):
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and not type(handler).__name__.startswith("APILog"):
                changed.append((handler, handler.level))
                handler.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for handler, level in changed:
            handler.setLevel(level)


# Prefect waits 20 s for its temporary server to answer; on a busy machine (a shared server, a laptop
# indexing) it takes longer and the run fails with "Timed out while attempting to connect to ephemeral
# Prefect API server". A value the user set (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS) wins.
SERVER_START_TIMEOUT_S = 120


@contextmanager
def patient_server() -> Iterator[None]:
    """Around a flow call that may start Prefect's temporary server: wait up to SERVER_START_TIMEOUT_S
    for it (Prefect reads its settings once, at import, so the environment alone is too late here)."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    if os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
        yield
        return
    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: SERVER_START_TIMEOUT_S}):
        yield


def temporary_server_apart() -> None:
    """When no PREFECT_API_URL is set, Prefect starts a temporary server (prefect.server.api.server's
    SubprocessASGIServer) as a child in this process's group, writing to its stderr: Ctrl-C in a terminal
    reaches the server too, mid-run, and its shutdown prints tracebacks (task_run_recorder … CancelledError)
    under the CLI's one line. Have it started in a session of its own, with its output in
    <cache>/prefect-server.log and, on Linux, ended with this process; Prefect still stops it at exit."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    from prefect.server.api import server as prefect_server

    if not isinstance(prefect_server.subprocess, _SpawnApart):
        prefect_server.subprocess = _SpawnApart(settings.cache_dir() / "prefect-server.log")


class _SpawnApart:
    """The `subprocess` module as prefect.server.api.server sees it: Popen starts the child apart."""

    def __init__(self, log: Path):
        self.log = log

    def __getattr__(self, name: str):
        import subprocess

        return getattr(subprocess, name)

    def Popen(self, *args, **kwargs):  # noqa: N802 - the name Prefect calls
        import subprocess
        import sys
        import threading

        self.log.parent.mkdir(parents=True, exist_ok=True)
        ends_with_us = sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
        with open(self.log, "ab") as out:
            return subprocess.Popen(*args, **{"stdin": subprocess.DEVNULL, "stdout": out, "stderr": subprocess.STDOUT,
                                               "start_new_session": True,
                                               "preexec_fn": _parent_death_signal() if ends_with_us else None,
                                               **kwargs})


def _parent_death_signal():
    """A preexec_fn asking Linux to send the child SIGTERM when the thread that started it (here the main
    thread, so: this process) ends, a SIGKILL included."""
    import ctypes
    import signal

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
