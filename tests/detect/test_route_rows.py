"""route_rows: the legs `flags show` and the report draw are the rows the scoring read, to 1e-6 relative."""

from __future__ import annotations

import math
from datetime import date

import polars as pl
import pytest

from detect_worlds import World, base_world, sanctioned, steady, step
from tradewatch.detect import engine, features, report, review, route_rows
from tradewatch.detect.config import DetectParams

REVISION = date(2022, 1, 1)
SPLIT = ("DEU", "ARM", "854149")    # HS 2017 854140 became 854141 + 854149 on this route
MIRROR = ("JPN", "KAZ", "854232")   # Japan reports nothing: read from Kazakhstan's imports


def diversion_world() -> World:
    """base_world plus a diversion in a product whose HS 2017 code was split at the revision, and one seen
    only through the transit's import reports."""
    world = base_world()
    before, after = (lambda m: m < REVISION), (lambda m: m >= REVISION)
    world.add("DEU", "ARM", "85414010", steady(300_000, salt=33), only=before)
    world.add("DEU", "ARM", "85414100", steady(100_000, salt=34), only=after)
    world.add("DEU", "ARM", "85414900", step(200_000, 1_600_000, salt=35), only=after)
    world.add("DEU", "RUS", "85414010", sanctioned(400_000, salt=36), only=before)
    # Trade that starts at the revision: the scoring leaves codes with no rows before it out of HS-4 roll-ups.
    world.add("DEU", "ARM", "85411000", steady(50_000, salt=40), only=after)
    world.add("ARM", "RUS", "854149", step(30_000, 900_000, salt=37))
    world.add("KAZ", "JPN", "854232", step(100_000, 900_000, salt=38), flow="import")
    world.add("KAZ", "RUS", "854232", step(50_000, 800_000, salt=39))
    return world


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The world's warehouse after one stored detection run: (connection, stored run, candidate routes)."""
    con = diversion_world().warehouse(tmp_path_factory.mktemp("route-rows") / "w.duckdb")
    result = engine.run_detection(con, DetectParams())
    stored = engine.load_run(con, result.run_id)
    frame = features.build_routes(con, stored.params)
    yield con, stored, frame
    con.close()


def close(shown: float | None, scored_value: float | None) -> bool:
    """Equal to 1e-6 relative; the absolute floor (a thousandth of a currency unit) covers the scoring's
    rounding of each HS-6 series to four decimals."""
    if shown is None or scored_value is None:
        return shown is None and scored_value is None
    return math.isclose(shown, scored_value, rel_tol=1e-6, abs_tol=1e-3)


def key(row: dict) -> tuple[str, str, str]:
    return row["origin_iso3"], row["transit_iso3"], row["product_code"]


def run_rows(con, stored) -> route_rows.RouteRows:
    params, windows = route_rows.run_params({**stored.params.to_dict(), "windows": stored.windows})
    return route_rows.RouteRows(con, params, route_rows.stored_windows(params, windows))


def test_flagged_routes_show_the_baseline_and_recent_that_were_scored(scored):
    con, stored, _ = scored
    flagged = stored.flagged.to_dicts()
    assert {SPLIT, MIRROR} <= {key(row) for row in flagged}, "the world must flag the split and the mirror route"
    with run_rows(con, stored) as rows:
        for row in flagged:
            legs = rows.legs(row)
            base, recent = route_rows.window_averages(legs[0], rows.windows)
            assert close(base, row["baseline_value"]) and close(recent, row["recent_value"]), (key(row), base, recent)


def test_every_leg_of_every_candidate_route_matches_its_scored_leg(scored):
    con, stored, frame = scored
    columns = {"transit": ("base", "recent"), "target": ("target_base", "target_recent"),
               "onward": ("onward_base", "onward_recent")}
    routes = frame.routes.filter(pl.col("comparable"))
    assert {4, 6} <= set(routes["level"].to_list()) and "mirror" in routes["basis"].to_list()
    with run_rows(con, stored) as rows:
        for route in routes.to_dicts():
            for leg in rows.legs(route):
                shown = route_rows.window_averages(leg, rows.windows)
                base_column, recent_column = columns[leg.role]
                expected = (route[base_column], route[recent_column])
                assert close(shown[0], expected[0]) and close(shown[1], expected[1]), (
                    route["route_id"], leg.role, shown, expected)
                if leg.role == "transit":
                    assert leg.basis == route["basis"]


def test_a_split_hs2017_code_is_shared_out_by_weight_not_counted_whole(scored):
    con, stored, _ = scored
    june = date(2021, 6, 1)
    whole = con.execute("SELECT value FROM trade_flows WHERE reporter_iso3 = 'DEU' AND partner_iso3 = 'ARM'"
                        " AND product_code = '85414010' AND period = ?", [june]).fetchone()[0]
    with run_rows(con, stored) as rows:
        def leg(product: str) -> route_rows.Leg:
            return rows.legs({"origin_iso3": "DEU", "transit_iso3": "ARM", "target_iso3": "RUS",
                              "product_code": product})[0]

        led, other, heading = leg("854149"), leg("854141"), leg("8541")
    shown = dict(zip(led.months, led.values))[june]
    assert 0 < shown < whole  # the old series counted the whole HS 2017 code: it overstated the baseline
    assert shown + dict(zip(other.months, other.values))[june] == pytest.approx(whole, rel=1e-9)
    # the HS-4 roll-up is the sum of its HS-6 codes, less 854110 (new at the revision, as the scoring does)
    assert heading.codes == ["854141", "854149"]
    assert heading.values == pytest.approx([a + b for a, b in zip(led.values, other.values)], rel=1e-9)


