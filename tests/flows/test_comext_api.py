"""Eurostat's dissemination API client (DS-045409, SDMX-CSV) against a loopback stand-in: the key and query layout, splitting under the size limit and after a 413, asynchronous answers, retries, caching, malformed answers, and the load through the shared ingest path."""

from __future__ import annotations

from dataclasses import replace

import pytest

from eurostat_standin import DATA_PATH, StandIn, fault, months_between, value
from ingest_helpers import Reply, home, server  # noqa: F401  (fixtures)
from tradewatch.flows import eurostat_api, ingest, warehouse
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.download import RetryPolicy
from tradewatch.flows.eurostat_api import EurostatClient, EurostatError, Query
from tradewatch.flows.sources import comext_sdmx

FAST = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.02, timeout_s=2.0)
PRODUCTS = ["85423190", "84713000"]


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setenv("TRADEWATCH_EUROSTAT_INTERVAL_S", "0")
    monkeypatch.setenv("TRADEWATCH_EUROSTAT_POLL_S", "0.01")


def client(server, sleeps=None, **kwargs) -> EurostatClient:
    record = sleeps.append if sleeps is not None else (lambda s: None)
    return EurostatClient(base_url=server.url, policy=FAST, sleep=record, **kwargs)


def query(months=("2022-01", "2022-02"), reporters=("DE", "FR"), partners=("KZ", "RU"), products=tuple(PRODUCTS),
          flows=("1", "2")) -> Query:
    return Query(reporters=reporters, partners=partners, products=products, flows=flows, months=months)


def observations(path) -> dict[tuple, int]:
    """(reporter, partner, product, flow, month) -> value of a merged SDMX-CSV file."""
    out = {}
    for line in path.read_text().splitlines()[1:]:
        fields = line.split(",")
        key = (fields[3], fields[4], fields[5], fields[6], fields[8])
        assert key not in out, f"observation {key} twice"
        out[key] = int(fields[9])
    return out


def expected(q: Query, revision: int = 0) -> dict[tuple, int]:
    return {(r, p, k, f, m): value(r, p, k, f, m, revision) for r in q.reporters for p in q.partners
            for k in q.products for f in q.flows for m in q.months}


def test_query_layout_is_the_documented_key_and_parameters(home, server):
    standin = StandIn()
    server.handle(standin)
    q = query()
    path = eurostat_api.fetch_unit(client(server), q)
    assert observations(path) == expected(q) and len(expected(q)) == 32
    (seen,) = [r for r in server.requests if r.path.startswith(DATA_PATH)]
    # freq.reporter.partner.product.flow.indicators, values joined by '+'.
    assert seen.path == DATA_PATH + "M.DE+FR.KZ+RU.85423190+84713000.1+2.VALUE_IN_EUROS"
    assert seen.query == {"startPeriod": "2022-01", "endPeriod": "2022-02", "format": "SDMX-CSV"}
    assert seen.headers["User-Agent"].startswith("tradewatch/")


def _cells(key: str, params: dict) -> int:
    dims = [len(d.split("+")) for d in key.split(".")[1:5]]
    return dims[0] * dims[1] * dims[2] * dims[3] * len(months_between(params["startPeriod"], params["endPeriod"]))


def test_a_413_refusal_splits_the_query_until_each_part_passes(home, server):
    standin = StandIn(max_cells=4)
    server.handle(standin)
    q = query()
    splits = []
    c = client(server, on_call=lambda kind, part: splits.append(part) if kind == "split" else None)
    path = eurostat_api.fetch_unit(c, q)
    assert observations(path) == expected(q)
    cells = [_cells(key, params) for key, params in standin.data_calls]
    assert cells[0] == 32 and splits[0] == q, "the whole query was asked first, refused and split"
    # The accepted parts (≤ 4 cells) cover the 32 cells exactly once.
    assert sum(n for n in cells if n <= 4) == 32 and any(n > 4 for n in cells[1:])


def test_queries_are_split_before_asking_when_over_the_cell_limit(home, server):
    standin = StandIn(max_cells=4)
    server.handle(standin)
    q = query()
    path = eurostat_api.fetch_unit(client(server, max_cells=4), q)
    assert observations(path) == expected(q)
    assert len(standin.data_calls) == 32 // 4  # no 413: each call asked for at most 4 cells


