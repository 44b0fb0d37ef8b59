"""`tradewatch model status|train` through the real CLI, and what flags show says of past decisions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app

runner = CliRunner()
_spec = importlib.util.spec_from_file_location(
    "review_fixture", Path(__file__).resolve().parents[1] / "detect" / "conftest.py")
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)


def test_status_names_the_shipped_ranker_and_fits_80_columns():
    result = runner.invoke(app, ["model", "status"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("Ranker ranker-") and "verified: SHA-256" in out and "seeds 11, 12, 13, 14" in out
    assert "reviews used: 0" in out and "Leave one family out" in out
    table = [line for line in out.splitlines() if line.startswith(("│", "┃"))]
    assert table and max(len(line) for line in table) <= 80
    assert any(line.split("│")[1].strip() == "mean" for line in table if "│" in line)


def test_train_scores_its_worlds_with_the_config_given(tmp_path, monkeypatch):
    from tradewatch.detect import ranker
    from tradewatch.flows.core.errors import TradewatchError

    seen = []

    def stop(families, seeds, params=None, **_):  # record what the worlds would be scored with, build none
        seen.append((families, seeds, params))
        raise TradewatchError("stopped before building worlds")

    monkeypatch.setattr(ranker, "collect", stop)
    config = tmp_path / "candidate.toml"
    config.write_text("band_floor = 2500.0\nmin_growth = 1.1\n", encoding="utf-8")
    out = tmp_path / "model"
    result = runner.invoke(app, ["model", "train", "--families", "mixed", "--seeds", "2", "--first-seed", "11",
                                 "--config", str(config), "--out", str(out)])
    assert result.exit_code == 2 and "stopped before building worlds" in result.output
    (families, seeds, params), = seen
    assert families == ["mixed"] and seeds == [11, 12]
    assert params.band_floor == 2500.0 and params.min_growth == 1.1
    assert params.min_excess == ranker_defaults()["min_excess"]  # keys not in the file keep the defaults

    seen.clear()
    runner.invoke(app, ["model", "train", "--out", str(out)])
    assert seen[0][2].band_floor == ranker_defaults()["band_floor"]  # no --config: the shipped defaults

    seen.clear()
    config.write_text("band_flor = 2500.0\n", encoding="utf-8")
    result = runner.invoke(app, ["model", "train", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 2 and "band_flor" in result.output
    assert not seen and not out.exists()  # refused before any world is built


def ranker_defaults() -> dict:
    from tradewatch.detect.config import defaults

    return defaults()


@pytest.fixture(scope="module")
def reviewed_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("model-cli") / "w.duckdb"
    fixture.build_detectable_warehouse(path)
    detect = runner.invoke(app, ["detect", "--db", str(path), "--format", "json"])
    assert detect.exit_code == 0, detect.output
    route = json.loads(detect.stdout)[0]["id"]
    review = runner.invoke(app, ["flags", "review", route, "--status", "confirmed", "--note", "seen at customs",
                                 "--db", str(path)])
    assert review.exit_code == 0, review.output
    return path, route


def test_train_with_too_few_decisions_changes_nothing(reviewed_db, tmp_path):
    path, _ = reviewed_db
    out = tmp_path / "model"
    result = runner.invoke(app, ["model", "train", "--with-reviews", "--db", str(path), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "1 usable decisions (1 confirmed, 0 dismissed)" in result.output and "nothing trained" in result.output
    assert not out.exists()


def test_reviewed_routes_become_examples_with_their_labels(reviewed_db):
    from tradewatch.detect import ranker
    from tradewatch.flows import warehouse

    path, route = reviewed_db
    con = warehouse.connect(path, read_only=True)
    try:
        examples = ranker.review_examples(con)
    finally:
        con.close()
    assert examples["route_id"].to_list() == [route] and examples["label"].to_list() == [True]
    assert examples["family"].to_list() == ["reviews"]
    assert ranker.feature_matrix(examples).shape == (1, len(ranker.FEATURES))


def test_flags_show_says_what_taught_the_run_s_ranker(reviewed_db):
    path, route = reviewed_db
    result = runner.invoke(app, ["flags", "show", route, "--db", str(path)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "the run's ranker learned from no analyst's decisions" in result.stdout


def test_flags_show_says_what_the_score_is_and_what_moved_it(reviewed_db):
    path, route = reviewed_db
    result = runner.invoke(app, ["flags", "show", route, "--db", str(path)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "(the ranker's calibrated probability; see the p_value and q_value features)" in result.stdout
    plain = runner.invoke(app, ["detect", "--db", str(path), "--config", str(_no_ranker(path.parent))])
    assert plain.exit_code == 0, plain.output
    again = runner.invoke(app, ["flags", "show", route, "--db", str(path)], env={"COLUMNS": "160"})
    assert "(1 − p; see the p_value and q_value features)" in again.stdout and "ranker moved by" not in again.stdout


def _no_ranker(folder: Path) -> Path:
    config = folder / "no-ranker.toml"
    config.write_text("ranker = false\n", encoding="utf-8")
    return config
