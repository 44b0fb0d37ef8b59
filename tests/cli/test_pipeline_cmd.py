"""`tradewatch pipeline run`, `deploy`, `serve` through the real CLI; read-only commands never import Prefect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))
from test_pipeline import EurostatStandIn, months_between, write_comext_7z, write_config  # noqa: E402

runner = CliRunner()
FIRST, LAST = "2021-09", "2022-06"

READ_COMMANDS = [["detect", "--top", "3"], ["flags", "list"], ["status"], ["report"]]

NO_PREFECT_PROBE = """
import json, sys
from typer.testing import CliRunner
from tradewatch.cli.main import app

def prefect_loaded():
    return sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect."))[:3]

out = {"import": prefect_loaded(), "help": None, "commands": []}
out["help"] = [CliRunner().invoke(app, ["--help"]).exit_code, prefect_loaded()]
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, args + ["--db", sys.argv[2]])
    out["commands"].append([args[0], result.exit_code, prefect_loaded(), result.stderr[-400:]])
print(json.dumps(out))
"""


def _registered() -> set[str]:
    return {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_read_commands_never_import_prefect(tmp_path):
    """Only commands that run flows pay for Prefect: detect, flags, status and report must not import it."""
    from tradewatch.flows import ingest, warehouse

    db = tmp_path / "w.duckdb"
    with warehouse.opened(db) as con:
        for month in months_between(FIRST, LAST):
            ingest.load_file(con, write_comext_7z(tmp_path / "files" / f"full_v2_{month.replace('-', '')}.7z", month))
    commands = [c for c in READ_COMMANDS if c[0] in _registered()]
    assert [c[0] for c in commands][:2] == ["detect", "flags"]
    probe = subprocess.run([sys.executable, "-c", NO_PREFECT_PROBE, json.dumps(commands), str(db)],
                           capture_output=True, text=True, timeout=180)
    assert probe.returncode == 0, probe.stderr
    out = json.loads(probe.stdout.strip().splitlines()[-1])
    assert out["import"] == [], "importing the CLI imports prefect"
    assert out["help"] == [0, []]
    for name, exit_code, loaded, stderr in out["commands"]:
        assert exit_code == 0, (name, stderr)
        assert loaded == [], f"`tradewatch {name}` imported {loaded}"
    assert len(out["commands"]) == len(commands)


def test_pipeline_run_rejects_bad_config_in_one_line(tmp_path):
    _one_line_error(runner.invoke(app, ["pipeline", "run", "--config", str(tmp_path / "none.toml")]),
                    "none.toml", "no such file")
    bad = tmp_path / "bad.toml"
    bad.write_text('[sources.comext]\nbase_urll = "http://127.0.0.1:1/"\n')
    _one_line_error(runner.invoke(app, ["pipeline", "run", "--config", str(bad)]), "bad.toml", "sources.comext.base_urll")
    bad.write_text('[schedule]\ncron = "every month"\n')
    _one_line_error(runner.invoke(app, ["pipeline", "run", "--config", str(bad)]), "bad.toml", "schedule.cron")
    bad.write_text('[sources.comext\n')
    _one_line_error(runner.invoke(app, ["pipeline", "run", "--config", str(bad)]), "bad.toml", "not valid TOML")
    bad.write_text('[detect]\nevent = "2022-13"\n')
    _one_line_error(runner.invoke(app, ["pipeline", "run", "--config", str(bad)]), "bad.toml", "detect.event")
    bad.write_text('[detect]\nrecent_month = 6\n')
    _one_line_error(runner.invoke(app, ["pipeline", "run", "--config", str(bad)]), "detect.recent_month",
                    "not a detection parameter")


def test_pipeline_run_rejects_bad_options_in_one_line():
    _one_line_error(runner.invoke(app, ["pipeline", "run", "--task-runner", "thread", "--dask-address", "tcp://x:1"]),
                    "--dask-address", "only applies with --task-runner dask")
    result = runner.invoke(app, ["pipeline", "run", "--task-runner", "spark"])
    assert result.exit_code == 2 and "spark" in result.stderr


@pytest.mark.parametrize("cron", ["61 6 15 * *", "0 6 15 *", "monthly"])
def test_deploy_rejects_a_bad_cron_in_one_line(cron):
    _one_line_error(runner.invoke(app, ["deploy", "--cron", cron]), "--cron", "five cron fields")


def test_deploy_without_a_prefect_server_says_how_to_start_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # a profile with no API URL in it
    for command in (["deploy"], ["serve"]):
        result = subprocess.run([sys.executable, "-m", "tradewatch.cli.main", *command], env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "prefect server start" in lines[0] and "PREFECT_API_URL" in lines[0], result.stderr


@pytest.mark.slow
def test_pipeline_run_end_to_end_prints_where_the_report_is(prefect_server, tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    db = tmp_path / "w.duckdb"
    with EurostatStandIn(tmp_path / "eurostat") as eurostat, temporary_settings({PREFECT_API_URL: prefect_server}):
        for month in months_between(FIRST, LAST):
            eurostat.publish(month)
        config = write_config(tmp_path / "pipeline.toml", eurostat.base_url, FIRST, LAST)
        eurostat.failures = 2  # the first two answers are 503s: each retry is said on the terminal
        result = runner.invoke(app, ["pipeline", "run", "--config", str(config), "--db", str(db)])
    assert result.exit_code == 0, result.output
    report = Path(result.stdout.strip())
    assert report.is_file() and report.suffix == ".html"
    retries = [line for line in result.stderr.splitlines() if line.startswith("retrying: ")]
    assert len(retries) == 2 and all(line.startswith("retrying: HTTP 503 from 127.0.0.1; retry 1/5 in 0.0 s")
                                     or line.startswith("retrying: HTTP 503 from 127.0.0.1; retry 2/5 in 0.0 s")
                                     for line in retries), result.stderr
    assert f"Ingest: {len(months_between(FIRST, LAST))} file(s) downloaded" in result.stderr
    assert "Detection run " in result.stderr


def test_pipeline_run_keeps_prefect_log_lines_off_the_terminal_unless_verbose(monkeypatch):
    from tradewatch.flows import pipeline
    from tradewatch.flows.core.errors import TradewatchError

    monkeypatch.delenv("TRADEWATCH_DEBUG", raising=False)
    asked = []

    def run_pipeline(config, db, *, quiet, **kwargs):
        asked.append(quiet)
        raise TradewatchError("pipeline run failed: stand-in")

    monkeypatch.setattr(pipeline, "run_pipeline", run_pipeline)
    for extra in ([], ["--verbose"]):
        result = runner.invoke(app, ["pipeline", "run", *extra])
        assert result.exit_code == 2 and result.stderr.strip() == "error: pipeline run failed: stand-in", result.output
    monkeypatch.setenv("TRADEWATCH_DEBUG", "1")
    runner.invoke(app, ["pipeline", "run"])
    assert asked == [True, False, False]
