"""The simulated-review curve stored under TRADEWATCH_HOME and plotted in the report, and exploration routes
marked in the report and in `flags list` exports."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime

import pytest
from conftest import EVIL, ROUTE_CARS, RUN_NEW

from tradewatch.detect import export, report, review, review_curve
from tradewatch.flows import warehouse
from tradewatch.flows.core.errors import InputError

CURVE = {"family": "mixed", "seed": 101, "prior_seed": 11, "batch": 20, "weight": 20.0, "planted": 34,
         "candidates": 781, "exploration_share": 0.1,
         "rounds": [{"round": 1, "precision_with_reviews": 0.95, "precision_without": 0.95, "found_with_reviews": 19,
                     "found_without": 19, "explored": 2, "explored_planted": 0},
                    {"round": 2, "precision_with_reviews": 0.65, "precision_without": 0.55, "found_with_reviews": 32,
                     "found_without": 30, "explored": 2, "explored_planted": 1},
                    {"round": 3, "precision_with_reviews": 0.1, "precision_without": 0.1, "found_with_reviews": 34,
                     "found_without": 32, "explored": 2, "explored_planted": 0}]}


@pytest.fixture
def con(review_db):
    connection = warehouse.connect(review_db)
    yield connection
    connection.close()


def _section(html: str) -> str:
    found = re.search(r'<section id="simulated-review">.*?</section>', html, re.S)
    assert found, "the report has no simulated-review section"
    return found.group(0)


def test_curve_is_stored_under_home_and_read_back(tradewatch_home):
    path = review_curve.save(CURVE, now=datetime(2026, 12, 1, 12, 0))
    assert path == tradewatch_home / "evaluation" / review_curve.CURVE_FILE
    curve = review_curve.load()
    assert curve["rounds"] == CURVE["rounds"] and curve["measured_at"] == "2026-12-01T12:00:00Z"
    assert not list(path.parent.glob("*.partial"))


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not a readable JSON file"),
    (json.dumps({"format": "other"}), "expected format"),
    (json.dumps({"format": review_curve.FORMAT, "family": "mixed", "seed": 1, "rounds": [{"round": 1}]}),
     "expected a list of rounds"),
    (json.dumps({"format": review_curve.FORMAT, "rounds": CURVE["rounds"]}), "family and seed"),
])
def test_a_file_that_is_not_a_curve_is_one_line(tradewatch_home, content, problem):
    path = review_curve.curve_path()
    path.parent.mkdir(parents=True)
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=problem) as caught:
        review_curve.load()
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_report_without_a_curve_says_how_to_measure_it(con):
    section = _section(report.build_report(con, "latest"))
    assert "No simulated-review curve has been measured" in section
    assert review_curve.HOW_TO in section and "<svg" not in section


def test_report_plots_the_stored_curve_as_escaped_inline_svg(con):
    review_curve.save({**CURVE, "family": EVIL})
    html = report.build_report(con, "latest")
    section = _section(html)
    assert EVIL not in html and "&lt;script&gt;" in section and "seed 101" in section
    svgs = re.findall(r"<svg class=\"chart curve\".*?</svg>", section, re.S)
    assert len(svgs) == 2
    for svg in svgs:
        root = ET.fromstring(svg)  # well-formed, nothing fetched
        lines = root.findall("{http://www.w3.org/2000/svg}polyline")
        assert len(lines) == 2 and all(len(line.get("points").split()) == len(CURVE["rounds"]) for line in lines)
        assert not [e for e in root.iter() if any(k.endswith("href") for k in e.attrib)]
    # batch precision 0.95 is near the top of the first chart, 0.1 near the bottom
    first = ET.fromstring(svgs[0]).findall("{http://www.w3.org/2000/svg}polyline")[0].get("points").split()
    heights = [float(point.split(",")[1]) for point in first]
    assert heights[0] < heights[1] < heights[2]
    assert "exploration share 0.1" in section


def test_report_with_a_broken_curve_says_so(con):
    path = review_curve.curve_path()
    path.parent.mkdir(parents=True)
    path.write_text("{", encoding="utf-8")
    section = _section(report.build_report(con, "latest"))
    assert "cannot be read" in section and "not a readable JSON file" in section


def test_exploration_routes_are_marked_in_report_and_exports(con, tmp_path):
    con.execute("UPDATE anomalies SET exploration = true WHERE run_id = ? AND route_id = ?", [RUN_NEW, ROUTE_CARS])
    html = report.build_report(con, RUN_NEW)
    row = re.search(rf'<tr data-id="{ROUTE_CARS}".*?</tr>', html, re.S).group(0)
    assert "status-exploration" in row
    assert re.search(r"4 flagged of \S+ candidate routes \(\+ 1 marked exploration", html)
    assert "EXPLORATION: not flagged" in html
    frame = review.list_flags(con, run=RUN_NEW)
    assert dict(zip(frame["id"], frame["exploration"]))[ROUTE_CARS] is True
    assert sum(frame["exploration"]) == 1
    out = tmp_path / "flags.json"
    export.write(frame, "json", out)
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert {r["id"]: r["exploration"] for r in rows}[ROUTE_CARS] is True
