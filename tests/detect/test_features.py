"""Route features on tiny hand-made worlds: windows, seasonal weights, gaps, HS 2022 matching, legs, unavailable features."""

from __future__ import annotations

import math
from datetime import date

import polars as pl
import pytest

from detect_worlds import MONTHS, World, base_world, sanctioned, steady, step
from tradewatch.detect import features
from tradewatch.detect.config import DetectParams
from tradewatch.flows.core.errors import TradewatchError


@pytest.fixture(scope="module")
def base_routes(tmp_path_factory):
    con = base_world().warehouse(tmp_path_factory.mktemp("features") / "w.duckdb")
    frame = features.build_routes(con, DetectParams())
    con.close()
    return frame


def route(frame: features.RouteFrame, origin: str, transit: str, product: str) -> dict:
    rows = frame.routes.filter((pl.col("origin_iso3") == origin) & (pl.col("transit_iso3") == transit)
                               & (pl.col("product") == product)).to_dicts()
    assert len(rows) == 1, f"{origin}→{transit} {product}: {len(rows)} rows"
    return rows[0]


# --- windows ---------------------------------------------------------------------------------------------

def test_windows_default_and_shortened():
    params = DetectParams()
    full = features.compute_windows(params, date(2019, 1, 1), date(2023, 12, 1))
    assert (full.baseline_start, full.baseline_end) == (date(2020, 3, 1), date(2022, 2, 1))
    assert (full.recent_start, full.recent_end) == (date(2023, 1, 1), date(2023, 12, 1))
    assert full.notes == []
    late = features.compute_windows(params, date(2021, 1, 1), date(2022, 8, 1))
    assert late.baseline_start == date(2021, 1, 1) and late.baseline_count == 14
    assert late.recent_start == date(2022, 3, 1) and late.recent_count == 6
    assert "baseline shortened to 14 months: data starts 2021-01" in late.notes
    assert any("recent window shortened to 6 months" in n for n in late.notes)
    assert late.baseline_label() == "Jan 2021–Feb 2022"


def test_windows_outside_the_data_are_clear_errors():
    with pytest.raises(TradewatchError, match="data ends 2021-11, before the event 2022-03"):
        features.compute_windows(DetectParams(), date(2020, 1, 1), date(2021, 11, 1))
    with pytest.raises(TradewatchError, match="data starts 2022-03, not before the event 2022-03"):
        features.compute_windows(DetectParams(), date(2022, 3, 1), date(2023, 1, 1))


def test_seasonal_weights_match_calendar_months_and_skip_unreported_months():
    windows = features.compute_windows(DetectParams(baseline_months=24, recent_months=3, as_of="2022-05"),
                                       date(2020, 1, 1), date(2022, 5, 1))
    covered = [m for m in MONTHS if date(2020, 3, 1) <= m <= date(2022, 5, 1) and m != date(2021, 4, 1)]
    coverage = pl.DataFrame({"reporter": "DEU", "flow": "export", "period": covered})
    weights, counts = features.window_weights(coverage, windows)
    by_month = {row["period"]: row for row in weights.to_dicts()}
    assert counts.to_dicts() == [{"reporter": "DEU", "flow": "export", "n_base": 23, "n_recent": 3}]
    # Recent Mar-May 2022: March and May each have two baseline years, April only one (2021-04 missing).
    assert by_month[date(2020, 3, 1)]["bw"] == pytest.approx(1 / 6)
    assert by_month[date(2020, 4, 1)]["bw"] == pytest.approx(1 / 3)
    assert date(2021, 4, 1) not in by_month
    assert by_month[date(2020, 6, 1)]["bw"] == 0.0
    assert weights["bw"].sum() == pytest.approx(1.0) and weights["rw"].sum() == pytest.approx(1.0)


def test_months_a_reporter_did_not_report_are_not_zeros(tmp_path):
    world = World()
    gaps = {date(2021, 5, 1), date(2021, 6, 1), date(2021, 7, 1)}
    for partner, code in (("KAZ", "84821000"), ("RUS", "84821000"), ("BRA", "85423100")):
        world.add("DEU", partner, code, lambda m: 100_000.0, only=lambda m: m not in gaps)
    con = world.warehouse(tmp_path / "w.duckdb")
    frame = features.build_routes(con, DetectParams())
    leg = route(frame, "DEU", "KAZ", "848210")
    assert leg["base"] == pytest.approx(100_000.0) and leg["recent"] == pytest.approx(100_000.0)


