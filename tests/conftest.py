"""Shared test fixtures: an isolated TRADEWATCH_HOME per test and the path of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def tradewatch_home(tmp_path, monkeypatch):
    home = tmp_path / "twhome"
    monkeypatch.setenv("TRADEWATCH_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def no_terminal_size(monkeypatch):
    """Output as when piped, whoever runs the tests: no COLUMNS or LINES from the caller's shell or from
    pytest-xdist's workers (the table layout follows $COLUMNS; tests that mean a width set it)."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "comext").is_dir():
        pytest.skip(f"real Eurostat data not found at {SHARED_DATA} (../shared/data beside the repository)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def isolated_prefect_home(tmp_path_factory):
    """Prefect never touches the user's ~/.prefect during tests."""
    import os

    if "PREFECT_HOME" not in os.environ or not os.environ.get("CI"):
        os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        # CI's PREFECT_HOME, a folder per xdist worker: two temporary servers never share one SQLite file.
        worker = Path(os.environ["PREFECT_HOME"]) / os.environ["PYTEST_XDIST_WORKER"]
        worker.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(worker)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    yield


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """The URL of a running Prefect API on loopback: the one .ci/run started
    (TRADEWATCH_TEST_PREFECT_API_URL), otherwise one started here with a temporary PREFECT_HOME and
    stopped at the end whatever happens."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    given = os.environ.get("TRADEWATCH_TEST_PREFECT_API_URL")
    if given:
        yield given
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path_factory.mktemp("prefect-server-home")
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_UI_ENABLED="false",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 240  # a first start migrates a fresh database: be generous
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Prefect server did not start; see {home / 'server.log'}")
            time.sleep(1)
        yield url
    finally:
        import signal

        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except Exception:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(autouse=True)
def no_logging_to_closed_streams():
    """Prefect's console log handler binds to whatever sys.stderr is when logging is first set up; inside
    typer's CliRunner that is a capture buffer closed after the command. Point such handlers back at the
    real stderr after each test, so a later test's log line does not print a 'Logging error' traceback."""
    import logging
    import sys

    yield
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            stream = getattr(handler, "stream", None)
            if stream is not None and getattr(stream, "closed", False):
                handler.stream = sys.__stderr__
                console = getattr(handler, "console", None)  # Prefect's handler prints through rich
                if console is not None:
                    console.file = sys.__stderr__


# --- the reliability tests' totals (inputs tried, faults injected, rows lost), printed after the run -------
# (Here, not in tests/reliability/conftest.py: a third module named `conftest` collected after
# tests/detect/conftest.py would shadow it for the detect tests' `from conftest import …`.)
# Every test in these files injects a fault (a full disk, a dropped connection, a held lock, an unreadable
# file, SIGKILL, SIGINT/SIGTERM); each one that passes counts once.
FAULT_FILES = ("test_faults.py", "test_kill.py", "test_signals.py")


def _tally():
    try:  # importable only when tests/reliability was collected (pytest put it on sys.path)
        from reliability_helpers import TALLY
    except ImportError:
        return None
    return TALLY


def pytest_runtest_logreport(report):
    if getattr(report, "node", None) is not None:
        return  # the xdist controller's copy of a worker's report: the worker counted it
    tally = _tally()
    if tally is not None and report.when == "call" and report.passed and \
            report.nodeid.split("::")[0].endswith(FAULT_FILES):
        tally.injected(report.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py"))


def pytest_sessionfinish(session):
    # Under pytest-xdist each worker holds its own tally: it hands it to the controller with its output.
    workeroutput = getattr(session.config, "workeroutput", None)
    tally = _tally()
    if workeroutput is not None and tally is not None:
        workeroutput["reliability_tally"] = tally.to_dict()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The xdist controller adds each worker's tally to its own (the controller collects no tests, so
    tests/reliability is put on its path here)."""
    data = getattr(node, "workeroutput", {}).get("reliability_tally")
    if data is None:
        return
    import sys

    sys.path.insert(0, str(REPO / "tests" / "reliability"))
    _tally().merge(data)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tally = _tally()
    if tally is None or not (tally.inputs or tally.faults):
        return
    terminalreporter.section("reliability corpus")
    for line in tally.summary():
        terminalreporter.write_line(line)
