"""The learned ranker: the shipped model loads verified, scores a route from its own row only, refuses a
tampered or foreign file in one line, and trains reproducibly on test worlds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app
from tradewatch.detect import ranker
from tradewatch.flows.core.errors import TradewatchError


@pytest.fixture(scope="module")
def world():
    """The scored, labelled HS-6 routes of one test world (written and loaded through the real readers)."""
    return ranker.world_examples("classic", 7)


def test_shipped_ranker_loads_verified():
    loaded = ranker.load(ranker.shipped_dir())
    manifest = loaded.manifest
    assert manifest["format"] == ranker.FORMAT and manifest["features"] == list(ranker.FEATURES)
    assert loaded.checksum == manifest["sha256"] and loaded.version.startswith("ranker-")
    assert set(manifest["leave_one_family_out"]) >= {"classic", "inflation", "mixed"}
    assert 11 in manifest["training"]["seeds"] and 101 not in manifest["training"]["seeds"]


def test_a_routes_probability_depends_on_its_own_row_only(world):
    loaded = ranker.load(ranker.shipped_dir())
    everything = loaded.probabilities(world)
    assert everything.shape == (world.height,) and np.all((everything >= 0) & (everything <= 1))
    some = world.sample(n=min(50, world.height), seed=3, shuffle=True)
    alone = loaded.probabilities(some)
    index = {route: i for i, route in enumerate(world["route_id"])}
    assert np.allclose(alone, everything[[index[r] for r in some["route_id"]]])


def test_planted_routes_rank_higher_than_the_rest_on_an_unseen_seed(world):
    probability = ranker.load(ranker.shipped_dir()).probabilities(world)
    labels = world["label"].to_numpy()
    assert labels.any() and probability[labels].mean() > probability[~labels].mean() + 0.3


def test_tampered_model_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(ranker.shipped_dir(), folder)
    data = bytearray((folder / ranker.MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / ranker.MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(TradewatchError, match="refused: its SHA-256") as caught:
        ranker.load(folder)
    assert "\n" not in str(caught.value)
    result = CliRunner().invoke(app, ["model", "status", "--model", str(folder)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "refused" in result.output


def test_manifest_for_other_features_is_refused(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(ranker.shipped_dir(), folder)
    manifest = json.loads((folder / ranker.MANIFEST_FILE).read_text())
    manifest["features"] = manifest["features"][:-1]
    (folder / ranker.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(TradewatchError, match="trained on other features"):
        ranker.load(folder)


def test_a_file_holding_foreign_types_is_refused_before_loading(tmp_path):
    import fractions

    import skops.io as sio

    folder = tmp_path / "model"
    folder.mkdir()
    sio.dump({"weights": fractions.Fraction(1, 3)}, folder / ranker.MODEL_FILE)
    # every key save() writes, so that only the foreign type is wrong
    manifest = {"format": ranker.FORMAT, "features": list(ranker.FEATURES), "version": "ranker-test",
                "file": ranker.MODEL_FILE, "trained_at": "2024-01-01T00:00:00+00:00",
                "libraries": ranker._library_versions(), "sha256": ranker._sha256(folder / ranker.MODEL_FILE)}
    (folder / ranker.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(TradewatchError, match="holds types no tradewatch model has"):
        ranker.load(folder)


def test_missing_or_broken_manifest_is_one_line(tmp_path):
    with pytest.raises(TradewatchError, match="no ranker manifest here"):
        ranker.load(tmp_path)
    (tmp_path / ranker.MANIFEST_FILE).write_text("{not json")
    with pytest.raises(TradewatchError, match="not a ranker manifest"):
        ranker.load(tmp_path)


def test_training_is_reproducible_and_the_saved_model_predicts_the_same(world, tmp_path):
    first = ranker.fit(world)
    second = ranker.fit(world)
    matrix = ranker.feature_matrix(world)
    assert np.array_equal(first.predict_proba(matrix), second.predict_proba(matrix))
    manifest = ranker.save(first, tmp_path / "m", {"training": {"families": ["classic"], "seeds": [7]}})
    loaded = ranker.load(tmp_path / "m")
    assert loaded.checksum == manifest["sha256"]
    assert np.array_equal(loaded.probabilities(world), first.predict_proba(matrix)[:, 1])


def test_one_class_is_refused(world):
    with pytest.raises(TradewatchError, match="only one class"):
        ranker.fit(world.filter(~pl.col("label")))


def test_world_metrics_compare_the_statistic_and_the_ranker(world):
    probability = ranker.load(ranker.shipped_dir()).probabilities(world)
    metrics = ranker.world_metrics(world, probability, 0.5)
    assert set(metrics) == {"ap_statistic", "ap_ranker", "precision_statistic", "recall_statistic",
                            "precision_ranker", "recall_ranker"}
    # the ranker keeps a subset of the statistic's flags: recall can only fall, never rise
    assert metrics["recall_ranker"] <= metrics["recall_statistic"]
    # a perfect oracle ranks every planted candidate first
    oracle = ranker.world_metrics(world, world["label"].cast(pl.Float64).to_numpy(), 0.5)
    assert oracle["ap_ranker"] == pytest.approx(world["label"].sum() / world["planted"][0])


def test_every_feature_has_words_and_explanations_name_features():
    assert set(ranker.FEATURE_WORDS) == set(ranker.FEATURES)
    assert all(ranker.feature_words(name) != name or name in ("persistence", "tested") for name in ranker.FEATURES)


def test_explanations_use_the_row_alone(world):
    loaded = ranker.load(ranker.shipped_dir())
    top = world.sort("label", descending=True).head(5)
    together = ranker.explain(loaded, top)
    alone = [ranker.explain(loaded, top.slice(i, 1))[0] for i in range(top.height)]
    assert together == alone
    for moved in together:
        assert all(name in ranker.FEATURES for name, _ in moved) and len(moved) <= 3


def test_reviews_teach_the_ranker(world):
    """Analysts who dismiss what the worlds call diversions: with their decisions weighted in, the ranker
    gives those routes a lower probability than without them; the manifest records the labels."""
    planted = world.filter(pl.col("label")).head(8)
    reviews = planted.with_columns(label=pl.lit(False)).vstack(
        world.filter(~pl.col("label")).head(4).with_columns(label=pl.lit(True)))
    examples, weights, record = ranker.with_reviews(world, reviews, weight=50, minimum=10)
    assert examples.height == world.height + reviews.height and weights[-1] == 50 and weights[0] == 1
    assert record["used"] == 12 and record["confirmed"] == 4 and record["dismissed"] == 8
    assert record["labels"] == sorted(reviews["route_id"].to_list())
    before = ranker.fit(world).predict_proba(ranker.feature_matrix(planted))[:, 1]
    after = ranker.fit(examples, sample_weight=weights).predict_proba(ranker.feature_matrix(planted))[:, 1]
    assert after.mean() < before.mean() - 0.2


def test_too_few_or_one_sided_reviews_change_nothing(world):
    few = world.head(3)
    with pytest.raises(TradewatchError, match="at least 10, with both kinds"):
        ranker.check_reviews(few, 10)
    one_sided = world.filter(~pl.col("label")).head(20)
    with pytest.raises(TradewatchError, match="0 confirmed, 20 dismissed"):
        ranker.check_reviews(one_sided, 10)


def test_review_labels_take_each_routes_latest_decision(tmp_path):
    from datetime import datetime

    from tradewatch.flows import schema, warehouse

    con = warehouse.connect(tmp_path / "w.duckdb")
    decisions = [("a", "confirmed", 1), ("a", "dismissed", 2), ("b", "confirmed", 1), ("b", "watch", 3),
                 ("c", "watch", 1), ("d", "confirmed", 5)]
    for route, status, hour in decisions:
        con.execute(*schema.bind("reviews", {"route_id": route, "status": status, "note": "n",
                                             "reviewed_at": datetime(2026, 1, 1, hour)}))
    labels = ranker.review_labels(con)
    con.close()
    assert dict(zip(labels["route_id"], labels["label"])) == {"a": False, "d": True}


def test_simulated_analyst_curves(world):
    result = ranker.simulate_review(world, world, rounds=3, batch=10)
    rounds = result["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3] and result["planted"] == int(world["label"].sum())
    # the first round reviews the prior ranker's own top 10 either way; a prior that knows the world is right
    assert rounds[0]["precision_with_reviews"] == rounds[0]["precision_without"] == 1.0
    for before, after in zip(rounds, rounds[1:]):
        assert after["found_with_reviews"] >= before["found_with_reviews"]
        assert after["found_without"] >= before["found_without"]
    assert rounds[-1]["found_with_reviews"] == round(sum(r["precision_with_reviews"] * 10 for r in rounds))


def test_simulated_analyst_reviews_a_share_from_below_the_threshold(world):
    result = ranker.simulate_review(world, world, rounds=2, batch=10, exploration_share=0.2)
    rounds = result["rounds"]
    assert result["exploration_share"] == 0.2 and [r["explored"] for r in rounds] == [2, 2]
    assert all(0 <= r["explored_planted"] <= r["explored"] for r in rounds)
    assert rounds[-1]["found_with_reviews"] == round(sum(r["precision_with_reviews"] * 10 for r in rounds))
