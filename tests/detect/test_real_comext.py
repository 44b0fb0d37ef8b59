"""Detection on real Eurostat Comext exports (../shared/data/comext, with the all-goods totals of
../shared/data/comext_sdmx as the pairs' yardstick): sanctioned countries are never transits, every top route
shows a real fall to Russia, and the placebo in time flags far fewer routes."""

from __future__ import annotations

from datetime import date

import pytest

from tradewatch.flows.core import products
from tradewatch.detect import engine, evaluate
from tradewatch.detect.config import DetectParams


def _shared_comext():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "comext"
    return folder.resolve()


@pytest.fixture(scope="module")
def comext(tmp_path_factory):
    folder = _shared_comext()
    files = sorted(folder.glob("full_v2_*.7z"))
    if not files:
        pytest.skip(f"real Eurostat data not found at {folder} (../shared/data beside the repository)")
    import os

    from tradewatch.flows import ingest, warehouse

    home = tmp_path_factory.mktemp("comext-home")
    old = os.environ.get("TRADEWATCH_HOME")
    os.environ["TRADEWATCH_HOME"] = str(home)
    try:
        con = warehouse.connect(home / "comext.duckdb")
        for path in files:
            ingest.load_file(con, path)
        for path in sorted((folder.parent / "comext_sdmx").glob("*.csv")):
            ingest.load_file(con, path)
        run = engine.run_detection(con, DetectParams(), store=False)
        yield con, run
        con.close()
    finally:
        if old is None:
            os.environ.pop("TRADEWATCH_HOME", None)
        else:
            os.environ["TRADEWATCH_HOME"] = old


def test_real_data_flags_routes_and_never_a_sanctioned_transit(comext):
    con, run = comext
    # Measured: 11 routes at FDR 0.10 (49 at 0.25) with the pairs' unrestricted goods taken from the totals.
    assert run.flagged.height >= 5
    assert any("all-goods totals less the restricted goods" in note for note in run.notes)
    assert not set(run.flagged["transit_iso3"].to_list()) & {"RUS", "BLR"}
    candidates = engine.features.build_routes(con, DetectParams()).routes
    assert not set(candidates["transit_iso3"].to_list()) & {"RUS", "BLR"}
    assert set(run.flagged["transit_iso3"].to_list()) <= {"KAZ", "GEO", "UZB"}
    assert all(run.flagged["reasons"].to_list())


def _monthly_average(con, origin: str, product: str, first: date, last: date) -> float:
    """Origin's exports to RUS of `product` (HS 2022, 4 or 6 digits; before 2022 also its HS 2017
    predecessors), a plain monthly average over [first, last] — computed here, not by the engine."""
    old = [code for code, new in products.hs2017_to_hs2022().items() if any(n.startswith(product) for n in new)]
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    total = con.execute(
        """SELECT coalesce(sum(value), 0) FROM trade_flows WHERE reporter_iso3 = ? AND partner_iso3 = 'RUS'
           AND flow = 'export' AND period BETWEEN ? AND ?
           AND (starts_with(product_code, ?) OR (period < DATE '2022-01-01' AND list_contains(?, left(product_code, 6))))""",
        [origin, first, last, product, old],
    ).fetchall()[0][0]
    return total / months


def test_every_top_20_route_shows_a_real_fall_of_the_same_origins_exports_to_russia(comext):
    con, run = comext
    for row in run.flagged.head(20).to_dicts():
        before = _monthly_average(con, row["origin_iso3"], row["product_code"], row["baseline_start"], row["baseline_end"])
        after = _monthly_average(con, row["origin_iso3"], row["product_code"], row["recent_start"], row["recent_end"])
        assert before > 0, row["reasons"]
        assert after <= 0.5 * before, (row["reasons"], before, after)


@pytest.mark.parametrize("fdr", [0.10, 0.25])
def test_placebo_in_time_on_real_data(comext, fdr):
    con, run = comext
    result = evaluate.placebo(con, DetectParams(fdr=fdr))
    if fdr == 0.10:
        assert result["flags_event"] == run.flagged.height
    else:
        assert result["flags_event"] >= 30
    assert result["placebo_event"] == "2021-03"
    assert result["ratio"] <= 0.1, result
