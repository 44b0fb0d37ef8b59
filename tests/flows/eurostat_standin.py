"""A loopback stand-in for Eurostat's Comext dissemination API (DS-045409) answering in the documented layouts:
SDMX-CSV for a data query, HTTP 413 with a SOAP fault for a query over its cell limit, an asynchronous
notice (SOAP, <queued><id>…</id><status>SUBMITTED</status></queued>), the async status and data endpoints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from fakeserver import Reply

HEADER = "DATAFLOW,LAST UPDATE,freq,reporter,partner,product,flow,indicators,TIME_PERIOD,OBS_VALUE,OBS_FLAG"
PREFIX = "ESTAT:DS-045409(1.0),13/01/23 11:00:00"
DATA_PATH = "/sdmx/2.1/data/DS-045409/"

FAULT_413 = """<?xml version='1.0' encoding='UTF-8'?>
<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><S:Fault xmlns:S="http://schemas.xmlsoap.org/soap/envelope/">
    <faultcode>413</faultcode>
    <faultstring>EXTRACTION_TOO_BIG: The requested extraction is too big, estimated {cells} rows, max authorised is {limit}, please change your filters to reduce the extraction size</faultstring>
</S:Fault></S:Body></S:Envelope>"""

def fault(code: int, text: str) -> bytes:
    """A SOAP fault in the layout of the documented 413 (for other errors the same envelope is assumed)."""
    return FAULT_413.replace("<faultcode>413</faultcode>", f"<faultcode>{code}</faultcode>").replace(
        FAULT_413[FAULT_413.index("<faultstring>") + 13:FAULT_413.index("</faultstring>")], text).encode()


NOTICE = """<?xml version='1.0' encoding='UTF-8'?>
<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Body>
<ns0:syncResponse xmlns:ns0="http://estat.ec.europa.eu/disschain/soap/extraction">
<queued><id>{key}</id><status>SUBMITTED</status></queued>
</ns0:syncResponse></env:Body></env:Envelope>"""

STATUS = """<?xml version='1.0' encoding='UTF-8'?>
<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Body>
<ns0:asyncResponse xmlns:ns0="http://estat.ec.europa.eu/disschain/soap/asynchronous">
<ns1:status xmlns:ns1="http://estat.ec.europa.eu/disschain/asynchronous"><ns1:key>{key}</ns1:key><ns1:status>{status}</ns1:status></ns1:status>
</ns0:asyncResponse></env:Body></env:Envelope>"""


def value(reporter: str, partner: str, product: str, flow: str, month: str, revision: int = 0) -> int:
    """The stand-in's value for one observation: deterministic, positive, different per cell."""
    digest = hashlib.sha256(f"{reporter}{partner}{product}{flow}{month}".encode()).hexdigest()
    return 1000 + int(digest[:6], 16) % 90000 + revision


def months_between(first: str, last: str) -> list[str]:
    (y, m), (y2, m2) = map(int, first.split("-")), map(int, last.split("-"))
    out = []
    while (y, m) <= (y2, m2):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


@dataclass
class StandIn:
    """Answers like the API. `max_cells`: 413 above it; `asynchronous(query_key)`: answer that query with a
    notice; `polls`: PROCESSING answers before AVAILABLE; `final_status`: instead of AVAILABLE;
    `failures`: replies served before the next data answer (a 503, …); `malformed` (or a predicate on the
    query parameters): cut one line short;
    `missing`: cells (reporter, partner, product) with no observation; `revision`: added to every value; `etags`: answer with an ETag (and 304 to If-None-Match)."""

    max_cells: int = 10_000_000
    asynchronous: object = None
    polls: int = 1
    final_status: str = "AVAILABLE"
    failures: list = field(default_factory=list)
    malformed: object = False
    missing: set = field(default_factory=set)
    revision: int = 0
    etags: bool = False
    notice_status: int = 200
    jobs: dict = field(default_factory=dict)
    data_calls: list = field(default_factory=list)

    def csv(self, key: str, query: dict) -> str:
        freq, reporters, partners, products, flows, indicator = key.split(".")
        lines = [HEADER]
        for reporter in reporters.split("+"):
            for partner in partners.split("+"):
                for product in products.split("+"):
                    if (reporter, partner, product) in self.missing:
                        continue
                    for flow in flows.split("+"):
                        for month in months_between(query["startPeriod"], query["endPeriod"]):
                            number = value(reporter, partner, product, flow, month, self.revision)
                            lines.append(f"{PREFIX},{freq},{reporter},{partner},{product},{flow},{indicator},"
                                         f"{month},{number},")
        malformed = self.malformed(query) if callable(self.malformed) else self.malformed
        if malformed and len(lines) > 2:
            lines[2] = lines[2].rsplit(",", 3)[0]  # a line cut short: three fields missing
        return "\n".join(lines) + "\n"

    def __call__(self, path: str, query: dict, headers: dict) -> Reply | None:
        if path.startswith(DATA_PATH):
            return self._data(path[len(DATA_PATH):], query)
        if path.startswith("/1.0/async/status/"):
            job = self.jobs.get(path.rsplit("/", 1)[1])
            if job is None:
                return Reply(200, STATUS.format(key="?", status="UNKNOWN_REQUEST").encode(), {"Content-Type": "text/xml"})
            job["polls"] += 1
            status = "PROCESSING" if job["polls"] <= self.polls else self.final_status
            return Reply(200, STATUS.format(key=job["key"], status=status).encode(), {"Content-Type": "text/xml"})
        if path.startswith("/1.0/async/data/"):
            job = self.jobs.get(path.rsplit("/", 1)[1])
            if job is None or job["polls"] <= self.polls:
                return Reply(404, b"not ready")
            return Reply(200, job["body"].encode(), {"Content-Type": "text/csv"})
        return None

    def _data(self, key: str, query: dict) -> Reply:
        self.data_calls.append((key, dict(query)))
        if self.failures:
            return self.failures.pop(0)
        _, reporters, partners, products, flows, _ = key.split(".")
        months = months_between(query["startPeriod"], query["endPeriod"])
        cells = 1
        for dimension in (reporters, partners, products, flows):
            cells *= len(dimension.split("+"))
        cells *= len(months)
        if cells > self.max_cells:
            return Reply(413, FAULT_413.format(cells=cells, limit=self.max_cells).encode(), {"Content-Type": "text/xml"})
        body = self.csv(key, query)
        if self.asynchronous is not None and self.asynchronous(key):
            job_key = f"job{len(self.jobs) + 1}"
            self.jobs[job_key] = {"key": job_key, "body": body, "polls": 0}
            return Reply(self.notice_status, NOTICE.format(key=job_key).encode(), {"Content-Type": "text/xml"})
        headers = {"Content-Type": "text/csv"}
        if self.etags:
            headers["ETag"] = '"' + hashlib.sha256(body.encode()).hexdigest()[:16] + '"'
        return Reply(200, body.encode(), headers)
