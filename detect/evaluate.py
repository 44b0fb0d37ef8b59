"""Built-in evaluation: ranking quality on the synthetic world's answer key against two analyst baselines, and the placebo in time."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from tradewatch.detect import baselines, engine, features
from tradewatch.detect.config import DetectParams
from tradewatch.flows.core import settings
from tradewatch.flows import warehouse
from tradewatch.flows.core.months import add_months, month_text, months_between, parse_month

METRIC_NAMES = ("average_precision", "precision_at_10", "precision_at_25", "precision_at_50", "recall_at_50")

# The goals of issue 4, checked by `tradewatch evaluate` and the tests.
GOALS = {"average_precision": 0.9, "margin_over_best_baseline": 0.2, "precision_at_25": 0.9, "placebo_ratio": 0.1}

RouteKey = tuple[str, str, str, str]  # origin, transit, target, HS-6 product (HS 2022)


def ranking_metrics(ranked: list[RouteKey], positives: set[RouteKey]) -> dict[str, float]:
    """Precision at 10/25/50 (missing ranks count as misses), recall at 50 and average precision (the
    mean over all positives of the precision at each positive's rank; unranked positives add 0)."""
    if not positives:
        raise ValueError("the answer key has no routes")
    hits, total = 0, 0.0
    seen: set[RouteKey] = set()
    for rank, key in enumerate(ranked, start=1):
        if key in positives and key not in seen:
            hits += 1
            total += hits / rank
        seen.add(key)

    def found(k: int) -> int:
        return len(set(ranked[:k]) & positives)

    return {
        "average_precision": round(total / len(positives), 4),
        "precision_at_10": round(found(10) / 10, 4),
        "precision_at_25": round(found(25) / 25, 4),
        "precision_at_50": round(found(50) / 50, 4),
        "recall_at_50": round(found(50) / len(positives), 4),
    }


def answer_routes(answer_key: dict) -> set[RouteKey]:
    """The planted routes of an answer key as (origin, transit, target, product) keys."""
    return {(r["origin_iso3"], r["transit_iso3"], r["target_iso3"], r["product_code"]) for r in answer_key["routes"]}


ROUTE_KEYS = ["origin_iso3", "transit_iso3", "target_iso3", "product"]


def _keys(frame: pl.DataFrame) -> list[RouteKey]:
    return [tuple(row) for row in frame.select(ROUTE_KEYS).iter_rows()]


def _statistic_order(six: pl.DataFrame) -> pl.DataFrame:
    """The statistic's order: the routes it tests, by p-value, then those its screens set aside, by p-value."""
    return six.sort(["tested", "p_value", "excess_value", "route_id"], descending=[True, False, True, False],
                    nulls_last=True)


def scored_six(con: duckdb.DuckDBPyConnection, params: DetectParams) -> tuple[pl.DataFrame, features.RouteFrame]:
    """The scored HS-6 routes in the statistic's order, and the route frame they come from; nothing is stored."""
    frame = features.build_routes(con, params)
    scored = engine.score_routes(frame.routes, params, frame.windows, frame.placebo)
    return _statistic_order(scored.filter(pl.col("level") == 6)), frame


def tradewatch_lists(con: duckdb.DuckDBPyConnection, params: DetectParams
                     ) -> tuple[list[RouteKey], list[RouteKey], features.RouteFrame]:
    """tradewatch's HS-6 ranking by the statistic alone, its flagged HS-6 list, and the route frame."""
    six, frame = scored_six(con, params)
    return _keys(six), _keys(six.filter(pl.col("flag"))), frame


def ranker_lists(six: pl.DataFrame, model, min_probability: float) -> tuple[list[RouteKey], list[RouteKey]]:
    """The ranker's HS-6 ranking (by calibrated probability; ties in the statistic's order) and its flagged
    list: the statistic's flags it gives at least `min_probability`, most probable first."""
    ordered = six.with_columns(probability=pl.Series(model.probabilities(six), dtype=pl.Float64)).sort(
        "probability", descending=True, maintain_order=True)
    kept = ordered.filter(pl.col("flag") & (pl.col("probability") >= min_probability))
    return _keys(ordered), _keys(kept)


def tradewatch_ranking(con: duckdb.DuckDBPyConnection, params: DetectParams) -> list[RouteKey]:
    """tradewatch's HS-6 ranking of every candidate route (see tradewatch_lists)."""
    return tradewatch_lists(con, params)[0]


def evaluate_synthetic_warehouse(con: duckdb.DuckDBPyConnection, answer_key: dict,
                                 params: DetectParams | None = None) -> dict[str, dict[str, float]]:
    """Metrics of tradewatch and of the two baselines on a warehouse holding the synthetic world whose
    answer key is `answer_key`."""
    if params is None:
        params = DetectParams(event=answer_key["event"]) if answer_key.get("event") else DetectParams()
    positives = answer_routes(answer_key)
    return {
        "tradewatch": ranking_metrics(tradewatch_ranking(con, params), positives),
        "baseline_growth": ranking_metrics(baselines.plain_growth_ranking(con, params), positives),
        "baseline_ec_rule": ranking_metrics(baselines.ec_rule_ranking(con, params), positives),
    }


def placebo(con: duckdb.DuckDBPyConnection, params: DetectParams | None = None, *, shift_months: int = 12) -> dict:
    """Detection at the true event and with the event moved `shift_months` earlier (same baseline and
    recent window lengths, the recent window ending before the true event). Returns event,
    placebo_event, flags_event, flags_placebo, ratio (flags_placebo / flags_event; None when the true
    event flags nothing) and the notes of both runs."""
    params = params or DetectParams()
    true_run = engine.run_detection(con, params, store=False)
    true_windows = true_run.windows
    recent_length = months_between(parse_month(true_windows["recent_start"]),
                                             parse_month(true_windows["recent_end"]))
    event = parse_month(params.event)
    placebo_event = add_months(event, -shift_months)
    # Same recent length as the true run, but never reaching the true event.
    as_of = min(add_months(placebo_event, recent_length - 1), add_months(event, -1))
    placebo_params = params.replace(event=month_text(placebo_event), as_of=month_text(as_of),
                                    recent_months=recent_length)
    placebo_run = engine.run_detection(con, placebo_params, store=False)
    flags_event, flags_placebo = true_run.flagged.height, placebo_run.flagged.height
    return {
        "event": params.event,
        "placebo_event": placebo_params.event,
        "flags_event": flags_event,
        "flags_placebo": flags_placebo,
        "ratio": round(flags_placebo / flags_event, 4) if flags_event else None,
        "notes": [f"event: {n}" for n in true_run.notes] + [f"placebo: {n}" for n in placebo_run.notes],
    }


@dataclass
class SyntheticWorld:
    """A warehouse seeded with the demo world in a scratch folder, and its answer key."""

    folder: Path
    db: Path
    answer_key: dict

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def seed_synthetic_world(seed: int | None = None, scale: float = 1.0, *, progress=None) -> SyntheticWorld:
    """Write the demo world and load it, through the real loaders, into a new warehouse in a scratch
    folder under TRADEWATCH_HOME/tmp (never the user's warehouse). The caller removes it."""
    from tradewatch.detect import demo

    seed = demo.DEFAULT_SEED if seed is None else seed
    root = settings.home() / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="evaluate-", dir=root))
    db = folder / "synthetic.duckdb"
    try:
        con = warehouse.connect(db)
        try:
            demo.seed_warehouse(con, folder / "world", seed=seed, scale=scale, progress=progress)
        finally:
            con.close()
        answer_key = demo.read_answer_key(folder / "world")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return SyntheticWorld(folder, db, answer_key)


