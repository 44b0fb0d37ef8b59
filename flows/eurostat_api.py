"""Eurostat's Comext dissemination API (SDMX 2.1) for dataset DS-045409 in SDMX-CSV: targeted queries split under the size limit, asynchronous answers followed, retried and cached through download.fetch, merged into one SDMX-CSV file per unit of work for the comext_sdmx reader.

Documented behaviours this module relies on (read in Eurostat's pages; the live service could not be
reached from here, see README "Notes for whoever comes next"):

- Comext and Prodcom datasets have their own API root, https://ec.europa.eu/eurostat/api/comext/dissemination
  ("API - Getting started", https://wikis.ec.europa.eu/display/EUROSTATHELP/API+-+Getting+started).
- A data query is {root}/sdmx/2.1/data/{dataset}/{key}?startPeriod=…&endPeriod=…&format=SDMX-CSV; the key
  gives one position per dimension in the data structure's order, joined by '.', several values of one
  dimension joined by '+', an empty position meaning all ("API - Detailed guidelines - SDMX2.1 API - data
  query", https://ec.europa.eu/eurostat/web/user-guides/data-browser/api-data-access/api-detailed-guidelines/sdmx2-1/data-query).
- DS-045409's dimensions are freq.reporter.partner.product.flow.indicators: SDMX-CSV lists the dimensions
  in the structure's order, and that is the column order of Eurostat's own DS-045409 download
  (../shared/data/comext_sdmx/ds-045409_totals_M_2020-2022.csv; tests/flows/fixtures/comext_sdmx/).
  Reporters and partners are alpha-2 codes (Greece GR, the United Kingdom GB), flow 1 import, 2 export.
- Size: the API estimates a query's cost as the product of the positions each dimension filter matches and
  refuses one that is too big with HTTP 413 and a SOAP fault "EXTRACTION_TOO_BIG: … estimated N rows, max
  authorised is 5000000 …"; a big query, or one asked when the service is busy ("fair use"), is answered
  asynchronously instead: a notice (HTTP 200, XML) carrying a key and the status SUBMITTED. The key's status
  is at {root}/1.0/async/status/{key} (SUBMITTED, PROCESSING, AVAILABLE; EXPIRED or UNKNOWN_REQUEST when it
  is gone) and, once AVAILABLE, the data at {root}/1.0/async/data/{key} ("Asynchronous API",
  https://ec.europa.eu/eurostat/web/user-guides/data-browser/api-data-access/api-detailed-guidelines/asynchronous-api).
  The notice's layout — <queued><id>KEY</id><status>SUBMITTED</status></queued> inside a SOAP body, the
  status answer's <status><key>…</key><status>…</status></status> — is the one the `eurostat` Python
  package and the R package eurostat (get_eurostat_async, which also treats ERROR as final) read; this
  module reads the elements by local name, whatever their namespaces.

Our own choices, not Eurostat's: queries are kept under MAX_CELLS estimated cells (the documented 5,000,000)
and MAX_URL_CHARS characters (a common proxy limit), splitting by products, then months, partners,
reporters and flows; a 413 splits further. Calls are paced process-wide (min_interval_s), polling backs off
from poll_s to 30 s for at most max_wait_s. Unverified and handled defensively: a notice sent with 202
instead of 200 is read the same; a 404 whose fault says no results is taken as no observations (Eurostat's
wording for an empty answer is unknown); a gzip or one-file zip data answer is unpacked.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from tradewatch.flows import download
from tradewatch.flows.core import countries, settings
from tradewatch.flows.core.errors import InputError, TradewatchError

DEFAULT_BASE_URL = "https://ec.europa.eu/eurostat/api/comext/dissemination"
DATASET = "DS-045409"
INDICATOR = "VALUE_IN_EUROS"
MAX_CELLS = 5_000_000
MAX_URL_CHARS = 2_000
MONTHS_PER_UNIT = 12
FLOWS = {"import": ("1",), "export": ("2",), "both": ("1", "2")}
# DS-045409's reporters are the EU member states (alpha-2 as Eurostat writes them: Greece is GR).
EU27 = ("AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT", "LT",
        "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK")
FINAL_STATUSES = ("EXPIRED", "UNKNOWN_REQUEST", "ERROR")
PRODUCT_PATTERN = re.compile(r"TOTAL|[0-9]{2}|[0-9]{4}|[0-9]{6}|[0-9]{2}[0-9A-Z]{6}")


class EurostatError(TradewatchError):
    """An API request that failed for good; the message names the query. `transient` when trying again
    later may help; `status` the HTTP status that decided it (None when no answer did)."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None):
        super().__init__(message)
        self.transient = transient
        self.status = status


