"""The Comtrade API client against a local stand-in: endpoints and parameters, the key kept secret, splitting at the cap, retries."""

from __future__ import annotations

import json
import logging

import pytest

from ingest_helpers import Reply, home, server  # noqa: F401  (fixtures)
from tradewatch.flows import comtrade_api, ingest, warehouse
from tradewatch.flows.comtrade_api import ComtradeClient, ComtradeError, Request
from tradewatch.flows.download import RetryPolicy

SECRET = "k3y-very-secret-0123456789"
FAST = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.02, timeout_s=1.0)
PARTNERS = ("643", "112", "398")


def comtrade_answer(query: dict) -> dict:
    """Records for every reporter × period × product × flow × partner asked, truncated at maxRecords like the API."""
    records = []
    for reporter in query["reporterCode"].split(","):
        for period in query["period"].split(","):
            for cmd in query["cmdCode"].split(","):
                for flow in query["flowCode"].split(","):
                    partners = query["partnerCode"].split(",") if "partnerCode" in query else PARTNERS
                    for partner in partners:
                        if partner not in PARTNERS:
                            continue
                        records.append({"freqCode": "M", "period": period, "reporterCode": int(reporter),
                                        "flowCode": flow, "partnerCode": int(partner), "partner2Code": 0,
                                        "cmdCode": cmd, "customsCode": "C00", "motCode": 0,
                                        "primaryValue": 100.0 + int(partner) % 7, "netWgt": 1.0})
    cap = int(query["maxRecords"])
    return {"elapsedTime": "0.01 secs", "count": min(len(records), cap), "data": records[:cap], "error": ""}


def serve_comtrade(server, path_prefix="/public/v1/preview/C/M/HS"):
    def answer(path, query, headers):
        if path == path_prefix:
            return Reply(200, json.dumps(comtrade_answer(query)).encode(), {"Content-Type": "application/json"})
        return None

    server.handle(answer)


def client(server, **kwargs) -> ComtradeClient:
    kwargs.setdefault("min_interval_s", 0.0)
    return ComtradeClient(base_url=server.url, policy=FAST, **kwargs)


def unit(products=("8542", "8517"), periods=("202201",)) -> Request:
    return Request(freq="M", reporters=("398",), periods=periods, products=products)


def test_keyless_uses_preview_with_totals_only(home, server):
    serve_comtrade(server)
    records = client(server).fetch(unit(), home / "work")
    assert len(records) == 12
    query = server.requests[0].query
    assert server.requests[0].path == "/public/v1/preview/C/M/HS"
    assert {k: query[k] for k in ("partner2Code", "motCode", "customsCode", "maxRecords")} == {
        "partner2Code": "0", "motCode": "0", "customsCode": "C00", "maxRecords": "500"}
    assert "Ocp-Apim-Subscription-Key" not in server.requests[0].headers


def test_keyed_uses_data_endpoint_and_header(home, server, monkeypatch):
    monkeypatch.setenv("COMTRADE_API_KEY", SECRET)
    serve_comtrade(server, "/data/v1/get/C/M/HS")
    records = client(server).fetch(unit(), home / "work")
    assert len(records) == 12
    assert server.requests[0].headers.get("Ocp-Apim-Subscription-Key") == SECRET
    assert SECRET not in server.requests[0].path and SECRET not in json.dumps(server.requests[0].query)
    assert server.requests[0].query["maxRecords"] == "100000"


def test_answer_exactly_at_the_cap_is_split_and_asked_again(home, server):
    serve_comtrade(server)
    records = client(server, max_records=6).fetch(unit(), home / "work")
    # 12 records: the first answer stops at 6 (the cap) → split by product → 6 each (cap) → split by flow.
    assert len(records) == 12
    assert len({(r["cmdCode"], r["flowCode"], r["partnerCode"]) for r in records}) == 12
    asked = [(r.query["cmdCode"], r.query["flowCode"]) for r in server.requests]
    assert asked == [("8542,8517", "X,M"), ("8542", "X,M"), ("8542", "X"), ("8542", "M"),
                     ("8517", "X,M"), ("8517", "X"), ("8517", "M")]


def test_capped_answer_split_down_to_partners(home, server):
    serve_comtrade(server)
    records = client(server, max_records=3).fetch(unit(products=("8542",)), home / "work")
    assert len(records) == 6 and any("partnerCode" in r.query for r in server.requests)


def test_unsplittable_capped_answer_is_an_error_not_a_truncation(home, server):
    serve_comtrade(server)
    request = Request(freq="M", reporters=("398",), periods=("202201",), products=("8542",), flows=("X",),
                      partners=("643",))
    with pytest.raises(ComtradeError, match="reached the 1-record cap and cannot be split"):
        client(server, max_records=1).fetch(request, home / "work")


