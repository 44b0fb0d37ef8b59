"""A benchmark world of real Comext shape, written month by month: 27 EU reporters, about 240 partners,
about 9,000 CN8 codes over real HS chapters, sparse (a few per cent of reporter x partner x product cells
hold a row), heavy-tailed values, imports and exports, about 4.9 M rows a month.

Each month is drawn from one *universe* of possible keys (reporter, partner, product, flow) built once per
world: a key belongs to it with a probability that follows the sizes of its reporter, partner and product
(gravity), and is present in a month with its own persistence. So memory holds the universe (a few hundred
MB at real size) and one month, whatever the number of months. A month is written either

- straight into canonical `trade_flows` rows of a tradewatch warehouse (`write_warehouse_month`: what a
  Comext load stores, source 'comext', EUR, CN8, plus a small Comtrade-like set, source 'comtrade', USD,
  HS-6, of the transits' exports to Russia, which Comext does not hold), or
- as a Comext bulk file `full_v2_YYYYMM.7z` in the 18-column layout of `benchmarks/ingest.py`
  (`write_7z_month`), one row per statistical procedure (values split in whole euros, so the loader's
  totals equal the canonical rows exactly).

After the event (2022-03) trade with Russia and Belarus falls, the transits' trade with the EU booms as a
whole, and a few hundred planted EU -> transit routes of restricted goods boom far more while their
onward Comtrade leg to Russia grows. Nothing here is imported from tradewatch's detection: the country
groups, the event month and the restricted-goods list are this generator's own.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from ingest import EU27, HEADER  # benchmarks/ is on sys.path when a script here runs

DATA = Path(__file__).resolve().parents[1] / "data"
ANNEX_CSV = DATA / "eu_833_2014_cn8_2022-10-07.csv"  # real CN8 codes, read as input data

# This generator's own country groups (not tradewatch's): the target, the co-target, the transits
# whose EU trade booms after the event, and the far partners whose trade grows at the ordinary rate.
TARGET, CO_TARGET = "RU", "BY"
TRANSITS = ("KZ", "KG", "AM", "GE", "UZ", "TR", "AE", "CN", "HK", "MN", "AZ", "TJ", "RS", "IN")
EVENT = date(2022, 3, 1)
END = date(2023, 12, 1)  # the last month of every N-month world
# Gravity weights of the largest partners (roughly their share of EU trade); the rest are drawn.
BIG_PARTNERS = {"US": 60, "CN": 55, "GB": 45, "CH": 30, "RU": 25, "TR": 18, "JP": 14, "KR": 12, "NO": 12,
                "IN": 9, "BR": 7, "CA": 7, "MX": 6, "SG": 6, "AE": 6, "AU": 5, "ZA": 5, "SA": 5, "TW": 5,
                "HK": 5, "UA": 5, "IL": 4, "MA": 4, "VN": 4, "TH": 3, "MY": 3, "EG": 3, "ID": 3, "KZ": 3,
                "BY": 3, "RS": 3, "DZ": 3, "AR": 2, "CL": 2, "NG": 2, "PH": 2, "GE": 1, "UZ": 1}
# Reporter sizes (roughly shares of EU trade).
REPORTER_WEIGHTS = {"DE": 100, "NL": 55, "FR": 45, "IT": 42, "BE": 35, "ES": 28, "PL": 25, "IE": 14, "CZ": 14,
                    "AT": 13, "SE": 12, "HU": 9, "DK": 9, "SK": 7, "RO": 7, "FI": 6, "PT": 6, "SI": 4, "GR": 4,
                    "BG": 3, "LT": 3, "HR": 2, "LU": 2, "EE": 1.5, "LV": 1.5, "CY": 0.8, "MT": 0.6}
UNINHABITED = {"AQ", "BV", "HM", "TF", "UM", "PN", "IO", "CX", "CC", "NF", "GS", "SJ", "AX"}
CONFIDENTIAL = ("QP", "QQ", "QU", "QV")
PRESENCE = 0.97 * 0.7 + 0.45 * 0.3  # mean share of the universe's keys present in a month
UNITS = ("NAR", "P/ST", "L", "M2", "PA")


@dataclass
class World:
    """One world's dimensions; `build` makes its universe in `con` (a DuckDB connection)."""

    rows_per_month: int = 4_900_000
    products: int = 9_000
    seed: int = 17
    stats: dict = field(default_factory=dict)

    def build(self, con) -> None:
        started = time.perf_counter()
        con.execute("SET preserve_insertion_order = false")
        rep, par, prod = _reporters(), _partners(self.seed), _products(self.products, self.seed)
        import pyarrow as pa

        for name, table in (("rep", rep), ("par", par), ("prod", prod)):
            con.register(f"_{name}", pa.table(table))
        for name in ("rep", "par", "prod"):
            con.execute(f"CREATE OR REPLACE TEMP TABLE hw_{name} AS SELECT * FROM _{name}")
            con.unregister(f"_{name}")
        scale = _calibrate(rep["w"], par["w"], prod["w"], self.rows_per_month / PRESENCE / 2)
        # A key is in the universe with probability min(1, scale * w_r * w_p * w_c), each flow drawn apart.
        con.execute(f"""CREATE OR REPLACE TEMP TABLE hw_universe AS
            SELECT r.ri, p.pi, c.ci, f.flow, r.a2 AS r2, r.a3 AS r3, p.a2 AS p2, p.a3 AS p3, p.kind, c.code,
                   c.restricted, c.unit_value, c.unit,
                   10.5 + 0.55 * ln({scale} * r.w * p.w * c.w) + 1.6 * {_normal('r.ri, p.pi, c.ci, f.flow', self.seed)}
                       AS log_base,
                   CASE WHEN hash(r.ri, p.pi, c.ci, f.flow, {self.seed}, 5) % 10 < 7 THEN 0.97 ELSE 0.45 END AS presence
            FROM hw_rep r, hw_par p, hw_prod c, (VALUES (1), (2)) f(flow)
            WHERE r.a2 <> p.a2
              AND hash(r.ri, p.pi, c.ci, f.flow, {self.seed}) / 18446744073709551615.0 < {scale} * r.w * p.w * c.w""")
        self.stats = {"universe_keys": con.execute("SELECT count(*) FROM hw_universe").fetchone()[0],
                      "reporters": len(rep["a2"]), "partners": len(par["a2"]), "products": len(prod["code"]),
                      "build_s": round(time.perf_counter() - started, 2)}


