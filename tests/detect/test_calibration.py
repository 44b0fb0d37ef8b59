"""Detection v2: the goods dimension (a transit-wide boom is not diversion), calibrated p-values, Benjamini–Hochberg, and scores that ignore unrelated routes."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from detect_worlds import World, sanctioned, steady, step
from tradewatch.flows.core import products
from tradewatch.detect import calibration, engine, features, ranker
from tradewatch.detect.config import DetectParams

# Candidate HS-6 codes of ordinary goods; the test keeps those not on the restricted lists.
ORDINARY = ("090111", "100199", "040210", "071320", "080810", "030389", "170199", "190531", "200911", "230910",
            "252329", "271019", "310530", "340111", "392321", "441899", "470329", "520512", "690721", "730890",
            "760410", "940360", "950300", "960839")


def unrestricted_codes() -> list[str]:
    restricted = products.restricted_hs6()
    codes = [code for code in ORDINARY if code not in restricted]
    assert len(codes) >= 14, codes
    return codes


def boom_world(*, transit_boom: float = 2.5, with_fra: bool = True) -> World:
    """DEU exports to KAZ and RUS. KAZ's imports of *every* good rise ×`transit_boom` after the event
    (ordinary and restricted goods alike), and KAZ's exports of ordinary goods to RUS rise too; one
    restricted product (854231) is really diverted: ×8 to KAZ while DEU→RUS collapses, KAZ→RUS ×10.
    FRA→ARM carries unrelated trade (another pair) with its own diversion (851762)."""
    world = World()
    for salt, code in enumerate(unrestricted_codes()):
        world.add("DEU", "KAZ", code + "00", step(200_000 + 10_000 * salt, (200_000 + 10_000 * salt) * transit_boom,
                                                    salt=salt))
        world.add("DEU", "RUS", code + "00", steady(400_000, salt=100 + salt))
        world.add("KAZ", "RUS", code, step(50_000, 50_000 * transit_boom, salt=200 + salt))
    for salt, code in enumerate(("847150", "848210", "901380", "853221")):
        world.add("DEU", "KAZ", code + "00", step(300_000, 300_000 * transit_boom, salt=300 + salt))
        world.add("DEU", "RUS", code + "00", sanctioned(600_000, salt=310 + salt))
        world.add("KAZ", "RUS", code, step(40_000, 40_000 * transit_boom, salt=320 + salt))
    world.add("DEU", "KAZ", "85423100", step(100_000, 800_000, salt=400))
    world.add("DEU", "RUS", "85423100", sanctioned(900_000, salt=401))
    world.add("KAZ", "RUS", "854231", step(50_000, 500_000, salt=402))
    if with_fra:
        for salt, code in enumerate(unrestricted_codes()[:10]):
            world.add("FRA", "ARM", code + "00", steady(150_000, salt=500 + salt))
        world.add("FRA", "ARM", "85176200", step(80_000, 900_000, salt=520))
        world.add("FRA", "RUS", "85176200", sanctioned(700_000, salt=521))
        world.add("ARM", "RUS", "851762", step(20_000, 600_000, salt=522))
    return world


@pytest.fixture(scope="module")
def boom_run(tmp_path_factory):
    con = boom_world().warehouse(tmp_path_factory.mktemp("boom") / "w.duckdb")
    try:
        params = DetectParams()
        frame = features.build_routes(con, params)
        scored = engine.score_routes(frame.routes, params, frame.windows, frame.placebo)
        yield con, scored, engine.run_detection(con, params, store=False)
    finally:
        con.close()


def test_a_transit_whose_imports_of_everything_grow_does_not_fill_the_flag_list(boom_run):
    _, scored, run = boom_run
    flagged = {(r["origin_iso3"], r["transit_iso3"], r["product_code"]) for r in run.flagged.to_dicts()}
    assert flagged == {("DEU", "KAZ", "854231"), ("FRA", "ARM", "851762")}
    boomed = scored.filter((pl.col("origin_iso3") == "DEU") & (pl.col("level") == 6)
                           & pl.col("product").is_in(["847150", "848210", "901380", "853221"]))
    # Each of them doubled and more while DEU→RUS collapsed: the v1 gate (×1.5 net of control countries,
    # which this world has none of) would have let them through; the pair's ordinary growth nets them out.
    assert boomed.height == 4
    assert (boomed["growth_log"] > math.log(2.0)).all() and (boomed["target_change"] < -0.9).all()
    assert (boomed["net_growth_log"].abs() < 0.15).all()
    assert set(boomed["pair_basis"].to_list()) == {"unrestricted"}
    assert (boomed["pair_growth_log"] - math.log(2.5)).abs().max() < 0.1


def test_the_onward_leg_is_netted_against_the_transit_s_ordinary_exports(boom_run):
    _, scored, _ = boom_run
    row = scored.filter((pl.col("product") == "854231") & (pl.col("level") == 6)).to_dicts()[0]
    # KAZ's ordinary exports to RUS rise ×2.5 from 50 k a month; with the yardstick's light smoothing (2 k on
    # both sides) that is ×2.44.
    assert row["onward_ordinary_log"] == pytest.approx(math.log((125_000 + 2_000) / (50_000 + 2_000)), abs=0.05)
    light = math.log((row["onward_recent"] + 2_000) / (row["onward_base"] + 2_000))
    assert row["onward_net_log"] == pytest.approx(light - row["onward_ordinary_log"])


def test_a_small_onward_leg_growing_like_the_transit_s_exports_nets_to_zero():
    """The onward leg is smoothed as its yardstick is: a small leg growing ×2.5 like the transit's ordinary
    exports nets to about 0. With the heavy smoothing of the growth gate on the leg alone (as before) it came
    out at −0.34, failing the onward gate although the leg grew as much as the transit's exports."""
    params = DetectParams()
    ordinary = math.log((125_000 + params.yardstick_smoothing) / (50_000 + params.yardstick_smoothing))
    routes = pl.DataFrame({"origin_iso3": ["DEU"] * 2, "transit_iso3": ["KAZ"] * 2, "target_iso3": ["RUS"] * 2,
                           "product": ["854231", "847130"], "growth_log": [1.0, 1.0], "control_growth_log": [0.0, 0.0],
                           "base": [1e5, 1e5], "onward_base": [20_000.0, None], "onward_recent": [50_000.0, None],
                           "onward_growth_log": [math.log((50_000 + params.smoothing) / (20_000 + params.smoothing)),
                                                 None]})
    measured = calibration.Yardsticks(
        pair=pl.DataFrame({"origin_iso3": ["DEU"], "transit_iso3": ["KAZ"], "pair_growth_log": [0.0],
                           "pair_basis": ["pair"]}),
        chapter=pl.DataFrame(schema={"origin_iso3": pl.String, "transit_iso3": pl.String, "chapter": pl.String,
                                     "chapter_growth_log": pl.Float64}),
        control=pl.DataFrame({"origin_iso3": ["DEU"], "control_ordinary_log": [0.0]}),
        onward=pl.DataFrame({"transit_iso3": ["KAZ"], "target_iso3": ["RUS"], "onward_ordinary_log": [ordinary]}))
    out = calibration.net_growth(routes, params, None, measured=measured)
    small, unknown = out["onward_net_log"].to_list()
    assert small == pytest.approx(math.log(52_000 / 22_000) - ordinary) and abs(small) < 0.05
    assert unknown is None  # no onward leg: no onward evidence, and the gate lets it pass
    heavy = out["onward_growth_log"][0] - ordinary
    assert heavy < -0.3  # what the old netting gave