def test_a_query_that_cannot_be_split_below_the_limit_fails_in_one_line(home, server):
    server.handle(StandIn(max_cells=0))
    with pytest.raises(EurostatError, match=r"refused as too big \(HTTP 413\) and cannot be split further") as err:
        eurostat_api.fetch_unit(client(server), query(months=("2022-01",), reporters=("DE",), partners=("KZ",),
                                                      products=("85423190",), flows=("1",)))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("notice_status", [200, 202])
def test_an_asynchronous_answer_is_polled_then_downloaded(home, server, notice_status):
    standin = StandIn(asynchronous=lambda key: True, polls=2, notice_status=notice_status)
    server.handle(standin)
    sleeps = []
    q = query()
    path = eurostat_api.fetch_unit(client(server, sleeps), q)
    assert observations(path) == expected(q)
    statuses = [r for r in server.requests if r.path.startswith("/1.0/async/status/")]
    data = [r for r in server.requests if r.path.startswith("/1.0/async/data/")]
    assert len(statuses) == 3 and len(data) == 1  # PROCESSING, PROCESSING, AVAILABLE, then the data
    assert data[0].path == "/1.0/async/data/job1" and data[0].query["format"] == "SDMX-CSV"
    assert sleeps == [0.01, 0.02]  # polling backs off between status calls
    assert not list((path.parent / "parts").glob("*.status.xml*"))


def test_an_expired_asynchronous_request_fails_in_one_line(home, server):
    server.handle(StandIn(asynchronous=lambda key: True, polls=0, final_status="EXPIRED"))
    with pytest.raises(EurostatError, match="asynchronous request job1 ended with status EXPIRED") as err:
        eurostat_api.fetch_unit(client(server), query())
    assert err.value.transient and "\n" not in str(err.value)


def test_an_asynchronous_request_still_processing_gives_up_after_max_wait(home, server):
    server.handle(StandIn(asynchronous=lambda key: True, polls=1000))
    with pytest.raises(EurostatError, match="still PROCESSING after"):
        eurostat_api.fetch_unit(client(server, max_wait_s=0.05), query())


def test_a_503_with_retry_after_is_retried_then_succeeds(home, server):
    standin = StandIn(failures=[Reply(503, b"busy", {"Retry-After": "3"})])
    server.handle(standin)
    sleeps = []
    q = query()
    path = eurostat_api.fetch_unit(client(server, sleeps), q)
    assert observations(path) == expected(q)
    assert len(standin.data_calls) == 2 and 3.0 in sleeps  # the server's Retry-After was honoured


def test_a_malformed_answer_is_refused_in_one_line_and_forgotten(home, server):
    standin = StandIn(malformed=True)
    server.handle(standin)
    q = query()
    with pytest.raises(EurostatError, match=r"malformed answer from the API: line 3 has 8 fields, the header 11") as err:
        eurostat_api.fetch_unit(client(server), q)
    assert "\n" not in str(err.value)
    assert not eurostat_api.unit_file(q).exists()
    assert not [p for p in (eurostat_api.unit_file(q).parent / "parts").glob("*.csv")], "the bad answer is not kept"


def test_an_answer_that_is_not_sdmx_csv_is_refused(home, server):
    server.handle(StandIn(failures=[Reply(200, b'{"error": "nope"}', {"Content-Type": "application/json"})]))
    with pytest.raises(EurostatError, match="expected SDMX-CSV"):
        eurostat_api.fetch_unit(client(server), query())


@pytest.mark.parametrize("pack", ["gzip", "zip"])
def test_a_compressed_answer_is_unpacked(home, server, pack, tmp_path):
    import gzip
    import zipfile

    q = query()
    body = StandIn().csv(q.key(), q.params()).encode()
    if pack == "gzip":
        packed = gzip.compress(body)
    else:
        with zipfile.ZipFile(tmp_path / "a.zip", "w") as bundle:
            bundle.writestr("DS-045409.csv", body)
        packed = (tmp_path / "a.zip").read_bytes()
    server.handle(StandIn(failures=[Reply(200, packed, {"Content-Type": "application/octet-stream"})]))
    assert observations(eurostat_api.fetch_unit(client(server), q)) == expected(q)


def test_a_query_with_no_observations_says_so(home, server):
    q = query(reporters=("DE",), partners=("KZ",), products=("85423190",))
    server.handle(StandIn(missing={("DE", "KZ", "85423190")}))
    with pytest.raises(EurostatError, match="Eurostat holds no observations for this query"):
        eurostat_api.fetch_unit(client(server), q)