def _normal(keys: str, seed: int, salt: int = 0) -> str:
    """SQL for a standard normal drawn from a hash of `keys` (Box-Muller)."""
    u1 = f"((hash({keys}, {seed}, {salt}, 1) % 1000000 + 0.5) / 1000000.0)"
    u2 = f"((hash({keys}, {seed}, {salt}, 2) % 1000000) / 1000000.0)"
    return f"(sqrt(-2 * ln({u1})) * cos(2 * pi() * {u2}))"


def _reporters() -> dict:
    import pycountry

    a3 = {c.alpha_2: c.alpha_3 for c in pycountry.countries}
    codes = list(EU27)  # Greece as GR, as in the bulk files
    return {"ri": list(range(len(codes))), "a2": codes, "a3": [a3[c] for c in codes],
            "w": [REPORTER_WEIGHTS[c] / 100 for c in codes]}


def _partners(seed: int) -> dict:
    """About 240 partners: every inhabited ISO country (the EU members too: intra-EU trade) and four
    confidential Q-codes, stored as 'Q?Q' like tradewatch's Comext reader does."""
    import pycountry

    rng = np.random.default_rng(seed)
    countries = sorted((c.alpha_2, c.alpha_3) for c in pycountry.countries if c.alpha_2 not in UNINHABITED)
    rows = countries + [(q, q + "Q") for q in CONFIDENTIAL]
    weights, kinds = [], []
    for a2, _ in rows:
        if a2 in EU27:
            weights.append(float(rng.lognormal(2.5, 0.8)))
            kinds.append("eu")
        elif a2 in BIG_PARTNERS:
            weights.append(float(BIG_PARTNERS[a2]))
        else:
            weights.append(float(rng.lognormal(-1.0, 1.3)))
        if a2 not in EU27:
            kinds.append("target" if a2 == TARGET else "co_target" if a2 == CO_TARGET
                         else "transit" if a2 in TRANSITS else "q" if a2 in CONFIDENTIAL else "other")
    top = max(weights)
    return {"pi": list(range(len(rows))), "a2": [r[0] for r in rows], "a3": [r[1] for r in rows],
            "w": [w / top for w in weights], "kind": kinds}