# --- the route features of the base world ---------------------------------------------------------------

def test_planted_route_features(base_routes):
    planted = route(base_routes, "DEU", "KAZ", "854231")
    assert planted["growth_log"] > math.log(4) and planted["did_log"] > math.log(4)
    assert planted["target_change"] == pytest.approx(-0.98, abs=0.01)
    assert planted["russia_share"] > 0.6
    assert planted["onward_growth_log"] > math.log(4)
    assert planted["persistence"] == 1.0 and planted["spike_share"] < 0.2
    assert 0.3 < planted["substitution_ratio"] < 1.0
    assert planted["excess_value"] > 5e6
    assert planted["basis"] == "exports" and planted["currency"] == "EUR"
    # The CN8 codes roll up to HS-6 and again to the HS-4 heading.
    assert route(base_routes, "DEU", "KAZ", "8542")["recent"] >= planted["recent"]


def test_product_wide_boom_is_netted_out_by_the_controls(base_routes):
    boom = route(base_routes, "DEU", "ARM", "847150")
    assert boom["growth_log"] > math.log(3)
    assert boom["control_growth_log"] > math.log(3)
    assert abs(boom["did_log"]) < 0.2
    assert boom["excess_value"] < 0.5e6


def test_tiny_base_has_a_huge_ratio_but_little_money(base_routes):
    tiny = route(base_routes, "DEU", "GEO", "853221")
    assert tiny["recent"] / tiny["base"] > 100
    assert tiny["excess_value"] < 0.3e6


def test_one_month_spike_is_not_persistent(base_routes):
    spike = route(base_routes, "DEU", "KAZ", "901380")
    assert spike["excess_value"] > 1e6
    assert spike["persistence"] <= 1 / 12
    assert spike["spike_share"] > 0.9


def test_hs2017_code_is_matched_to_its_hs2022_successor(base_routes):
    split = route(base_routes, "DEU", "KAZ", "854149")
    assert split["base"] == pytest.approx(300_000, rel=0.1)
    assert abs(split["growth_log"]) < 0.15
    assert split["comparable"]
    assert split["target_base"] == pytest.approx(500_000, rel=0.1)


def test_split_codes_are_shared_by_the_routes_own_mix(tmp_path):
    world = World()
    world.add("DEU", "KAZ", "85415010", steady(400_000, salt=1), only=lambda m: m < date(2022, 1, 1))
    world.add("DEU", "KAZ", "85415100", steady(300_000, salt=1), only=lambda m: m >= date(2022, 1, 1))
    world.add("DEU", "KAZ", "85415900", steady(100_000, salt=1), only=lambda m: m >= date(2022, 1, 1))
    world.add("DEU", "RUS", "85423100", sanctioned(400_000))
    con = world.warehouse(tmp_path / "w.duckdb")
    frame = features.build_routes(con, DetectParams())
    first, second = route(frame, "DEU", "KAZ", "854151"), route(frame, "DEU", "KAZ", "854159")
    assert first["base"] == pytest.approx(300_000, rel=0.05) and second["base"] == pytest.approx(100_000, rel=0.05)
    assert abs(first["growth_log"]) < 0.1 and abs(second["growth_log"]) < 0.1


def test_code_new_at_the_revision_without_predecessor_is_not_comparable(tmp_path, monkeypatch):
    world = World()
    world.add("DEU", "KAZ", "85414010", steady(300_000), only=lambda m: m < date(2022, 1, 1))
    world.add("DEU", "KAZ", "85414900", steady(300_000), only=lambda m: m >= date(2022, 1, 1))
    world.add("DEU", "RUS", "85414010", sanctioned(500_000), only=lambda m: m < date(2022, 1, 1))
    world.add("DEU", "RUS", "85414900", sanctioned(500_000), only=lambda m: m >= date(2022, 1, 1))
    con = world.warehouse(tmp_path / "w.duckdb")
    monkeypatch.setattr(features.products, "correlation", lambda: ())
    frame = features.build_routes(con, DetectParams())
    new = route(frame, "DEU", "KAZ", "854149")
    # Only January-February 2022 of the baseline carry the new code: a false, tiny base.
    assert new["base"] < 0.1 * 300_000 and not new["comparable"]
    assert any("first appear at the HS 2022 revision" in note and "854149" in note for note in frame.notes)