def evaluate(db: Path | str | None = None, *, seed: int | None = None, scale: float = 1.0,
             params: DetectParams | None = None, shift_months: int = 12, say=lambda message: None) -> dict:
    """The whole evaluation: the synthetic world (seeded into a scratch warehouse) ranked by tradewatch
    and both baselines against its answer key, and the placebo in time on the warehouse at `db` (the
    synthetic one when that warehouse holds no trade data, with a note). Returns
    {"synthetic": {method: metrics}, "placebo": {...}, "goals": {...}, "notes": [...]}."""
    params = params or DetectParams()
    warehouse.resolve_db_path(db)  # a bad --db fails now, not after seeding the world
    notes: list[str] = []
    say("Seeding the synthetic demo world into a scratch warehouse …")
    world = seed_synthetic_world(seed, scale)
    try:
        con = warehouse.connect(world.db)
        try:
            synthetic = evaluate_synthetic_warehouse(
                con, world.answer_key, params.replace(event=world.answer_key.get("event", params.event)))
            user_con = warehouse.connect(db) if _has_data(db) else None
            if user_con is None:
                notes.append("the warehouse holds no trade data: the placebo ran on the synthetic world")
                placebo_result = placebo(con, params, shift_months=shift_months)
            else:
                try:
                    say("Placebo in time on the warehouse's data …")
                    placebo_result = placebo(user_con, params, shift_months=shift_months)
                finally:
                    user_con.close()
        finally:
            con.close()
    finally:
        world.remove()
    notes += placebo_result.pop("notes")
    return {"synthetic": synthetic, "placebo": placebo_result, "goals": check_goals(synthetic, placebo_result),
            "notes": notes}


def _has_data(db: Path | str | None) -> bool:
    path = warehouse.resolve_db_path(db)
    if not path.exists():
        return False
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'trade_flows'").fetchall()
        return tables[0][0] > 0 and con.execute("SELECT count(*) FROM trade_flows").fetchall()[0][0] > 0
    except duckdb.Error:
        return False
    finally:
        con.close()