class _TooBig(Exception):
    """The API refused a query as too big (HTTP 413)."""


@dataclass(frozen=True)
class Query:
    """One DS-045409 query: reporters and partners (alpha-2), products (CN8, HS 2/4/6 or TOTAL), flows
    ('1' import, '2' export) and consecutive months (YYYY-MM)."""

    reporters: tuple[str, ...]
    partners: tuple[str, ...]
    products: tuple[str, ...]
    flows: tuple[str, ...]
    months: tuple[str, ...]
    freq: str = "M"

    def key(self) -> str:
        return ".".join([self.freq, "+".join(self.reporters), "+".join(self.partners), "+".join(self.products),
                         "+".join(self.flows), INDICATOR])

    def params(self) -> dict[str, str]:
        return {"startPeriod": self.months[0], "endPeriod": self.months[-1], "format": "SDMX-CSV"}

    def cells(self) -> int:
        """The API's cost estimate: the product of the positions each dimension asks for."""
        return len(self.reporters) * len(self.partners) * len(self.products) * len(self.flows) * len(self.months)

    def describe(self) -> str:
        def short(values: tuple[str, ...]) -> str:
            return ",".join(values) if len(values) <= 4 else f"{values[0]}…{values[-1]} ({len(values)})"

        months = self.months[0] if len(self.months) == 1 else f"{self.months[0]}..{self.months[-1]}"
        return (f"Eurostat {DATASET} {months} reporters {short(self.reporters)} partners {short(self.partners)} "
                f"products {short(self.products)} flows {','.join(self.flows)}")

    def split(self) -> list[Query] | None:
        """Two queries that together ask for exactly the same cells (halving products, then months,
        partners, reporters, flows), or None for a single cell."""
        for name in ("products", "months", "partners", "reporters", "flows"):
            values = getattr(self, name)
            if len(values) > 1:
                half = len(values) // 2
                return [replace(self, **{name: values[:half]}), replace(self, **{name: values[half:]})]
        return None


