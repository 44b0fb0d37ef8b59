"""The independent synthetic test worlds: API, determinism, loading through the real readers, planted routes and every family's confounder in the loaded data, and the generator's independence from the detector."""

from __future__ import annotations

import ast
import datetime as dt
import os
import re
from pathlib import Path

import pytest

from tradewatch.flows.core import products
from tradewatch.detect import worlds
from tradewatch.flows import warehouse
from tradewatch.flows.core.errors import InputError

SOURCE = Path(worlds.__file__)
# Set to sweep the loaded-world checks over other seeds (they hold for any seed, not one we tuned on).
SEED = int(os.environ.get("TRADEWATCH_TEST_WORLD_SEED", "1"))


# ------------------------------------------------------------------------------------------ fixtures


class _Seeded:
    """Worlds seeded into their own warehouses on first use, once per test module."""

    def __init__(self, root: Path):
        self.root, self.cache = root, {}

    def __call__(self, family: str, seed: int = SEED):
        if (family, seed) not in self.cache:
            folder = self.root / f"{family}-{seed}"
            folder.mkdir(parents=True)
            con = warehouse.connect(folder / "w.duckdb")
            key = worlds.seed_world(con, folder / "world", family=family, seed=seed)
            self.cache[(family, seed)] = (con, key)
        return self.cache[(family, seed)]

    def close(self):
        for con, _ in self.cache.values():
            con.close()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = tmp_path_factory.mktemp("worlds")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRADEWATCH_HOME", str(root / "home"))
        seeded = _Seeded(root)
        yield seeded
        seeded.close()


def _windows(key: dict) -> tuple[str, str]:
    """SQL conditions on `period` for the recent window (last 12 months) and the calendar-matched baseline
    (the same calendar months in the 24 months before the event)."""
    last = dt.date.fromisoformat(key["last_month"] + "-01")
    first = dt.date(last.year - 1, last.month, 1) + dt.timedelta(days=32)
    first = first.replace(day=1)
    recent = f"period BETWEEN DATE '{first}' AND DATE '{last}'"
    baseline = "period >= DATE '2020-03-01' AND period < DATE '2022-03-01'"
    return recent, baseline


def _growth(con, key: dict, where: str) -> float:
    """Recent monthly mean / calendar-matched baseline monthly mean of trade_flows rows matching `where`
    (value summed as reported; inf from a zero baseline, 0 when there is no trade in either window)."""
    recent, baseline = _windows(key)
    rec, base = con.execute(f"""
        WITH m AS (SELECT period, sum(value) AS v FROM trade_flows WHERE {where} GROUP BY period)
        SELECT (SELECT coalesce(sum(v), 0) / 12 FROM m WHERE {recent}),
               (SELECT coalesce(sum(v), 0) / 24 FROM m WHERE {baseline}
                  AND month(period) IN (SELECT month(period) FROM m WHERE {recent}))""").fetchone()
    if not base:
        return float("inf") if rec else 0.0
    return rec / base


def _in(codes) -> str:
    return "(" + ", ".join(f"'{c}'" for c in codes) + ")"


# ------------------------------------------------------------------------------------------ the API


def test_families_are_the_eight_names_in_order():
    assert worlds.FAMILIES == ("transit_boom", "sector_boom", "inflation", "fx_swing", "hub_reexport",
                               "silent_transit", "provisional", "classic")
    assert isinstance(worlds.GENERATOR_VERSION, int)


def test_unknown_family_is_refused_naming_the_option(tmp_path):
    with pytest.raises(InputError) as caught:
        worlds.write_world(tmp_path, family="volcano", seed=1)
    assert caught.value.where == "--families volcano"
    assert "expected one of" in caught.value.problem and "transit_boom" in caught.value.problem
    assert not list(tmp_path.iterdir())


def test_generator_imports_nothing_from_the_detector():
    text = SOURCE.read_text(encoding="utf-8")
    forbidden = {"config", "features", "engine", "demo", "baselines"}
    imported = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            if node.module == "tradewatch.detect":
                imported.update(f"tradewatch.detect.{alias.name}" for alias in node.names)
    assert not {name for name in imported if name.split(".")[-1] in forbidden and name.startswith("tradewatch")}
    assert not re.search(r"^\s*(from|import)\s+tradewatch\.detect\.(config|features|engine|demo|baselines)\b", text,
                         re.MULTILINE)
    assert not re.search(r"import_module\(|__import__\(", text)
    assert "countries.toml" not in text and "detect_defaults.toml" not in text


