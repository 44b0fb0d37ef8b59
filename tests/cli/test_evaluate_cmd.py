"""`tradewatch evaluate` through the real CLI: the JSON shape, the table, one-line errors, and one real run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app

runner = CliRunner()

METRICS = {"average_precision": 0.95, "precision_at_10": 1.0, "precision_at_25": 1.0, "precision_at_50": 0.76,
           "recall_at_50": 0.95}
CANNED = {
    "synthetic": {"tradewatch": METRICS, "baseline_growth": {**METRICS, "average_precision": 0.38},
                  "baseline_ec_rule": {**METRICS, "average_precision": 0.3}},
    "placebo": {"event": "2022-03", "placebo_event": "2021-03", "flags_event": 52, "flags_placebo": 1, "ratio": 0.0192},
    "goals": {"average_precision_at_least_0.9": True, "placebo_flags_at_most_10_percent": True},
    "notes": ["the warehouse holds no trade data: the placebo ran on the synthetic world"],
}


@pytest.fixture
def canned(monkeypatch):
    calls = []

    def fake(db=None, **kwargs):
        calls.append({"db": db, **kwargs})
        return json.loads(json.dumps(CANNED))

    monkeypatch.setattr("tradewatch.detect.evaluate.evaluate", fake)
    return calls


def test_json_has_exactly_the_promised_shape(canned, tmp_path):
    result = runner.invoke(app, ["evaluate", "--json", "--db", str(tmp_path / "w.duckdb"), "--event", "2022-03"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"synthetic", "placebo"}
    assert set(data["synthetic"]) == {"tradewatch", "baseline_growth", "baseline_ec_rule"}
    for metrics in data["synthetic"].values():
        assert set(metrics) == {"average_precision", "precision_at_10", "precision_at_25", "precision_at_50",
                                "recall_at_50"}
    assert set(data["placebo"]) == {"event", "placebo_event", "flags_event", "flags_placebo", "ratio"}
    assert "placebo ran on the synthetic world" in result.stderr
    assert canned[0]["params"].event == "2022-03" and canned[0]["shift_months"] == 12


def test_table_output_names_methods_and_goals(canned):
    result = runner.invoke(app, ["evaluate", "--placebo-shift", "6", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "tradewatch" in result.stdout and "EC 2023 rule" in result.stdout and "plain growth" in result.stdout
    assert "0.950" in result.stdout and "52 routes flagged at 2022-03" in result.stdout
    assert canned[0]["shift_months"] == 6 and canned[0]["seed"] == 3


@pytest.mark.parametrize("args, expected", [
    (["--event", "2022-13"], "--event 2022-13: month 13 is not between 01 and 12"),
    (["--config", "/nonexistent/x.toml"], "--config /nonexistent/x.toml: no such file"),
    (["--families", "boom"], "--families boom: expected 'all' or names among transit_boom"),
    (["--fdr", "1.5"], "--fdr 1.5: expected a false discovery rate between 0 and 1"),
    (["--as-of", "2023-00"], "--as-of 2023-00: month 0 is not between 01 and 12"),
    (["--db", "/nonexistent/dir/x.duckdb"], "folder /nonexistent/dir does not exist"),
])
def test_bad_options_fail_with_one_line(args, expected):
    result = runner.invoke(app, ["evaluate", *args])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.slow
def test_real_evaluation_meets_the_goals(tmp_path, tradewatch_home):
    """The whole evaluation: the demo world written and loaded through the real loaders into a scratch
    warehouse under TRADEWATCH_HOME (removed afterwards); the placebo on it, since --db is empty."""
    db = tmp_path / "mine.duckdb"
    result = runner.invoke(app, ["evaluate", "--json", "--db", str(db)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    ours = data["synthetic"]["tradewatch"]
    best = max(data["synthetic"]["baseline_growth"]["average_precision"],
               data["synthetic"]["baseline_ec_rule"]["average_precision"])
    assert ours["average_precision"] >= 0.75 and ours["average_precision"] - best >= 0.3
    assert ours["precision_at_25"] >= 0.88
    assert data["placebo"]["ratio"] <= 0.1
    assert not list((tradewatch_home / "tmp").glob("evaluate-*")), "the scratch warehouse is removed"
    assert not db.exists() or db.stat().st_size < 5_000_000, "the user's warehouse was not seeded"


def test_families_json_has_the_promised_keys(monkeypatch):
    calls = []

    def fake(families, seeds, params, *, say=lambda message: None):
        calls.append((families, seeds, params))
        metrics = {"average_precision": 0.9, "precision_at_25": 0.9, "list_precision": 0.9, "list_recall": 0.8}
        methods = {m: dict(metrics) for m in ("tradewatch", "ranker", "growth", "ec_rule", "simple")}
        return {"families": {f: methods for f in families}, "overall": methods, "seeds": seeds,
                "tuning_seeds": [1, 2, 3]}

    monkeypatch.setattr("tradewatch.detect.evaluate.evaluate_families", fake)
    result = runner.invoke(app, ["evaluate", "--families", "transit_boom,classic", "--seeds", "2", "--first-seed",
                                 "7", "--fdr", "0.05", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["families"]) == {"transit_boom", "classic"}
    for methods in [*data["families"].values(), data["overall"]]:
        assert set(methods) == {"tradewatch", "ranker", "growth", "ec_rule", "simple"}
        for metrics in methods.values():
            assert set(metrics) == {"average_precision", "precision_at_25", "list_precision", "list_recall"}
    families, seeds, params = calls[0]
    assert families == ["transit_boom", "classic"] and seeds == [7, 8] and params.fdr == 0.05
    table = runner.invoke(app, ["evaluate", "--families", "all", "--seeds", "1"])
    assert table.exit_code == 0 and "list recall" in table.stdout and "overall" in table.stdout