def _unique(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        value = value.strip().upper()
        if value and value not in out:
            out.append(value)
    return out


def country_codes(values: Iterable[str], option: str) -> tuple[str, ...]:
    """Alpha-3 (or Eurostat alpha-2) codes -> Eurostat alpha-2; InputError naming `option` otherwise."""
    out = []
    for value in _unique(values):
        code = countries.iso3_to_alpha2(value) if len(value) == 3 and value.isalpha() else None
        if len(value) == 2 and value.isalpha() and (iso3 := countries.alpha2_to_iso3(value)):
            # Comext writes Greece GR and the United Kingdom GB (EL and UK are other datasets' codes).
            code = countries.iso3_to_alpha2(iso3) or value
        if code is None:
            raise InputError(f"{option} {value}", "not an ISO alpha-3 (or Eurostat alpha-2) country code, e.g. KAZ or KZ")
        if code not in out:
            out.append(code)
    if not out:
        raise InputError(option, "no country given; expected codes like KAZ,ARM")
    return tuple(out)


def product_codes(values: Iterable[str]) -> tuple[str, ...]:
    codes = tuple(_unique(values))
    for code in codes:
        if not PRODUCT_PATTERN.fullmatch(code):
            raise InputError(f"--products {code}", "expected CN8 codes (e.g. 85423190), HS codes of 2, 4 or 6 digits "
                             "or TOTAL")
    if not codes:
        raise InputError("--products", "no product given; expected CN8 codes like 85423190,84713000")
    return codes


def plan(*, products: Iterable[str], partners: Iterable[str], months: list[str], reporters: Iterable[str] | None = None,
         flow: str = "both") -> list[Query]:
    """Units of work: every reporter (default the EU-27), partner, product and flow asked, MONTHS_PER_UNIT
    months at a time. Each unit becomes one file and one load; the client splits it into API calls."""
    flows = FLOWS.get(flow.strip().lower())
    if flows is None:
        raise InputError(f"--flow {flow}", "expected import, export or both")
    chosen = country_codes(reporters, "--reporters") if reporters is not None else EU27
    outside = [code for code in chosen if code not in EU27]
    if outside:
        raise InputError(f"--reporters {outside[0]}", "DS-045409 reports the EU member states only "
                         f"({','.join(EU27)}); a partner's own reports are in Comtrade")
    base = Query(reporters=chosen, partners=country_codes(partners, "--partners"), products=product_codes(products),
                 flows=flows, months=())
    return [replace(base, months=tuple(months[i:i + MONTHS_PER_UNIT])) for i in range(0, len(months), MONTHS_PER_UNIT)]


_PACE = threading.Lock()
_LAST_CALL = [0.0]


def _number_env(name: str, default: float) -> float:
    text = os.environ.get(name)
    try:
        return float(text) if text else default
    except ValueError:
        raise InputError(f"${name}={text!r}", "expected a number of seconds") from None


@dataclass
class EurostatClient:
    """Calls the API root `base_url`; every HTTP request goes through download.fetch (allowed hosts,
    retries with backoff and Retry-After, the cache, conditional requests)."""

    base_url: str = DEFAULT_BASE_URL
    max_cells: int = MAX_CELLS
    max_url_chars: int = MAX_URL_CHARS
    min_interval_s: float | None = None
    poll_s: float | None = None
    max_wait_s: float | None = None
    policy: download.RetryPolicy | None = None
    allowed_hosts: tuple[str, ...] = ()
    sleep: Callable[[float], None] = time.sleep
    on_call: Callable[[str, Query], None] | None = None  # ('sync'|'async'|'split', query), for progress and tests
    calls: int = field(default=0, repr=False)

    def __post_init__(self):
        if self.min_interval_s is None:
            self.min_interval_s = _number_env("TRADEWATCH_EUROSTAT_INTERVAL_S", 1.0)
        if self.poll_s is None:
            self.poll_s = _number_env("TRADEWATCH_EUROSTAT_POLL_S", 2.0)
        if self.max_wait_s is None:
            self.max_wait_s = _number_env("TRADEWATCH_EUROSTAT_MAX_WAIT_S", 900.0)
        self.allowed_hosts = tuple(self.allowed_hosts) + ((urlsplit(self.base_url).hostname or "").lower(),)

    def data_url(self, query: Query) -> str:
        return (f"{self.base_url.rstrip('/')}/sdmx/2.1/data/{DATASET}/{query.key()}?"
                + urlencode(query.params(), safe="+"))

    def _async_url(self, kind: str, key: str) -> str:
        suffix = "?" + urlencode({"format": "SDMX-CSV", "compressed": "false"}) if kind == "data" else ""
        return f"{self.base_url.rstrip('/')}/1.0/async/{kind}/{key}{suffix}"

    def _get(self, url: str, dest: Path, *, conditional: bool) -> download.Fetched:
        """One download.fetch, paced: at least min_interval_s between calls of this process."""
        with _PACE:
            wait = _LAST_CALL[0] + self.min_interval_s - time.monotonic()
            if wait > 0:
                self.sleep(wait)
            try:
                return download.fetch(url, dest, allowed_hosts=self.allowed_hosts, policy=self.policy, xml_ok=True,
                                      conditional=conditional, sleep=self.sleep, expect=_expect_answer)
            finally:
                _LAST_CALL[0] = time.monotonic()
                self.calls += 1

    def fetch(self, query: Query, work_dir: Path) -> list[Path]:
        """Every answer file (SDMX-CSV) for `query`, splitting it while it is over max_cells or
        max_url_chars or the API calls it too big. Answers with no observations are left out."""
        if query.cells() > self.max_cells or len(self.data_url(query)) > self.max_url_chars:
            return self._split(query, work_dir, "over the size limits")
        try:
            part = self.fetch_part(query, work_dir)
        except _TooBig:
            return self._split(query, work_dir, "refused as too big (HTTP 413)")
        return [part] if part is not None else []

    def _split(self, query: Query, work_dir: Path, why: str) -> list[Path]:
        parts = query.split()
        if parts is None:
            raise EurostatError(f"{query.describe()}: {why} and cannot be split further")
        if self.on_call:
            self.on_call("split", query)
        return [path for part in parts for path in self.fetch(part, work_dir)]

    def fetch_part(self, query: Query, work_dir: Path) -> Path | None:
        """One API call (and, for an asynchronous answer, its polling and download) into the cache;
        None when Eurostat answers that there are no observations. Raises _TooBig or EurostatError."""
        url = self.data_url(query)
        dest = work_dir / (hashlib.sha256(url.encode()).hexdigest()[:20] + ".csv")
        try:
            self._get(url, dest, conditional=True)
        except download.DownloadError as exc:
            if exc.status == 413:
                raise _TooBig() from None
            if exc.status == 404 and re.search(r"no\s*(results?|records?|data)|NO_RESULTS", str(exc), re.I):
                return None
            raise EurostatError(f"{query.describe()}: {_after_url(str(exc))}", transient=exc.transient,
                                status=exc.status) from None
        if self.on_call:
            self.on_call("sync", query)
        if _is_xml(dest):
            key = _notice_key(dest, query)
            download.forget(dest)
            self._await(key, query, dest)
        return _plain_csv(dest, query)

    def _await(self, key: str, query: Query, dest: Path) -> None:
        """Poll the status of asynchronous request `key` until AVAILABLE, then download its data to `dest`."""
        if self.on_call:
            self.on_call("async", query)
        status_file = dest.with_name(dest.name + ".status.xml")
        waited, delay = 0.0, self.poll_s
        while True:
            try:
                self._get(self._async_url("status", key), status_file, conditional=False)
                status = _element_text(status_file, "status", query) or "(none)"
            except download.DownloadError as exc:
                raise EurostatError(f"{query.describe()}: asynchronous request {key}: {_after_url(str(exc))}",
                                    transient=exc.transient, status=exc.status) from None
            finally:
                download.forget(status_file)
            if status == "AVAILABLE":
                break
            if status in FINAL_STATUSES or status not in ("SUBMITTED", "PROCESSING", "QUEUED"):
                raise EurostatError(f"{query.describe()}: asynchronous request {key} ended with status {status}; "
                                    "run the command again to ask anew", transient=status == "EXPIRED")
            if waited >= self.max_wait_s:
                raise EurostatError(f"{query.describe()}: asynchronous request {key} still {status} after "
                                    f"{waited:.0f} s; run the command again later", transient=True)
            self.sleep(delay)
            waited, delay = waited + delay, min(30.0, delay * 2)
        try:
            self._get(self._async_url("data", key), dest, conditional=False)
        except download.DownloadError as exc:
            raise EurostatError(f"{query.describe()}: asynchronous data {key}: {_after_url(str(exc))}",
                                transient=exc.transient, status=exc.status) from None
        if _is_xml(dest):
            raise EurostatError(f"{query.describe()}: asynchronous data {key} is not SDMX-CSV: {_fault_text(dest)}")


def _after_url(message: str) -> str:
    head, sep, tail = message.partition(": ")
    return tail if sep and head.startswith("http") else message


def _head(path: Path, size: int = 4096) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def _is_xml(path: Path) -> bool:
    return _head(path, 64).lstrip(b"\xef\xbb\xbf").lstrip()[:1] == b"<"


def _expect_answer(head: bytes) -> str | None:
    """An API answer is SDMX-CSV (a header naming DATAFLOW), gzip or zip of it, or an XML notice."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text[:1] == b"<" or text[:2] in (b"\x1f\x8b", b"PK") or text[:8].upper().startswith(b"DATAFLOW"):
        return None
    return f"expected SDMX-CSV (a header starting with DATAFLOW) or an XML notice, got {text[:40]!r}"


def _xml_root(path: Path, query: Query):
    import xml.etree.ElementTree as ET

    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise EurostatError(f"{query.describe()}: the API's XML answer cannot be read ({exc})") from None


def _elements(root, name: str) -> list:
    return [el for el in root.iter() if isinstance(el.tag, str) and el.tag.rsplit("}", 1)[-1] == name]


def _element_text(path: Path, name: str, query: Query) -> str | None:
    """The text of the innermost element named `name` (any namespace) that holds text."""
    for element in reversed(_elements(_xml_root(path, query), name)):
        if element.text and element.text.strip():
            return element.text.strip().upper()
    return None


def _fault_text(path: Path) -> str:
    text = _head(path, 2000).decode("utf-8", "replace")
    found = re.search(r"<(?:\w+:)?faultstring>(.*?)</", text, re.S)
    return " ".join((found.group(1) if found else re.sub(r"<[^>]+>", " ", text)).split())[:200]


def _notice_key(path: Path, query: Query) -> str:
    """The key of an asynchronous notice (<queued><id>KEY</id><status>SUBMITTED</status></queued>);
    EurostatError naming the fault for any other XML."""
    root = _xml_root(path, query)
    for queued in _elements(root, "queued"):
        ids = [el.text.strip() for el in _elements(queued, "id") if el.text and el.text.strip()]
        if ids and re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", ids[0]):
            return ids[0]
    raise EurostatError(f"{query.describe()}: the API answered XML that is neither data nor an asynchronous notice: "
                        f"{_fault_text(path)}")


def _plain_csv(path: Path, query: Query) -> Path:
    """`path` as plain SDMX-CSV text: a gzip or single-member zip answer is unpacked in place."""
    head = _head(path, 4)
    try:
        if head[:2] == b"\x1f\x8b":
            data = gzip.decompress(path.read_bytes())
        elif head[:2] == b"PK":
            with zipfile.ZipFile(path) as bundle:
                names = [n for n in bundle.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise EurostatError(f"{query.describe()}: a zip answer with {len(names)} files; expected one SDMX-CSV")
                data = bundle.read(names[0])
        else:
            return path
    except (EOFError, OSError, zlib.error, zipfile.BadZipFile) as exc:
        # A packed answer cut short (a dropped connection without Content-Length, a proxy): forget it, so
        # the next run asks again, and say so in one line.
        download.forget(path)
        raise EurostatError(f"{query.describe()}: the packed answer cannot be unpacked ({exc}); it was cut short "
                            "or damaged, nothing of it was loaded; run the same command again") from None
    plain = path.with_name(path.name + ".plain.csv")
    plain.write_bytes(data)
    return plain


def _read_part(part: Path, query: Query) -> tuple[str, list[str]]:
    """(header, data lines) of one SDMX-CSV answer. A malformed answer (not UTF-8, no OBS_VALUE or
    TIME_PERIOD column, a line whose fields do not match the header) is forgotten from the cache, so the
    next run asks again, and refused in one line naming the query and the line."""
    import csv

    def refuse(problem: str):
        download.forget(part)
        return EurostatError(f"{query.describe()}: malformed answer from the API: {problem}; nothing of it was loaded")

    try:
        text = part.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise refuse("not UTF-8 text") from None
    if not text:
        return "", []
    names = [name.strip().upper() for name in next(csv.reader([text[0]]))]
    missing = [name for name in ("DATAFLOW", "TIME_PERIOD", "OBS_VALUE") if name not in names]
    if missing:
        raise refuse(f"header {text[0][:80]!r} lacks {', '.join(missing)}")
    rows = [line for line in text[1:] if line.strip()]
    for number, fields in enumerate(csv.reader(rows), start=2):
        if len(fields) != len(names):
            raise refuse(f"line {number} has {len(fields)} fields, the header {len(names)}")
    return text[0].strip(), rows


def unit_file(query: Query, cache: Path | None = None) -> Path:
    """The cache path of one unit's merged SDMX-CSV (months and a digest of the whole query in the name)."""
    cache = cache or settings.cache_dir()
    digest = hashlib.sha256(json.dumps(asdict(query), sort_keys=True).encode()).hexdigest()[:12]
    months = query.months[0] if len(query.months) == 1 else f"{query.months[0]}_{query.months[-1]}"
    return cache / "comext_api" / f"ds-045409_{months}_{digest}.csv"


def fetch_unit(client: EurostatClient, query: Query, cache: Path | None = None) -> Path:
    """Fetch one unit (split as needed) and write its observations as one SDMX-CSV file in the cache,
    lines sorted so that the same answer always has the same checksum. Raises EurostatError for answers
    whose headers differ (not one dataset's layout) or when Eurostat holds no observation at all."""
    dest = unit_file(query, cache)
    header, lines = None, []
    for part in client.fetch(query, dest.parent / "parts"):
        part_header, rows = _read_part(part, query)
        if header is not None and part_header != header:
            download.forget(part)
            raise EurostatError(f"{query.describe()}: the answers' columns differ ({part_header[:80]!r} after "
                                f"{header[:80]!r})")
        header = part_header
        lines.extend(rows)
    if header is None or not lines:
        raise EurostatError(f"{query.describe()}: Eurostat holds no observations for this query")
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        tmp.write_text("\n".join([header, *sorted(lines)]) + "\n", encoding="utf-8")
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)  # never leave a half-written file where the loader could take it whole
        raise EurostatError(f"{query.describe()}: cannot write {dest}: {exc.strerror or type(exc).__name__}") from None
    return dest
