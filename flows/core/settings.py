"""Where tradewatch keeps its state: TRADEWATCH_HOME, the warehouse file, the download cache, reports."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The state folder: $TRADEWATCH_HOME, default ~/.tradewatch (not created here)."""
    return Path(os.environ.get("TRADEWATCH_HOME") or Path.home() / ".tradewatch").expanduser()


def default_db_path() -> Path:
    return home() / "tradewatch.duckdb"


def demo_db_path() -> Path:
    """The demo's own warehouse: the synthetic world lives here, never in the real one."""
    return home() / "demo.duckdb"


def cache_dir() -> Path:
    return home() / "cache"


def reports_dir() -> Path:
    return home() / "reports"


def demo_dir() -> Path:
    return home() / "demo"


def offline_prefect_server() -> None:
    """Keep the temporary Prefect server a run may start from phoning home: its telemetry service would
    call Prefect's servers, which offline or egress-filtered machines (where analysts of export controls
    often work) refuse, and it logs an error each time. A value the user set in the environment wins."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