def test_same_seed_writes_identical_files_other_seed_other_parameters(tmp_path):
    first = worlds.write_world(tmp_path / "a", family="fx_swing", seed=3)
    again = worlds.write_world(tmp_path / "b", family="fx_swing", seed=3)
    other = worlds.write_world(tmp_path / "c", family="fx_swing", seed=4)
    assert first.rows == again.rows and first.rows > 0
    names = [p.relative_to(tmp_path / "a") for p in [*first.data_files, first.ecb_file, first.answer_key]]
    assert names == [p.relative_to(tmp_path / "b") for p in [*again.data_files, again.ecb_file, again.answer_key]]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    key, other_key = worlds.read_answer_key(tmp_path / "a"), worlds.read_answer_key(tmp_path / "c")
    assert key["parameters"] != other_key["parameters"]
    assert key["parameters"]["noise_sigma"] != other_key["parameters"]["noise_sigma"]
    assert first.ecb_file.read_bytes() != other.ecb_file.read_bytes()
    # Another family with the same seed is another world too.
    assert worlds.write_world(tmp_path / "d", family="inflation", seed=3).answer_key.read_text() != \
        first.answer_key.read_text()


def test_rewriting_a_folder_replaces_the_old_world(tmp_path):
    worlds.write_world(tmp_path, family="provisional", seed=5)
    files = worlds.write_world(tmp_path, family="provisional", seed=6)
    on_disk = sorted([*(tmp_path / "comext").iterdir(), *(tmp_path / "comtrade").iterdir()])
    assert on_disk == sorted(files.data_files)
    assert worlds.read_answer_key(tmp_path)["seed"] == 6


def test_answer_key_holds_routes_confounders_products_and_drawn_parameters(tmp_path):
    worlds.write_world(tmp_path, family="classic", seed=2)
    key = worlds.read_answer_key(tmp_path)
    restricted = products.restricted_hs6()
    assert key["family"] == "classic" and key["seed"] == 2 and key["event"] == "2022-03"
    assert "2023-12" <= key["last_month"] <= "2024-12"
    assert 120 <= key["parameters"]["n_products"] <= 220
    share = len(key["restricted_products"]) / len(key["products"])
    assert 0.3 <= share <= 0.55
    assert set(key["restricted_products"]) <= restricted
    assert len(set(key["restricted_products"]) & set(products.chpl())) >= 5
    assert 20 <= len(key["routes"]) <= 40
    seen = set()
    for route in key["routes"]:
        assert {"origin_iso3", "transit_iso3", "target_iso3", "product_code", "strength", "start"} <= route.keys()
        assert route["product_code"] in key["restricted_products"] and route["product_code"] in restricted
        assert route["target_iso3"] == "RUS" and route["origin_iso3"] in key["origins"]
        assert route["transit_iso3"] in key["transits"]
        assert 0.1 <= route["strength"] <= 1.0 and "2022-03" <= route["start"] <= "2022-11"
        seen.add((route["origin_iso3"], route["transit_iso3"], route["product_code"]))
    assert len(seen) == len(key["routes"])
    kinds = {c["kind"] for c in key["confounders"]}
    assert {"tiny_base", "spike", "product_boom", "reporting_gap", "hs_split", "belarus_onward"} <= kinds
    confounded = {(c.get("origin_iso3"), c.get("transit_iso3"), c.get("product_code")) for c in key["confounders"]}
    assert not confounded & seen  # no confounder is a planted route
    for name in ("noise_sigma", "cif_fob_margin", "rus_restricted_drop_min", "n_routes", "fx_level_usd_per_eur"):
        assert name in key["parameters"]
    assert 0.08 <= key["parameters"]["noise_sigma"] <= 0.3


