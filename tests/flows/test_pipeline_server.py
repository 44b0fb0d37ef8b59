"""The scheduled pipeline against a real Prefect server: `tradewatch deploy` + a process worker, and `tradewatch serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from test_pipeline import FIRST, LAST, eurostat, months_between, write_config  # noqa: F401  (fixture; tests/flows is on sys.path)

REPO = Path(__file__).resolve().parents[2]
CRON = "0 6 15 * *"


def _env(api_url: str) -> dict:
    env = dict(os.environ, PREFECT_API_URL=api_url, TRADEWATCH_DEBUG="1",
               # Poll every second or two instead of every ten: the test waits on them.
               PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_RUNNER_POLL_FREQUENCY="2")
    return env


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    handle = open(log, "wb")
    try:
        return subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        handle.close()


def _stop(process: subprocess.Popen) -> None:
    """Stop a process group we started: SIGINT first (Prefect shuts down cleanly), then SIGKILL."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def _read_deployment(name: str, timeout_s: float = 60):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            try:
                return client.read_deployment_by_name(name)
            except ObjectNotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def _tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _check_finished_run(flow_run, db: Path, log: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tradewatch.flows import warehouse
    from tradewatch.flows.pipeline import ARTIFACT_KEY

    assert flow_run.state.is_completed(), f"{flow_run.state!r}\n{_tail(log)}"
    with warehouse.opened(db, read_only=True) as con:
        periods = [r[0] for r in con.execute(
            "SELECT DISTINCT strftime(period, '%Y-%m') p FROM trade_flows ORDER BY p").fetchall()]
        runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    assert periods == months_between(FIRST, LAST)
    assert runs == 1
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
    assert [a.type for a in artifacts if a.key == ARTIFACT_KEY] == ["table"]


@pytest.fixture
def api(prefect_server):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        yield prefect_server


@pytest.mark.prefect_server
@pytest.mark.slow
def test_deploy_registers_the_cron_schedule_and_a_worker_runs_it(api, eurostat, tmp_path):
    from prefect.deployments import run_deployment

    name = f"ci-{uuid.uuid4().hex[:8]}"
    pool = f"tradewatch-{name}"
    db = tmp_path / "w.duckdb"
    config = write_config(tmp_path / "pipeline.toml", eurostat.base_url, FIRST, LAST,
                          extra=f'[schedule]\ndeployment_name = "{name}"\n')
    env = _env(api)
    deployed = subprocess.run(
        [sys.executable, "-m", "tradewatch.cli.main", "deploy", "--config", str(config), "--db", str(db),
         "--pool", pool, "--cron", CRON],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert deployed.returncode == 0, deployed.stderr
    assert deployed.stdout.strip() == f"pipeline/{name}"

    deployment = _read_deployment(f"pipeline/{name}")
    assert [s.schedule.cron for s in deployment.schedules] == [CRON]
    assert deployment.schedules[0].schedule.timezone == "Europe/Luxembourg"
    assert deployment.work_pool_name == pool
    assert deployment.parameters == {"config": str(config.resolve()), "db": str(db.resolve())}

    log = tmp_path / "worker.log"
    worker = _start([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"],
                    env, log)
    try:
        flow_run = run_deployment(f"pipeline/{name}", timeout=150, poll_interval=1)
    finally:
        _stop(worker)
    _check_finished_run(flow_run, db, log)


@pytest.mark.prefect_server
@pytest.mark.slow
def test_serve_registers_the_schedule_and_executes_a_triggered_run(api, eurostat, tmp_path):
    from prefect.deployments import run_deployment

    name = f"ci-served-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "w.duckdb"
    config = write_config(tmp_path / "pipeline.toml", eurostat.base_url, FIRST, LAST,
                          extra=f'[schedule]\ndeployment_name = "{name}"\ncron = "30 5 16 * *"\n')
    log = tmp_path / "serve.log"
    served = _start([sys.executable, "-m", "tradewatch.cli.main", "serve", "--config", str(config), "--db", str(db)],
                    _env(api), log)
    try:
        deployment = _read_deployment(f"pipeline/{name}", timeout_s=90)
        assert [s.schedule.cron for s in deployment.schedules] == ["30 5 16 * *"]
        assert deployment.work_pool_name is None, "served deployments need no work pool"
        flow_run = run_deployment(f"pipeline/{name}", timeout=150, poll_interval=1)
    finally:
        _stop(served)
    assert served.returncode is not None, "the serve process was stopped"
    _check_finished_run(flow_run, db, log)


def test_prefect_yaml_matches_the_documented_defaults():
    """`prefect deploy --all` and `tradewatch deploy` must register the same schedule."""
    import yaml

    from tradewatch.flows.pipeline_config import load_config

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    defaults = load_config()
    (deployment,) = spec["deployments"]
    assert deployment["name"] == defaults.deployment_name
    assert deployment["work_pool"]["name"] == defaults.work_pool
    assert [(s["cron"], s["timezone"]) for s in deployment["schedules"]] == [(defaults.cron, defaults.timezone)]
    from prefect.flows import load_flow_from_entrypoint

    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    assert flow.name == "pipeline"
    assert set(deployment["parameters"]) <= set(flow.parameters.properties)