def test_a_refused_query_names_eurostat_s_fault_in_one_line(home, server):
    server.handle(StandIn(failures=[Reply(400, fault(400, "Invalid filter: unknown product 99999999"),
                                          {"Content-Type": "text/xml"})]))
    with pytest.raises(EurostatError, match=r"HTTP 400: Invalid filter: unknown product 99999999") as err:
        eurostat_api.fetch_unit(client(server), query())
    assert str(err.value).startswith("Eurostat DS-045409 2022-01..2022-02 reporters DE,FR") and "\n" not in str(err.value)


def test_a_404_saying_no_results_is_an_empty_part(home, server):
    standin = StandIn(max_cells=16,
                      failures=[Reply(404, fault(404, "No results found"), {"Content-Type": "text/xml"})])
    server.handle(standin)
    q = query()
    # The first half (16 cells) has no observations; the second half's are all there.
    got = observations(eurostat_api.fetch_unit(client(server, max_cells=16), q))
    assert got == {k: v for k, v in expected(q).items() if k[2] == "84713000"}


def test_answers_are_cached_revalidated_and_the_merged_file_is_stable(home, server):
    standin = StandIn(max_cells=8, etags=True)
    server.handle(standin)
    q = query()
    first = eurostat_api.fetch_unit(client(server, max_cells=8), q).read_bytes()
    parts = sorted((eurostat_api.unit_file(q).parent / "parts").glob("*.csv"))
    assert len(parts) == 4 and all(p.with_name(p.name + ".meta.json").exists() for p in parts)
    server.requests.clear()
    assert eurostat_api.fetch_unit(client(server, max_cells=8), q).read_bytes() == first
    asked = [r for r in server.requests if r.path.startswith(DATA_PATH)]
    assert len(asked) == 4 and all("If-None-Match" in r.headers for r in asked)  # 304s: the cached answers are used


def test_a_long_product_list_is_split_under_the_url_limit(home, server):
    standin = StandIn()
    server.handle(standin)
    products = tuple(f"8542{n:04d}" for n in range(300))
    q = query(months=("2022-01",), reporters=("DE",), partners=("KZ",), products=products, flows=("2",))
    c = client(server)
    path = eurostat_api.fetch_unit(c, q)
    assert len(observations(path)) == 300
    def url_of(key: str) -> str:
        return c.data_url(replace(q, products=tuple(key.split(".")[3].split("+"))))

    assert len(c.data_url(q)) > eurostat_api.MAX_URL_CHARS and len(standin.data_calls) == 2
    assert all(len(url_of(key)) <= eurostat_api.MAX_URL_CHARS for key, _ in standin.data_calls)


# ------------------------------------------------------------------------------- options and planning

@pytest.mark.parametrize("kwargs, where", [
    ({"products": ["8542X"]}, "--products 8542X"),
    ({"products": []}, "--products"),
    ({"partners": ["ZZZ"]}, "--partners ZZZ"),
    ({"reporters": ["KAZ"]}, "--reporters KZ"),
    ({"flow": "sideways"}, "--flow sideways"),
])
def test_bad_options_are_refused_naming_the_option(kwargs, where):
    args = {"products": PRODUCTS, "partners": ["KAZ"], "months": ["2022-01"], **kwargs}
    with pytest.raises(InputError) as err:
        eurostat_api.plan(**args)
    assert str(err.value).startswith(where + ":") and "\n" not in str(err.value)


def test_plan_takes_alpha3_defaults_to_the_eu27_and_groups_twelve_months():
    months = [f"2021-{m:02d}" for m in range(1, 13)] + ["2022-01", "2022-02"]
    units = eurostat_api.plan(products=["85423190", "TOTAL", "27"], partners=["KAZ", "am", "GRC"], months=months,
                              flow="export")
    assert [len(u.months) for u in units] == [12, 2]
    assert units[0].partners == ("KZ", "AM", "GR") and units[0].flows == ("2",)
    assert eurostat_api.country_codes(["EL", "UK", "GBR"], "--partners") == ("GR", "GB")
    assert len(units[0].reporters) == 27 and "GR" in units[0].reporters


# ------------------------------------------------------------------------------ the shared ingest path