def test_hs_codes_changed_in_2022_appear_only_as_the_classic_split(tmp_path):
    changed = {code for pair in products.correlation() for code in pair}
    for family in ("inflation", "hub_reexport"):
        key = worlds.read_answer_key(worlds.write_world(tmp_path / family, family=family, seed=8).answer_key.parent)
        assert not set(key["products"]) & changed
        assert not [r for r in key["routes"] if r["product_code"] in changed]


# ------------------------------------------------------------------------- loaded: the `all` world


def test_all_world_loads_without_quarantine_in_both_currencies(seeded):
    con, key = seeded("all")
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0
    assert {c["family"] for c in key["confounders"]} == set(worlds.FAMILIES)
    by_source = dict(con.execute("""SELECT product_level || currency, count(DISTINCT reporter_iso3)
                                    FROM trade_flows GROUP BY 1""").fetchall())
    assert set(by_source) == {"8EUR", "6USD"}
    eu = con.execute("SELECT DISTINCT reporter_iso3 FROM trade_flows WHERE currency = 'EUR'").fetchall()
    assert {r for (r,) in eu} == set(key["parameters"]["eu_origins"])
    assert con.execute("SELECT count(*) FROM fx_rates").fetchone()[0] == \
        con.execute("SELECT count(DISTINCT period) FROM trade_flows").fetchone()[0]
    assert con.execute("SELECT DISTINCT source FROM trade_flows").fetchall() == [("synthetic",)]
    # Every written line (Comext: one per CN8 key, no procedure breakdown; Comtrade: totals only) is one row.
    folder = seeded.root / f"all-{SEED}" / "world"
    lines = sum(len(p.read_text().splitlines()) - 1 for p in [*folder.glob("comext/*.dat"), *folder.glob("comtrade/*.csv")])
    assert con.execute("SELECT count(*) FROM trade_flows").fetchone()[0] == lines


def test_russia_and_belarus_report_nothing_after_2021(seeded):
    con, key = seeded("all")
    late = con.execute("""SELECT reporter_iso3, partner_iso3, flow, count(*) FROM trade_flows
                          WHERE reporter_iso3 IN ('RUS', 'BLR') AND period >= DATE '2022-01-01' GROUP BY ALL""").fetchall()
    # Only classic's confounder: Belarus's own exports to Russia.
    assert {(r, p, f) for r, p, f, _ in late} == {("BLR", "RUS", "export")}
    early = con.execute("SELECT count(*) FROM trade_flows WHERE reporter_iso3 = 'RUS'").fetchone()[0]
    assert early > 0


