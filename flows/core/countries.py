"""Country codes: Eurostat alpha-2, UN M49 numeric (Comtrade, BACI) and ISO alpha-3, via pycountry plus the sources' quirks."""

from __future__ import annotations

from functools import lru_cache

import pycountry

# Eurostat uses codes ISO does not assign (Greece as EL in some datasets, Kosovo XK, Northern Ireland XI,
# Ceuta XC, Melilla XL, Serbia's old XS). Alpha-3 for those follows Eurostat/UN practice.
_EXTRA_ALPHA2 = {
    "EL": "GRC",
    "UK": "GBR",
    "XK": "XKX",
    "XI": "XIX",  # Northern Ireland (post-Brexit goods trade), kept apart from GBR
    "XC": "XCX",  # Ceuta
    "XL": "XLX",  # Melilla
    "XS": "SRB",
    "EU": "EUR",
}

# Comext partner codes beginning with Q are confidential or unallocated trade (QP high seas, QQ ship
# and aircraft stores, QR/QS stores and provisions, QU not determined, QV/QW/QX/QY/QZ secret or
# unspecified). They stay in the warehouse under a reserved alpha-3 'Q' + letter + 'Q' so totals add up. Only QM-QZ
# (ISO 3166's user-assigned range) are read so: QA is Qatar.
_Q_SUFFIX = "Q"

# UN Comtrade reports some countries under codes that are not their plain ISO numeric code.
_EXTRA_M49 = {
    "842": "USA",
    "251": "FRA",
    "381": "ITA",
    "699": "IND",
    "579": "NOR",
    "757": "CHE",
    "490": "TWN",  # Comtrade's "Other Asia, nes" is Taiwan
    "711": "ZAF",  # Southern African Customs Union (historic) reported as South Africa
    "97": "EUR",   # European Union as a reporter
    "0": "WLD",    # World
    "899": "XAN",  # Areas, nes
    "837": "XBU",  # Bunkers
    "838": "XFZ",  # Free zones
    "839": "XSE",  # Special categories
    "568": "XOE",  # Other Europe, nes
    "577": "XOA",  # Other Africa, nes
    "636": "XOR",  # Rest of America, nes
    "697": "XEN",  # Europe EFTA, nes
    "412": "XKX",  # Kosovo (Comtrade)
}

# Numeric codes for the alpha-3 codes Comtrade expects in requests where they differ from ISO.
COMTRADE_REPORTER_CODES = {"USA": "842", "FRA": "251", "ITA": "381", "IND": "699", "NOR": "579", "CHE": "757"}


def is_confidential_alpha2(code: str) -> bool:
    """QM-QZ: ISO 3166's user-assigned range, which Eurostat uses for confidential and unallocated trade
    (QP-QZ). QA is Qatar."""
    return len(code) == 2 and code[0] == "Q" and "M" <= code[1] <= "Z"


@lru_cache(maxsize=4096)
def alpha2_to_iso3(code: str) -> str | None:
    """Eurostat/ISO alpha-2 -> alpha-3; Q-codes -> 'Q?Q'; None when unknown."""
    code = code.strip().upper()
    if code in _EXTRA_ALPHA2:
        return _EXTRA_ALPHA2[code]
    if is_confidential_alpha2(code):
        return code + _Q_SUFFIX
    country = pycountry.countries.get(alpha_2=code) if len(code) == 2 else None
    return country.alpha_3 if country else None


@lru_cache(maxsize=4096)
def m49_to_iso3(code: str | int) -> str | None:
    """UN M49 / Comtrade numeric code -> alpha-3; None when unknown."""
    text = str(code).strip()
    if not text.isdigit():
        return None
    text = str(int(text))
    if text in _EXTRA_M49:
        return _EXTRA_M49[text]
    country = pycountry.countries.get(numeric=text.zfill(3))
    return country.alpha_3 if country else None


@lru_cache(maxsize=4096)
def iso3_to_m49(iso3: str) -> str | None:
    """Alpha-3 -> the numeric code Comtrade expects for it; None when unknown."""
    iso3 = iso3.strip().upper()
    if iso3 in COMTRADE_REPORTER_CODES:
        return COMTRADE_REPORTER_CODES[iso3]
    if iso3 == "TWN":
        return "490"
    country = pycountry.countries.get(alpha_3=iso3)
    return str(int(country.numeric)) if country else None


@lru_cache(maxsize=4096)
def iso3_to_alpha2(iso3: str) -> str | None:
    iso3 = iso3.strip().upper()
    for alpha2, value in _EXTRA_ALPHA2.items():
        if value == iso3 and alpha2 not in ("EL", "UK", "XS"):
            return alpha2
    country = pycountry.countries.get(alpha_3=iso3)
    return country.alpha_2 if country else None


def is_iso3(code: str) -> bool:
    code = code.strip().upper()
    return pycountry.countries.get(alpha_3=code) is not None or code in _EXTRA_ALPHA2.values()


@lru_cache(maxsize=4096)
def name(iso3: str) -> str:
    """Display name for an alpha-3 code (the code itself when unknown)."""
    country = pycountry.countries.get(alpha_3=iso3)
    if country is not None:
        return getattr(country, "common_name", None) or country.name
    if len(iso3) == 3 and iso3[0] == "Q" and iso3[2] == _Q_SUFFIX:
        return f"confidential/unallocated ({iso3[:2]})"
    return {"XKX": "Kosovo", "XIX": "Northern Ireland", "EUR": "European Union", "WLD": "World"}.get(iso3, iso3)


def alpha2_mapping_sql_values() -> str:
    """A SQL VALUES list of (alpha2, alpha3) for every code we know, for joins inside DuckDB."""
    pairs = {c.alpha_2: c.alpha_3 for c in pycountry.countries}
    pairs.update(_EXTRA_ALPHA2)
    return ", ".join(f"('{a2}', '{a3}')" for a2, a3 in sorted(pairs.items()))


def m49_mapping_sql_values() -> str:
    """A SQL VALUES list of (numeric text without leading zeros, alpha3)."""
    pairs = {str(int(c.numeric)): c.alpha_3 for c in pycountry.countries}
    pairs.update(_EXTRA_M49)
    return ", ".join(f"('{n}', '{a3}')" for n, a3 in sorted(pairs.items()))


def resolve(text: str, option: str) -> str:
    """The ISO alpha-3 code a user means: an alpha-3 code in any case, or a country's name when it names
    exactly one country ('Germany' -> 'DEU'). Raises InputError naming `option`, with the closest codes or
    names as a suggestion, for anything else."""
    import difflib

    from tradewatch.flows.core.errors import InputError

    value = (text or "").strip()
    if len(value) == 3 and is_iso3(value):
        return value.upper()
    if len(value) > 3:
        try:
            return pycountry.countries.lookup(value).alpha_3
        except LookupError:
            pass
    codes = [country.alpha_3 for country in pycountry.countries]
    names = {country.name: country.alpha_3 for country in pycountry.countries}
    close = difflib.get_close_matches(value.upper(), codes, n=2, cutoff=0.6) + [
        names[name] for name in difflib.get_close_matches(value, list(names), n=2, cutoff=0.75)]
    hint = f"; did you mean {' or '.join(dict.fromkeys(close))}?" if close else ""
    raise InputError(f"{option} {text}", f"not an ISO 3166 alpha-3 code or a country's name{hint}")
