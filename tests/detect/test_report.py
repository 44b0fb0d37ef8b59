"""The HTML report: self-contained, escaped, complete; SVG charts; Prefect artifact content."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from types import SimpleNamespace

import polars as pl
import pytest
from conftest import EVIL, ROUTE_CARS, ROUTE_CHIPS, ROUTE_MODEMS, RUN_NEW, RUN_OLD

from tradewatch.flows.core import products
from tradewatch.detect import report, review
from tradewatch.flows import warehouse
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.core.numbers import money


@pytest.fixture
def con(review_db):
    connection = warehouse.connect(review_db)
    yield connection
    connection.close()


class _Collector(HTMLParser):
    """Tags, attributes and script bodies of a page."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []  # text outside scripts, entities resolved: what a reader sees
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)


def parse(text: str) -> _Collector:
    collector = _Collector()
    collector.feed(text)
    return collector


def test_report_is_one_self_contained_file(con, tmp_path):
    path = report.write_report(con, "latest", tmp_path / "r.html")
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    # nothing fetched from anywhere: no src/href to another resource, one inline script, inline styles
    for tag, attrs in page.tags:
        assert "src" not in attrs, (tag, attrs)
        href = attrs.get("href")
        assert href is None or href.startswith(("#", "data:")), (tag, attrs)
    assert [tag for tag, _ in page.tags].count("script") == 1
    assert [tag for tag, _ in page.tags].count("style") == 1
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)
    assert "default-src 'none'" in text


def test_report_shows_run_coverage_counts_table_and_charts(con):
    review.review(con, ROUTE_MODEMS, "dismissed", "known distributor", run=RUN_OLD)
    text = report.build_report(con, top=3)
    assert RUN_NEW in text and "2022-03" in text and "test-model-1" in text
    assert "baseline_months" in text and "onward_growth" in text  # parameters and unavailable features
    # coverage: both sources with their first and last month; loads per source
    assert re.search(r"comext</td><td[^>]*>M</td><td[^>]*>EUR</td><td[^>]*>2021-01</td><td[^>]*>2022-12", text)
    assert re.search(r"comtrade</td><td[^>]*>M</td><td[^>]*>USD</td><td[^>]*>2021-06</td>", text)
    # counts by transit (country names from pycountry) and by tier
    assert "Kazakhstan (KAZ)" in text and "Tier 3.A" in text and "not on CHPL" in text
    page = parse(text)
    rows = [attrs for tag, attrs in page.tags if tag == "tr" and "data-id" in attrs]
    assert [r["data-id"] for r in rows][:2] == [ROUTE_CHIPS, "r-pol-geo-847150"]
    assert {r["data-transit"] for r in rows} == {"KAZ", "GEO", "ARM", "KGZ"}
    assert {r["data-tier"] for r in rows} == {"1", "2", "3.A", "none"}
    assert {r["data-id"]: r["data-status"] for r in rows}[ROUTE_MODEMS] == "reopened"
    # sortable headers and the three filters
    headers = [attrs for tag, attrs in page.tags if tag == "th" and "data-key" in attrs]
    assert {h["data-key"] for h in headers} >= {"score", "excess", "growth", "transit", "tier"}
    assert {attrs.get("id") for _, attrs in page.tags} >= {"filter", "transit-filter", "tier-filter", "flags"}
    # a chart for every flagged route, each with the event line and the shaded baseline band; the top 3 open
    assert text.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 5
    assert text.count('class="event"') == 5 and text.count('class="band-baseline"') == 5
    assert text.count('<details class="chart-box" open>') == 3 and text.count('<details class="chart-box">') == 2
    assert {attrs["href"] for tag, attrs in page.tags if tag == "a"} >= {f"#route-{n}" for n in range(1, 6)}


def test_everything_from_data_is_escaped(con, monkeypatch):
    monkeypatch.setattr(products, "product_name", lambda code: f'{EVIL} "quoted" & <b>bold</b>')
    monkeypatch.setattr(review, "country_name", lambda code: f"<img src=x onerror=alert(1)>{code}")
    con.execute("UPDATE runs SET params_json = ? WHERE run_id = ?",
                ['{"event": "2022-03", "</script><script>alert(2)</script>": 1}', RUN_NEW])
    text = report.build_report(con, top=5)
    page = parse(text)
    assert [tag for tag, _ in page.tags].count("script") == 1
    assert not any(tag == "img" or tag == "b" for tag, _ in page.tags)
    assert "alert" not in "".join(page.scripts)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text  # the reason, escaped ...
    assert "<script>alert('x')</script>" in "".join(page.text)  # ... and shown as text
    assert "&lt;img src=x onerror=alert(1)&gt;KAZ" in text
    assert "<script>alert" not in text and "<img" not in text