def test_evidence_in_the_reasons_is_the_evidence_gated(boom_run):
    _, scored, run = boom_run
    row = run.flagged.filter(pl.col("product_code") == "854231").to_dicts()[0]
    feats = json.loads(row["features"])
    assert row["growth"] == pytest.approx(math.exp(feats["net_growth_log"]), rel=1e-5)
    shown = engine._times(row["growth"])
    assert row["reasons"].startswith(f"DEU→KAZ exports of 854231 {shown} net (")
    assert "pair's ordinary growth ×2.5" in row["reasons"]
    assert "controls" not in row["reasons"].replace("control countries", "")
    assert "covering" not in row["reasons"]
    assert feats["pair_basis"] == "unrestricted" and feats["q_value"] <= 0.1
    # The score is the ranker's probability (stored with the features, with what moved it most) …
    assert row["score"] == pytest.approx(feats["ranker_probability"], abs=1e-9)
    assert f"ranker probability {row['score']:.2f}" in row["reasons"]
    assert all(name in ranker.FEATURES and abs(effect) >= 0.005 for name, effect in feats["ranker_moved_by"])


def test_without_the_ranker_the_score_is_one_minus_p(boom_run):
    con, _, _ = boom_run
    run = engine.run_detection(con, DetectParams(ranker=False), store=False)
    row = run.flagged.filter(pl.col("product_code") == "854231").to_dicts()[0]
    feats = json.loads(row["features"])
    assert row["score"] == pytest.approx(1 - feats["p_value"], abs=1e-6)
    assert "ranker" not in row["reasons"] and "ranker_probability" not in feats


