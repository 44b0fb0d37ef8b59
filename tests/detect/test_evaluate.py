"""Evaluation: the ranking metrics, and the goals of issue 4 on the synthetic demo world (against its answer key)."""

from __future__ import annotations

import json

import pytest

from tradewatch.detect import baselines, evaluate
from tradewatch.detect.config import DetectParams

A, B, C, D = (("DEU", "KAZ", "RUS", code) for code in ("854231", "854232", "854233", "854239"))


def test_ranking_metrics_by_hand():
    metrics = evaluate.ranking_metrics([A, B, C], {A, C})
    assert metrics["average_precision"] == pytest.approx((1 / 1 + 2 / 3) / 2, abs=1e-4)
    assert metrics["precision_at_10"] == 0.2 and metrics["precision_at_25"] == 0.08
    assert metrics["recall_at_50"] == 1.0
    # A positive never ranked counts as zero precision; duplicates do not count twice.
    missed = evaluate.ranking_metrics([A, A, B], {A, D})
    assert missed["average_precision"] == 0.5 and missed["recall_at_50"] == 0.5
    assert evaluate.ranking_metrics([], {A})["average_precision"] == 0.0
    with pytest.raises(ValueError):
        evaluate.ranking_metrics([A], set())


def test_goal_check():
    good = {"average_precision": 0.95, "precision_at_25": 1.0}
    synthetic = {"tradewatch": good, "baseline_growth": {"average_precision": 0.4},
                 "baseline_ec_rule": {"average_precision": 0.3}}
    assert all(evaluate.check_goals(synthetic, {"ratio": 0.05}).values())
    goals = evaluate.check_goals({**synthetic, "baseline_ec_rule": {"average_precision": 0.8}}, {"ratio": 0.5})
    assert not goals["average_precision_0.2_above_best_baseline"] and not goals["placebo_flags_at_most_10_percent"]
    assert not evaluate.check_goals(synthetic, {"ratio": None})["placebo_flags_at_most_10_percent"]


@pytest.fixture(scope="module")
def demo_world(tmp_path_factory):
    """The default demo world in a warehouse, with its answer key. The rows go in directly (the demo's
    generate_frame is exactly what its files load as), which keeps this fixture to seconds."""
    import duckdb

    from tradewatch.detect import demo
    from tradewatch.flows import warehouse

    frame, plan = demo._generate(demo.DEFAULT_SEED, 1.0)
    key = json.loads(json.dumps(demo._answer_key(plan)))
    con = duckdb.connect(str(tmp_path_factory.mktemp("demo") / "w.duckdb"))
    warehouse.migrate(con)
    con.register("demo_rows", frame.to_arrow())
    con.execute("INSERT INTO trade_flows BY NAME SELECT * FROM demo_rows")
    con.unregister("demo_rows")
    yield con, key
    con.close()


@pytest.fixture(scope="module")
def synthetic(demo_world):
    con, key = demo_world
    return evaluate.evaluate_synthetic_warehouse(con, key, DetectParams(event=key["event"]))


def test_tradewatch_ranks_the_demo_world_well_above_the_analyst_rules(synthetic):
    # Detection v2 flags by Benjamini–Hochberg at FDR 0.10, so its list is shorter than v1's and AP (over
    # the flagged list) is lower: measured 0.79 with P@10 0.8 and P@25 0.92 on the default demo world.
    ours = synthetic["tradewatch"]
    best_baseline = max(synthetic["baseline_growth"]["average_precision"],
                        synthetic["baseline_ec_rule"]["average_precision"])
    assert ours["average_precision"] >= 0.75, synthetic
    assert ours["average_precision"] - best_baseline >= 0.3, synthetic
    assert ours["precision_at_25"] >= 0.88, synthetic
    assert ours["precision_at_10"] >= 0.8  # measured 0.8: two of the top ten are unplanted routes


def test_baselines_rank_many_routes_but_less_well(synthetic, demo_world):
    con, key = demo_world
    for name in ("baseline_growth", "baseline_ec_rule"):
        assert set(synthetic[name]) == set(evaluate.METRIC_NAMES)
        assert synthetic[name]["average_precision"] < synthetic["tradewatch"]["average_precision"]
    ec = baselines.ec_rule_ranking(con, DetectParams())
    growth = baselines.plain_growth_ranking(con, DetectParams())
    assert 50 < len(ec) < len(growth)
    assert not {route[1] for route in growth} & {"RUS", "BLR"}


def test_placebo_in_time_on_the_demo_world(demo_world):
    con, _ = demo_world
    result = evaluate.placebo(con, DetectParams())
    assert result["event"] == "2022-03" and result["placebo_event"] == "2021-03"
    assert result["flags_event"] >= 25
    assert result["ratio"] <= 0.1, result


def test_list_metrics_by_hand():
    metrics = evaluate.list_metrics([A, B, C, D], [A, B], {A, C})
    assert metrics["list_precision"] == 0.5 and metrics["list_recall"] == 0.5
    assert metrics["average_precision"] == pytest.approx((1 / 1 + 2 / 3) / 2, abs=1e-4)
    assert evaluate.list_metrics([A], [], {A})["list_precision"] == 0.0


def test_family_names_are_checked():
    from tradewatch.detect import worlds
    from tradewatch.flows.core.errors import InputError

    assert evaluate.family_names("all") == [*worlds.FAMILIES, "mixed"]
    assert evaluate.family_names("transit_boom, mixed") == ["transit_boom", "mixed"]
    with pytest.raises(InputError, match="--families boom"):
        evaluate.family_names("boom")


def test_one_family_world_against_all_four_methods(tradewatch_home):
    """One world the detector was not built with (detect.worlds, a transit-wide boom), seed 1 (a tuning
    seed): tradewatch's flagged list is precise and finds most planted routes; the growth rule's is not."""
    result = evaluate.evaluate_world("transit_boom", 1, DetectParams())
    assert set(result) == set(evaluate.METHODS)
    ours, growth = result["tradewatch"], result["growth"]
    assert ours["list_precision"] >= 0.85 and ours["list_recall"] >= 0.6, result
    assert ours["average_precision"] > growth["average_precision"] + 0.2, result
    assert growth["list_precision"] < 0.5, result
    assert not list((tradewatch_home / "tmp").glob("family-*")), "the scratch warehouse is removed"