def test_plain_run_loads_the_api_answer_then_finds_it_unchanged(home, server):
    standin = StandIn(max_cells=16, asynchronous=lambda key: key.split(".")[3] == "84713000")
    server.handle(standin)
    items = comext_sdmx.plan_api(products=PRODUCTS + ["TOTAL"], partners=["KAZ", "RUS"], months=["2022-01", "2022-02"],
                                 reporters=["DEU", "FRA"], base_url=server.url)
    db = home / "w.duckdb"
    summary = ingest.run_plain(db, items)
    assert summary.totals["rows"] == 48 and not summary.errors
    with warehouse.opened(db) as con:
        flows = con.execute("SELECT reporter_iso3, partner_iso3, product_code, flow, strftime(period, '%Y-%m'), value "
                            "FROM trade_flows ORDER BY ALL").fetchall()
        totals = con.execute("SELECT count(*), sum(value) FROM trade_totals WHERE product_group = 'TOTAL'").fetchone()
        sources = con.execute("SELECT DISTINCT source FROM loads ORDER BY 1").fetchall()
    assert len(flows) == 32 and flows[0] == ("DEU", "KAZ", "84713000", "export", "2022-01",
                                             value("DE", "KZ", "84713000", "2", "2022-01"))
    assert totals[0] == 16 and totals[1] == sum(value(r, p, "TOTAL", f, m) for r in ("DE", "FR") for p in ("KZ", "RU")
                                                 for f in ("1", "2") for m in ("2022-01", "2022-02"))
    assert sources == [("comext",), ("comext_sdmx",)]  # CN8 rows are Comext rows; totals the SDMX source's
    again = ingest.run_plain(db, items)
    assert [r.status for r in again.results] == ["unchanged"]


def test_a_revision_keeps_the_old_values_as_a_vintage(home, server):
    standin = StandIn()
    server.handle(standin)
    items = comext_sdmx.plan_api(products=PRODUCTS, partners=["KAZ"], months=["2022-01"], reporters=["DEU"],
                                 base_url=server.url)
    db = home / "w.duckdb"
    ingest.run_plain(db, items)
    standin.revision = 7
    result = ingest.run_plain(db, items).results[0]
    assert result.status == "ok" and result.rows == 4
    with warehouse.opened(db) as con:
        assert con.execute("SELECT count(*) FROM trade_flows_history").fetchone()[0] == 4
        assert con.execute("SELECT min(value) FROM trade_flows").fetchone()[0] == min(
            value("DE", "KZ", k, f, "2022-01", 7) for k in PRODUCTS for f in ("1", "2"))


def test_a_malformed_unit_stops_the_run_and_loads_nothing_of_it(home, server):
    standin = StandIn(malformed=lambda params: params["startPeriod"] == "2022-01")
    server.handle(standin)
    months = [f"2021-{m:02d}" for m in range(1, 13)] + ["2022-01"]
    items = comext_sdmx.plan_api(products=PRODUCTS, partners=["KAZ"], months=months, reporters=["DEU"],
                                 base_url=server.url)
    db = home / "w.duckdb"
    with pytest.raises(EurostatError, match="malformed answer"):
        ingest.run_plain(db, items)
    with warehouse.opened(db) as con:
        # The first unit (2021) loaded whole; nothing of the malformed one (2022-01).
        assert con.execute("SELECT count(*), min(period), max(period) FROM trade_flows").fetchone()[0] == 48
        assert con.execute("SELECT count(*) FROM trade_flows WHERE period >= DATE '2022-01-01'").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM loads WHERE status = 'ok'").fetchone()[0] == 12


def test_a_partner_subset_over_a_loaded_month_is_refused_by_the_shrink_guard(home, server):
    # A unit replaces its products with all their partners within each reporter-month: asking for one
    # partner of four would drop the other three, which the shrink guard refuses.
    server.handle(StandIn())
    db = home / "w.duckdb"
    wide = comext_sdmx.plan_api(products=PRODUCTS, partners=["KAZ", "RUS", "ARM", "GEO"], months=["2022-01"],
                                reporters=["DEU"], base_url=server.url)
    assert ingest.run_plain(db, wide).totals["rows"] == 16
    narrow = comext_sdmx.plan_api(products=PRODUCTS, partners=["KAZ"], months=["2022-01"], reporters=["DEU"],
                                  base_url=server.url)
    with pytest.raises(warehouse.ShrinkRefused, match="refused: it would replace comext 2022-01 DEU"):
        ingest.run_plain(db, narrow)
    with warehouse.opened(db) as con:
        assert con.execute("SELECT count(*) FROM trade_flows").fetchone()[0] == 16