def test_every_run_reports_the_expected_number_of_false_flags(boom_run):
    _, _, run = boom_run
    note = next(n for n in run.notes if "expected to be false" in n)
    assert f"{run.flagged.height} flagged at FDR 0.1" in note


def test_a_score_does_not_depend_on_unrelated_routes(boom_run, tmp_path):
    _, scored, _ = boom_run
    alone = boom_world(with_fra=False).warehouse(tmp_path / "alone.duckdb")
    try:
        params = DetectParams()
        frame = features.build_routes(alone, params)
        again = engine.score_routes(frame.routes, params, frame.windows, frame.placebo)
    finally:
        alone.close()
    keys = ["origin_iso3", "transit_iso3", "product", "level"]
    both = scored.filter(pl.col("origin_iso3") == "DEU").select(*keys, "score", "p_value").join(
        again.select(*keys, "score", "p_value"), on=keys, suffix="_alone")
    assert both.height == again.height > 20
    assert (both["score"] == both["score_alone"]).all()
    assert (both["p_value"] - both["p_value_alone"]).abs().max() == 0


def test_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.5])
    q = calibration.benjamini_hochberg(p)
    # m = 4 tests; sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.06, 0.0533…, 0.5, then monotone from the top.
    assert q[0] == pytest.approx(0.04) and q[2] == pytest.approx(0.04 * 4 / 3) and q[1] == pytest.approx(0.04 * 4 / 3)
    assert math.isnan(q[3]) and q[4] == pytest.approx(0.5)
    assert calibration.benjamini_hochberg(np.array([np.nan])).size == 1


def test_p_values_follow_the_student_t_null():
    p = calibration.p_values(np.array([0.0, 0.5, 1.0, np.nan]), np.array([0.25, 0.25, 0.25, 0.25]), 5)
    assert p[0] == pytest.approx(0.5)
    assert p[1] > p[2] and p[2] == pytest.approx(0.00516, rel=0.01)  # z = 4 with 5 degrees of freedom
    assert math.isnan(p[3])


def test_without_unrestricted_goods_the_placebo_still_gives_a_null(tmp_path):
    world = World()
    for salt, code in enumerate(("847150", "848210", "901380", "853221", "854141", "852691", "880690", "900190",
                                 "847130")):
        world.add("DEU", "KAZ", code + "00", steady(300_000, salt=salt))
        world.add("DEU", "RUS", code + "00", sanctioned(600_000, salt=20 + salt))
    world.add("DEU", "KAZ", "85423100", step(100_000, 800_000, salt=40))
    world.add("DEU", "RUS", "85423100", sanctioned(900_000, salt=41))
    con = world.warehouse(tmp_path / "w.duckdb")
    try:
        run = engine.run_detection(con, DetectParams(), store=False)
    finally:
        con.close()
    assert any("placebo event 2021-03" in note for note in run.notes)
    assert any("median over all the pair's loaded products" in note for note in run.notes)
    assert run.flagged["product_code"].to_list() == ["854231"]
    assert json.loads(run.flagged["features"][0])["pair_basis"] == "all_products"


def test_fdr_and_windows_are_parameters(boom_run):
    con, _, _ = boom_run
    strict = engine.run_detection(con, DetectParams(fdr=1e-12), store=False)
    assert strict.flagged.height == 0
    short = engine.run_detection(con, DetectParams(recent_months=6, baseline_months=12, as_of="2023-06"), store=False)
    assert short.windows["recent_start"] == "2023-01" and short.windows["baseline_start"] == "2021-03"


def test_weighted_benjamini_hochberg_favours_routes_behind_big_losses():
    p = np.array([0.004, 0.004, 0.5, 0.5])
    plain = calibration.benjamini_hochberg(p)
    assert plain[0] == pytest.approx(0.008)
    weights = calibration.loss_weights(np.array([900_000.0, 1_000.0, 1_000.0, 0.0]), cap=10.0)
    assert weights.mean() == pytest.approx(1.0) and weights.max() / weights.min() <= 100 + 1e-9
    weighted = calibration.benjamini_hochberg(p, weights)
    assert weighted[0] < plain[0] < weighted[1]
    # Equal weights are plain BH; no loss anywhere means equal weights.
    assert np.allclose(calibration.benjamini_hochberg(p, np.ones(4)), plain)
    assert np.allclose(calibration.loss_weights(np.zeros(4), cap=10.0), 1.0)


