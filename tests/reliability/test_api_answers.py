"""Eurostat's dissemination API answers as the reliability corpus sees every other input: a set of answers
(well formed, packed, asynchronous, retried, cut, foreign, faulted, expired) served by the loopback stand-in
to `tradewatch ingest comext-api` over a seeded warehouse. Each either loads whole — every observation served
is stored, quarantined or counted as not available — or is refused in one line with the warehouse unchanged."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from reliability_helpers import (TALLY, assert_one_line_error, cli, db_snapshot, home, seeded_db,  # noqa: F401
                                 seeded_template)

sys.path.insert(0, str(Path(__file__).parents[1] / "flows"))
from eurostat_standin import HEADER, NOTICE, STATUS, StandIn, fault  # noqa: E402
from fakeserver import FakeServer, Reply  # noqa: E402

FIRST, LAST = "2022-05", "2022-06"
PRODUCTS = "85423190,84713000"
CSV = {"Content-Type": "text/csv"}
XML = {"Content-Type": "text/xml"}


def _body(standin: StandIn) -> bytes:
    """What the stand-in answers for the one query these cases send (DE, KZ+RU, two products, both flows)."""
    key = "M.DE.KZ+RU.85423190+84713000.1+2.VALUE_IN_EUROS"
    return standin.csv(key, {"startPeriod": FIRST, "endPeriod": LAST}).encode()


def _observations(body: bytes) -> int:
    return max(0, len([line for line in body.decode().splitlines() if line.strip()]) - 1)


def _cut(body: bytes) -> bytes:
    lines = body.decode().splitlines()
    lines[2] = lines[2].rsplit(",", 3)[0]
    return ("\n".join(lines) + "\n").encode()


def _accepted(standin: StandIn) -> list[tuple[str, list[Reply], dict, int]]:
    body = _body(standin)
    n = _observations(body)
    bom = b"\xef\xbb\xbf" + body
    crlf = body.replace(b"\n", b"\r\n")
    return [
        ("plain", [Reply(200, body, CSV)], {}, n),
        ("gzip", [Reply(200, gzip.compress(body), {"Content-Type": "application/octet-stream"})], {}, n),
        ("byte-order-mark", [Reply(200, bom, CSV)], {}, n),
        ("crlf-lines", [Reply(200, crlf, CSV)], {}, n),
        ("503-then-answer", [Reply(503, b"busy", {"Retry-After": "0"}), Reply(200, body, CSV)], {}, n),
        ("429-then-answer", [Reply(429, b"slow down", {"Retry-After": "0"}), Reply(200, body, CSV)], {}, n),
        ("asynchronous", [], {"asynchronous": lambda key: True}, n),
        ("413-then-halves", [], {"max_cells": 8}, n),
    ]


def _refused(standin: StandIn) -> list[tuple[str, list[Reply], dict, str]]:
    body = _body(standin)
    return [
        ("line-cut-short", [Reply(200, _cut(body), CSV)], {}, "malformed answer"),
        ("json-instead", [Reply(200, b'{"error": "nope"}', {"Content-Type": "application/json"})], {}, "SDMX-CSV"),
        ("html-proxy-page", [Reply(200, b"<html><body>Access denied</body></html>", {"Content-Type": "text/html"})],
         {}, "DS-045409"),
        ("empty-body", [Reply(200, b"", CSV)], {}, "DS-045409"),
        ("header-only", [Reply(200, (HEADER + "\n").encode(), CSV)], {}, "no observations"),
        ("foreign-columns", [Reply(200, b"a,b,c\n1,2,3\n", CSV)], {}, "DS-045409"),
        ("gzip-cut", [Reply(200, gzip.compress(body)[:40], {"Content-Type": "application/octet-stream"})], {},
         "DS-045409"),
        ("fault-400", [Reply(400, fault(400, "Invalid filter"), XML)], {}, "Invalid filter"),
        ("500-every-time", [Reply(500, b"oops")] * 3, {}, "HTTP 500"),
        ("async-expired", [], {"asynchronous": lambda key: True, "final_status": "EXPIRED"}, "EXPIRED"),
        ("notice-without-id", [Reply(200, NOTICE.replace("<id>{key}</id>", "").encode(), XML)], {}, "DS-045409"),
        ("status-garbage", [], {"asynchronous": lambda key: True, "final_status": "NONSENSE"}, "DS-045409"),
    ]


def _run(server, db: Path, *extra: str):
    return cli("ingest", "comext-api", "--products", PRODUCTS, "--partners", "KAZ,RUS", "--reporters", "DEU",
               "--from", FIRST, "--to", LAST, "--base-url", server.url, "--db", db, "--task-runner", "none", *extra,
               env={"TRADEWATCH_EUROSTAT_INTERVAL_S": "0", "TRADEWATCH_EUROSTAT_POLL_S": "0.01"})


def _without_retry_lines(result):
    result.stderr = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("retrying:"))
    return result


def _serving(cases, name: str) -> tuple[StandIn, object]:
    """The stand-in set up to serve case `name` of `cases` (_accepted or _refused), and the case's last item."""
    standin = StandIn()
    _, replies, options, expected = next(case for case in cases(standin) if case[0] == name)
    for option, setting in options.items():
        setattr(standin, option, setting)
    standin.failures = list(replies)
    return standin, expected


ACCEPTED = [case[0] for case in _accepted(StandIn())]
REFUSED = [case[0] for case in _refused(StandIn())]


@pytest.mark.parametrize("name", ACCEPTED)
def test_an_accepted_answer_loads_every_observation(name, home, seeded_db):
    standin, served = _serving(_accepted, name)
    with FakeServer() as server:
        server.handle(standin)
        result = _run(server, seeded_db, "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    totals = json.loads(result.stdout[result.stdout.index("{"):])["totals"]
    accounted = totals["rows"] + totals["quarantined"] + totals.get("not_available", 0)
    TALLY.tried("comext-api answer", name, via="CLI")
    TALLY.injected(f"api {name}", 0 if name in ("plain", "gzip") else 1)
    TALLY.rows(served, accounted)
    assert accounted == served, (name, totals, served)


@pytest.mark.parametrize("name", REFUSED)
def test_a_refused_answer_is_one_line_and_changes_nothing(name, home, seeded_db):
    standin, needle = _serving(_refused, name)
    before = db_snapshot(seeded_db)
    with FakeServer() as server:
        server.handle(standin)
        result = _without_retry_lines(_run(server, seeded_db))
    TALLY.tried("comext-api answer", name, via="CLI")
    TALLY.injected(f"api {name}")
    assert_one_line_error(result, needle)
    assert db_snapshot(seeded_db) == before, name