def test_planted_routes_rise_on_the_origin_transit_leg(seeded):
    con, key = seeded("all")
    growths = []
    for route in key["routes"]:
        growth = _growth(con, key, f"""reporter_iso3 = '{route['origin_iso3']}' AND partner_iso3 = '{route['transit_iso3']}'
                                       AND flow = 'export' AND product_code LIKE '{route['product_code']}%'""")
        growths.append(growth)
        assert growth > 1.1, route
    assert sorted(growths)[len(growths) // 2] > 1.8


def test_planted_routes_continue_to_russia_where_the_transit_reports(seeded):
    con, key = seeded("all")
    reporting = [r for r in key["routes"] if r["transit_reports"]]
    assert reporting and len(reporting) < len(key["routes"])  # `all` silences one or two transits, with routes
    rising = [_growth(con, key, f"""reporter_iso3 = '{r['transit_iso3']}' AND partner_iso3 = 'RUS' AND flow = 'export'
                                     AND product_code = '{r['product_code']}'""") > 1.2 for r in reporting]
    assert sum(rising) >= 0.8 * len(reporting)


def test_exports_of_restricted_goods_to_russia_collapse(seeded):
    con, key = seeded("all")
    eu = _in(key["parameters"]["eu_origins"])
    restricted = _in(key["restricted_products"])
    lost = _growth(con, key, f"reporter_iso3 IN {eu} AND partner_iso3 = 'RUS' AND substr(product_code, 1, 6) IN {restricted}")
    kept = _growth(con, key, f"reporter_iso3 IN {eu} AND partner_iso3 = 'RUS' AND substr(product_code, 1, 6) NOT IN {restricted}")
    assert lost < 0.45 and kept > lost * 1.5


# ------------------------------------------------------------------- loaded: each family's confounder


@pytest.mark.slow
@pytest.mark.parametrize("family", worlds.FAMILIES)
def test_every_family_seeds_and_loads_without_quarantine(seeded, family):
    con, key = seeded(family)
    assert key["family"] == family
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0
    rows = con.execute("SELECT count(*) FROM trade_flows").fetchone()[0]
    assert 100_000 <= rows <= 450_000
    assert {c["family"] for c in key["confounders"]} == {family}


def _only(key: dict, kind: str) -> list[dict]:
    return [c for c in key["confounders"] if c["kind"] == kind]


@pytest.mark.slow
def test_transit_boom_lifts_all_goods_into_the_transit_and_on_to_russia(seeded):
    con, key = seeded("transit_boom")
    origins = _in(key["origins"])
    rest = _growth(con, key, f"reporter_iso3 IN {origins} AND partner_iso3 IN {_in(key['rest_of_world'])} AND flow = 'export'")
    for boom in _only(key, "transit_boom"):
        into = _growth(con, key, f"reporter_iso3 IN {origins} AND partner_iso3 = '{boom['transit_iso3']}' AND flow = 'export'")
        assert into >= 1.3 and into >= 1.2 * rest
        onward = _growth(con, key, f"reporter_iso3 = '{boom['transit_iso3']}' AND partner_iso3 = 'RUS' AND flow = 'export'")
        assert onward >= 1.3


@pytest.mark.slow
def test_sector_boom_lifts_a_whole_chapter_without_onward_trade(seeded):
    con, key = seeded("sector_boom")
    boom = _only(key, "sector_boom")[0]
    chapter = _in(boom["products"])
    restricted = [c for c in boom["products"] if c in key["restricted_products"]]
    assert restricted and len(restricted) < len(boom["products"])
    into = _growth(con, key, f"""reporter_iso3 IN {_in(key['origins'])} AND partner_iso3 = '{boom['transit_iso3']}'
                                 AND substr(product_code, 1, 6) IN {chapter}""")
    onward = _growth(con, key, f"""reporter_iso3 = '{boom['transit_iso3']}' AND partner_iso3 = 'RUS' AND flow = 'export'
                                   AND product_code IN {chapter}""")
    assert into >= 1.8 and onward < 1.6


@pytest.mark.slow
def test_inflation_drifts_every_value_up(seeded):
    con, key = seeded("inflation")
    rate = _only(key, "inflation")[0]["rate_per_year"]
    assert 0.06 <= rate <= 0.15
    rest = _growth(con, key, f"reporter_iso3 IN {_in(key['origins'])} AND partner_iso3 IN {_in(key['rest_of_world'])}")
    assert rest >= 1.08


@pytest.mark.slow
def test_fx_swing_moves_the_euro_between_windows(seeded):
    for family, lo, hi in (("fx_swing", 0.08, 0.3), ("inflation", 0.0, 0.07)):
        con, key = seeded(family)
        recent, baseline = _windows(key)
        rec, base = con.execute(f"""SELECT avg(rate) FILTER (WHERE {recent}), avg(rate) FILTER (WHERE {baseline})
                                    FROM fx_rates""").fetchone()
        assert lo <= abs(rec / base - 1) <= hi, family


@pytest.mark.slow
def test_hub_reexport_lifts_the_hub_s_exports_to_russia_not_the_coalition_s_to_the_hub(seeded):
    con, key = seeded("hub_reexport")
    hub = _only(key, "hub_reexport")[0]
    goods = _in(hub["products"])
    out = _growth(con, key, f"reporter_iso3 = '{hub['transit_iso3']}' AND partner_iso3 = 'RUS' AND flow = 'export' AND product_code IN {goods}")
    into = _growth(con, key, f"""reporter_iso3 IN {_in(key['origins'])} AND partner_iso3 = '{hub['transit_iso3']}'
                                 AND substr(product_code, 1, 6) IN {goods}""")
    other = _growth(con, key, f"""reporter_iso3 IN {_in(key['origins'])} AND partner_iso3 = '{hub['transit_iso3']}'
                                  AND substr(product_code, 1, 6) NOT IN {goods}""")
    # The coalition's exports of the re-exported goods to the hub grow only as all its goods do.
    assert out >= 2.5 and into >= 1.0 and into <= 1.3 * other and out >= 2 * into
    assert not [r for r in key["routes"] if r["transit_iso3"] == hub["transit_iso3"]]


@pytest.mark.slow
def test_silent_transits_report_nothing_but_their_routes_count(seeded):
    con, key = seeded("silent_transit")
    silent = key["silent_transits"]
    assert 1 <= len(silent) <= 3
    assert con.execute(f"SELECT count(*) FROM trade_flows WHERE reporter_iso3 IN {_in(silent)}").fetchone()[0] == 0
    inbound = con.execute(f"SELECT count(*) FROM trade_flows WHERE partner_iso3 IN {_in(silent)}").fetchone()[0]
    assert inbound > 0
    for route in key["routes"]:
        assert route["transit_reports"] == (route["transit_iso3"] not in silent)


@pytest.mark.slow
def test_provisional_months_are_under_reported_and_one_reporter_is_late(seeded):
    con, key = seeded("provisional")
    info = _only(key, "provisional")[0]
    last = dt.date.fromisoformat(key["last_month"] + "-01")
    year_before = last.replace(year=last.year - 1)
    # The same series a year apart: the provisional last month is lower than ordinary growth explains.
    now, then = con.execute(f"""
        WITH a AS (SELECT reporter_iso3, partner_iso3, flow, product_code, value FROM trade_flows WHERE period = DATE '{last}'),
             b AS (SELECT reporter_iso3, partner_iso3, flow, product_code, value FROM trade_flows WHERE period = DATE '{year_before}')
        SELECT sum(a.value), sum(b.value) FROM a JOIN b USING (reporter_iso3, partner_iso3, flow, product_code)""").fetchone()
    assert now / then < 0.9
    late = con.execute(f"""SELECT count(*) FROM trade_flows WHERE reporter_iso3 = '{info['missing_reporter_iso3']}'
                           AND period >= DATE '{info['missing_from']}-01'""").fetchone()[0]
    assert late == 0


@pytest.mark.slow
def test_classic_confounders_are_in_the_data(seeded):
    con, key = seeded("classic")
    split = _only(key, "hs_split")[0]["codes"]
    old, new = _in({c["hs2017"] for c in split}), _in({c["hs2022"] for c in split})
    before = "period < DATE '2022-01-01'"
    assert con.execute(f"SELECT count(*) FROM trade_flows WHERE substr(product_code, 1, 6) IN {old} AND {before}").fetchone()[0] > 0
    assert con.execute(f"SELECT count(*) FROM trade_flows WHERE substr(product_code, 1, 6) IN {new} AND {before}").fetchone()[0] == 0
    assert con.execute(f"SELECT count(*) FROM trade_flows WHERE substr(product_code, 1, 6) IN {new} AND NOT {before}").fetchone()[0] > 0
    for tiny in _only(key, "tiny_base"):
        where = f"""reporter_iso3 = '{tiny['origin_iso3']}' AND partner_iso3 = '{tiny['transit_iso3']}'
                    AND product_code LIKE '{tiny['product_code']}%'"""
        assert _growth(con, key, where) >= 5
    for spike in _only(key, "spike"):
        values = dict(con.execute(f"""SELECT strftime(period, '%Y-%m'), sum(value) FROM trade_flows
            WHERE reporter_iso3 = '{spike['origin_iso3']}' AND partner_iso3 = '{spike['transit_iso3']}'
            AND product_code LIKE '{spike['product_code']}%' GROUP BY 1""").fetchall())
        others = sorted(v for m, v in values.items() if m != spike["month"])
        assert values[spike["month"]] > 3 * others[len(others) // 2]
    for gap in _only(key, "reporting_gap"):
        assert con.execute(f"""SELECT count(*) FROM trade_flows WHERE reporter_iso3 = '{gap['reporter_iso3']}'
            AND period BETWEEN DATE '{gap['first']}-01' AND DATE '{gap['last']}-01'""").fetchone()[0] == 0
    assert _growth(con, key, "reporter_iso3 = 'BLR' AND partner_iso3 = 'RUS' AND flow = 'export'") >= 1.3
