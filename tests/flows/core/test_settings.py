"""flows.settings: where state lives, and the offline default for Prefect's temporary server."""

from __future__ import annotations

import os

from tradewatch.flows.core import settings


def test_state_folders_follow_tradewatch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADEWATCH_HOME", str(tmp_path / "state"))
    assert settings.default_db_path() == tmp_path / "state" / "tradewatch.duckdb"
    assert settings.cache_dir() == tmp_path / "state" / "cache"
    assert settings.reports_dir() == tmp_path / "state" / "reports"


def test_prefect_telemetry_is_off_unless_the_user_said_otherwise(monkeypatch):
    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    settings.offline_prefect_server()
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    settings.offline_prefect_server()
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"
