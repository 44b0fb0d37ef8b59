"""Detection runs on a tiny hand-made world: what is flagged and why, determinism, route identity, storage, placebo, errors."""

from __future__ import annotations

import json
import math
from datetime import date

import polars as pl
import pytest

from detect_worlds import World, base_world, sanctioned, steady, step
from tradewatch.detect import engine
from tradewatch.detect.config import DetectParams
from tradewatch.flows.core.errors import TradewatchError


@pytest.fixture(scope="module")
def world_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "w.duckdb"
    base_world().warehouse(path).close()
    return path


@pytest.fixture
def con(world_db):
    from tradewatch.flows import warehouse

    connection = warehouse.connect(world_db)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def result(world_db):
    from tradewatch.flows import warehouse

    connection = warehouse.connect(world_db)
    try:
        return engine.run_detection(connection, DetectParams(), store=False)
    finally:
        connection.close()


def flagged_keys(run: engine.RunResult) -> set[tuple[str, str, str]]:
    return {(r["origin_iso3"], r["transit_iso3"], r["product_code"]) for r in run.flagged.to_dicts()}


def test_only_the_planted_route_is_flagged(result):
    assert flagged_keys(result) == {("DEU", "KAZ", "854231")}
    assert result.candidates > 8


def test_flagged_table_has_the_promised_columns_and_evidence(result):
    assert list(result.flagged.columns) == list(engine.FLAGGED_SCHEMA)
    row = result.flagged.to_dicts()[0]
    assert row["rank"] == 1 and 0 < row["score"] <= 1
    assert row["route_id"] == engine.route_id("DEU", "KAZ", "RUS", "854231", 6)
    assert row["target_iso3"] == "RUS" and row["product_level"] == 6 and row["tier"] == "1"
    assert row["product_name"].startswith("Electronic integrated circuits")
    assert row["currency"] == "EUR"
    assert (row["baseline_start"], row["baseline_end"]) == (date(2020, 3, 1), date(2022, 2, 1))
    assert (row["recent_start"], row["recent_end"]) == (date(2023, 1, 1), date(2023, 12, 1))
    assert row["baseline_value"] == pytest.approx(100_000, rel=0.1)
    assert row["recent_value"] == pytest.approx(600_000, rel=0.1)
    # The table's growth is the growth that was gated: net of the pair's ordinary growth and control countries.
    assert row["growth"] == pytest.approx(math.exp(json.loads(row["features"])["net_growth_log"]), rel=1e-5)
    assert row["target_change"] == pytest.approx(-0.98, abs=0.01)
    assert row["onward_growth"] > 5
    assert row["excess_value"] > 5e6
    features = json.loads(row["features"])
    assert set(engine.features.FEATURES) <= set(features)
    assert features["unit_value_change_log"] is None and features["mirror_gap_log"] is None
    assert features["did_log"] > 1
    reasons = row["reasons"]
    assert reasons.startswith(f"DEU→KAZ exports of 854231 {engine._times(row['growth'])} net (×6.0 vs Mar 2020–Feb 2022")
    assert "while DEU→RUS fell 98%" in reasons
    assert "KAZ→RUS ×" in reasons and "12 of 12 months above the expected band" in reasons


def test_confounders_are_not_flagged(result):
    products = {r["product_code"][:4] for r in result.flagged.to_dicts()}
    assert not products & {"8471", "8532", "9013", "8541"}  # boom, tiny base, spike, HS split


def test_belarus_is_never_a_transit(result, con):
    routes = engine.features.build_routes(con, DetectParams()).routes
    assert not set(routes["transit_iso3"].to_list()) & {"BLR", "RUS"}
    assert "BLR" not in result.flagged["transit_iso3"].to_list()


def test_unavailable_features_are_reported_in_words(result):
    text = " | ".join(result.unavailable)
    assert "unit_value_change_log" in text and "net_weight_kg" in text
    assert "mirror_gap_log" in text and "onward_cover" in text
    assert "did_log" not in text and "onward_growth_log" not in text


def test_same_warehouse_and_parameters_give_the_same_flags(con, result):
    again = engine.run_detection(con, DetectParams(), store=False)
    assert again.flagged.equals(result.flagged)
    assert again.run_hash == result.run_hash


def test_route_identity_is_stable_across_runs_and_windows(con, result):
    other = engine.run_detection(con, DetectParams(recent_months=6, baseline_months=18), store=False)
    ours = result.flagged.filter(pl.col("product_code") == "854231")["route_id"].to_list()
    theirs = other.flagged.filter(pl.col("product_code") == "854231")["route_id"].to_list()
    assert ours == theirs == [engine.route_id("DEU", "KAZ", "RUS", "854231", 6)]
    assert other.run_hash != result.run_hash


