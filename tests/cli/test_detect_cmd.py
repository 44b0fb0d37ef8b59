"""`tradewatch detect` end to end through the real CLI: demo seeding, formats, determinism, one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory):
    """The demo's own warehouse ($TRADEWATCH_HOME/demo.duckdb, named by --db), seeded with the demo world by
    a first `tradewatch detect` (shared by this module); any other empty --db is refused (test_demo_apart)."""
    import os

    home = tmp_path_factory.mktemp("detect-home")
    db = home / "demo.duckdb"
    old = os.environ.get("TRADEWATCH_HOME")
    os.environ["TRADEWATCH_HOME"] = str(home)
    try:
        result = runner.invoke(app, ["detect", "--db", str(db), "--format", "json", "--top", "50"])
    finally:
        if old is None:
            os.environ.pop("TRADEWATCH_HOME", None)
        else:
            os.environ["TRADEWATCH_HOME"] = old
    assert result.exit_code == 0, result.output
    return db, result


def test_first_run_seeds_demo_and_flags_routes(seeded_db):
    _, result = seeded_db
    assert "seeding the embedded demo world" in result.stderr
    rows = json.loads(result.stdout)
    assert 0 < sum(not r["exploration"] for r in rows) <= 50
    for key in ("rank", "score", "origin_iso3", "transit_iso3", "target_iso3", "product_code", "reasons", "id"):
        assert key in rows[0]
    explored = [r for r in rows if r["exploration"]]
    rows = [r for r in rows if not r["exploration"]]
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    # exploration: the default share (0.1) of the routes shown, after the flags, each saying it is not flagged
    assert explored and len(explored) == round(0.1 * len(rows) / 0.9)
    assert all(r["reasons"].startswith("EXPLORATION (not flagged") and r["rank"] > len(rows) for r in explored)
    assert all(r["reasons"] for r in rows), "every flagged route carries its reasons"
    assert all(r["transit_iso3"] not in ("RUS", "BLR") for r in rows)


def test_detect_twice_prints_the_same_table(seeded_db):
    db, _ = seeded_db
    first = runner.invoke(app, ["detect", "--db", str(db), "--top", "15"])
    second = runner.invoke(app, ["detect", "--db", str(db), "--top", "15"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output
    assert "seeding" not in first.stderr
    assert first.stdout == second.stdout
    assert "Flagged diversion routes" in first.stdout


def test_csv_and_top(seeded_db):
    db, _ = seeded_db
    result = runner.invoke(app, ["detect", "--db", str(db), "--format", "csv", "--top", "3"])
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("rank,score,origin_iso3,transit_iso3,target_iso3,product_code")
    assert len(lines) == 4


@pytest.mark.parametrize("args, expected", [
    (["--event", "2022-13"], "--event 2022-13"),
    (["--event", "March"], "expected a month as YYYY-MM"),
    (["--db", "/nonexistent/dir/x.duckdb"], "/nonexistent/dir does not exist"),
    (["--config", "/nonexistent/c.toml"], "--config"),
    (["--top", "0"], "'--top'"),
    (["--format", "xml"], "'--format'"),
    (["--no-such-option"], "--no-such-option"),
])
def test_bad_options_fail_with_one_line(args, expected):
    result = runner.invoke(app, ["detect", *args])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_help_is_instant_and_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "detect" in result.stdout


def test_window_options_and_config_precedence(seeded_db, tmp_path):
    db, _ = seeded_db
    config = tmp_path / "f.toml"
    config.write_text('event = "2022-06"\nfdr = 0.05\n')
    from_file = runner.invoke(app, ["detect", "--db", str(db), "--config", str(config), "--format", "json"])
    assert from_file.exit_code == 0, from_file.output
    assert "(event 2022-06)" in from_file.stderr and "at FDR 0.05" in from_file.stderr
    typed = runner.invoke(app, ["detect", "--db", str(db), "--config", str(config), "--event", "2022-03",
                                "--as-of", "2023-12", "--recent-months", "6", "--baseline-months", "12",
                                "--format", "json"])
    assert typed.exit_code == 0, typed.output
    assert "(event 2022-03)" in typed.stderr and "at FDR 0.05" in typed.stderr
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        stored = con.execute("SELECT params_json FROM runs ORDER BY started_at DESC, run_id DESC LIMIT 1").fetchone()
    finally:
        con.close()
    params = json.loads(stored[0])
    assert (params["fdr"], params["recent_months"], params["baseline_months"]) == (0.05, 6, 12)
    assert params["windows"] == {"baseline_start": "2021-03", "baseline_end": "2022-02", "recent_start": "2023-07",
                                 "recent_end": "2023-12"}


def test_config_file_then_typed_options_at_the_params_level(tmp_path):
    """What `tradewatch detect` and `evaluate` do with their options: typed > --config file > defaults."""
    from tradewatch.cli.common import window_options
    from tradewatch.detect.config import DetectParams

    config = tmp_path / "f.toml"
    config.write_text('event = "2022-06"\nbaseline_months = 18\n')
    untyped = DetectParams.from_toml(config, **window_options(None, None, None, None, None, config))
    assert (untyped.event, untyped.baseline_months, untyped.recent_months) == ("2022-06", 18, DetectParams().recent_months)
    typed = DetectParams.from_toml(config, **window_options("2022-04", None, 12, None, 0.05, config))
    assert (typed.event, typed.baseline_months, typed.fdr) == ("2022-04", 12, 0.05)


def test_a_bad_config_file_fails_in_one_line_naming_file_and_key(tmp_path):
    config = tmp_path / "f.toml"
    config.write_text("baseline_months = 0\n")
    result = runner.invoke(app, ["detect", "--config", str(config), "--db", str(tmp_path / "w.duckdb")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {config}: baseline_months 0: expected a whole number of months from 1 to 240"
    config.write_text('[schedule]\ncron = "0 6 15 * *"\n')
    result = runner.invoke(app, ["detect", "--config", str(config), "--db", str(tmp_path / "w.duckdb")])
    assert result.exit_code == 2 and "schedule {" in result.stderr and "unknown parameter" in result.stderr


def test_evaluate_honours_the_config_file_below_typed_options(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("tradewatch.detect.evaluate.evaluate", lambda db=None, **kwargs: calls.append(kwargs) or {
        "synthetic": {}, "placebo": {}, "notes": []})
    config = tmp_path / "f.toml"
    config.write_text('event = "2022-06"\nfdr = 0.05\n')
    assert runner.invoke(app, ["evaluate", "--json", "--config", str(config)]).exit_code == 0
    assert runner.invoke(app, ["evaluate", "--json", "--config", str(config), "--event", "2022-03"]).exit_code == 0
    assert [(c["params"].event, c["params"].fdr) for c in calls] == [("2022-06", 0.05), ("2022-03", 0.05)]