def test_the_run_note_says_what_the_ranker_did(boom_run):
    con, _, run = boom_run
    note = next(n for n in run.notes if "expected to be false" in n)
    assert "ordered by the ranker's probability (ranker-" in note
    strict = engine.run_detection(con, DetectParams(ranker_min_probability=0.5), store=False)
    note = next(n for n in strict.notes if "expected to be false" in n)
    assert "kept those it gives probability ≥ 0.5 and ordered them by it" in note
    assert set(strict.flagged["route_id"]) <= set(run.flagged["route_id"])  # the ranker only removes flags


def test_a_small_flow_is_judged_on_the_null_scale_of_its_size():
    """The smoothing shrinks a small flow's log growth, so its null spread is smaller too: null statistics are
    divided by their size factor and a route's scale is its pair's × its own (from its own values only)."""
    params = DetectParams(size_aware_scale=True)  # off by default (README, detect_defaults.toml)
    s = params.smoothing
    routes = pl.DataFrame({"origin_iso3": ["DEU"] * 3, "transit_iso3": ["KAZ"] * 3, "null_scale": [0.1] * 3,
                           "null_size": [40] * 3, "null_basis": ["pair"] * 3,
                           "base": [1e9, s, 0.0], "recent": [1e9, s, 0.0]})
    scaled = calibration.route_scales(routes, params)["null_scale"].to_list()
    assert scaled[0] == pytest.approx(0.1, rel=1e-4)  # a large flow keeps its pair's scale
    assert scaled[1] == pytest.approx(0.05)  # at the smoothing constant, half of it
    assert scaled[2] == pytest.approx(0.1 * params.min_size_factor)  # never below min_size_factor of it
    off = params.replace(size_aware_scale=False)
    assert calibration.route_scales(routes, off)["null_scale"].to_list() == [0.1] * 3
    # A run with almost no null (fewer than min_null_size statistics) stays unconfident for every route.
    tiny = routes.with_columns(null_scale=pl.lit(params.small_null_scale), null_size=pl.lit(4), null_basis=pl.lit("run"))
    assert calibration.route_scales(tiny, params)["null_scale"].to_list() == pytest.approx([params.small_null_scale] * 3)
    # A null statistic of a flow at the smoothing constant counts double once put on the large flows' scale.
    null = pl.DataFrame({"origin_iso3": ["DEU"] * 2, "transit_iso3": ["KAZ"] * 2, "product": ["090111", "100199"],
                         "level": [6, 6], "restricted": [False, False], "base": [s, 1e9], "recent": [s, 1e9],
                         "net_growth_log": [0.1, 0.1]})
    values = sorted(calibration.null_statistics(null, None, params)["value"].to_list())
    assert values == pytest.approx([0.1, 0.2], rel=1e-4)
    assert calibration.null_statistics(null, None, off)["value"].to_list() == pytest.approx([0.1, 0.1])


def test_the_band_floor_lets_a_small_diversion_stay_above_its_band(tmp_path):
    """DEU→KAZ of a restricted product rises 6,000 → 16,000 a month while DEU→RUS collapses: above
    1.25 × baseline + band_floor in every recent month at band_floor 2,500, in fewer than min_persistence of
    them at 10,000 (the old smoothing / 2)."""
    world = World()
    for salt, code in enumerate(unrestricted_codes()):
        world.add("DEU", "KAZ", code + "00", steady(200_000 + 10_000 * salt, salt=salt))
    world.add("DEU", "KAZ", "85423100", step(6_000, 16_000, salt=40))
    world.add("DEU", "RUS", "85423100", sanctioned(400_000, salt=41))
    con = world.warehouse(tmp_path / "w.duckdb")
    try:
        persistence = {}
        for floor in (2_500.0, 10_000.0):
            routes = features.build_routes(con, DetectParams(band_floor=floor)).routes
            row = routes.filter((pl.col("product") == "854231") & (pl.col("transit_iso3") == "KAZ")).to_dicts()[0]
            persistence[floor] = row["persistence"]
    finally:
        con.close()
    assert persistence[2_500.0] == pytest.approx(1.0)
    assert persistence[10_000.0] < DetectParams().min_persistence
