"""Calendar months, written once: a month is the first day of it (`date`) or its 'YYYY-MM' text."""

from __future__ import annotations

import re
from datetime import date

_TEXT = re.compile(r"^(\d{4})-(\d{1,2})(?:[-T ].*)?$")


def parse_month(value: str | date) -> date:
    """'YYYY-MM' (or a longer date text such as 'YYYY-MM-DD', or a date) as the first day of its month; ValueError otherwise."""
    if isinstance(value, date):
        return value.replace(day=1)
    match = _TEXT.match(str(value).strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"{value!r} is not a month as YYYY-MM")
    return date(int(match.group(1)), int(match.group(2)), 1)


def month_or_none(value) -> date | None:
    """Like `parse_month`, but None for anything that is not a month (stored values of older runs)."""
    try:
        return parse_month(value)
    except (ValueError, TypeError):
        return None


def month_text(day: date) -> str:
    """The month of `day` as 'YYYY-MM'."""
    return f"{day.year:04d}-{day.month:02d}"


def add_months(day: date, months: int) -> date:
    """The first day of the month `months` after (or before, when negative) the month of `day`."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def months_between(first: date, last: date) -> int:
    """Number of months from `first` to `last`, both included (0 or less when `last` is before `first`)."""
    return (last.year - first.year) * 12 + last.month - first.month + 1


def month_span(first: date, last: date) -> list[date]:
    """Every month from `first` to `last`, both included, oldest first (empty when reversed)."""
    start = parse_month(first)
    return [add_months(start, i) for i in range(max(months_between(start, parse_month(last)), 0))]


def month_labels(first: str, last: str) -> list[str]:
    """Every month from `first` to `last` ('YYYY-MM'), both included, as 'YYYY-MM' texts."""
    return [month_text(day) for day in month_span(parse_month(first), parse_month(last))]


MONTH_EXPECTED = "expected a month as YYYY-MM, e.g. 2022-03"
_STRICT = re.compile(r"^(\d{4})-(\d{2})$")


def checked_month(value, where: str) -> str:
    """A user's 'YYYY-MM' (an option or a configuration key) checked strictly and returned stripped;
    InputError naming `where` otherwise. Years 1988–2100: the HS began in 1988."""
    from tradewatch.flows.core.errors import InputError

    text = value.strip() if isinstance(value, str) else ""
    match = _STRICT.match(text)
    if not match:
        raise InputError(where, MONTH_EXPECTED)
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        raise InputError(where, f"month {month} is not between 01 and 12; expected YYYY-MM")
    if not 1988 <= year <= 2100:
        raise InputError(where, f"year {year} is outside 1988-2100; expected YYYY-MM")
    return text
