from datetime import date

import pytest

from tradewatch.flows.core import months
from tradewatch.flows.core.errors import InputError


def test_parse_accepts_month_texts_and_dates():
    assert months.parse_month("2022-03") == date(2022, 3, 1)
    assert months.parse_month("2022-03-17") == date(2022, 3, 1)
    assert months.parse_month(date(2022, 3, 17)) == date(2022, 3, 1)
    for bad in ("2022-13", "22-03", "March 2022", ""):
        with pytest.raises(ValueError):
            months.parse_month(bad)
    assert months.month_or_none("nonsense") is None and months.month_or_none(None) is None


def test_arithmetic_across_year_ends():
    assert months.add_months(date(2021, 11, 1), 3) == date(2022, 2, 1)
    assert months.add_months(date(2022, 1, 1), -1) == date(2021, 12, 1)
    assert months.months_between(date(2021, 11, 1), date(2022, 2, 1)) == 4
    assert months.months_between(date(2022, 2, 1), date(2022, 2, 1)) == 1
    assert months.month_span(date(2021, 12, 1), date(2022, 2, 1)) == [date(2021, 12, 1), date(2022, 1, 1), date(2022, 2, 1)]
    assert months.month_span(date(2022, 2, 1), date(2021, 12, 1)) == []
    assert months.month_labels("2021-11", "2022-01") == ["2021-11", "2021-12", "2022-01"]
    assert months.month_text(date(987, 4, 1)) == "0987-04"


@pytest.mark.parametrize("value,message", [
    ("2022-3", "expected a month as YYYY-MM"),
    ("2022-13", "month 13 is not between 01 and 12"),
    ("1900-01", "year 1900 is outside 1988-2100"),
    (202203, "expected a month as YYYY-MM"),
])
def test_checked_month_names_where_and_what(value, message):
    with pytest.raises(InputError) as caught:
        months.checked_month(value, "--event x")
    assert str(caught.value).startswith("--event x: ") and message in str(caught.value)
    assert months.checked_month(" 2022-03 ", "--event") == "2022-03"