def test_a_silent_origin_is_read_from_the_transits_imports_brought_to_fob(scored):
    con, stored, _ = scored
    row = stored.flagged.filter((pl.col("origin_iso3") == "JPN") & (pl.col("product_code") == "854232")).row(
        0, named=True)
    with run_rows(con, stored) as rows:
        to_transit, to_target, onward = rows.legs(row)
    assert (to_transit.basis, to_transit.reporter, to_transit.flow) == ("mirror", "KAZ", "import")
    assert to_transit.cif_fob == stored.params.cif_fob
    raw = con.execute("SELECT value FROM trade_flows WHERE reporter_iso3 = 'KAZ' AND partner_iso3 = 'JPN'"
                      " AND flow = 'import' AND period = DATE '2023-06-01'").fetchone()[0]
    assert dict(zip(to_transit.months, to_transit.values))[date(2023, 6, 1)] == pytest.approx(raw / 1.06)
    assert (to_transit.source, to_transit.currency) == ("comtrade", "USD")
    # Japan reports nothing and Russia reports no imports: the origin→target leg has no report at all
    assert to_target.basis == "none" and not to_target.available
    assert onward.basis == "exports" and onward.reporter == "KAZ"


def test_months_without_a_report_are_blank_and_months_without_trade_zero(tmp_path):
    world = World()
    world.add("DEU", "KAZ", "85423110", step(100_000, 900_000, at=date(2022, 4, 1)))
    world.add("DEU", "RUS", "85423110", sanctioned(500_000))
    # Kazakhstan never exports chips in July, and in July 2021 it reported nothing at all
    world.add("KAZ", "RUS", "854231", steady(10_000), only=lambda m: m.month != 7)
    world.add("KAZ", "RUS", "847150", steady(10_000), only=lambda m: m != date(2021, 7, 1))
    con = world.warehouse(tmp_path / "w.duckdb")
    route = {"origin_iso3": "DEU", "transit_iso3": "KAZ", "target_iso3": "RUS", "product_code": "854231"}
    _, to_target, onward = route_rows.route_series(con, DetectParams(), route)
    by_month = dict(zip(onward.months, onward.values))
    assert date(2021, 7, 1) not in by_month  # no data: blank
    assert by_month[date(2022, 7, 1)] == 0.0 and by_month[date(2022, 6, 1)] > 0  # data and no trade: ▁
    assert to_target.available and min(to_target.values) > 0
    con.close()


def test_eu_rollup_legs_match_the_scored_eu_legs(tmp_path):
    world = base_world()
    world.add("FRA", "KAZ", "85423110", step(50_000, 200_000, salt=40))
    con = world.warehouse(tmp_path / "w.duckdb")
    params = DetectParams(eu_rollup=True)
    frame = features.build_routes(con, params)
    eu = frame.routes.filter((pl.col("origin_iso3") == features.EU_CODE) & (pl.col("transit_iso3") == "KAZ")
                             & (pl.col("product") == "854231")).row(0, named=True)
    legs = route_rows.route_series(con, params, eu, frame.windows)
    assert close(route_rows.window_averages(legs[0], frame.windows)[1], eu["recent"])
    assert close(route_rows.window_averages(legs[1], frame.windows)[0], eu["target_base"])
    con.close()


def test_show_route_and_the_report_draw_the_scored_rows(scored):
    con, stored, _ = scored
    row = stored.flagged.filter((pl.col("origin_iso3") == SPLIT[0]) & (pl.col("transit_iso3") == SPLIT[1])
                                & (pl.col("product_code") == SPLIT[2])).row(0, named=True)
    evidence = review.show_route(con, row["route_id"], run=stored.run_id)
    windows = route_rows.stored_windows(stored.params, stored.windows)
    base, recent = route_rows.window_averages(evidence.legs[0], windows)
    assert close(base, row["baseline_value"]) and close(recent, row["recent_value"])
    assert evidence.months[0] == windows.baseline_start and evidence.months[-1] == windows.recent_end
    data = report.collect(con, stored.run_id, top=5)
    drawn = next(ev for ev in data.routes if ev.route["route_id"] == row["route_id"])
    assert drawn.legs[0].values == evidence.legs[0].values
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name LIKE 'tw_detect%'"
                       ).fetchone()[0] == 0  # the report cleaned up after itself


def test_a_warehouse_that_cannot_support_detection_gives_unavailable_legs(tmp_path):
    con = World().warehouse(tmp_path / "empty.duckdb")
    rows = route_rows.RouteRows(con, DetectParams())
    legs = rows.legs({"origin_iso3": "DEU", "transit_iso3": "KAZ", "product_code": "854231"})
    assert [leg.name for leg in legs] == ["DEU→KAZ", "DEU→RUS", "KAZ→RUS"]
    assert not any(leg.available for leg in legs) and "no trade data" in rows.reason
    assert route_rows.window_averages(legs[0], features.Windows(*[date(2022, 1, 1)] * 7)) == (None, None)
    con.close()
