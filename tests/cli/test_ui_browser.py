"""`tradewatch ui` in headless Chromium (DevTools protocol): filter, open a route, record a decision, reload and
see it, a second browser session sees it; no console errors, no request leaves the server on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixture = _load("review_fixture", TESTS / "detect" / "conftest.py")
chromium = _load("report_browser", TESTS / "detect" / "test_report_browser.py")  # the project's DevTools driver
Browser = chromium.Browser
SCREENSHOT_COPY = os.environ.get("TRADEWATCH_TEST_SCREENSHOT")

pytestmark = pytest.mark.skipif(
    not chromium.CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium (CI installs it via .ci/run)",
)


@pytest.fixture
def server(tmp_path):
    """The UI on a free loopback port, served by uvicorn in a thread; yields its base URL."""
    import uvicorn

    from tradewatch.cli import ui

    db = tmp_path / "w.duckdb"
    fixture.build_review_warehouse(db)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    instance = uvicorn.Server(uvicorn.Config(ui.create_app(db, wait_s=2.0), log_level="warning"))
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not instance.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(timeout=20)
        listener.close()


def _open(browser: Browser, action) -> None:
    """Do `action` (a navigation, a click that submits) and wait for the page it leads to to load."""
    mark = len(browser.events)
    action()
    deadline = time.monotonic() + 30
    while not any(e["method"] == "Page.loadEventFired" for e in browser.events[mark:]):
        assert time.monotonic() < deadline, "the page did not load"
        message = json.loads(browser.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
        if "method" in message:
            browser.events.append(message)


def _start(browser: Browser) -> None:
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.send(f"{domain}.enable")


def _row_ids(browser: Browser) -> list[str]:
    return browser.evaluate("Array.prototype.map.call(document.querySelectorAll('#flags tbody tr'),"
                            " function (r) { return r.getAttribute('data-id'); })")


def _text(browser: Browser, selector: str) -> str:
    return browser.evaluate(f"(document.querySelector({json.dumps(selector)}) || {{textContent: ''}}).textContent")


def _only_local(browser: Browser, base: str) -> list[str]:
    return [url for url in browser.requests() if not (url.startswith(base + "/") or url.startswith("data:"))]


def test_filter_open_review_reload_and_a_second_session_sees_it(server, tmp_path):
    first = Browser(tmp_path / "profile-1")
    try:
        _start(first)
        _open(first, lambda: first.send("Page.navigate", url=f"{server}/runs/latest"))
        assert len(_row_ids(first)) == 5
        first.type_into("input[name=transit]", "KAZ")
        _open(first, lambda: first.click("#apply"))
        assert sorted(_row_ids(first)) == sorted([fixture.ROUTE_CHIPS, fixture.ROUTE_CARS])
        assert "transit=KAZ" in first.evaluate("location.search")

        _open(first, lambda: first.click(f'tr[data-id="{fixture.ROUTE_CHIPS}"] a'))
        assert first.evaluate("document.querySelectorAll('svg.chart').length") == 1
        assert _text(first, "#status").strip() == "new"
        first.click("#status-confirmed")
        first.type_into("#note", "matches the customs case")
        first.type_into("#by", "maria")
        _open(first, lambda: first.click("#submit"))
        assert _text(first, "#message").strip() == "Decision stored: confirmed."
        _open(first, lambda: first.send("Page.reload"))
        assert _text(first, "#status").strip() == "confirmed"
        assert "matches the customs case" in _text(first, "#history") and "maria" in _text(first, "#history")
        first.screenshot(tmp_path / "route.png")
        if SCREENSHOT_COPY:
            shutil.copyfile(tmp_path / "route.png", SCREENSHOT_COPY)
        assert first.errors() == []
        assert _only_local(first, server) == []
    finally:
        first.close()

    second = Browser(tmp_path / "profile-2")  # another analyst: no cookie shared with the first
    try:
        _start(second)
        _open(second, lambda: second.send("Page.navigate", url=f"{server}/runs/latest?status=confirmed"))
        assert _row_ids(second) == [fixture.ROUTE_CHIPS]
        assert "maria" in _text(second, f'tr[data-id="{fixture.ROUTE_CHIPS}"]')
        assert second.errors() == []
        assert _only_local(second, server) == []
    finally:
        second.close()