def test_sanctioned_countries_and_controls_are_never_transits(base_routes):
    transits = set(base_routes.routes["transit_iso3"].to_list())
    assert transits == {"KAZ", "ARM", "GEO", "UZB"}
    assert not transits & {"RUS", "BLR", "BRA", "MEX", "DEU"}
    assert set(base_routes.routes["target_iso3"].to_list()) == {"RUS"}


def test_unavailable_features_are_null_and_named(base_routes):
    assert set(base_routes.unavailable) == {"onward_cover", "mirror_gap_log", "unit_value_change_log"}
    assert "fx_rates" in base_routes.unavailable["onward_cover"]
    assert base_routes.routes["unit_value_change_log"].null_count() == base_routes.routes.height
    # Available ones are really computed.
    assert base_routes.routes["control_growth_log"].null_count() == 0


def test_without_controls_or_onward_data_those_features_are_unavailable(tmp_path):
    world = World()
    world.add("DEU", "KAZ", "85423110", step(100_000, 600_000))
    world.add("DEU", "RUS", "85423110", sanctioned(900_000))
    con = world.warehouse(tmp_path / "w.duckdb")
    frame = features.build_routes(con, DetectParams())
    assert {"control_growth_log", "did_log", "onward_growth_log", "onward_cover"} <= set(frame.unavailable)
    planted = route(frame, "DEU", "KAZ", "854231")
    assert planted["control_growth_log"] is None and planted["onward_growth_log"] is None
    assert planted["did_log"] == pytest.approx(planted["growth_log"])  # nothing to net out, not zero


def test_fx_rates_make_cross_currency_features_available(tmp_path):
    world = base_world()
    world.add("KAZ", "DEU", "854231", step(110_000, 650_000, salt=30), flow="import")
    con = world.warehouse(tmp_path / "w.duckdb")
    columns = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                         "WHERE table_name = 'fx_rates'").fetchall()}
    if not columns:  # the ingest migration that creates fx_rates is not there: the minimal layout
        con.execute("CREATE TABLE fx_rates (period DATE, rate DOUBLE)")
        con.executemany("INSERT INTO fx_rates VALUES (?, 1.1)", [[m] for m in MONTHS])
    else:
        con.executemany("INSERT INTO fx_rates (period, base, quote, rate, source, loaded_at) "
                        "VALUES (?, 'EUR', 'USD', 1.1, 'test', now())", [[m] for m in MONTHS])
    frame = features.build_routes(con, DetectParams())
    assert "onward_cover" not in frame.unavailable and "mirror_gap_log" not in frame.unavailable
    planted = route(frame, "DEU", "KAZ", "854231")
    # KAZ→RUS rose by about $440 k a month against DEU→KAZ's €500 k (= $550 k).
    assert 0.6 < planted["onward_cover"] < 1.0
    assert abs(planted["mirror_gap_log"]) < 0.25


def test_non_reporting_origin_is_read_from_the_transits_imports(tmp_path):
    world = World()
    world.add("KAZ", "JPN", "854231", step(100_000, 700_000, salt=1), flow="import")
    world.add("KAZ", "RUS", "854231", step(50_000, 600_000, salt=2))
    world.add("DEU", "RUS", "85423110", sanctioned(500_000))  # some coalition→target flow exists
    con = world.warehouse(tmp_path / "w.duckdb")
    frame = features.build_routes(con, DetectParams())
    mirrored = route(frame, "JPN", "KAZ", "854231")
    assert mirrored["basis"] == "mirror"
    assert mirrored["base"] == pytest.approx(100_000 / 1.06, rel=0.05)
    assert mirrored["target_change"] is None  # Russia reports no imports: unknown, not zero
    assert any("JPN" in note and "import reports" in note for note in frame.notes)