def test_default_report_path_is_under_tradewatch_home(con, tradewatch_home):
    path = report.write_report(con)
    assert path == tradewatch_home / "reports" / f"report-{RUN_NEW}.html"
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert report.default_report_path("a/b c").name == "report-a_b_c.html"


def test_report_of_an_older_run_and_bad_targets(con, tmp_path):
    text = report.build_report(con, run=RUN_OLD, top=0)
    assert RUN_OLD in text and text.count('class="chart"') == 3 and "<circle" not in text  # all collapsed
    with pytest.raises(InputError, match="does not exist"):
        report.write_report(con, out=tmp_path / "nope" / "r.html")
    with pytest.raises(InputError, match="is a folder"):
        report.write_report(con, out=tmp_path)
    with pytest.raises(InputError, match="--run nope"):
        report.write_report(con, run="nope", out=tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_leg_chart_is_well_formed_svg_with_event_and_bands(con):
    evidence = review.show_route(con, ROUTE_CHIPS)
    svg = ET.fromstring(report.leg_chart_svg(evidence))
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.tag == f"{ns}svg"
    paths = svg.findall(f"{ns}path")
    assert len(paths) == 3  # all three legs have data
    event = svg.find(f"{ns}line[@class='event']")
    baseline = svg.find(f"{ns}rect[@class='band-baseline']")
    recent = svg.find(f"{ns}rect[@class='band-recent']")
    assert event is not None and baseline is not None and recent is not None
    # the event line lies right of the baseline band and at the start of the recent band
    assert float(baseline.get("x")) + float(baseline.get("width")) < float(event.get("x1"))
    assert float(recent.get("x")) <= float(event.get("x1")) <= float(recent.get("x")) + float(recent.get("width"))
    # the Kazakh leg starts in 2021-06: its path starts five months in, not at the left edge
    first_x = [float(p.get("d").split()[0][1:].split(",")[0]) for p in paths]
    assert first_x[2] > first_x[0]


def _axis_texts(svg) -> dict[str, list[str]]:
    """The value labels of a leg chart by side: 'left' (text-anchor end, left of the plot) and 'right'."""
    ns = "{http://www.w3.org/2000/svg}"
    ticks = [t for t in svg.findall(f"{ns}text") if "tick" in (t.get("class") or "") and "$" in (t.text or "")
             or "€" in (t.text or "")]
    return {"left": [t.text for t in ticks if t.get("text-anchor") == "end"],
            "right": [t.text for t in ticks if "tick-right" in (t.get("class") or "")]}


def test_a_usd_leg_gets_its_own_axis_without_ecb_rates(con):
    # DEU→KAZ and DEU→RUS come from Comext in EUR, KAZ→RUS from Comtrade in USD
    evidence = review.show_route(con, ROUTE_CHIPS)
    assert [leg.currency for leg in evidence.legs] == ["EUR", "EUR", "USD"] and evidence.usd_per_eur == {}
    chart = report.leg_chart(evidence)
    svg = ET.fromstring(report.leg_chart_svg(evidence))
    sides = _axis_texts(svg)
    assert sides["left"] and all(text.startswith("€") for text in sides["left"])
    assert sides["right"] and all(text.startswith("$") for text in sides["right"])
    titles = [t.text for t in svg.findall("{http://www.w3.org/2000/svg}text[@class='axis-title']")]
    assert titles == ["EUR", "USD"]
    assert [leg["name"] for leg in chart["legs"]] == ["DEU→KAZ", "DEU→RUS", "KAZ→RUS (USD, right axis)"]
    # every dot's value is in the currency of the axis its leg is drawn against: no USD leg on the € axis
    usd_dots = [p["text"] for p in chart["legs"][2]["points"]]
    assert usd_dots and all(text.startswith("$") for text in usd_dots)
    assert "USD legs on the right axis" in chart["note"] and "no ECB rates" in chart["note"]
    # the top of the right axis is the USD leg's largest value as scored (route_rows), not a € value
    assert chart["grid"][-1]["right"]["text"] == money(max(v for v in evidence.legs[2].values if v), "USD")


def test_usd_legs_are_converted_to_eur_when_ecb_rates_are_loaded(con):
    from datetime import date, datetime

    months = [date(2021 + (m // 12), m % 12 + 1, 1) for m in range(24)]
    con.executemany("INSERT INTO fx_rates (period, base, quote, rate, source, loaded_at) VALUES (?, 'EUR', 'USD', ?, 'ecb', ?)",
                    [(month, 1.25, datetime(2023, 1, 1)) for month in months])
    evidence = review.show_route(con, ROUTE_CHIPS)
    chart = report.leg_chart(evidence)
    assert chart["right_axis"] is None and all(line["right"] is None for line in chart["grid"])
    assert chart["legs"][2]["name"] == "KAZ→RUS (USD converted to EUR)"
    assert "USD legs converted to EUR at the ECB's monthly reference rates" in chart["note"]
    drawn = [p["text"] for p in chart["legs"][2]["points"]]
    scored = [v for v in evidence.legs[2].values if v is not None]
    assert drawn == [money(value / 1.25, "EUR") for value in scored]  # the scored rows, at 1.25 USD per EUR
    text = report.build_report(con, top=5)
    assert "drawn in EUR at ECB monthly rates" in text and "right axis" not in text


def test_chart_without_data_says_so():
    evidence = SimpleNamespace(months=[], legs=[], route={}, event=None)
    assert "No monthly trade rows" in report.leg_chart_svg(evidence)


def _run_result(con):
    cursor = con.execute("SELECT * FROM anomalies WHERE run_id = ? ORDER BY rank", [RUN_NEW])
    flagged = pl.DataFrame(cursor.fetchall(), schema=[c[0] for c in cursor.description], orient="row")
    return SimpleNamespace(run_id=RUN_NEW, flagged=flagged, candidates=1234,
                           params=SimpleNamespace(event="2022-03"))


def test_artifact_table_rows(con):
    rows = report.artifact_table(_run_result(con), top=3)
    assert [r["id"] for r in rows] == [ROUTE_CHIPS, "r-pol-geo-847150", ROUTE_MODEMS]
    assert rows[0]["tier"] == "1" and rows[0]["product_name"].startswith("Electronic integrated")
    assert rows[1]["growth"] is None  # +inf is not JSON
    assert set(rows[0]) >= {"rank", "score", "origin", "transit", "target", "product", "excess_value", "reasons"}
    assert report.artifact_table(SimpleNamespace(run_id="x", flagged=pl.DataFrame())) == []


def test_artifact_markdown_summary(con):
    text = report.artifact_markdown(_run_result(con), top=5)
    assert text.startswith(f"# Flagged diversion routes — run {RUN_NEW}")
    assert "**5** routes flagged of 1,234 candidates (event 2022-03)" in text
    assert "Kazakhstan (KAZ) 2" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + 5
    assert all(line.count(" | ") == 9 for line in table)  # ten cells, no pipe from the data splits a row
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert ROUTE_CARS in text
    empty = report.artifact_markdown(SimpleNamespace(run_id="x", flagged=pl.DataFrame(), candidates=3))
    assert "No route is flagged." in empty and "**0** routes flagged of 3 candidates" in empty


def test_artifact_markdown_escapes_pipes():
    frame = pl.DataFrame([{"rank": 1, "route_id": "a|b", "score": 1.0, "origin_iso3": "DEU",
                           "transit_iso3": "KAZ", "target_iso3": "RUS", "product_code": "854231",
                           "currency": "EUR", "reasons": "x | y\nz"}])
    text = report.artifact_markdown(frame)
    row = next(line for line in text.splitlines() if line.startswith("| 1 "))
    assert "x \\| y z" in row and row.count(" | ") == 9


def test_growth_formatting():
    assert report.growth_text({"growth": None, "baseline_value": 0.0, "recent_value": 5.0}) == "from zero"
    assert report.growth_text({"growth": None, "baseline_value": 0.0, "recent_value": 0.0}) == "–"
    assert report.growth_text({"growth": 3.0, "baseline_value": 1.0}) == "×3.0"


def test_artifacts_from_a_real_detection_run(tmp_path):
    from conftest import build_detectable_warehouse

    from tradewatch.detect import engine

    con = warehouse.connect(build_detectable_warehouse(tmp_path / "w.duckdb"))
    try:
        result = engine.run_detection(con, engine.DetectParams(event="2022-03"))
        stored = engine.load_run(con, result.run_id)
    finally:
        con.close()
    for run in (result, stored):
        rows = report.artifact_table(run)
        assert rows and rows[0]["id"] == result.flagged["route_id"][0]
        assert rows[0]["origin"] == "DEU" and rows[0]["transit"] == "KAZ" and rows[0]["tier"] == "1"
        text = report.artifact_markdown(run)
        assert f"run {result.run_id}" in text and "(event 2022-03)" in text and rows[0]["id"] in text


def test_score_text_tells_strong_routes_apart():
    from tradewatch.detect.report import score_text

    assert score_text(0.99996) == "1−4e-05" and score_text(0.9991) == "1−9e-04" and score_text(0.998) == "0.998"
    assert score_text(0.62) == "0.620" and score_text(1.0) == "1" and score_text(None) == "–"