def test_429_then_success_and_5xx_are_retried(home, server):
    good = json.dumps(comtrade_answer({"reporterCode": "398", "period": "202201", "cmdCode": "8542",
                                       "flowCode": "X", "maxRecords": "500"})).encode()
    server.route("/public/v1/preview/C/M/HS", Reply(429, b"rate limited", {"Retry-After": "0"}), Reply(502), Reply(200, good))
    slept = []
    records = client(server, sleep=slept.append).fetch(unit(products=("8542",)), home / "work")
    assert len(records) == 3 and len(server.requests) == 3
    assert slept[0] == 0.0  # Retry-After: 0 honoured, not replaced by a backoff


def test_timeout_then_success(home, server):
    good = json.dumps({"count": 0, "data": [], "error": ""}).encode()
    server.route("/public/v1/preview/C/M/HS", Reply(200, good, delay_s=0.6), Reply(200, good))
    policy = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.01, timeout_s=0.3)
    records = ComtradeClient(base_url=server.url, policy=policy, min_interval_s=0).fetch(unit(), home / "work")
    assert records == [] and len(server.requests) == 2


def test_html_instead_of_json_names_the_request(home, server):
    server.route("/public/v1/preview/C/M/HS", Reply(200, b"<html><body>Service Unavailable</body></html>",
                                                    {"Content-Type": "text/html"}))
    with pytest.raises(ComtradeError, match=r"Comtrade M reporters 398 periods 202201 products 8542,8517 .*HTML page"):
        client(server).fetch(unit(), home / "work")


def test_body_cut_short_is_retried(home, server):
    body = json.dumps(comtrade_answer({"reporterCode": "398", "period": "202201", "cmdCode": "8542",
                                       "flowCode": "X", "maxRecords": "500"})).encode()
    server.route("/public/v1/preview/C/M/HS", Reply(200, body, cut_after=40, ranges=False), Reply(200, body))
    assert len(client(server).fetch(unit(products=("8542",)), home / "work")) == 3


def test_api_error_and_give_up_never_show_the_key(home, server, monkeypatch, caplog):
    monkeypatch.setenv("COMTRADE_API_KEY", SECRET)
    server.route("/data/v1/get/C/M/HS", Reply(401, json.dumps({"statusCode": 401, "message": f"Access denied {SECRET}"}).encode()))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ComtradeError) as denied:
        client(server).fetch(unit(), home / "work")
    assert "HTTP 401" in str(denied.value) and SECRET not in str(denied.value) and denied.value.status == 401
    server.routes.clear()
    server.route("/data/v1/get/C/M/HS", Reply(503))
    with pytest.raises(ComtradeError) as gave_up:
        client(server).fetch(unit(), home / "work")
    assert "gave up after 4 attempt" in str(gave_up.value) and "periods 202201" in str(gave_up.value)
    assert gave_up.value.status == 503 and gave_up.value.transient
    assert SECRET not in str(gave_up.value) and SECRET not in caplog.text
    assert not any(SECRET in p.read_text(errors="ignore") for p in home.rglob("*") if p.is_file())


def test_units_fetched_saved_and_loaded_through_the_file_loader(home, server, monkeypatch):
    monkeypatch.setenv("COMTRADE_API_KEY", SECRET)
    monkeypatch.setenv("TRADEWATCH_COMTRADE_INTERVAL_S", "0")
    serve_comtrade(server, "/data/v1/get/C/M/HS")
    items = ingest.comtrade_items(["KAZ", "ARM"], ["2022-01", "2022-02"], freq="M", products=["8542"],
                                  base_url=server.url)
    assert len(items) == 2  # one unit per reporter: with a key, 12 months fit in one call
    summary = ingest.run_plain(home / "w.duckdb", items)
    assert summary.totals["rows"] == 2 * 2 * 2 * 3  # reporters × months × flows × partners
    con = warehouse.connect(home / "w.duckdb", read_only=True)
    assert con.execute("SELECT DISTINCT currency, source FROM trade_flows").fetchall() == [("USD", "comtrade")]
    assert con.execute("SELECT count(*) FROM loads WHERE file LIKE ?", [f"%{SECRET}%"]).fetchone()[0] == 0
    con.close()
    again = ingest.run_plain(home / "w.duckdb", items)
    assert again.totals["unchanged"] == 2
    assert not any(SECRET in p.read_text(errors="ignore") for p in home.rglob("*") if p.is_file())


def test_plan_refuses_unknown_reporters_and_products():
    from tradewatch.flows.core.errors import InputError

    with pytest.raises(InputError, match="--reporters XXQ"):
        comtrade_api.plan(["XXQ"], ["2022-01"], freq="M", keyed=False)
    with pytest.raises(InputError, match="--products 85x"):
        comtrade_api.plan(["KAZ"], ["2022-01"], freq="M", products=["85x"], keyed=False)
    units = comtrade_api.plan(["USA", "FRA"], ["2022-01", "2022-02"], freq="M", keyed=False)
    assert [u.reporters for u in units] == [("842",), ("842",), ("251",), ("251",)]
