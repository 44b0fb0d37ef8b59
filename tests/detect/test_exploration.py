"""Exploration (issue 13 item 5): a share of the routes shown comes from just below the flag threshold,
deterministic, stored and marked, with its own scores, and outside the flagged list and its counts."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from detect_worlds import base_world
from tradewatch.detect import engine, exploration, features, ranker, review, service
from tradewatch.detect.config import DetectParams
from tradewatch.flows import schema, warehouse

SHARE = 0.5  # at 0.5 as many exploration routes go beside the tiny world's flags as there are flags


@pytest.fixture(scope="module")
def world_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("exploration") / "w.duckdb"
    base_world().warehouse(path).close()
    return path


@pytest.fixture(scope="module")
def runs(world_db):
    """Two stored runs with exploration and one without, on the same data and model."""
    con = warehouse.connect(world_db)
    try:
        first = engine.run_detection(con, DetectParams(exploration_share=SHARE))
        second = engine.run_detection(con, DetectParams(exploration_share=SHARE))
        without = engine.run_detection(con, DetectParams(exploration_share=0.0))
        return first, second, without
    finally:
        con.close()


@pytest.mark.parametrize("flags, share, expected", [(0, 0.1, 0), (9, 0.1, 1), (39, 0.1, 4), (40, 0.0, 0),
                                                    (1, 0.5, 1), (20, 0.2, 5)])
def test_exploration_is_the_share_of_the_routes_shown(flags, share, expected):
    assert exploration.count(flags, share) == expected


def test_exploration_routes_are_tested_unflagged_and_nearest_the_cut(world_db, runs):
    first, _, _ = runs
    flags = first.flagged.height
    assert flags >= 1 and first.exploration.height == exploration.count(flags, SHARE) == flags
    con = warehouse.connect(world_db)
    try:
        params = DetectParams(exploration_share=SHARE)
        frame = features.build_routes(con, params)
        scored = engine.score_routes(frame.routes, params, frame.windows, frame.placebo, ranker.load())
    finally:
        con.close()
    # the HS-4 headings of flagged HS-6 routes re-test their evidence: they are never shown again
    headings = {(r["origin_iso3"], r["transit_iso3"], r["product_code"][:4])
                for r in first.flagged.iter_rows(named=True) if r["product_level"] == 6}
    pool = scored.filter(pl.col("tested") & ~pl.col("flag")).sort(["q_value", "p_value"])
    covered = [r["route_id"] for r in pool.iter_rows(named=True)
               if r["level"] == 4 and (r["origin_iso3"], r["transit_iso3"], r["product"]) in headings]
    assert covered and pool.height > flags + len(covered)  # there was a choice to make
    nearest = [route for route in pool["route_id"] if route not in covered][:flags]
    assert first.exploration["route_id"].to_list() == nearest
    assert not set(nearest) & set(first.flagged["route_id"])
    # their scores are their own, as scored: exploration changes no score
    own = dict(zip(scored["route_id"], scored["score"]))
    assert first.exploration["score"].to_list() == pytest.approx([own[route] for route in nearest], abs=1e-12)
    assert first.exploration["rank"].to_list() == list(range(flags + 1, 2 * flags + 1))
    assert all(text.startswith("EXPLORATION (not flagged: ") for text in first.exploration["reasons"])
    assert first.exploration["exploration"].all() and not first.flagged["exploration"].any()


def test_exploration_leaves_the_flags_and_their_counts_alone(runs):
    first, _, without = runs
    assert without.exploration.height == 0
    columns = ["rank", "route_id", "score"]
    assert first.flagged.select(columns).equals(without.flagged.select(columns))
    # the expected false flags are the flagged list's: the same note with or without exploration
    calibration_first = [n for n in first.notes if "expected to be false" in n]
    assert calibration_first == [n for n in without.notes if "expected to be false" in n]
    assert any("marked 'exploration'" in note for note in first.notes)


def test_same_data_model_and_parameters_choose_the_same_routes(runs):
    first, second, _ = runs
    assert first.exploration["route_id"].to_list() == second.exploration["route_id"].to_list()
    assert first.exploration["score"].to_list() == second.exploration["score"].to_list()


def test_exploration_is_stored_marked_and_reloaded(world_db, runs):
    first, _, _ = runs
    con = warehouse.connect(world_db, read_only=True)
    try:
        stored = con.execute("SELECT route_id, exploration FROM anomalies WHERE run_id = ? ORDER BY rank",
                             [first.run_id]).fetchall()
        flagged_count = con.execute("SELECT flagged FROM runs WHERE run_id = ?", [first.run_id]).fetchone()[0]
        reloaded = engine.load_run(con, first.run_id)
        listed = review.list_flags(con, run=first.run_id)
    finally:
        con.close()
    expected = ([(route, False) for route in first.flagged["route_id"]]
                + [(route, True) for route in first.exploration["route_id"]])
    assert stored == expected
    assert flagged_count == first.flagged.height  # the run's count of flags leaves exploration out
    assert reloaded.flagged.equals(first.flagged) and reloaded.exploration.equals(first.exploration)
    assert dict(zip(listed["id"], listed["exploration"])) == dict(expected)


def test_reproduction_compares_the_exploration_routes_too(world_db, runs):
    first, _, _ = runs
    outcome = service.reproduce(world_db, first.run_id)
    assert outcome.identical and outcome.explored == first.exploration.height

    def set_route(old: str, new: str) -> None:
        con = warehouse.connect(world_db)
        try:
            con.execute("UPDATE anomalies SET route_id = ? WHERE run_id = ? AND route_id = ?", [new, first.run_id, old])
        finally:
            con.close()

    explored = first.exploration["route_id"][0]
    set_route(explored, "not-a-route")  # a run whose stored exploration route is not the one recomputed differs
    try:
        changed = service.reproduce(world_db, first.run_id)
    finally:
        set_route("not-a-route", explored)
    assert not changed.identical and changed.missing == ["not-a-route"] and changed.added == [explored]


def test_a_run_stored_before_exploration_reproduces_without_any(world_db):
    con = warehouse.connect(world_db)
    try:
        run = engine.run_detection(con, DetectParams(exploration_share=0.0))
        params_json = con.execute("SELECT params_json FROM runs WHERE run_id = ?", [run.run_id]).fetchone()[0]
        import json

        stored = json.loads(params_json)
        del stored["exploration_share"]
        con.execute("UPDATE runs SET params_json = ? WHERE run_id = ?", [json.dumps(stored), run.run_id])
        con.execute("UPDATE anomalies SET exploration = NULL WHERE run_id = ?", [run.run_id])
        assert engine.load_run(con, run.run_id).params.exploration_share == 0.0
    finally:
        con.close()
    assert service.reproduce(world_db, run.run_id).identical


def test_a_decision_on_an_exploration_route_is_a_label(world_db, runs):
    first, _, _ = runs
    explored = first.exploration["route_id"][0]
    flagged = first.flagged["route_id"][0]
    con = warehouse.connect(world_db)
    try:
        review.review(con, explored, "confirmed", "seen at customs", by="ann", run=first.run_id)
        review.review(con, flagged, "dismissed", "licensed", by="ann", run=first.run_id)
        examples = ranker.review_examples(con)
        con.execute("DELETE FROM reviews")
    finally:
        con.close()
    assert dict(zip(examples["route_id"], examples["label"])) == {explored: True, flagged: False}


def test_the_simulated_analyst_reviews_the_share_from_below_the_threshold():
    ranking = np.array([5, 4, 3, 2, 1, 0])
    order, chosen = ranker._next_batch(ranking, [0, 4, 1], {5}, batch=3, explored=1)
    assert order == [4, 3, 0] and chosen == [0]
    # with the exploration pool exhausted the batch is topped up from the ranking
    order, chosen = ranker._next_batch(ranking, [4], {5}, batch=3, explored=2)
    assert order == [4, 3, 2] and chosen == []


def test_anomalies_declares_the_exploration_column():
    assert schema.TABLES["anomalies"].field("exploration").duckdb_type == "BOOLEAN"
