"""The HTML report in headless Chromium (DevTools protocol): renders, sorts, filters, no console errors, no network."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Set to a file path to keep the screenshot for a human look; tests write nowhere else but tmp_path.
SCREENSHOT_COPY = os.environ.get("TRADEWATCH_TEST_SCREENSHOT")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium (CI installs it via .ci/run)"
)


START_TIMEOUT_S = 120


class Browser:
    """A headless Chromium and one page, driven over the DevTools protocol on loopback."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900):
        from websockets.sync.client import connect

        self.process = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            port = self._port(profile)
            target = self._page_target(port)
            self.socket = connect(target, max_size=64 * 1024 * 1024, open_timeout=20)
        except BaseException:
            self.close()
            raise
        self.next_id = 0
        self.events: list[dict] = []

    def _port(self, profile: Path) -> int:
        # With --remote-debugging-port=0 Chromium picks a free port and writes it to this file. Usually in
        # a second or two; a CI run once waited more than 30 s on a loaded machine, hence the margin.
        marker = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.process.returncode}")
            if marker.exists():
                lines = marker.read_text().splitlines()
                if lines and lines[0].strip().isdigit():
                    return int(lines[0])
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not open its DevTools port within {START_TIMEOUT_S} s")

    @staticmethod
    def _page_target(port: int) -> str:
        import urllib.request

        deadline = time.monotonic() + 20
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                targets = json.loads(response.read())
            pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            if time.monotonic() > deadline:
                raise RuntimeError("no page target in chromium")
            time.sleep(0.1)

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        ident = self.next_id
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        for event in self.events:
            if event["method"] == method:
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if "method" in message:
                self.events.append(message)
                if message["method"] == method:
                    return message
        raise TimeoutError(method)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the centre of the element."""
        box = self.evaluate(
            f"(function(){{var e=document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            "var r=e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2];})()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def type_into(self, selector: str, text: str) -> None:
        self.click(selector)
        for char in text:
            self.send("Input.dispatchKeyEvent", type="keyDown", text=char, key=char, unmodifiedText=char)
            self.send("Input.dispatchKeyEvent", type="keyUp", key=char)

    def screenshot(self, path: Path) -> None:
        result = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(result["data"]))

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails", {}))[:300])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args", []))[:300])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(params["entry"].get("text", "")[:300])
        return found

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            if getattr(self, "socket", None) is not None:
                self.socket.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def browser(tmp_path):
    instance = Browser(tmp_path / "chromium-profile")
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def report_file(review_db, tmp_path) -> Path:
    from conftest import RUN_NEW, ROUTE_CARS, ROUTE_MODEMS, RUN_OLD
    from tradewatch.detect import report, review
    from tradewatch.flows import warehouse

    con = warehouse.connect(review_db)
    try:
        review.review(con, ROUTE_MODEMS, "dismissed", "re-export by a known distributor", by="ann", run=RUN_OLD)
        review.review(con, ROUTE_CARS, "confirmed", "matches the customs case", by="bob", run=RUN_NEW)
        return report.write_report(con, "latest", tmp_path / "report.html")
    finally:
        con.close()


def _rows(browser: Browser) -> list[dict]:
    return browser.evaluate(
        "Array.prototype.map.call(document.querySelectorAll('#flags tbody tr'), function (r) {"
        " return {id: r.getAttribute('data-id'), hidden: r.hidden, visible: r.offsetParent !== null,"
        " score: parseFloat(r.cells[1].getAttribute('data-value'))}; })"
    )


def test_report_renders_sorts_and_filters_in_chromium(browser, report_file, tmp_path):
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.send(f"{domain}.enable")
    browser.send("Page.navigate", url=report_file.as_uri())
    browser.wait_for("Page.loadEventFired")

    assert browser.evaluate("document.title").startswith("tradewatch report")
    rows = _rows(browser)
    assert len(rows) == 5 and all(r["visible"] for r in rows)
    assert browser.evaluate("document.querySelectorAll('svg.chart').length") == 5
    assert browser.evaluate("document.querySelectorAll('svg.chart line.event').length") == 5
    assert browser.evaluate("document.querySelectorAll('svg.chart rect.band-baseline').length") == 5
    # The reason holding a <script> tag is shown as text, not run.
    assert "<script>alert('x')</script>" in browser.evaluate("document.querySelector('#flags tbody').textContent")
    assert browser.evaluate("document.querySelectorAll('script').length") == 1

    before = [r["id"] for r in rows]
    browser.click("#flags thead th[data-key='score']")  # first click on a number: descending
    browser.click("#flags thead th[data-key='score']")  # second: ascending
    after_rows = _rows(browser)
    scores = [r["score"] for r in after_rows]
    assert scores == sorted(scores)
    assert [r["id"] for r in after_rows] != before
    assert browser.evaluate("document.querySelector(\"#flags thead th[data-key='score']\").getAttribute('aria-sort')") \
        == "ascending"

    browser.type_into("#filter", "kazakh")
    filtered = _rows(browser)
    visible = sorted(r["id"] for r in filtered if r["visible"])
    assert visible == ["r-deu-kaz-854231", "r-ita-kaz-870323"]
    assert all(r["hidden"] for r in filtered if r["id"] not in visible)
    assert browser.evaluate("document.getElementById('shown').textContent") == "2"

    browser.screenshot(tmp_path / "report.png")
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if SCREENSHOT_COPY:
        shutil.copyfile(tmp_path / "report.png", SCREENSHOT_COPY)

    # Transit select narrows further; clearing the text box keeps only the select.
    browser.evaluate("(function(){var s=document.getElementById('transit-filter'); s.value='ARM';"
                     " s.dispatchEvent(new Event('change'));})()")
    browser.evaluate("(function(){var f=document.getElementById('filter'); f.value='';"
                     " f.dispatchEvent(new Event('input'));})()")
    assert [r["id"] for r in _rows(browser) if r["visible"]] == ["r-fra-arm-851762"]

    assert browser.errors() == []
    offsite = [url for url in browser.requests() if not url.startswith(("file:", "data:"))]
    assert offsite == []
