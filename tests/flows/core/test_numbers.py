import math

import polars as pl

from tradewatch.flows.core import numbers


def test_finite_treats_nan_inf_none_and_text_as_missing():
    assert numbers.finite(2) == 2.0 and numbers.finite(-0.5) == -0.5
    for missing in (None, math.nan, math.inf, -math.inf, "3", True):
        assert numbers.finite(missing) is None


def test_finite_only_nulls_non_finite_floats_and_keeps_the_rest():
    frame = pl.DataFrame({"x": [1.0, math.nan, math.inf, None], "n": [1, 2, 3, 4], "s": ["a", "b", "c", "d"]})
    out = numbers.finite_only(frame)
    assert out["x"].to_list() == [1.0, None, None, None]
    assert out["n"].to_list() == [1, 2, 3, 4] and out["s"].to_list() == ["a", "b", "c", "d"]


def test_texts():
    assert numbers.money(1_234_567.0, "EUR") == "€1.2m" and numbers.money(-2500, "USD") == "-$2.5k"
    assert numbers.money(float("nan"), "EUR") == "–" and numbers.money(None) == "–" and numbers.money(12.4) == "12"
    assert numbers.times(float("inf")) == "from zero" and numbers.times(2.0) == "×2.0"
    assert numbers.times(1234.0) == "×1,234" and numbers.times(math.nan) == "–"
    assert numbers.change(-0.8) == "-80%" and numbers.change(None) == "–"
    assert numbers.score_text(0.99996) == "1−4e-05" and numbers.score_text(0.5) == "0.500"
    assert numbers.score_text(1.0) == "1" and numbers.score_text(None) == "–"
