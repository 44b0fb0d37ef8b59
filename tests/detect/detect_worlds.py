"""Tiny hand-made trade worlds for detection tests: each planted behaviour is one product, so a test can say which route must (not) be flagged."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

EVENT = date(2022, 3, 1)


def months(first: date = date(2019, 1, 1), last: date = date(2023, 12, 1)) -> list[date]:
    out, current = [], first
    while current <= last:
        out.append(current)
        current = date(current.year + (current.month == 12), current.month % 12 + 1, 1)
    return out


MONTHS = months()


def season(month: date) -> float:
    """A mild seasonal pattern (August trough) shared by every series."""
    return 1.0 + 0.1 * math.sin(2 * math.pi * month.month / 12) - (0.15 if month.month == 8 else 0.0)


def wiggle(month: date, salt: int) -> float:
    """Deterministic noise of a few per cent, different per series."""
    return 1.0 + 0.04 * math.sin(month.toordinal() * 0.37 + salt)


def steady(level: float, salt: int = 0):
    return lambda m: level * season(m) * wiggle(m, salt)


def step(before: float, after: float, at: date = date(2022, 6, 1), salt: int = 0, ramp: int = 3):
    """`before` until `at`, then rising over `ramp` months to `after` (seasonal, a little noise)."""
    def value(m: date) -> float:
        if m < at:
            level = before
        else:
            k = (m.year - at.year) * 12 + m.month - at.month + 1
            level = before + (after - before) * min(1.0, k / ramp)
        return level * season(m) * wiggle(m, salt)
    return value


def sanctioned(before: float, residual: float = 0.02, salt: int = 0):
    """Exports to a sanctioned target: `before` until the event, then about `residual` of it."""
    return lambda m: (before if m < EVENT else before * residual) * season(m) * wiggle(m, salt)


class World:
    """Canonical rows under construction (trade_flows column order)."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, reporter: str, partner: str, code: str, fn, *, flow: str = "export", source: str | None = None,
            currency: str | None = None, kg_per_eur: float | None = None, only=None) -> "World":
        comext = len(code) == 8
        source = source or ("comext" if comext else "comtrade")
        currency = currency or ("EUR" if comext else "USD")
        for month in MONTHS:
            if only is not None and not only(month):
                continue
            value = fn(month)
            if value is None:
                continue
            kg = None if kg_per_eur is None else round(value * kg_per_eur, 1)
            self.rows.append((source, "M", month, reporter, partner, flow, code, len(code), round(float(value), 2),
                              currency, kg, None, None))
        return self

    def warehouse(self, path: Path):
        """A migrated warehouse at `path` holding the rows; returns the open connection."""
        from tradewatch.flows import warehouse

        import polars as pl

        from tradewatch.flows import schema

        con = warehouse.connect(path)
        if self.rows:
            frame = pl.DataFrame(self.rows, schema=list(schema.COLUMN_NAMES), orient="row", infer_schema_length=None)
            con.register("world_rows", schema.conform(frame).to_arrow())
            con.execute("INSERT INTO trade_flows BY NAME SELECT * FROM world_rows")
            con.unregister("world_rows")
        return con


def base_world() -> World:
    """DEU (Comext, EUR, CN8) exports; KAZ and BLR report exports to RUS (Comtrade, USD, HS-6).

    - 854231 DEU→KAZ: the planted diversion (×6 from mid-2022, DEU→RUS collapses, KAZ→RUS ×8).
    - 847150 DEU→ARM: a product-wide boom (×4 to ARM and to the controls BRA and MEX alike).
    - 853221 DEU→GEO: a tiny base (€100 → €20 k a month).
    - 901380 DEU→KAZ: one month thirty times the usual, otherwise flat.
    - 854149 DEU→KAZ: flat, but coded 854140 (HS 2017) before 2022.
    - 854232 DEU→BLR: ×10 while DEU→RUS falls; BLR is a co-target, never a transit.
    - 848210 DEU→UZB: steady, ordinary trade (a candidate that must not be flagged).
    """
    world = World()
    # The planted route, in two CN8 codes of the same HS-6.
    world.add("DEU", "KAZ", "85423110", step(60_000, 360_000, salt=1))
    world.add("DEU", "KAZ", "85423190", step(40_000, 240_000, salt=2))
    world.add("DEU", "RUS", "85423110", sanctioned(900_000, salt=3))
    world.add("DEU", "BRA", "85423110", steady(200_000, salt=4))
    world.add("DEU", "MEX", "85423110", steady(150_000, salt=5))
    world.add("KAZ", "RUS", "854231", step(60_000, 500_000, salt=6))
    # Product-wide boom.
    for partner, level, salt in (("ARM", 100_000, 7), ("BRA", 300_000, 8), ("MEX", 250_000, 9)):
        world.add("DEU", partner, "84715000", step(level, 4 * level, salt=salt))
    world.add("DEU", "RUS", "84715000", sanctioned(500_000, salt=10))
    world.add("KAZ", "RUS", "847150", steady(40_000, salt=11))
    # Tiny base, huge ratio.
    world.add("DEU", "GEO", "85322100", step(100, 20_000, salt=12))
    world.add("DEU", "RUS", "85322100", sanctioned(300_000, salt=13))
    world.add("DEU", "BRA", "85322100", steady(50_000, salt=14))
    # One-month spike.
    world.add("DEU", "KAZ", "90138000", lambda m: (3_000_000 if m == date(2023, 5, 1) else 100_000) * wiggle(m, 15))
    world.add("DEU", "RUS", "90138000", sanctioned(400_000, salt=16))
    world.add("DEU", "BRA", "90138000", steady(80_000, salt=17))
    # HS 2022 split: 854140 (HS 2017) became 854141-854149; this trade continues unchanged as 854149.
    world.add("DEU", "KAZ", "85414010", steady(300_000, salt=18), only=lambda m: m < date(2022, 1, 1))
    world.add("DEU", "KAZ", "85414900", steady(300_000, salt=18), only=lambda m: m >= date(2022, 1, 1))
    world.add("DEU", "RUS", "85414010", sanctioned(500_000, salt=19), only=lambda m: m < date(2022, 1, 1))
    world.add("DEU", "RUS", "85414900", sanctioned(500_000, salt=19), only=lambda m: m >= date(2022, 1, 1))
    world.add("DEU", "BRA", "85414010", steady(90_000, salt=20), only=lambda m: m < date(2022, 1, 1))
    world.add("DEU", "BRA", "85414900", steady(90_000, salt=20), only=lambda m: m >= date(2022, 1, 1))
    # Belarus: a co-target, whatever its numbers.
    world.add("DEU", "BLR", "85423200", step(100_000, 1_000_000, salt=21))
    world.add("DEU", "RUS", "85423200", sanctioned(800_000, salt=22))
    world.add("DEU", "BRA", "85423200", steady(100_000, salt=23))
    world.add("BLR", "RUS", "854232", step(50_000, 900_000, salt=24))
    # Ordinary trade.
    world.add("DEU", "UZB", "84821000", steady(200_000, salt=25))
    world.add("DEU", "RUS", "84821000", steady(300_000, salt=26))
    world.add("DEU", "BRA", "84821000", steady(150_000, salt=27))
    return world
