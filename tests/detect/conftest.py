"""A small warehouse with two detection runs, flagged routes and the trade rows behind them, for review/report tests."""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime
from pathlib import Path

import pytest

EVENT = date(2022, 3, 1)
RUN_OLD = "run-2023-01-10-aaaa"
RUN_NEW = "run-2023-02-10-bbbb"

# route ids are opaque and stable across runs
ROUTE_CHIPS = "r-deu-kaz-854231"
ROUTE_MODEMS = "r-fra-arm-851762"
ROUTE_CARS = "r-ita-kaz-870323"
ROUTE_SCRIPT = "r-pol-geo-847150"
ROUTE_LEDS = "r-deu-kgz-854149"

EVIL = "<script>alert('x')</script>"


def _months(first: date, count: int) -> list[date]:
    out, current = [], first
    for _ in range(count):
        out.append(current)
        current = date(current.year + (current.month == 12), current.month % 12 + 1, 1)
    return out


MONTHS = _months(date(2021, 1, 1), 24)  # 2021-01 … 2022-12


def _route(run_id, route_id, rank, score, origin, transit, product, excess, growth, reasons, features=None):
    baseline = 10_000.0
    return {
        "run_id": run_id, "route_id": route_id, "rank": rank, "score": score, "origin_iso3": origin,
        "transit_iso3": transit, "target_iso3": "RUS", "product_code": product, "product_level": len(product),
        "currency": "EUR", "baseline_start": date(2021, 3, 1), "baseline_end": date(2021, 12, 31),
        "recent_start": date(2022, 3, 1), "recent_end": date(2022, 12, 31), "baseline_value": baseline,
        "recent_value": baseline * growth, "growth": growth, "target_change": -0.8, "excess_value": excess,
        "features_json": json.dumps(features if features is not None else
                                    {"transit_growth": growth, "target_drop": -0.8, "onward_growth": None}),
        "reasons": reasons,
    }


def insert_run(con, run_id: str, started: datetime, routes: list[dict], event: str = "2022-03") -> None:
    """Insert one finished run and its anomalies rows (dicts with the anomalies columns), in the formats the
    engine writes (loads_json: the loads the data came from; unavailable_json: a list of {feature, reason})."""
    from tradewatch.detect import engine
    from tradewatch.flows import schema

    con.execute(*schema.bind("runs", {
        "run_id": run_id, "started_at": started, "finished_at": started,
        "params_json": json.dumps({"event": event, "baseline_months": 10, "recent_months": 10}),
        "loads_json": json.dumps(engine._loads_read(con)), "model_version": "test-model-1", "run_hash": "hash",
        "flagged": len(routes), "candidates": 100,
        "unavailable_json": json.dumps([{"feature": "onward_growth", "reason": "no transit→Russia data"}]),
    }))
    for row in routes:
        con.execute(*schema.bind("anomalies", row))


def flows(reporter, partner, codes_values, source="comext", currency="EUR", flow="export", months=MONTHS):
    """Canonical trade rows: codes_values maps a product code to a function month -> value (None: no row)."""
    rows = []
    for month in months:
        for code, fn in codes_values.items():
            value = fn(month)
            if value is None:
                continue
            rows.append((source, "M", month, reporter, partner, flow, code, len(code), float(value), currency,
                         None, None, None))
    return rows