def test_eu_rollup_adds_the_eu_as_an_origin(tmp_path):
    world = base_world()
    world.add("FRA", "KAZ", "85423110", step(50_000, 200_000, salt=40))
    con = world.warehouse(tmp_path / "w.duckdb")
    frame = features.build_routes(con, DetectParams(eu_rollup=True))
    eu = route(frame, features.EU_CODE, "KAZ", "854231")
    deu, fra = route(frame, "DEU", "KAZ", "854231"), route(frame, "FRA", "KAZ", "854231")
    assert eu["recent"] == pytest.approx(deu["recent"] + fra["recent"], rel=1e-6)


def test_empty_warehouse_and_no_target_flows_are_clear_errors(tmp_path):
    con = World().warehouse(tmp_path / "empty.duckdb")
    with pytest.raises(TradewatchError, match="holds no trade data"):
        features.build_routes(con, DetectParams())
    con = World().add("KAZ", "RUS", "854231", steady(1000)).add("DEU", "KAZ", "85423110", steady(1000)).warehouse(
        tmp_path / "no-target.duckdb")
    with pytest.raises(TradewatchError, match="no flows from a coalition origin to RUS"):
        features.build_routes(con, DetectParams())


def test_a_reporter_in_two_sources_is_read_from_one(tmp_path):
    world = World()
    world.add("DEU", "KAZ", "85423110", steady(100_000))
    world.add("DEU", "RUS", "85423110", sanctioned(500_000))
    # The same flows again as Comtrade reports them (USD, HS-6): must not be added on top.
    world.add("DEU", "KAZ", "854231", steady(110_000))
    world.add("DEU", "RUS", "854231", sanctioned(550_000))
    con = world.warehouse(tmp_path / "w.duckdb")
    frame = features.build_routes(con, DetectParams())
    leg = route(frame, "DEU", "KAZ", "854231")
    assert leg["currency"] == "EUR" and leg["base"] == pytest.approx(100_000, rel=0.05)
    assert any("each reporter is read from one source" in note for note in frame.notes)
    comtrade_first = features.build_routes(con, DetectParams(source_priority=("comtrade", "comext")))
    assert route(comtrade_first, "DEU", "KAZ", "854231")["currency"] == "USD"


# --- restricted goods materialised alone (memory follows the routes that can be tested) --------------------

# Goods on no restricted list (coffee, furniture, plastics, steel structures, vegetables, sweets, bread,
# juice): the pairs' yardstick and null.
UNRESTRICTED = ("09011100", "94036010", "39269097", "73089059", "07129090", "17049099", "19053199", "20099079")


def yardstick_world() -> World:
    """The base world plus unrestricted goods on every pair (each its own ordinary growth), on a pair with
    no restricted goods at all (DEU→TUR), to a control country and onward from KAZ to Russia; only the
    unrestricted goods carry quantities."""
    world = base_world()
    for p, (transit, growth) in enumerate((("KAZ", 1.6), ("ARM", 1.2), ("GEO", 1.0), ("UZB", 1.3), ("TUR", 0.9))):
        for k, code in enumerate(UNRESTRICTED):
            level = 30_000 + 45_000 * k + 10_000 * p
            # Only unrestricted goods carry quantities: the run's unit values rest on routes never materialised.
            world.add("DEU", transit, code, step(level, level * growth * (0.8 + 0.07 * k), salt=100 + 10 * p + k),
                      kg_per_eur=0.5 if k == 0 else None)
    for k, code in enumerate(UNRESTRICTED[:5]):
        world.add("DEU", "BRA", code, steady(80_000 + 20_000 * k, salt=200 + k))
        world.add("KAZ", "RUS", code[:6], step(20_000, 30_000 + 5_000 * k, salt=210 + k))
    return world


@pytest.fixture(scope="module")
def both_ways(tmp_path_factory):
    """A world's routes built with every route materialised, and with the restricted goods only."""
    con = yardstick_world().warehouse(tmp_path_factory.mktemp("materialise") / "w.duckdb")
    try:
        every = features.build_routes(con, DetectParams())
        restricted = features.build_routes(con, DetectParams(), materialise="restricted")
    finally:
        con.close()
    return every, restricted


