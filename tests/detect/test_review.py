"""Review library: listing and filtering flags, decisions and their history, the 'materially stronger' rule, route evidence."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timezone

import polars as pl
import pytest
from conftest import (
    EVENT, EVIL, ROUTE_CARS, ROUTE_CHIPS, ROUTE_LEDS, ROUTE_MODEMS, ROUTE_SCRIPT, RUN_NEW, RUN_OLD,
)

from tradewatch.detect import review
from tradewatch.flows import warehouse
from tradewatch.flows.core.errors import InputError, TradewatchError


@pytest.fixture
def con(review_db):
    connection = warehouse.connect(review_db)
    yield connection
    connection.close()


def ids(frame) -> list[str]:
    return frame["id"].to_list()


# --- listing ---------------------------------------------------------------------------------------------------

def test_list_latest_run_best_score_first_with_names_and_tiers(con):
    frame = review.list_flags(con)
    assert list(frame.columns) == list(review.FLAG_COLUMNS)
    assert ids(frame) == [ROUTE_CHIPS, ROUTE_SCRIPT, ROUTE_MODEMS, ROUTE_LEDS, ROUTE_CARS]
    assert set(frame["run_id"]) == {RUN_NEW}
    assert set(frame["status"]) == {"new"}
    chips = frame.row(0, named=True)
    assert chips["tier"] == "1" and chips["product_name"].startswith("Electronic integrated circuits")
    assert frame.filter(frame["id"] == ROUTE_CARS)["tier"].to_list() == [None]


def test_list_older_run_by_id_prefix(con):
    frame = review.list_flags(con, run="run-2023-01")
    assert ids(frame) == [ROUTE_CHIPS, ROUTE_MODEMS, ROUTE_CARS]
    assert set(frame["run_id"]) == {RUN_OLD}


def test_list_unknown_or_ambiguous_run_is_an_input_error(con):
    with pytest.raises(InputError, match="--run nope"):
        review.list_flags(con, run="nope")
    with pytest.raises(InputError, match="matches 2 runs"):
        review.list_flags(con, run="run-2023")


def test_list_without_any_run_says_run_detect_first(tmp_path):
    con = warehouse.connect(tmp_path / "empty.duckdb")
    with pytest.raises(TradewatchError, match="tradewatch detect"):
        review.list_flags(con)
    con.close()


@pytest.mark.parametrize("filters, expected", [
    ({"transit": "kaz"}, [ROUTE_CHIPS, ROUTE_CARS]),
    ({"origin": "DEU"}, [ROUTE_CHIPS, ROUTE_LEDS]),
    ({"product": "8542"}, [ROUTE_CHIPS]),
    ({"product": "8541"}, [ROUTE_LEDS]),
    ({"product": "85"}, [ROUTE_CHIPS, ROUTE_MODEMS, ROUTE_LEDS]),
    ({"tier": "1"}, [ROUTE_CHIPS]),
    ({"tier": "3"}, [ROUTE_SCRIPT, ROUTE_LEDS]),
    ({"tier": "3.a"}, [ROUTE_SCRIPT, ROUTE_LEDS]),
    ({"tier": "Tier 2"}, [ROUTE_MODEMS]),
    ({"min_score": 0.6}, [ROUTE_CHIPS, ROUTE_SCRIPT, ROUTE_MODEMS]),
    ({"limit": 2}, [ROUTE_CHIPS, ROUTE_SCRIPT]),
    ({"transit": "KAZ", "origin": "ITA"}, [ROUTE_CARS]),
])
def test_list_filters(con, filters, expected):
    assert ids(review.list_flags(con, **filters)) == expected


@pytest.mark.parametrize("filters", [
    {"transit": "KAZ' OR 1=1 --"},
    {"origin": "DEU' OR '1'='1"},
    {"product": "8542' OR '1'='1"},
    {"product": "%"},
    {"product": "_"},
    {"run": "latest' OR 1=1 --"},
])
def test_filters_are_bound_not_spliced(con, filters):
    if "run" in filters:
        with pytest.raises(InputError):
            review.list_flags(con, **filters)
    else:
        assert review.list_flags(con, **filters).height == 0
    assert review.list_flags(con).height == 5  # and the tables are still there


def test_sort_by_excess_and_growth_nulls_and_infinity_handled(con):
    assert ids(review.list_flags(con, sort="excess")) == [ROUTE_CHIPS, ROUTE_SCRIPT, ROUTE_MODEMS, ROUTE_LEDS,
                                                         ROUTE_CARS]
    by_growth = review.list_flags(con, sort="growth")
    # growth of +inf (nothing in the baseline) ranks highest, then 10, 9, 4.5, 3.2
    assert ids(by_growth) == [ROUTE_SCRIPT, ROUTE_LEDS, ROUTE_CHIPS, ROUTE_MODEMS, ROUTE_CARS]
    with pytest.raises(InputError, match="--sort"):
        review.list_flags(con, sort="rank; DROP TABLE runs")


# --- decisions -------------------------------------------------------------------------------------------------

def test_review_stores_time_author_and_evidence(con, monkeypatch):
    monkeypatch.setenv("USER", "maria")
    when = datetime(2023, 2, 11, 8, 30, tzinfo=timezone.utc)
    record = review.review(con, ROUTE_CHIPS, "confirmed", "  invoices match  ", now=when)
    assert record["reviewer"] == "maria" and record["note"] == "invoices match"
    assert record["run_id"] == RUN_NEW and record["score_at_review"] == 0.84 and record["excess_at_review"] == 90_000
    [stored] = review.history(con, ROUTE_CHIPS)
    assert stored["reviewed_at"] == datetime(2023, 2, 11, 8, 30)  # naive UTC
    assert stored["status"] == "confirmed" and stored["reviewer"] == "maria"


def test_review_author_defaults_to_analyst_without_user(con, monkeypatch):
    monkeypatch.delenv("USER", raising=False)
    monkeypatch.delenv("USERNAME", raising=False)
    assert review.review(con, ROUTE_CARS, "watch", "")["reviewer"] == "analyst"
    assert review.review(con, ROUTE_CARS, "watch", "x", by="  ")["reviewer"] == "analyst"
    assert review.review(con, ROUTE_CARS, "watch", "x", by="Ann")["reviewer"] == "Ann"


def test_review_time_defaults_to_now_utc(con):
    before = datetime.now(timezone.utc).replace(tzinfo=None)
    record = review.review(con, ROUTE_CARS, "watch", "later")
    after = datetime.now(timezone.utc).replace(tzinfo=None)
    assert before <= record["reviewed_at"] <= after


def test_review_rejects_bad_status_and_unknown_route(con):
    with pytest.raises(InputError, match="--status"):
        review.review(con, ROUTE_CHIPS, "new", "x")
    with pytest.raises(InputError, match="not flagged in any run"):
        review.review(con, "no-such-route", "confirmed", "x")
    with pytest.raises(InputError, match="several routes"):
        review.review(con, "r-deu", "confirmed", "x")
    with pytest.raises(InputError, match="not flagged in run"):
        review.review(con, ROUTE_LEDS, "confirmed", "x", run=RUN_OLD)
    assert con.execute("SELECT count(*) FROM reviews").fetchone()[0] == 0


def test_history_oldest_first_and_latest_decision_wins(con):
    review.review(con, ROUTE_CHIPS, "watch", "first look", now=datetime(2023, 2, 11, 9))
    review.review(con, ROUTE_CHIPS, "confirmed", "second look", now=datetime(2023, 2, 12, 9))
    review.review(con, ROUTE_CARS, "dismissed", "other route", now=datetime(2023, 2, 13, 9))
    assert [h["note"] for h in review.history(con, "r-deu-kaz")] == ["first look", "second look"]
    frame = review.list_flags(con)
    chips = frame.filter(frame["id"] == ROUTE_CHIPS).row(0, named=True)
    assert chips["status"] == "confirmed" and chips["review_note"] == "second look"
    assert chips["reviewed_at"] == datetime(2023, 2, 12, 9)
    assert review.history(con, ROUTE_MODEMS) == []


@pytest.mark.parametrize("then, now, expected", [
    ((0.60, 20_000.0), (0.70, 30_000.0), True),     # a quarter of the gap to 1.0 closed, +50 % excess
    ((0.60, 20_000.0), (0.69, 40_000.0), False),    # score short of a quarter of the gap
    ((0.60, 20_000.0), (0.90, 29_999.0), False),    # excess short of +50 %
    ((0.80, 20_000.0), (0.85, 30_000.0), True),     # high scores can still reopen
    ((0.60, 20_000.0), (0.50, 10_000.0), False),    # weaker
    ((1.00, 20_000.0), (1.00, 30_000.0), True),     # no gap left: holding the top score is enough
    ((0.60, None), (0.70, 1.0), True),              # no excess recorded: any positive excess counts
    ((0.60, 0.0), (0.70, 0.0), False),              # ... but not zero
    ((None, None), (0.99, 9e9), False),             # nothing recorded: never reopens by itself
    ((0.60, 20_000.0), (math.inf, 40_000.0), False),
    ((0.60, 20_000.0), (0.90, None), False),
])
def test_materially_stronger(then, now, expected):
    assert review.materially_stronger(*then, *now) is expected


def test_dismissed_route_stays_dismissed_unless_evidence_grew_materially(con):
    # Dismissed against the old run: modems grew from 0.40/20k to 0.60/31k (a third of the gap, +55 %): reopened.
    review.review(con, ROUTE_MODEMS, "dismissed", "known distributor", run=RUN_OLD)
    # Cars grew from 0.30/10k to 0.33/11k: stays dismissed.
    review.review(con, ROUTE_CARS, "dismissed", "car dealers", run=RUN_OLD)
    # Chips dismissed against the new run itself: dismissed.
    review.review(con, ROUTE_CHIPS, "dismissed", "checked", run=RUN_NEW)
    status = dict(review.list_flags(con).select("id", "status").iter_rows())
    assert status == {ROUTE_CHIPS: "dismissed", ROUTE_SCRIPT: "new", ROUTE_MODEMS: "reopened",
                      ROUTE_LEDS: "new", ROUTE_CARS: "dismissed"}
    # In the old run itself nothing grew.
    old = dict(review.list_flags(con, run=RUN_OLD).select("id", "status").iter_rows())
    assert old[ROUTE_MODEMS] == "dismissed"
    assert ids(review.list_flags(con, status="new")) == [ROUTE_SCRIPT, ROUTE_MODEMS, ROUTE_LEDS]
    assert ids(review.list_flags(con, status="reopened")) == [ROUTE_MODEMS]
    assert ids(review.list_flags(con, status="dismissed")) == [ROUTE_CHIPS, ROUTE_CARS]
    with pytest.raises(InputError, match="--status"):
        review.list_flags(con, status="maybe")


def test_watch_and_confirmed_are_kept_whatever_the_evidence(con):
    review.review(con, ROUTE_MODEMS, "watch", "keep an eye", run=RUN_OLD)
    review.review(con, ROUTE_CARS, "confirmed", "case opened", run=RUN_OLD)
    status = dict(review.list_flags(con).select("id", "status").iter_rows())
    assert status[ROUTE_MODEMS] == "watch" and status[ROUTE_CARS] == "confirmed"


def test_decisions_survive_a_later_run_written_by_detection(con):
    from conftest import insert_run

    review.review(con, ROUTE_CHIPS, "confirmed", "case opened")
    later = review.list_flags(con).filter(review.list_flags(con)["id"] == ROUTE_CHIPS).row(0, named=True)
    row = {k: later[k] for k in ("run_id", "rank", "score", "origin_iso3", "transit_iso3", "target_iso3",
                                 "product_code", "product_level", "currency", "excess_value", "reasons")}
    row.update(run_id="run-2023-03-10-cccc", route_id=ROUTE_CHIPS)
    insert_run(con, "run-2023-03-10-cccc", datetime(2023, 3, 10), [row])
    frame = review.list_flags(con)
    assert frame["run_id"].to_list() == ["run-2023-03-10-cccc"]
    assert frame["status"].to_list() == ["confirmed"]


# --- evidence --------------------------------------------------------------------------------------------------

def test_show_route_legs_rolled_up_to_hs6(con):
    evidence = review.show_route(con, "r-deu-kaz")
    assert evidence.route["route_id"] == ROUTE_CHIPS and evidence.route["run_id"] == RUN_NEW
    assert evidence.event == EVENT and evidence.tier == "1"
    assert evidence.product_name.startswith("Electronic integrated circuits")
    # the months the run scored: its baseline start (2021-03) to its recent end (2022-12)
    assert evidence.months[0] == date(2021, 3, 1) and evidence.months[-1] == date(2022, 12, 1)
    by_name = {leg.name: leg for leg in evidence.legs}
    assert list(by_name) == ["DEU→KAZ", "DEU→RUS", "KAZ→RUS"]
    to_transit = by_name["DEU→KAZ"]
    # two CN8 codes under 854231 summed: 900 + 100 before the event, 9 000 + 1 000 after
    assert to_transit.codes == ["854231"] and to_transit.source == "comext" and to_transit.currency == "EUR"
    assert to_transit.basis == "exports"
    assert to_transit.values[evidence.months.index(date(2022, 2, 1))] == 1_000
    assert to_transit.values[evidence.months.index(EVENT)] == 10_000
    assert by_name["DEU→RUS"].values[-1] == 200
    onward = by_name["KAZ→RUS"]
    # Kazakhstan's own exports, from Comtrade in USD, only from 2021-06: earlier months have no data
    assert onward.source == "comtrade" and onward.currency == "USD"
    assert onward.values[:3] == [None] * 3 and onward.values[3] == 50


def test_show_route_maps_hs2017_codes_before_2022(con):
    evidence = review.show_route(con, ROUTE_LEDS)
    to_transit = evidence.legs[0]
    # 854149 (HS 2022) was part of 854140 (HS 2017): CN8 85414010 counts until 2021-12, all of it here
    # because this route's own trade after the revision is all 854149
    assert to_transit.values[evidence.months.index(date(2021, 6, 1))] == 300
    assert to_transit.values[evidence.months.index(date(2022, 2, 1))] == 300
    assert to_transit.codes == ["854149"]
    # Germany reports its exports, none of them to Russia: data and no trade (▁), not a missing leg
    assert evidence.legs[1].available and set(evidence.legs[1].values) == {0.0}
    # neither Kyrgyzstan's exports nor Russia's imports are in the warehouse: no data
    assert not evidence.legs[2].available and evidence.legs[2].basis == "none"


def test_show_route_features_loads_and_reviews(con):
    review.review(con, ROUTE_CHIPS, "watch", "look again in May", by="ann")
    evidence = review.show_route(con, ROUTE_CHIPS, run=RUN_OLD)
    assert evidence.route["run_id"] == RUN_OLD and evidence.route["score"] == 0.80
    assert evidence.features == {"transit_growth": 8.0, "target_drop": -0.8, "onward_growth": None}
    assert evidence.unavailable == {"onward_growth": "no transit→Russia data"}
    sources = {item["source"] for item in evidence.loads}
    assert sources == {"comext", "comtrade"}
    comext = [item["file"] for item in evidence.loads if item["source"] == "comext"]
    # the loads of the months the run scored, 2021-03 … 2022-12
    assert comext[0] == "full_v2_202103.7z" and len(comext) == 22
    assert [r["note"] for r in evidence.reviews] == ["look again in May"] and evidence.status == "watch"


def test_show_route_without_trade_rows_names_no_loads(con):
    evidence = review.show_route(con, ROUTE_SCRIPT)
    assert not any(leg.available for leg in evidence.legs)
    assert evidence.loads == []
    assert evidence.features[EVIL] == 1.0


def test_sparkline_and_marker_line():
    assert review.sparkline([0, 1, 2, 4, 8, None]) == "▁▁▂▄█ "
    assert review.sparkline([None, 0.0]) == " ▁"
    months = [date(2022, m, 1) for m in range(1, 7)]
    route = {"baseline_start": date(2022, 1, 1), "baseline_end": date(2022, 2, 28),
             "recent_start": date(2022, 4, 1), "recent_end": date(2022, 5, 31)}
    assert review.marker_line(months, date(2022, 3, 1), route) == "──▲━━ "


def test_tier_matching():
    assert review.tier_matches("3.A", "3") and review.tier_matches("3.A", "3.a")
    assert not review.tier_matches("1", "3") and not review.tier_matches(None, "1")
    assert not review.tier_matches("3.A", "3.B")


# --- what the engine writes is what review reads ----------------------------------------------------------------

def test_engine_flags_hold_every_declared_anomalies_column():
    from tradewatch.detect import engine
    from tradewatch.flows import schema

    declared = schema.TABLES["anomalies"].polars_schema()
    stored = {("features_json" if name == "features" else name): dtype for name, dtype in engine.FLAGGED_SCHEMA.items()}
    assert {"run_id": declared.pop("run_id"), **stored} == {"run_id": pl.String(), **declared}
    for name, dtype in review.FLAG_COLUMNS.items():
        if name in declared:
            assert dtype == declared[name], name


def test_show_route_of_a_run_the_engine_stored(tmp_path):
    from conftest import build_detectable_warehouse

    from tradewatch.detect import engine

    con = warehouse.connect(build_detectable_warehouse(tmp_path / "w.duckdb"))
    try:
        result = engine.run_detection(con, engine.DetectParams(event="2022-03"))
        first = result.flagged.row(0, named=True)
        listed = review.list_flags(con)
        evidence = review.show_route(con, first["route_id"])
    finally:
        con.close()
    assert listed["id"].to_list() == result.flagged["route_id"].to_list()
    assert listed.row(0, named=True)["score"] == first["score"]
    assert evidence.route["run_id"] == result.run_id and evidence.route["excess_value"] == first["excess_value"]
    assert evidence.features == json.loads(first["features"])
    # the run's unavailable features, as the engine stored them: name -> reason
    assert [f"{engine.features.FEATURES.get(k, k)} ({k}): {v}" for k, v in evidence.unavailable.items()] == \
        result.unavailable
    assert evidence.legs[0].available and evidence.loads == []  # the fixture's rows were written without loads


def test_show_route_counts_past_decisions_on_similar_routes(con):
    """Routes via the same transit in the same HS-4 heading, each by its latest decision; the route itself
    and other headings or transits do not count."""
    from conftest import _route, insert_run

    insert_run(con, "run-2023-03-10-cccc", datetime(2023, 3, 10, 9, 0), [
        _route("run-2023-03-10-cccc", "r-fra-kaz-854232", 1, 0.5, "FRA", "KAZ", "854232", 30_000.0, 3.0, "x"),
        _route("run-2023-03-10-cccc", "r-ita-kaz-854239", 2, 0.5, "ITA", "KAZ", "854239", 30_000.0, 3.0, "y"),
        _route("run-2023-03-10-cccc", "r-ita-kgz-854231", 3, 0.5, "ITA", "KGZ", "854231", 30_000.0, 3.0, "z"),
    ])
    review.review(con, "r-fra-kaz-854232", "confirmed", note="seen", by="a")
    review.review(con, "r-ita-kaz-854239", "watch", note="later", by="a")
    review.review(con, "r-ita-kaz-854239", "dismissed", note="domestic demand", by="b")
    review.review(con, "r-ita-kgz-854231", "dismissed", note="other transit", by="a")
    review.review(con, ROUTE_CHIPS, "dismissed", note="the route itself", by="a")
    evidence = review.show_route(con, ROUTE_CHIPS, run=RUN_NEW)
    assert evidence.similar == {"transit": "KAZ", "heading": "8542", "counts": {"confirmed": 1, "dismissed": 1}}