def build_review_warehouse(path: Path) -> dict:
    """Create a warehouse at `path` with runs RUN_OLD and RUN_NEW (latest), five routes, their trade rows
    and loads. Returns {'db': path, 'routes': {...}}."""
    from tradewatch.flows import warehouse

    con = warehouse.connect(path)
    after = lambda m: m >= EVENT  # noqa: E731
    rows = []
    # DEU→KAZ chips surge after the event; DEU→RUS collapses. 854231 split into two CN8 codes.
    rows += flows("DEU", "KAZ", {"85423111": lambda m: 900 if not after(m) else 9_000,
                                 "85423190": lambda m: 100 if not after(m) else 1_000})
    rows += flows("DEU", "RUS", {"85423111": lambda m: 5_000 if not after(m) else 200})
    # KAZ→RUS only as Russia-bound exports reported by Kazakhstan in USD (Comtrade), from 2021-06.
    rows += flows("KAZ", "RUS", {"854231": lambda m: 50 if not after(m) else 7_000}, source="comtrade",
                  currency="USD", months=MONTHS[5:])
    # DEU→KGZ LEDs: HS 2017 854140 before 2022, HS 2022 854149 (CN8 85414900) after.
    rows += flows("DEU", "KGZ", {"85414010": lambda m: 300 if m < date(2022, 1, 1) else None,
                                 "85414900": lambda m: None if m < date(2022, 1, 1) else (300 if not after(m) else 3_000)})
    rows += flows("FRA", "ARM", {"85176200": lambda m: 1_000 if not after(m) else 4_000})
    rows += flows("ITA", "KAZ", {"87032310": lambda m: 2_000 if not after(m) else 6_000})
    con.executemany("INSERT INTO trade_flows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)", rows)
    loaded = datetime(2023, 1, 5, 12, 0)
    load_id = 0
    for source, file in (("comext", "full_v2_{}.7z"), ("comtrade", "comtrade_KAZ_{}.csv")):
        for month in MONTHS:
            load_id += 1
            con.execute(
                "INSERT INTO loads VALUES (?, ?, 'M', ?, 1, ?, 'sum', 10, 1000, ?, 0, ?, ?, 'ok', NULL)",
                [load_id, source, month, file.format(month.strftime("%Y%m")),
                 "EUR" if source == "comext" else "USD", loaded, loaded],
            )
    old = [
        _route(RUN_OLD, ROUTE_CHIPS, 1, 0.80, "DEU", "KAZ", "854231", 80_000.0, 8.0, "DEU→KAZ chips ×8"),
        _route(RUN_OLD, ROUTE_MODEMS, 2, 0.40, "FRA", "ARM", "851762", 20_000.0, 4.0, "FRA→ARM modems ×4"),
        _route(RUN_OLD, ROUTE_CARS, 3, 0.30, "ITA", "KAZ", "870323", 10_000.0, 3.0, "ITA→KAZ cars ×3"),
    ]
    new = [
        _route(RUN_NEW, ROUTE_CHIPS, 1, 0.84, "DEU", "KAZ", "854231", 90_000.0, 9.0, "DEU→KAZ chips ×9"),
        _route(RUN_NEW, ROUTE_MODEMS, 3, 0.60, "FRA", "ARM", "851762", 31_000.0, 4.5, "FRA→ARM modems ×4.5"),
        _route(RUN_NEW, ROUTE_CARS, 5, 0.33, "ITA", "KAZ", "870323", 11_000.0, 3.2, "ITA→KAZ cars ×3.2"),
        _route(RUN_NEW, ROUTE_SCRIPT, 2, 0.70, "POL", "GEO", "847150", 50_000.0, float("inf"), EVIL,
               {"transit_growth": None, EVIL: 1.0}),
        _route(RUN_NEW, ROUTE_LEDS, 4, 0.55, "DEU", "KGZ", "854149", 27_000.0, 10.0, "DEU→KGZ LEDs ×10"),
    ]
    insert_run(con, RUN_OLD, datetime(2023, 1, 10, 9, 0), old)
    insert_run(con, RUN_NEW, datetime(2023, 2, 10, 9, 0), new)
    con.close()
    return {"db": path}


@pytest.fixture(scope="session")
def _review_db_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("review-template") / "w.duckdb"
    build_review_warehouse(path)
    return path


@pytest.fixture
def review_db(_review_db_template, tmp_path) -> Path:
    """A fresh copy of the fixture warehouse (built once per session) for one test to change freely."""
    path = tmp_path / "w.duckdb"
    shutil.copyfile(_review_db_template, path)
    return path


def build_detectable_warehouse(path: Path) -> Path:
    """A warehouse of monthly Comext-like rows 2020-01 … 2022-12 in which the detection engine flags
    DEU→KAZ→RUS 854231 (chips to Kazakhstan ×16 while exports to Russia collapse; Brazil as control)."""
    from tradewatch.flows import warehouse

    months = _months(date(2020, 1, 1), 36)
    after = lambda m: m >= EVENT  # noqa: E731
    rows = []
    rows += flows("DEU", "KAZ", {"85423190": lambda m: 800_000 if after(m) else 50_000,
                                 "84715000": lambda m: 60_000}, months=months)
    rows += flows("DEU", "RUS", {"85423190": lambda m: 40_000 if after(m) else 500_000,
                                 "84715000": lambda m: 30_000 if after(m) else 300_000}, months=months)
    rows += flows("DEU", "BRA", {"85423190": lambda m: 100_000, "84715000": lambda m: 80_000}, months=months)
    rows += flows("FRA", "KAZ", {"85423190": lambda m: 30_000}, months=months)
    rows += flows("FRA", "RUS", {"85423190": lambda m: 10_000 if after(m) else 200_000}, months=months)
    rows += flows("FRA", "BRA", {"85423190": lambda m: 30_000}, months=months)
    con = warehouse.connect(path)
    try:
        con.executemany("INSERT INTO trade_flows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)", rows)
    finally:
        con.close()
    return path