def _by_route(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("route_id")


def assert_same_rows(left: pl.DataFrame, right: pl.DataFrame) -> None:
    """Equal row for row; floats to 1e-12 (relative): DuckDB's and polars' parallel sums may differ in the
    last bit between two builds of the same data, whichever routes are materialised."""
    from polars.testing import assert_frame_equal

    assert_frame_equal(_by_route(left), _by_route(right), rel_tol=1e-12, abs_tol=1e-12)


def test_a_restricted_routes_row_does_not_depend_on_the_unrestricted_ones_being_materialised(both_ways):
    every, restricted = both_ways
    assert restricted.routes["restricted"].all() and not every.routes["restricted"].all()
    assert restricted.routes.columns == every.routes.columns
    assert_same_rows(restricted.routes, every.routes.filter(pl.col("restricted")))
    assert restricted.unavailable == every.unavailable and restricted.notes == every.notes
    assert "unit_value_change_log" not in restricted.unavailable
    assert restricted.routes["unit_value_change_log"].null_count() == restricted.routes.height
    assert restricted.candidates == every.candidates == every.routes.height
    unrestricted = every.routes.filter(~pl.col("restricted"))
    assert restricted.omitted == dict(unrestricted.group_by("level").len().iter_rows())
    assert every.null is None and every.omitted == {}


def test_the_null_of_narrow_unrestricted_routes_is_the_full_frames(both_ways):
    from tradewatch.detect import calibration

    every, restricted = both_ways
    full = calibration.null_statistics(every.routes, every.placebo, DetectParams())
    assert full.height > 0
    keys = ["origin_iso3", "transit_iso3", "value"]
    from polars.testing import assert_frame_equal

    assert_frame_equal(restricted.null.sort(keys), full.sort(keys), rel_tol=1e-12, abs_tol=1e-12)


def test_scores_and_flags_of_restricted_routes_alone_are_the_whole_frames(both_ways):
    from tradewatch.detect import engine

    every, restricted = both_ways
    params = DetectParams()
    whole = engine.score_routes(every.routes, params, every.windows, every.placebo)
    alone = engine.score_routes(restricted.routes, params, restricted.windows, restricted.placebo,
                                null=restricted.null, omitted=restricted.omitted)
    columns = ["route_id", "p_value", "q_value", "score", "flag", "tested", "null_scale", "null_basis"]
    assert whole.filter(pl.col("flag")).height > 0
    assert_same_rows(alone.select(columns), whole.filter(pl.col("restricted")).select(columns))
    assert alone.filter(pl.col("flag"))["route_id"].to_list() == whole.filter(pl.col("flag"))["route_id"].to_list()


def test_unknown_materialise_is_refused(tmp_path):
    con = base_world().warehouse(tmp_path / "w.duckdb")
    with pytest.raises(ValueError, match="materialise"):
        features.build_routes(con, DetectParams(), materialise="some")
    con.close()


def test_the_origins_yardstick_does_not_depend_on_row_order():
    """The origin's median over all its partners takes one route per product: the same one whatever order the
    routes come in (before, the pick followed row order, so two runs on the same data could differ)."""
    from tradewatch.detect import calibration

    params = DetectParams()
    rows = [("DEU", transit, f"0{k}0110", 100_000.0, 100_000.0 * (1 + 0.1 * k + 0.5 * t))
            for k in range(7) for t, transit in enumerate(("ARM", "GEO", "KAZ"))]
    frame = pl.DataFrame(rows, schema=["origin_iso3", "transit_iso3", "product", "base", "recent"], orient="row"
                         ).with_columns(level=pl.lit(6, pl.Int8), restricted=pl.lit(False))
    first = frame.filter(pl.col("transit_iso3") == "ARM")
    expected = calibration.median_growth(first, ["origin_iso3"], "recent", "base", params, restricted=False)
    for seed in range(6):
        shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)
        got = calibration.median_growth(shuffled, ["origin_iso3"], "recent", "base", params, restricted=False)
        assert got.equals(expected)
