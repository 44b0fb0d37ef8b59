"""Fixtures for the ingest tests: a private TRADEWATCH_HOME, the shared real data, a local HTTP server."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakeserver import FakeServer, Reply  # noqa: F401  (re-exported for the tests)

SHARED_DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
FIXTURES = Path(__file__).parent / "fixtures"


def quick_home(tmp_path, monkeypatch, **env: str) -> Path:
    """A fresh TRADEWATCH_HOME (tmp_path/home) with tiny retry delays, no Comtrade API key in the
    environment, and `env` (TRADEWATCH_… names without the prefix) set on top."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("TRADEWATCH_HOME", str(folder))
    monkeypatch.setenv("TRADEWATCH_RETRY_BASE_DELAY_S", "0.01")
    monkeypatch.delenv("COMTRADE_API_KEY", raising=False)
    for name, value in {"RETRY_MAX_DELAY_S": "0.05", **env}.items():
        monkeypatch.setenv(f"TRADEWATCH_{name}", value)
    return folder


@pytest.fixture
def home(tmp_path, monkeypatch):
    """quick_home with four download attempts and a 2 s HTTP timeout."""
    return quick_home(tmp_path, monkeypatch, RETRY_ATTEMPTS="4", HTTP_TIMEOUT_S="2")


@pytest.fixture
def server():
    with FakeServer() as fake:
        yield fake


@pytest.fixture
def comext_dir() -> Path:
    folder = (SHARED_DATA / "comext").resolve()
    if not folder.is_dir() or not any(folder.glob("full_v2_*.7z")):
        pytest.skip(f"real Comext extract not found at {folder} (the shared/data folder beside the repo)")
    return folder


STEPS = ("download_step", "parse_step", "check_step", "load_step")


def record_steps(monkeypatch) -> list[str]:
    """Wrap the ingest steps (ingest.download_step … load_step) so that each call is appended, by name, to
    the list returned; the real step still runs."""
    from tradewatch.flows import ingest

    calls: list[str] = []
    for step in STEPS:
        def recorded(*args, _step=step, _real=getattr(ingest, step), **kwargs):
            calls.append(_step)
            return _real(*args, **kwargs)
        monkeypatch.setattr(ingest, step, recorded)
    return calls