def _products(count: int, seed: int) -> dict:
    """`count` CN8 codes: the real codes of the EU's Russia annexes (restricted) and codes drawn in the
    real HS headings of every chapter 01-97 (77 is reserved), Zipf-weighted by a drawn rank."""
    rng = np.random.default_rng(seed + 1)
    with ANNEX_CSV.open(encoding="utf-8") as handle:
        real = sorted({row[0] for row in csv.reader(line for line in handle if not line.startswith("#"))
                       if row and row[0].isdigit() and len(row[0]) == 8})
    restricted_share = min(1.0, 0.25 * count / max(len(real), 1))
    chosen = sorted(rng.choice(real, size=int(len(real) * restricted_share), replace=False)) if count < 4 * len(real) \
        else real
    codes, seen = list(chosen), set(chosen)
    chapters = [c for c in range(1, 98) if c != 77]
    headings = sorted({code[:4] for code in real})
    while len(codes) < count:
        if rng.random() < 0.6:
            heading = headings[rng.integers(len(headings))]
        else:
            heading = f"{chapters[rng.integers(len(chapters))]:02d}{rng.integers(1, 100):02d}"
        code = f"{heading}{rng.integers(10, 100):02d}{rng.choice([0, 10, 20, 30, 40, 50, 80, 90, 99]):02d}"
        if code not in seen:
            seen.add(code)
            codes.append(code)
    codes = sorted(codes[:count])
    ranks = rng.permutation(len(codes)) + 1
    weights = 1.0 / ranks ** 0.6
    restricted = [code in set(chosen) for code in codes]
    return {"ci": list(range(len(codes))), "code": codes, "w": list(weights / weights.max()),
            "restricted": restricted, "unit_value": list(np.exp(rng.normal(1.5, 1.5, len(codes)))),
            "unit": [UNITS[i % len(UNITS)] if rng.random() < 0.3 else "" for i in range(len(codes))]}


def _calibrate(wr, wp, wc, target: float) -> float:
    """The scale s with sum over reporter x partner x product of min(1, s w_r w_p w_c) = target (bisection
    on log s over a histogram of the product weights, so it costs milliseconds at any size)."""
    pair = np.outer(np.asarray(wr), np.asarray(wp)).ravel()
    counts, edges = np.histogram(np.log(np.asarray(wc)), bins=400)
    centres = np.exp((edges[:-1] + edges[1:]) / 2)
    low, high = -20.0, 40.0
    for _ in range(60):
        mid = (low + high) / 2
        expected = (np.minimum(1.0, math.exp(mid) * np.outer(pair, centres)) * counts).sum()
        low, high = (mid, high) if expected < target else (low, mid)
    return math.exp((low + high) / 2)


# --- one month ---------------------------------------------------------------------------------------