def check_goals(synthetic: dict, placebo_result: dict) -> dict[str, bool]:
    """Whether each goal of issue 4 is met."""
    ours = synthetic["tradewatch"]
    best_baseline = max(synthetic["baseline_growth"]["average_precision"],
                        synthetic["baseline_ec_rule"]["average_precision"])
    ratio = placebo_result.get("ratio")
    return {
        "average_precision_at_least_0.9": ours["average_precision"] >= GOALS["average_precision"],
        "average_precision_0.2_above_best_baseline":
            ours["average_precision"] - best_baseline >= GOALS["margin_over_best_baseline"],
        "precision_at_25_at_least_0.9": ours["precision_at_25"] >= GOALS["precision_at_25"],
        "placebo_flags_at_most_10_percent": ratio is not None and ratio <= GOALS["placebo_ratio"],
    }


# --- the family of test worlds ---------------------------------------------------------------------------

FAMILY_METRICS = ("average_precision", "precision_at_25", "list_precision", "list_recall")
METHODS = ("tradewatch", "ranker", "growth", "ec_rule", "simple")
# Seeds the detector's defaults were tuned on; `tradewatch evaluate --families` reports on others by default.
TUNING_SEEDS = (1, 2, 3)
DEFAULT_FIRST_SEED = 101


def family_names(text: str) -> list[str]:
    """The family names of a --families value ('all', or names separated by commas); raises InputError
    naming the option for an unknown one."""
    from tradewatch.detect import worlds
    from tradewatch.flows.core.errors import InputError

    known = list(worlds.FAMILIES) + ["mixed"]
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return known
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise InputError(f"--families {text}", f"expected 'all' or names among {', '.join(known)}")
    return names


def list_metrics(ranked: list[RouteKey], flagged: list[RouteKey], positives: set[RouteKey]) -> dict[str, float]:
    """AP and precision at 25 of the ranking; precision and recall of the flagged list (an empty list
    has precision 1.0 by convention only when there is nothing to find, else 0)."""
    ranking = ranking_metrics(ranked, positives)
    found = set(flagged) & positives
    precision = len(found) / len(set(flagged)) if flagged else 0.0
    return {"average_precision": ranking["average_precision"], "precision_at_25": ranking["precision_at_25"],
            "list_precision": round(precision, 4), "list_recall": round(len(found) / len(positives), 4)}


def method_lists(con: duckdb.DuckDBPyConnection, params: DetectParams) -> dict[str, tuple[list[RouteKey], list[RouteKey]]]:
    """(ranking, flagged list) of HS-6 routes for tradewatch's statistic alone, the learned ranker (the one
    detection would load), and the three baselines on one warehouse."""
    from tradewatch.detect import ranker

    six, frame = scored_six(con, params)
    model = ranker.load()
    growth, growth_flags = baselines.plain_growth(con, params)
    ec = baselines.ec_rule_ranking(con, params)
    simple_ranked, simple_flags = baselines.simple_rule(frame.routes, params)
    return {"tradewatch": (_keys(six), _keys(six.filter(pl.col("flag")))),
            "ranker": ranker_lists(six, model, params.ranker_min_probability),
            "growth": (growth, growth_flags), "ec_rule": (ec, ec), "simple": (simple_ranked, simple_flags)}


def seed_family_world(family: str, seed: int) -> SyntheticWorld:
    """A scratch warehouse under TRADEWATCH_HOME/tmp holding one world of `family` (detect.worlds)."""
    from tradewatch.detect import worlds

    root = settings.home() / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"family-{family}-", dir=root))
    db = folder / "synthetic.duckdb"
    try:
        con = warehouse.connect(db)
        try:
            answer_key = worlds.seed_world(con, folder / "world", family="all" if family == "mixed" else family,
                                           seed=seed)
        finally:
            con.close()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return SyntheticWorld(folder, db, answer_key)


def evaluate_world(family: str, seed: int, params: DetectParams) -> dict[str, dict[str, float]]:
    """Metrics per method on one world of `family` seeded with `seed`."""
    world = seed_family_world(family, seed)
    try:
        con = warehouse.connect(world.db)
        try:
            run_params = params.replace(event=world.answer_key.get("event", params.event))
            positives = answer_routes(world.answer_key)
            return {method: list_metrics(ranked, flagged, positives)
                    for method, (ranked, flagged) in method_lists(con, run_params).items()}
        finally:
            con.close()
    finally:
        world.remove()


def _mean(results: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {method: {name: round(sum(r[method][name] for r in results) / len(results), 4) for name in FAMILY_METRICS}
            for method in METHODS}


def evaluate_families(families: list[str], seeds: list[int], params: DetectParams | None = None, *,
                      say=lambda message: None) -> dict:
    """Every method on every (family, seed) world. Returns {"families": {name: {method: metrics}},
    "overall": {method: metrics}, "seeds": seeds, "tuning_seeds": TUNING_SEEDS}; metrics are means over seeds
    (overall: over every world)."""
    params = params or DetectParams()
    per_family: dict[str, list] = {}
    for family in families:
        for seed in seeds:
            say(f"World {family} seed {seed} …")
            per_family.setdefault(family, []).append(evaluate_world(family, seed, params))
    every = [result for results in per_family.values() for result in results]
    return {"families": {name: _mean(results) for name, results in per_family.items()}, "overall": _mean(every),
            "seeds": list(seeds), "tuning_seeds": list(TUNING_SEEDS)}