def test_runs_are_stored_and_reloaded(con, result):
    first = engine.run_detection(con, DetectParams())
    second = engine.run_detection(con, DetectParams())
    assert first.run_id != second.run_id and first.run_hash == second.run_hash
    loaded = engine.load_run(con)
    assert loaded.run_id == second.run_id
    assert loaded.flagged.equals(second.flagged)
    assert loaded.params == DetectParams()
    assert loaded.candidates == second.candidates and loaded.unavailable == second.unavailable
    assert engine.load_run(con, first.run_id).flagged.equals(first.flagged)
    assert engine.load_run(con, "no-such-run") is None
    run = con.execute("SELECT params_json, loads_json, model_version, run_hash, flagged FROM runs WHERE run_id = ?",
                      [second.run_id]).fetchall()[0]
    assert json.loads(run[0])["event"] == "2022-03" and run[2].startswith(engine.MODEL_VERSION + "; ranker ranker-")
    assert run[3] == second.run_hash and run[4] == second.flagged.height
    assert isinstance(json.loads(run[1]), list)
    rows = con.execute("SELECT count(*), min(rank), max(reasons) FROM anomalies WHERE run_id = ?",
                       [second.run_id]).fetchall()[0]
    assert rows[0] == second.flagged.height and rows[1] == 1 and rows[2].startswith("DEU→KAZ")


def test_placebo_event_before_the_war_runs_and_flags_nothing(con):
    placebo = engine.run_detection(con, DetectParams(event="2021-03", as_of="2022-02", recent_months=12),
                                   store=False)
    assert placebo.flagged.height == 0
    assert placebo.candidates > 0
    assert placebo.windows["recent_end"] == "2022-02" and placebo.windows["baseline_start"] == "2019-03"


def test_user_list_raises_product_risk(con, tmp_path):
    listed = tmp_path / "list.csv"
    listed.write_text("code\n848210\n")
    # Every product of the base world is on the CHPL: without it, only the user list gives risk.
    bare = DetectParams(use_chpl=False)
    plain = engine.score_routes(engine.features.build_routes(con, bare).routes, bare,
                                engine.features.compute_windows(bare, date(2019, 1, 1), date(2023, 12, 1)))
    params = DetectParams(use_chpl=False, user_lists=(str(listed),))
    scored = engine.score_routes(engine.features.build_routes(con, params).routes, params,
                                 engine.features.compute_windows(params, date(2019, 1, 1), date(2023, 12, 1)))

    def risk(frame):
        return frame.filter((pl.col("product") == "848210") & (pl.col("level") == 6))["product_risk"].item()

    assert risk(plain) == 0.0 and risk(scored) == 0.7


def test_a_route_seen_only_through_mirror_data_is_flagged_with_its_basis(tmp_path):
    world = World()
    world.add("KAZ", "JPN", "854231", step(100_000, 900_000, salt=1), flow="import")
    world.add("KAZ", "RUS", "854231", step(50_000, 800_000, salt=2))
    world.add("DEU", "RUS", "85423110", sanctioned(500_000))
    # Ordinary goods on the same pair, so the route's null has something to rest on.
    for salt, code in enumerate(("090111", "100199", "040210", "071320", "080810")):
        world.add("KAZ", "JPN", code, steady(200_000, salt=10 + salt), flow="import")
    con = world.warehouse(tmp_path / "w.duckdb")
    run = engine.run_detection(con, DetectParams(), store=False)
    assert flagged_keys(run) == {("JPN", "KAZ", "854231")}
    row = run.flagged.to_dicts()[0]
    assert json.loads(row["features"])["basis"] == "mirror"
    assert "as the transit reports its imports" in row["reasons"]


def test_warehouse_without_usable_data_is_a_clear_error(tmp_path):
    con = World().warehouse(tmp_path / "empty.duckdb")
    with pytest.raises(TradewatchError, match="holds no trade data"):
        engine.run_detection(con, DetectParams())
    assert con.execute("SELECT count(*) FROM runs").fetchall()[0][0] == 0
    con.execute("INSERT INTO trade_flows VALUES ('baci', 'A', DATE '2021-01-01', 'DEU', 'KAZ', 'export', '854231',"
                " 6, 1.0, 'USD', NULL, NULL, NULL, NULL)")
    with pytest.raises(TradewatchError, match="none monthly at HS-6 or CN8 level"):
        engine.run_detection(con, DetectParams())


def test_event_outside_the_data_is_a_clear_error(con):
    with pytest.raises(TradewatchError, match="before the event 2024-06"):
        engine.run_detection(con, DetectParams(event="2024-06"), store=False)
    with pytest.raises(TradewatchError, match="no baseline"):
        engine.run_detection(con, DetectParams(event="2019-01"), store=False)
