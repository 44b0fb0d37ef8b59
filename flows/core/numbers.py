"""Numbers as tradewatch shows and stores them, written once: what counts as missing (None, NaN, ±inf),
and the short texts of money, growth ratios, changes and scores that every output uses."""

from __future__ import annotations

import math

import polars as pl

MISSING = "–"


def finite(value) -> float | None:
    """`value` as a float when it is a finite number; None for None, NaN, ±inf and non-numbers."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def finite_only(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with NaN and ±inf floats replaced by null: JSON has no such numbers, and a growth of
    'infinity' (nothing in the baseline) reads better as 'no baseline' in every format alike."""
    floats = [name for name, dtype in frame.schema.items() if dtype.is_float()]
    if not floats:
        return frame
    return frame.with_columns(
        [pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).alias(c) for c in floats]
    )


def money(value, currency: str | None = None) -> str:
    """1234567.0, 'EUR' -> '€1.2m'; '–' for missing or non-finite values."""
    value = finite(value)
    if value is None:
        return MISSING
    symbol = {"EUR": "€", "USD": "$"}.get(currency or "", "")
    sign = "-" if value < 0 else ""
    value = abs(value)
    for limit, suffix in ((1e9, "bn"), (1e6, "m"), (1e3, "k")):
        if value >= limit:
            return f"{sign}{symbol}{value / limit:.1f}{suffix}"
    return f"{sign}{symbol}{value:.0f}"


def times(value) -> str:
    """A growth ratio as '×3.2' ('×1,234' from 100 up); 'from zero' for +inf; '–' when missing."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isinf(value) and value > 0:
        return "from zero"
    value = finite(value)
    if value is None:
        return MISSING
    return f"×{value:.1f}" if value < 100 else f"×{value:,.0f}"


def change(value) -> str:
    """A relative change as '+40%' / '-85%'; '–' when missing."""
    value = finite(value)
    return MISSING if value is None else f"{value * 100:+.0f}%"


def score_text(score) -> str:
    """A score (1 − p) as text that still tells strong routes apart: '1−4e-05' above 0.999, else 0.987."""
    if score is None:
        return MISSING
    gap = 1.0 - float(score)
    return f"1−{gap:.0e}" if 0 < gap < 1e-3 else ("1" if gap <= 0 else f"{float(score):.3f}")
