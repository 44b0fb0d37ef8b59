"""The seeded demo world: determinism, the real source layouts, loading through the real loaders, and the planted signals."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from tradewatch.detect import demo
from tradewatch.flows.core import countries
from tradewatch.flows import archive, schema, warehouse

SMALL = 0.1
EU_ALPHA2 = {countries.iso3_to_alpha2(c) for c in demo.EU27}


def _member_bytes(path: Path, scratch: Path) -> bytes:
    return archive.extract_single_member(path, scratch).read_bytes()


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    """A scale-0.1 world written once and loaded once into a warehouse through seed_warehouse."""
    root = tmp_path_factory.mktemp("demo-world")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRADEWATCH_HOME", str(root / "home"))
        (root / "home").mkdir()
        con = warehouse.connect(root / "home" / "w.duckdb")
        calls = []
        files = demo.seed_warehouse(con, root / "demo", scale=SMALL, progress=lambda d, n, p: calls.append((d, n, p)))
        yield {"con": con, "files": files, "dir": root / "demo", "db": root / "home" / "w.duckdb", "calls": calls}
        con.close()


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_writes_identical_data_and_key_different_seed_does_not(tmp_path):
    first = demo.write_world(tmp_path / "a", seed=7, scale=SMALL)
    again = demo.write_world(tmp_path / "b", seed=7, scale=SMALL)
    other = demo.write_world(tmp_path / "c", seed=8, scale=SMALL)
    assert first.rows == again.rows
    for index in (0, 38, 71):
        a = _member_bytes(first.comext_files[index], tmp_path / "xa")
        b = _member_bytes(again.comext_files[index], tmp_path / "xb")
        c = _member_bytes(other.comext_files[index], tmp_path / "xc")
        assert a == b
        assert a != c
    assert [p.name for p in first.comtrade_files] == [p.name for p in again.comtrade_files]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(first.comtrade_files, again.comtrade_files))
    assert first.answer_key.read_bytes() == again.answer_key.read_bytes()
    assert first.answer_key.read_bytes() != other.answer_key.read_bytes()
    assert json.loads(first.answer_key.read_text())["seed"] == 7


def test_generate_frame_is_deterministic_canonical_and_grows_with_scale():
    frame = demo.generate_frame(seed=3, scale=SMALL)
    assert frame.equals(demo.generate_frame(seed=3, scale=SMALL))
    assert not frame.equals(demo.generate_frame(seed=4, scale=SMALL))
    assert frame.schema == pl.Schema(schema.polars_schema())
    assert frame["source"].unique().to_list() == ["demo"]
    assert frame["freq"].unique().to_list() == ["M"]
    assert frame["period"].min() == dt.date(2019, 1, 1) and frame["period"].max() == dt.date(2024, 12, 1)
    assert frame.filter(pl.col("value") < 0).height == 0
    assert frame.select(schema.TRADE_FLOWS_KEY).is_duplicated().sum() == 0
    by_level = dict(frame.group_by("product_level").agg(pl.col("currency").unique().first()).iter_rows())
    assert by_level == {8: "EUR", 6: "USD"}
    assert demo.generate_frame(seed=3, scale=2 * SMALL).height > 1.5 * frame.height


def test_scale_one_world_has_the_documented_size_and_contents():
    frame, plan = demo._generate(demo.DEFAULT_SEED, 1.0)
    assert 500_000 <= frame.height <= 1_500_000
    assert len(plan.products) >= 240
    assert set(demo.chpl_codes()) <= set(plan.products)
    assert len(demo.chpl_codes()) == 50
    assert len(plan.routes) == 40
    assert len(plan.origins) == 10 and len(plan.transits) == 10 and len(plan.controls) == 6
    kinds = {c["kind"] for c in plan.confounders}
    assert kinds == {"demand_boom", "tiny_base", "one_month_spike", "hs_split", "missing_months", "belarus",
                     "transit_growth"}
    assert {r["difficulty"] for r in plan.routes} == {"clear", "hard"}
    assert sum(r["product_code"] in demo.chpl_codes() for r in plan.routes) >= 20


def test_scale_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="scale"):
        demo.generate_frame(scale=0)


# ------------------------------------------------------------------------------------------ the layouts


def test_comext_archives_hold_one_dat_member_in_the_exact_layout(small_world, tmp_path):
    import py7zr

    files = small_world["files"]
    assert len(files.comext_files) == 72
    assert files.comext_files[0].name == "full_v2_201901.7z" and files.comext_files[-1].name == "full_v2_202412.7z"
    path = files.comext_files[40]
    with py7zr.SevenZipFile(path) as archive_file:
        assert [i.filename for i in archive_file.list()] == ["full_202205.dat"]
    text = _member_bytes(path, tmp_path).decode()
    assert text.splitlines()[0] == ",".join(demo.COMEXT_HEADER)
    assert text.splitlines()[0] == ("REPORTER,PARTNER,TRADE_TYPE,PRODUCT_NC,PRODUCT_SITC,PRODUCT_CPA21,PRODUCT_CPA22,"
                                    "PRODUCT_BEC,PRODUCT_BEC5,PRODUCT_SECTION,FLOW,STAT_PROCEDURE,SUPPL_UNIT,PERIOD,"
                                    "VALUE_EUR,VALUE_NAC,QUANTITY_KG,QUANTITY_SUPPL_UNIT")
    assert "\r" not in text
    header, rows = _csv_rows(archive.extract_single_member(path, tmp_path / "again"))
    assert len(rows) > 100
    assert {r["REPORTER"] for r in rows} <= EU_ALPHA2
    assert "DE" in {r["REPORTER"] for r in rows}
    assert {"RU", "BY", "KZ"} <= {r["PARTNER"] for r in rows}
    assert {r["TRADE_TYPE"] for r in rows} == {"E"} and {r["FLOW"] for r in rows} == {"2"}
    assert {r["PERIOD"] for r in rows} == {"202205"}
    assert all(len(r["PRODUCT_NC"]) == 8 and r["PRODUCT_NC"].isdigit() for r in rows)
    assert all(r["VALUE_EUR"].isdigit() and r["QUANTITY_KG"].isdigit() for r in rows)
    for empty in ("PRODUCT_SITC", "PRODUCT_CPA21", "PRODUCT_CPA22", "PRODUCT_BEC", "PRODUCT_BEC5", "PRODUCT_SECTION",
                  "STAT_PROCEDURE", "SUPPL_UNIT", "VALUE_NAC", "QUANTITY_SUPPL_UNIT"):
        assert {r[empty] for r in rows} == {""}, empty


def test_comtrade_files_have_the_api_header_and_codes(small_world):
    files = small_world["files"]
    names = {p.name for p in files.comtrade_files}
    assert {"USA_2019_M.csv", "KAZ_2024_M.csv", "BLR_2022_M.csv", "CHN_2021_M.csv"} <= names
    assert not any(p.name.startswith(("DEU", "FRA", "RUS")) for p in files.comtrade_files)
    expected = ("typeCode,freqCode,refPeriodId,refYear,refMonth,period,reporterCode,reporterISO,reporterDesc,flowCode,"
                "flowDesc,partnerCode,partnerISO,partnerDesc,partner2Code,partner2ISO,partner2Desc,classificationCode,"
                "classificationSearchCode,isOriginalClassification,cmdCode,cmdDesc,aggrLevel,isLeaf,customsCode,"
                "customsDesc,mosCode,motCode,motDesc,qtyUnitCode,qtyUnitAbbr,qty,isQtyEstimated,altQtyUnitCode,"
                "altQtyUnitAbbr,altQty,isAltQtyEstimated,netWgt,isNetWgtEstimated,grossWgt,isGrossWgtEstimated,"
                "cifvalue,fobvalue,primaryValue,legacyEstimationFlag,isReported,isAggregate").split(",")
    header, usa = _csv_rows(files.comtrade_files[0].parent / "USA_2022_M.csv")
    assert header == expected
    assert {r["reporterCode"] for r in usa} == {"842"} and {r["reporterISO"] for r in usa} == {"USA"}
    assert {r["flowCode"] for r in usa} == {"X"}
    assert all(r["fobvalue"] == r["primaryValue"] and r["cifvalue"] == "" for r in usa)
    assert {r["typeCode"] for r in usa} == {"C"} and {r["freqCode"] for r in usa} == {"M"}
    assert {r["partner2Code"] for r in usa} == {"0"} and {r["customsCode"] for r in usa} == {"C00"}
    assert {r["motCode"] for r in usa} == {"0"} and {r["aggrLevel"] for r in usa} == {"6"}
    assert all(len(r["cmdCode"]) == 6 and r["period"].startswith("2022") for r in usa)
    assert {"643", "112", "398"} <= {r["partnerCode"] for r in usa}  # RUS, BLR, KAZ
    _, kaz = _csv_rows(files.comtrade_files[0].parent / "KAZ_2023_M.csv")
    exports = [r for r in kaz if r["flowCode"] == "X"]
    imports = [r for r in kaz if r["flowCode"] == "M"]
    assert {r["partnerISO"] for r in exports} <= {"RUS", "BLR"}
    assert {r["partnerISO"] for r in imports} <= set(demo.COMEXT_ORIGINS + demo.COMTRADE_ORIGINS)
    assert {"FRA", "USA"} & {r["partnerISO"] for r in imports}
    assert all(r["cifvalue"] == r["primaryValue"] and r["fobvalue"] == "" for r in imports)
    assert {r["partnerCode"] for r in imports if r["partnerISO"] == "FRA"} <= {"251"}


def test_ecb_rates_file_in_the_ecb_csv_layout(small_world):
    header, rows = _csv_rows(small_world["files"].ecb_file)
    assert small_world["files"].ecb_file.relative_to(small_world["dir"]).as_posix() == "ecb/EXR_M.USD.EUR.SP00.A.csv"
    assert header[:8] == ["KEY", "FREQ", "CURRENCY", "CURRENCY_DENOM", "EXR_TYPE", "EXR_SUFFIX", "TIME_PERIOD", "OBS_VALUE"]
    assert len(rows) == 72 and rows[0]["TIME_PERIOD"] == "2019-01" and rows[-1]["TIME_PERIOD"] == "2024-12"
    assert {r["KEY"] for r in rows} == {"EXR.M.USD.EUR.SP00.A"}
    values = [float(r["OBS_VALUE"]) for r in rows]
    assert all(1.04 <= v <= 1.21 for v in values)
    assert max(abs(a - b) for a, b in zip(values, values[1:])) < 0.03  # smooth


def test_usd_values_are_the_eur_values_at_the_written_rates(small_world):
    """A route's mirror: the transit's imports (USD, CIF) sit about 6% above the origin's exports (EUR) times the rate."""
    con = small_world["con"]
    rates = {month: float(r["OBS_VALUE"]) for month, r in
             ((r["TIME_PERIOD"], r) for r in _csv_rows(small_world["files"].ecb_file)[1])}
    rows = con.execute("""
        SELECT strftime(e.period, '%Y-%m'), sum(e.value), any_value(m.value)
        FROM trade_flows e JOIN trade_flows m
          ON m.reporter_iso3 = e.partner_iso3 AND m.partner_iso3 = e.reporter_iso3 AND m.period = e.period
         AND m.flow = 'import' AND m.product_code = substr(e.product_code, 1, 6)
        WHERE e.flow = 'export' AND e.currency = 'EUR' AND e.period >= DATE '2022-01-01'
        GROUP BY e.period, e.reporter_iso3, e.partner_iso3, m.product_code""").fetchall()
    assert len(rows) > 200
    ratios = sorted(usd / (eur * rates[month]) for month, eur, usd in rows if eur > 10_000)
    median = ratios[len(ratios) // 2]
    assert 1.03 < median < 1.09


# ------------------------------------------------------------------------------------------ loading


def test_seed_warehouse_loads_every_row_for_every_country(small_world):
    con, files = small_world["con"], small_world["files"]
    assert warehouse.row_count(con) == files.rows == demo.generate_frame(scale=SMALL).height
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0
    assert con.execute("SELECT DISTINCT source FROM trade_flows").fetchall() == [("demo",)]
    assert all(r.status == "ok" for r in files.loaded)
    calls = small_world["calls"]
    assert len(calls) == len(files.data_files) and calls[-1][:2] == (len(calls), len(calls))
    reporters = {r[0] for r in con.execute("SELECT DISTINCT reporter_iso3 FROM trade_flows").fetchall()}
    partners = {r[0] for r in con.execute("SELECT DISTINCT partner_iso3 FROM trade_flows").fetchall()}
    key = demo.read_answer_key(small_world["dir"])
    assert set(key["origins"]) <= reporters
    assert set(key["transits"]) <= reporters and set(key["transits"]) <= partners
    assert set(key["controls"]) <= partners and not set(key["controls"]) & reporters
    assert {"RUS", "BLR"} <= partners and "RUS" not in reporters
    currencies = dict(con.execute("SELECT reporter_iso3, any_value(currency) FROM trade_flows GROUP BY ALL").fetchall())
    assert currencies["DEU"] == "EUR" and currencies["USA"] == "USD" and currencies["KAZ"] == "USD"


def test_ecb_rates_are_loaded_when_the_ecb_loader_exists(small_world):
    import importlib.util

    if importlib.util.find_spec("tradewatch.flows.sources.ecb") is None:
        pytest.skip("no ECB loader (tradewatch.flows.sources.ecb) in this tree yet")
    rows = small_world["con"].execute("SELECT strftime(min(period), '%Y-%m'), count(*), min(rate), max(rate) FROM fx_rates").fetchone()
    assert rows[0] == "2019-01" and rows[1] == 72 and 1.04 <= rows[2] <= rows[3] <= 1.21


def test_answer_key_is_never_written_inside_the_warehouse(small_world):
    con = small_world["con"]
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert not any("answer" in t or "demo" in t for t in tables)
    files = [r[0] for r in con.execute("SELECT DISTINCT file FROM loads").fetchall()]
    assert files and not any("answer" in f or "manifest" in f for f in files)
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    assert small_world["files"].answer_key.parent == small_world["dir"]
    assert not small_world["db"].parent.joinpath("answer_key.json").exists()


def test_seed_warehouse_reuses_a_written_world_and_loads_only_data_files(small_world, tmp_path, monkeypatch):
    from tradewatch.flows import ingest

    loaded = []
    monkeypatch.setattr(ingest, "load_file", lambda con, path, source_label=None: loaded.append((path, source_label)))
    monkeypatch.setattr(demo, "_load_rates", lambda con, path: loaded.append((path, "rates")))
    monkeypatch.setattr(demo, "write_world", lambda *a, **k: pytest.fail("the world was written again"))
    files = demo.seed_warehouse(object(), small_world["dir"], scale=SMALL)
    assert files.rows == small_world["files"].rows
    assert [p for p, _ in loaded] == [*small_world["files"].data_files, small_world["files"].ecb_file]
    assert {label for _, label in loaded} == {"demo", "rates"}
    assert not any(p.name in ("answer_key.json", "manifest.json") for p, _ in loaded)


def test_seed_warehouse_rewrites_when_seed_or_scale_differ(tmp_path, monkeypatch):
    from tradewatch.flows import ingest

    monkeypatch.setattr(ingest, "load_file", lambda con, path, source_label=None: None)
    monkeypatch.setattr(demo, "_load_rates", lambda con, path: None)
    first = demo.seed_warehouse(object(), tmp_path / "w", seed=1, scale=SMALL)
    second = demo.seed_warehouse(object(), tmp_path / "w", seed=2, scale=SMALL)
    assert demo.read_answer_key(tmp_path / "w")["seed"] == 2
    assert json.loads((tmp_path / "w" / "manifest.json").read_text())["seed"] == 2
    assert first.rows != second.rows


# ------------------------------------------------------------------------------------------ the signals


def _hs6_monthly(con, reporter: str, partner: str, flow: str, codes: list[str]) -> dict[dt.date, float]:
    marks = ", ".join("?" for _ in codes)
    return dict(con.execute(
        f"""SELECT period, sum(value) FROM trade_flows WHERE reporter_iso3 = ? AND partner_iso3 = ? AND flow = ?
            AND substr(product_code, 1, 6) IN ({marks}) GROUP BY period""",
        [reporter, partner, flow, *codes]).fetchall())


def _mean(series: dict[dt.date, float], first: dt.date, last: dt.date) -> float:
    values = [v for period, v in series.items() if first <= period <= last]
    return sum(values) / max(1, len(values))


def _months_after(label: str, months: int) -> dt.date:
    year, month = map(int, label.split("-"))
    index = year * 12 + month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def test_planted_routes_are_visible_in_the_loaded_data(small_world):
    con = small_world["con"]
    key = demo.read_answer_key(small_world["dir"])
    assert key["event"] == "2022-03" and key["routes"]
    for route in key["routes"]:
        assert set(route) >= {"origin_iso3", "transit_iso3", "target_iso3", "product_code", "start", "difficulty"}
        assert route["target_iso3"] == "RUS" and "2022-04" <= route["start"] <= "2023-06"
        o, t, code = route["origin_iso3"], route["transit_iso3"], route["product_code"]
        # 2022-01 … the month before the start: HS 2022 codes throughout, so split codes compare too.
        baseline = (dt.date(2022, 1, 1), _months_after(route["start"], -1))
        recent = (_months_after(route["start"], route["ramp_months"]), dt.date(2024, 12, 1))
        exports = _hs6_monthly(con, o, t, "export", [code])
        growth = _mean(exports, *recent) / _mean(exports, *baseline)
        assert growth > (3.0 if route["difficulty"] == "clear" else 1.4), (route, growth)
        mirror = _hs6_monthly(con, t, o, "import", [code])
        assert _mean(mirror, *recent) > 1.3 * _mean(mirror, *baseline), route
        onward = _hs6_monthly(con, t, "RUS", "export", [code])
        assert _mean(onward, *recent) > 1.3 * _mean(onward, dt.date(2021, 1, 1), dt.date(2022, 2, 1)), route
        assert _mean(exports, *recent) - _mean(exports, *baseline) > 20_000  # material, in EUR or USD


def test_coalition_exports_of_chpl_goods_to_russia_collapse_after_the_event(small_world):
    con = small_world["con"]
    key = demo.read_answer_key(small_world["dir"])
    splits = demo.hs2022_to_hs2017()
    codes = sorted(set(demo.chpl_codes()) | {splits[c] for c in demo.chpl_codes() if c in splits})
    marks = ", ".join("?" for _ in codes)
    origins = key["origins"]
    for target in ("RUS", "BLR"):
        before, after = con.execute(f"""
            SELECT sum(value) FILTER (WHERE period BETWEEN DATE '2021-01-01' AND DATE '2021-12-01'),
                   sum(value) FILTER (WHERE period BETWEEN DATE '2023-01-01' AND DATE '2023-12-01')
            FROM trade_flows WHERE partner_iso3 = ? AND flow = 'export'
              AND reporter_iso3 IN ({", ".join("?" for _ in origins)}) AND substr(product_code, 1, 6) IN ({marks})""",
            [target, *origins, *codes]).fetchone()
        assert before > 1e6
        assert after < 0.15 * before, (target, before, after)
    # …while the same origins' exports to the controls do not collapse.
    controls = key["controls"]
    before, after = con.execute(f"""
        SELECT sum(value) FILTER (WHERE year(period) = 2021), sum(value) FILTER (WHERE year(period) = 2023)
        FROM trade_flows WHERE partner_iso3 IN ({", ".join("?" for _ in controls)}) AND flow = 'export'""",
        controls).fetchone()
    assert after > 0.7 * before


def test_hs_2022_split_codes_change_at_2022_01(small_world):
    con = small_world["con"]
    key = demo.read_answer_key(small_world["dir"])
    splits = [c for c in key["confounders"] if c["kind"] == "hs_split"]
    assert {"product_code": "854149", "hs2017_code": "854140"}.items() <= next(
        c for c in splits if c["product_code"] == "854149").items()
    for entry in splits:
        old = con.execute("SELECT min(period), max(period), count(*) FROM trade_flows WHERE substr(product_code, 1, 6) = ?",
                          [entry["hs2017_code"]]).fetchone()
        new = con.execute("SELECT min(period), max(period), count(*) FROM trade_flows WHERE substr(product_code, 1, 6) = ?",
                          [entry["product_code"]]).fetchone()
        assert old[2] > 0 and new[2] > 0, entry
        assert old[1] == dt.date(2021, 12, 1) and new[0] == dt.date(2022, 1, 1), entry
    # In Comext the CN8 codes change with them.
    cn8 = con.execute("""SELECT DISTINCT product_code FROM trade_flows WHERE product_level = 8
                         AND (product_code LIKE '854140%' OR product_code LIKE '854149%')""").fetchall()
    assert {c[0][:6] for c in cn8} == {"854140", "854149"}


def test_confounders_are_recorded_and_present_in_the_data():
    frame, plan = demo._generate(demo.DEFAULT_SEED, SMALL)
    hs6 = frame.with_columns(hs6=pl.col("product_code").str.slice(0, 6))

    def monthly(reporter, partner, flow, code) -> dict[dt.date, float]:
        rows = (hs6.filter((pl.col("reporter_iso3") == reporter) & (pl.col("partner_iso3") == partner)
                           & (pl.col("flow") == flow) & (pl.col("hs6") == code))
                .group_by("period").agg(pl.col("value").sum()))
        return dict(rows.iter_rows())

    by_kind: dict[str, list[dict]] = {}
    for entry in plan.confounders:
        by_kind.setdefault(entry["kind"], []).append(entry)
    routes = {(r["origin_iso3"], r["transit_iso3"], r["product_code"]) for r in plan.routes}
    for entry in plan.confounders:
        if "transit_iso3" in entry and "origin_iso3" in entry:
            assert (entry["origin_iso3"], entry["transit_iso3"], entry["product_code"]) not in routes

    tiny = by_kind["tiny_base"][0]
    series = monthly(tiny["origin_iso3"], tiny["transit_iso3"], "export", tiny["product_code"])
    assert _mean(series, dt.date(2021, 1, 1), dt.date(2022, 2, 1)) < 400
    assert 5_000 < _mean(series, dt.date(2024, 1, 1), dt.date(2024, 12, 1)) < 80_000

    spike = by_kind["one_month_spike"][0]
    series = monthly(spike["origin_iso3"], spike["transit_iso3"], "export", spike["product_code"])
    year, month = map(int, spike["period"].split("-"))
    others = sorted(v for p, v in series.items() if p != dt.date(year, month, 1) and p.year >= 2022)
    assert series[dt.date(year, month, 1)] > 10 * others[len(others) // 2]
    assert others[-1] < 3 * others[len(others) // 2]

    gaps = by_kind["missing_months"][0]
    # Before 2022 a code that changed at the HS revision is reported under its HS 2017 predecessor.
    from tradewatch.flows.core import products

    series = monthly(gaps["origin_iso3"], gaps["transit_iso3"], "export", gaps["product_code"])
    for old, news in products.hs2017_to_hs2022().items():
        if gaps["product_code"] in news:
            for month, value in monthly(gaps["origin_iso3"], gaps["transit_iso3"], "export", old).items():
                series[month] = series.get(month, 0.0) + value
    missing = {dt.date(*map(int, m.split("-")), 1) for m in gaps["missing_months"]}
    assert len(missing) >= 4 and not missing & set(series)
    assert _mean(series, dt.date(2023, 1, 1), dt.date(2024, 12, 1)) < 2 * _mean(series, dt.date(2020, 1, 1), dt.date(2021, 12, 1))

    boom = by_kind["demand_boom"][0]
    for partner in plan.controls[:3]:
        series = monthly(boom["origin_iso3"], partner, "export", boom["product_code"])
        assert _mean(series, dt.date(2024, 1, 1), dt.date(2024, 12, 1)) > 2 * _mean(series, dt.date(2021, 1, 1), dt.date(2021, 12, 1))

    belarus = by_kind["belarus"][0]
    series = monthly("BLR", "RUS", "export", belarus["product_code"])
    assert _mean(series, dt.date(2024, 1, 1), dt.date(2024, 12, 1)) > 1.5 * _mean(series, dt.date(2021, 1, 1), dt.date(2021, 12, 1))

    growth = by_kind["transit_growth"][0]
    to_china = monthly(growth["origin_iso3"], "CHN", "export", growth["product_code"])
    to_russia = monthly(growth["origin_iso3"], "RUS", "export", growth["product_code"])
    assert _mean(to_china, dt.date(2024, 1, 1), dt.date(2024, 12, 1)) > 1.8 * _mean(to_china, dt.date(2019, 1, 1), dt.date(2020, 12, 1))
    if to_russia:
        assert _mean(to_russia, dt.date(2023, 1, 1), dt.date(2024, 12, 1)) > 0.5 * _mean(to_russia, dt.date(2021, 1, 1), dt.date(2021, 12, 1))


def test_planted_routes_move_to_other_restricted_goods_when_the_chpl_pairs_run_out():
    # A world scaled for 30 M rows or more has no more CHPL codes than a small one: its routes' (origin,
    # product) pairs must come from the other restricted goods then, not fail "the world is too small".
    from types import SimpleNamespace

    import numpy as np

    from tradewatch.detect import demo as world

    st = SimpleNamespace(rng=np.random.default_rng(3), w=SimpleNamespace(n_o=2), used_op=set())
    chpl, restricted = np.array([0]), np.array([0, 5, 6])
    first = {world._take_op(st, chpl, fallback=restricted) for _ in range(2)}
    assert first == {(0, 0), (1, 0)}
    later = {world._take_op(st, chpl, fallback=restricted) for _ in range(4)}
    assert later == {(0, 5), (1, 5), (0, 6), (1, 6)}
    with pytest.raises(ValueError, match="too small"):
        world._take_op(st, chpl, fallback=restricted)
    with pytest.raises(ValueError, match="too small"):
        world._take_op(SimpleNamespace(rng=np.random.default_rng(3), w=SimpleNamespace(n_o=1), used_op={(0, 0)}), chpl)