def months(count: int, end: date = END) -> list[date]:
    """The `count` months ending at `end`, oldest first."""
    index = end.year * 12 + end.month - 1
    return [date((index - k) // 12, (index - k) % 12 + 1, 1) for k in range(count - 1, -1, -1)]


def month_sql(world: World, period: date, revision: int = 0) -> str:
    """SQL for one month's keys and values (whole euros): the keys of the universe present this month,
    seasonal, trending, noisy, with the event's effects. `revision` > 0 raises 3% of the values by a
    tenth, as a revised release of the same month would."""
    t = (period.year - 2017) * 12 + period.month - 1
    after = period >= EVENT
    m, s = period.month, world.seed
    season = f"(1 + 0.15 * sin(2 * pi() * ({m} + u.ci % 12) / 12.0))"
    event = "1.0"
    if after:
        event = f"""CASE
            WHEN u.kind = 'target' THEN CASE WHEN u.restricted AND u.flow = 2 THEN 0.08 ELSE 0.6 END
            WHEN u.kind = 'co_target' THEN CASE WHEN u.restricted AND u.flow = 2 THEN 0.15 ELSE 0.7 END
            WHEN u.kind = 'transit' THEN 1.45 * CASE WHEN u.restricted AND u.flow = 2
                 AND hash(u.ri, u.pi, u.ci, {s}, 9) % 40 = 0 THEN 5.0 ELSE 1.0 END
            ELSE 1.0 END"""
    bump = f"CASE WHEN hash(u.ri, u.pi, u.ci, u.flow, {s}, {revision}, 7) % 100 < 3 THEN 1.1 ELSE 1.0 END" \
        if revision else "1.0"
    return f"""
        SELECT u.*, greatest(1, round(exp(u.log_base + 0.35 * {_normal('u.ri, u.pi, u.ci, u.flow', s, t + 100)})
                                      * {season} * (1 + 0.004 * {t}) * {event} * {bump}))::BIGINT AS v
        FROM hw_universe u
        WHERE hash(u.ri, u.pi, u.ci, u.flow, {s}, {t}, 3) / 18446744073709551615.0 < u.presence"""


def write_warehouse_month(con, world: World, period: date, *, revision: int = 0, schema_name: str = "") -> int:
    """Insert one month of canonical rows (Comext: EUR, CN8; Comtrade: transits' exports to Russia, USD,
    HS-6) into `trade_flows` of `con` (or of the attached database `schema_name`), with the `loads` and
    `load_partitions` rows a load of them would record. Returns the Comext rows written."""
    db = f"{schema_name}." if schema_name else ""
    load_id, comtrade_id = (con.execute(f"SELECT nextval('{db}load_ids')").fetchone()[0] for _ in range(2))
    con.execute(f"""CREATE OR REPLACE TEMP TABLE hw_month AS
        SELECT 'comext' AS source, 'M' AS freq, DATE '{period}' AS period, r3 AS reporter_iso3, p3 AS partner_iso3,
               CASE flow WHEN 1 THEN 'import' ELSE 'export' END AS flow, code AS product_code, 8 AS product_level,
               v::DOUBLE AS value, 'EUR' AS currency, greatest(1, round(v / unit_value))::DOUBLE AS net_weight_kg,
               CASE WHEN unit <> '' THEN greatest(1, round(v / unit_value / 3))::DOUBLE END AS quantity,
               NULLIF(unit, '') AS quantity_unit, {load_id}::BIGINT AS load_id
        FROM ({month_sql(world, period, revision)})""")
    con.execute(f"""INSERT INTO hw_month {_comtrade_sql(world, period, comtrade_id)}""")
    con.execute(f"INSERT INTO {db}trade_flows BY NAME SELECT * FROM hw_month")
    _record_loads(con, db, period)
    rows = con.execute("SELECT count(*) FROM hw_month WHERE source = 'comext'").fetchone()[0]
    con.execute("DROP TABLE hw_month")
    return int(rows)


def _comtrade_sql(world: World, period: date, load_id: int) -> str:
    """The transits' monthly exports to Russia at HS-6, in USD (what `ingest comtrade` would store): each
    transit's HS-6 codes it already trades with the EU, growing after the event (planted routes more)."""
    t = (period.year - 2017) * 12 + period.month - 1
    s = world.seed
    boom = "1.0"
    if period >= EVENT:
        boom = "CASE WHEN bool_or(restricted) THEN 2.5 ELSE 1.6 END"
    return f"""
        SELECT 'comtrade', 'M', DATE '{period}', p3, 'RUS', 'export', substr(code, 1, 6), 6,
               greatest(1, round(1.1 * sum(exp(log_base)) * 0.08 * {boom}
                        * exp(0.3 * {_normal('min(pi), substr(code, 1, 6)', s, t + 300)})))::DOUBLE,
               'USD', NULL, NULL, NULL, {load_id}::BIGINT
        FROM hw_universe WHERE kind = 'transit' AND flow = 2
        GROUP BY p3, substr(code, 1, 6)
        HAVING hash(p3, substr(code, 1, 6), {s}, {t}, 4) % 10 < 8"""


def _record_loads(con, db: str, period: date) -> None:
    con.execute(f"""INSERT INTO {db}loads BY NAME
        SELECT any_value(load_id) AS load_id, source, freq, period, count(DISTINCT reporter_iso3)::INTEGER AS reporters,
               CASE source WHEN 'comext' THEN 'full_v2_{period:%Y%m}.7z' ELSE 'comtrade_{period:%Y%m}.csv' END AS file,
               NULL AS checksum, count(*) AS rows, sum(value) AS value_sum, any_value(currency) AS currency,
               0 AS quarantined, now()::TIMESTAMP AS started_at, now()::TIMESTAMP AS finished_at, 'ok' AS status,
               'benchmarks/history_world.py' AS message
        FROM hw_month GROUP BY source, freq, period""")
    con.execute(f"""INSERT INTO {db}load_partitions BY NAME
        SELECT DISTINCT load_id, source, freq, period, reporter_iso3 FROM hw_month""")


def write_7z_month(con, world: World, period: date, folder: Path, *, revision: int = 0, preset: int = 0) -> tuple[Path, int]:
    """Write `folder`/full_v2_YYYYMM.7z (one full_YYYYMM.dat member, the 18 Comext columns, one row per
    statistical procedure: one key in ten has 2 or 3, its whole-euro value, kg and quantity split among
    them). LZMA2 at `preset` (0: fastest). Returns the archive and the number of keys (canonical rows)."""
    import py7zr

    folder.mkdir(parents=True, exist_ok=True)
    dat = folder / f"full_{period:%Y%m}.dat"
    con.execute(f"""COPY (
        WITH m AS ({month_sql(world, period, revision)}),
        e AS (SELECT m.*, greatest(1, round(v / unit_value))::BIGINT AS kg,
                     CASE WHEN unit <> '' THEN greatest(1, round(v / unit_value / 3))::BIGINT END AS q,
                     CASE WHEN hash(ri, pi, ci, flow, {world.seed}, 11) % 10 = 0 AND v >= 3
                          THEN 2 + hash(ri, pi, ci, flow, 12) % 2 ELSE 1 END AS parts
              FROM m),
        x AS (SELECT e.*, unnest(range(parts::BIGINT)) AS k FROM e)
        SELECT r2 AS REPORTER, p2 AS PARTNER, CASE WHEN kind = 'eu' THEN 'I' ELSE 'E' END AS TRADE_TYPE,
               code AS PRODUCT_NC, '' AS PRODUCT_SITC, '' AS PRODUCT_CPA21, '' AS PRODUCT_CPA22, '' AS PRODUCT_BEC,
               '' AS PRODUCT_BEC5, '' AS PRODUCT_SECTION, CAST(flow AS VARCHAR) AS FLOW,
               CAST(k + 1 AS VARCHAR) AS STAT_PROCEDURE, unit AS SUPPL_UNIT, '{period:%Y%m}' AS PERIOD,
               CAST({_share('v')} AS VARCHAR) AS VALUE_EUR, '' AS VALUE_NAC,
               CAST({_share('kg')} AS VARCHAR) AS QUANTITY_KG,
               coalesce(CAST({_share('q')} AS VARCHAR), '') AS QUANTITY_SUPPL_UNIT
        FROM x) TO '{dat}' (FORMAT csv, HEADER true, QUOTE '')""")
    keys = con.execute(f"SELECT count(*) FROM ({month_sql(world, period, revision)})").fetchone()[0]
    archive = folder / f"full_v2_{period:%Y%m}.7z"
    tmp = archive.with_suffix(".7z.part")
    with py7zr.SevenZipFile(tmp, "w", filters=[{"id": py7zr.FILTER_LZMA2, "preset": preset}]) as out:
        out.write(dat, dat.name)
    os.replace(tmp, archive)
    dat.unlink()
    return archive, int(keys)


def _share(column: str) -> str:
    """Part k of `parts` of a whole number: the parts sum to it exactly."""
    return f"({column} // parts + CASE WHEN k = 0 THEN {column} % parts ELSE 0 END)"


assert HEADER.count(",") == 17  # the 18-column layout this module writes
