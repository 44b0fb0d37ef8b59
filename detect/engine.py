"""Detection runs: score candidate routes against a null built from the data, flag by Benjamini–Hochberg, explain, store and reload."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import duckdb
import numpy as np
import polars as pl

from tradewatch.flows import schema, vintages
from tradewatch.flows.core import products
from tradewatch.detect import calibration, features
from tradewatch.detect.config import DetectParams
from tradewatch.flows.core.numbers import finite, money
from tradewatch.flows.core.months import month_text

__all__ = ["DetectParams", "RunResult", "run_detection", "load_run", "score_routes", "route_id", "MODEL_VERSION"]

MODEL_VERSION = "tradewatch-detect/2.0 triple-difference, calibrated null, Benjamini-Hochberg"

FLAGGED_SCHEMA: dict[str, pl.DataType] = {
    "rank": pl.Int32(), "route_id": pl.String(), "score": pl.Float64(),
    "origin_iso3": pl.String(), "transit_iso3": pl.String(), "target_iso3": pl.String(),
    "product_code": pl.String(), "product_level": pl.Int8(), "product_name": pl.String(), "tier": pl.String(),
    "currency": pl.String(), "baseline_start": pl.Date(), "baseline_end": pl.Date(),
    "recent_start": pl.Date(), "recent_end": pl.Date(), "baseline_value": pl.Float64(),
    "recent_value": pl.Float64(), "growth": pl.Float64(), "target_change": pl.Float64(),
    "onward_growth": pl.Float64(), "excess_value": pl.Float64(), "features": pl.String(), "reasons": pl.String(),
    "exploration": pl.Boolean(),
}


@dataclass
class RunResult:
    """One detection run: its id, parameters, the flagged routes best first (FLAGGED_SCHEMA columns),
    how many candidate routes were scored, the features the data could not support (in words) and notes."""

    run_id: str
    params: DetectParams
    flagged: pl.DataFrame
    candidates: int
    unavailable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run_hash: str = ""
    windows: dict[str, str] = field(default_factory=dict)
    model_version: str = MODEL_VERSION
    vintage: int | None = None  # the data read: as of this load (flows/vintages.py); None before vintages
    # Routes from just below the threshold shown for review (FLAGGED_SCHEMA, ranks after the flags): never
    # flagged, never counted in the flagged list or its expected false flags (detect/exploration.py).
    exploration: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=FLAGGED_SCHEMA))


route_id = features.route_id  # one route identity everywhere: features computes it for every candidate


# --- scoring -------------------------------------------------------------------------------------------

def _target_ok(params: DetectParams) -> pl.Expr:
    """The flow the rise replaces: origin→target fell from a material base; without an origin→target
    baseline, the onward leg must have grown instead."""
    return pl.when(pl.col("target_change").is_not_null()).then(
        (pl.col("target_change") <= -params.min_target_drop) & (pl.col("target_base") >= params.min_target_base)
    ).otherwise(pl.col("onward_growth_log").fill_null(0.0) >= math.log(params.min_onward_growth))


def _onward_ok(params: DetectParams) -> pl.Expr:
    """Where the transit→target leg is known, the goods must go on: its growth net of the transit's ordinary
    trade with the target at least params.min_onward_net. Where it is not known, nothing is held against it."""
    return pl.col("onward_net_log").fill_null(params.min_onward_net) >= params.min_onward_net


def _gates(params: DetectParams) -> pl.Expr:
    """Besides being tested and q ≤ fdr, all must hold for a route to be flagged; each is a plain test an
    analyst can check."""
    return (
        (pl.col("excess_value") >= params.min_excess)
        & (pl.col("net_growth_log") >= math.log(params.min_growth))
        & (pl.col("persistence").fill_null(0.0) >= params.min_persistence)
        & (pl.col("spike_share").fill_null(1.0) <= params.max_spike_share)
    )


def _with_risk(routes: pl.DataFrame, params: DetectParams) -> pl.DataFrame:
    user_lists = [products.read_user_list(path) for path in params.user_lists]
    keys = routes.select("product").unique().sort("product")
    risk = [products.product_risk(code, use_chpl=params.use_chpl, user_lists=user_lists)
            for code in keys["product"].to_list()]
    keys = keys.with_columns(product_risk=pl.Series([r[0] for r in risk], dtype=pl.Float64),
                             risk_label=pl.Series([r[1] for r in risk], dtype=pl.String))
    return routes.join(keys, on="product", how="left")


def _calibrated(routes: pl.DataFrame, params: DetectParams, placebo: pl.DataFrame | None,
                null: pl.DataFrame | None = None, omitted: dict[int, int] | None = None) -> pl.DataFrame:
    """Routes with null_scale/null_size/null_basis, p_value, tested (the routes BH counts) and q_value.
    `null` and `omitted`: see score_routes."""
    null = null if null is not None else calibration.null_statistics(routes, placebo, params)
    scales = calibration.null_scales(null, routes, params)
    frame = calibration.route_scales(routes.join(scales, on=["origin_iso3", "transit_iso3"], how="left"), params)
    p = calibration.p_values(frame["net_growth_log"].to_numpy().astype(float),
                             frame["null_scale"].to_numpy().astype(float), params.null_dof)
    # Only restricted goods can be diverted: unrestricted goods may still go to Russia directly, so they are
    # the yardstick, never suspects. The onward condition uses another series than the tested one (the
    # transit's exports, not the origin's), so selecting on it leaves the p-values of the o→t test valid.
    tested = (frame.select(pl.col("comparable") & pl.col("restricted") & _target_ok(params) & _onward_ok(params)
                           & pl.col("level").is_in(list(params.product_levels))).to_series().fill_null(False)
              .to_numpy())
    p_tested = np.where(tested & np.isfinite(p), p, np.nan)
    # Each product level is its own family of tests: an HS-4 route re-tests its HS-6 routes' evidence.
    levels = frame["level"].to_numpy()
    lost = frame.select((pl.col("target_base") - pl.col("target_recent")).clip(lower_bound=0.0)
                        .fill_null(0.0)).to_series().to_numpy()
    q = np.full(p.shape, np.nan)
    for level in np.unique(levels):
        at = levels == level
        # Routes left out of `routes` are untested: they weigh as untested ones do (a loss of 0).
        padding = np.zeros((omitted or {}).get(int(level), 0))
        weights = calibration.loss_weights(np.concatenate([np.where(tested[at], lost[at], 0.0), padding]),
                                           params.weight_cap)[:int(at.sum())] if params.weight_cap > 1 else None
        q[at] = calibration.benjamini_hochberg(p_tested[at], weights)
    return frame.with_columns(
        p_value=pl.Series(np.round(p, 12), dtype=pl.Float64).fill_nan(None),
        tested=pl.Series(tested, dtype=pl.Boolean),
        q_value=pl.Series(np.round(q, 12), dtype=pl.Float64).fill_nan(None),
    )


def _ranked(frame: pl.DataFrame, params: DetectParams, model) -> pl.DataFrame:
    """With a ranker: `probability` (calibrated on test worlds, from the route's own row), `score` becomes it,
    and a flag is kept only when the ranker gives it at least params.ranker_min_probability. Only tested routes
    can be flagged or explored, so only they are given one (the others' stays null): the trees' time follows
    the rows they see."""
    if model is None:
        return frame
    tested = frame["tested"].to_numpy()
    values = np.full(frame.height, np.nan)
    if tested.any():
        values[tested] = model.probabilities(frame.filter(pl.col("tested")))
    probability = pl.Series(np.round(values, 12), dtype=pl.Float64).fill_nan(None)
    return frame.with_columns(probability=probability, score=probability).with_columns(
        flag=pl.col("flag") & (pl.col("probability") >= params.ranker_min_probability))


def score_routes(routes: pl.DataFrame, params: DetectParams, windows: features.Windows,
                 placebo: pl.DataFrame | None = None, model=None, *, null: pl.DataFrame | None = None,
                 omitted: dict[int, int] | None = None) -> pl.DataFrame:
    """Every candidate route with its p-value against the null, BH q-value, `score` and `flag` (tested,
    q ≤ params.fdr and every gate; an HS-4 route only when none of its HS-6 routes is flagged), sorted best
    first with stable tie-breakers. `score` is 1 − p (how unusual its net growth is for an ordinary flow on
    its pair) or, with a ranker `model` (detect/ranker.py), its calibrated probability, which must then
    also reach params.ranker_min_probability for a flag. Either depends only on the route's own rows and
    its pair's. When `routes` holds only the restricted goods (features.build_routes(materialise=
    "restricted")), `null` is the run's null (RouteFrame.null) and `omitted` the untested routes left out
    per level (RouteFrame.omitted): the scores and flags are then those of the whole frame."""
    frame = _calibrated(_with_risk(routes, params), params, placebo, null, omitted).with_columns(
        score=(1.0 - pl.col("p_value")).round(12).fill_null(0.0),
    ).with_columns(
        flag=(pl.col("tested") & (pl.col("q_value") <= params.fdr) & _gates(params)).fill_null(False),
    )
    frame = _ranked(frame, params, model)
    # The same evidence is not shown twice: an HS-4 route is flagged only when its HS-6 routes are not.
    six = frame.filter(pl.col("flag") & (pl.col("level") == 6)).select(
        "origin_iso3", "transit_iso3", "target_iso3", heading=pl.col("product").str.slice(0, 4)).unique()
    frame = frame.with_columns(heading=pl.col("product").str.slice(0, 4)).join(
        six.with_columns(covered=pl.lit(True)), on=["origin_iso3", "transit_iso3", "target_iso3", "heading"], how="left"
    ).with_columns(
        flag=pl.col("flag") & ~((pl.col("level") == 4) & pl.col("covered").fill_null(False))
    ).drop("heading", "covered")
    if model is not None:
        return frame.sort(["flag", "score", "p_value", "excess_value", "route_id"],
                          descending=[True, True, False, True, False], nulls_last=True)
    return frame.sort(["flag", "p_value", "excess_value", "route_id"], descending=[True, False, True, False],
                      nulls_last=True)


# --- words ----------------------------------------------------------------------------------------------

def _times(ratio: float) -> str:
    if ratio >= 100:
        return f"×{ratio:,.0f}"
    if ratio >= 10:
        return f"×{ratio:.0f}"
    return f"×{ratio:.1f}"


def _growth_words(base: float, recent: float, currency: str | None, label: str) -> str:
    if base > 0:
        return f"{_times(recent / base)} vs {label}"
    return f"from nothing in {label} to {money(recent, currency)}/month"


def _net_words(log_value: float | None) -> str:
    return _times(math.exp(log_value)) if log_value is not None else "n/a"


def reasons(row: dict, windows: features.Windows, params: DetectParams) -> str:
    """One line in words with numbers, from the same row that was scored and gated: the net growth (the
    table's `growth`), the fall of the origin→target flow, the onward leg net of the transit's ordinary
    trade with the target, persistence, excess and the product's listing."""
    origin, transit, target = row["origin_iso3"], row["transit_iso3"], row["target_iso3"]
    mirror = " (as the transit reports its imports)" if row.get("basis") == "mirror" else ""
    raw = _growth_words(row["base"], row["recent"], row["currency"], windows.baseline_label())
    pair = row.get("pair_growth_log")
    pair_words = f"pair's ordinary growth {_net_words(pair)}" if pair is not None else "no pair yardstick"
    core = (f"{origin}→{transit} exports of {row['product']} {_net_words(row.get('net_growth_log'))} net "
            f"({raw}{mirror}; {pair_words}")
    if (row.get("product_boom_log") or 0) > 0:
        core += f"; product boom at control countries {_net_words(row['product_boom_log'])}"
    core += ")"
    if row.get("target_change") is not None:
        change = row["target_change"]
        verb = f"fell {-change * 100:.0f}%" if change < 0 else f"rose {change * 100:.0f}%"
        core += f" while {origin}→{target} {verb}"
    parts = [core]
    if row.get("onward_net_log") is not None:
        parts.append(f"{transit}→{target} {_net_words(row['onward_net_log'])} net of {transit}'s ordinary exports "
                     f"to {target}")
    else:
        parts.append(f"{transit}→{target} not reported")
    if row.get("persistence") is not None:
        months = round(row["persistence"] * windows.recent_count)
        parts.append(f"{months} of {windows.recent_count} months above the expected band, "
                     f"{money(row['excess_value'], row['currency'])} excess")
    if row.get("risk_label"):
        parts.append(row["risk_label"])
    return "; ".join(parts)


def _ranker_words(row: dict, moved: list[tuple[str, float]]) -> str:
    from tradewatch.detect.ranker import feature_words

    words = ", ".join(f"{feature_words(name)} {effect:+.2f}" for name, effect in moved)
    return f"ranker probability {row['probability']:.2f}" + (f" (moved most by {words})" if words else "")


def _features_json(row: dict, unavailable: dict[str, str], moved: list[tuple[str, float]] | None = None) -> str:
    values = {}
    for name in features.FEATURES:
        value = row.get(name)
        if name in unavailable or finite(value) is None:
            values[name] = None
        else:
            values[name] = round(float(value), 6) if name not in ("p_value", "q_value") else float(f"{value:.6g}")
    for name in ("basis", "pair_basis", "null_basis"):
        values[name] = row.get(name)
    if moved is not None:
        values["ranker_probability"] = row.get("probability")
        values["ranker_moved_by"] = [[name, effect] for name, effect in moved]
    return json.dumps(values, sort_keys=True)


def flagged_table(scored: pl.DataFrame, windows: features.Windows, params: DetectParams,
                  unavailable: dict[str, str], model=None) -> pl.DataFrame:
    """The user-facing table of flagged routes (FLAGGED_SCHEMA), best first; with the ranker `model`, each
    route's reasons and features also say what moved its probability most."""
    return route_table(scored.filter(pl.col("flag")), windows, params, unavailable, model)


def route_table(chosen: pl.DataFrame, windows: features.Windows, params: DetectParams,
                unavailable: dict[str, str], model=None, *, first_rank: int = 1,
                lead: list[str] | None = None) -> pl.DataFrame:
    """FLAGGED_SCHEMA rows of the scored routes `chosen`, in their order, ranked from `first_rank`; `lead`
    (one text per route, or None) is put before each route's reasons, and routes given one are marked
    `exploration` (detect/exploration.py): shown for review, not flagged."""
    from tradewatch.detect import ranker

    flagged = chosen
    moved = ranker.explain(model, flagged) if model is not None else [None] * flagged.height
    leads = lead or [""] * flagged.height
    rows = []
    for rank, (row, why, first) in enumerate(zip(flagged.iter_rows(named=True), moved, leads), start=first_rank):
        code, level = row["product"], int(row["level"])
        onward = None
        if row.get("onward_growth_log") is not None and (row.get("onward_base") or 0) > 0:
            onward = row["onward_recent"] / row["onward_base"]
        rows.append({
            "rank": rank,
            "route_id": row["route_id"],
            "score": row["score"],
            "origin_iso3": row["origin_iso3"], "transit_iso3": row["transit_iso3"], "target_iso3": row["target_iso3"],
            "product_code": code, "product_level": level, "product_name": products.product_name(code),
            "tier": products.chpl_tier(code) if params.use_chpl else None,
            "currency": row["currency"],
            "baseline_start": windows.baseline_start, "baseline_end": windows.baseline_end,
            "recent_start": windows.recent_start, "recent_end": windows.recent_end,
            "baseline_value": row["base"], "recent_value": row["recent"],
            "growth": math.exp(row["net_growth_log"]) if row.get("net_growth_log") is not None else None,
            "target_change": row.get("target_change"),
            "onward_growth": onward,
            "excess_value": row["excess_value"],
            "features": _features_json(row, unavailable, why),
            "reasons": first + reasons(row, windows, params)
            + ("; " + _ranker_words(row, why) if why is not None else ""),
            "exploration": lead is not None,
        })
    return pl.DataFrame(rows, schema=FLAGGED_SCHEMA, orient="row")


# --- runs -----------------------------------------------------------------------------------------------

def model_version(model) -> str:
    """What scored a run: the statistic's version, and the ranker's version and SHA-256 when one was used."""
    if model is None:
        return MODEL_VERSION
    return f"{MODEL_VERSION}; ranker {model.version} sha256:{model.checksum}"


def calibration_note(scored: pl.DataFrame, params: DetectParams, model=None) -> str:
    """How many routes were tested, how many flagged, and how many of those are expected to be false."""
    tested = int(scored["tested"].sum()) if scored.height else 0
    q_flagged = scored.filter(pl.col("flag"))["q_value"].drop_nulls().to_numpy()
    expected = calibration.expected_false_flags(q_flagged)
    note = (f"{tested:,} routes tested against the null; {q_flagged.size} flagged at FDR {params.fdr:g}: "
            f"at most {expected:.1f} of them expected to be false (Benjamini–Hochberg)")
    if model is not None and params.ranker_min_probability > 0:
        note += (f"; the ranker ({model.version}) kept those it gives probability ≥ "
                 f"{params.ranker_min_probability:g} and ordered them by it")
    elif model is not None:
        note += f"; ordered by the ranker's probability ({model.version})"
    return note


def _loads_read(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """The successful loads behind the data: the latest per source, freq and period."""
    cursor = con.execute("""
        SELECT source, freq, strftime(period, '%Y-%m') AS period, arg_max(load_id, finished_at) AS load_id,
               arg_max(checksum, finished_at) AS checksum
        FROM loads WHERE status = 'ok' AND period IS NOT NULL GROUP BY ALL ORDER BY source, freq, period
    """)
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def run_detection(con: duckdb.DuckDBPyConnection, params: DetectParams | None = None, *,
                  store: bool = True) -> RunResult:
    """Score every candidate route in the warehouse for `params` and return the flagged ones best first.
    With `store`, the run (parameters, loads read, model version, hash) goes to `runs` and its flags to
    `anomalies`. Same warehouse and parameters give the same flagged table. Raises TradewatchError when
    the warehouse cannot support detection (empty, no coalition→target flows, windows outside the data)."""
    from tradewatch.detect import exploration, ranker

    params = params or DetectParams()
    started = _now()
    model = ranker.load() if params.ranker else None
    # Only restricted goods can be flagged: the others are measured narrow (yardsticks, null) and never
    # materialised, so memory follows the routes that can be tested.
    frame = features.build_routes(con, params, materialise="restricted")
    windows = frame.windows
    scored = score_routes(frame.routes, params, windows, frame.placebo, model, null=frame.null,
                          omitted=frame.omitted)
    flagged = flagged_table(scored, windows, params, frame.unavailable, model)
    explored = exploration.table(scored, windows, params, frame.unavailable, model, flagged.height)
    notes = list(frame.notes) + [calibration_note(scored, params, model)]
    if explored.height:
        notes.append(exploration.note(explored.height, flagged.height, params))
    unavailable_words = [f"{features.FEATURES.get(name, name)} ({name}): {why}" for name, why in frame.unavailable.items()]
    loads = _loads_read(con)
    version = model_version(model)
    run_hash = hashlib.sha256(json.dumps(
        {"params": params.to_dict(), "loads": loads, "model": version}, sort_keys=True, default=str
    ).encode()).hexdigest()
    window_text = {
        "baseline_start": month_text(windows.baseline_start),
        "baseline_end": month_text(windows.baseline_end),
        "recent_start": month_text(windows.recent_start),
        "recent_end": month_text(windows.recent_end),
    }
    result = RunResult(
        run_id="", params=params, flagged=flagged, candidates=frame.candidates,
        unavailable=unavailable_words, notes=notes, run_hash=run_hash, windows=window_text, model_version=version,
        vintage=vintages.current(con), exploration=explored,
    )
    if store:
        result.run_id = _store(con, result, frame.unavailable, loads, started)
    else:
        result.run_id = f"unstored-{run_hash[:12]}"
    return result


def _store(con: duckdb.DuckDBPyConnection, result: RunResult, unavailable: dict[str, str], loads: list[dict],
           started: datetime) -> str:
    count = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
    run_id = f"{started:%Y%m%dT%H%M%S}-{count + 1:04d}-{result.run_hash[:8]}"
    params_json = json.dumps({**result.params.to_dict(), "windows": result.windows}, sort_keys=True)
    unavailable_json = json.dumps([{"feature": k, "reason": v} for k, v in unavailable.items()])
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(*schema.bind("runs", {
            "run_id": run_id, "started_at": started, "finished_at": _now(), "params_json": params_json,
            "loads_json": json.dumps(loads), "model_version": result.model_version, "run_hash": result.run_hash,
            "flagged": result.flagged.height, "candidates": result.candidates, "unavailable_json": unavailable_json,
            "notes_json": json.dumps(result.notes), "vintage": result.vintage,
        }))
        shown = pl.concat([result.flagged, result.exploration])
        if shown.height:
            # The flagged table holds every anomalies column (features under its stored name features_json).
            table = shown.with_columns(pl.lit(run_id).alias("run_id")).rename(
                {"features": "features_json"})
            con.register("tw_detect_flags_arrow", table.to_arrow())
            con.execute(schema.insert_select_sql(
                "anomalies", {c: c for c in schema.TABLES["anomalies"].columns},
                "FROM tw_detect_flags_arrow ORDER BY rank"))
            con.unregister("tw_detect_flags_arrow")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return run_id


def load_run(con: duckdb.DuckDBPyConnection, run_id: str = "latest") -> RunResult | None:
    """Rebuild a stored run (default the latest) from `runs` and `anomalies`; None when there is none."""
    if run_id == "latest":
        rows = con.execute("SELECT run_id FROM runs ORDER BY finished_at DESC NULLS LAST, started_at DESC, run_id DESC"
                           " LIMIT 1").fetchall()
        if not rows:
            return None
        run_id = rows[0][0]
    cursor = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
    names = [c[0] for c in cursor.description]
    rows = cursor.fetchall()
    if not rows:
        return None
    run = dict(zip(names, rows[0]))
    stored = json.loads(run["params_json"])
    windows = stored.pop("windows", {})
    params = DetectParams.from_dict(stored)
    # The flagged table's columns are the anomalies table's (features under its stored name features_json).
    stored_as = {name: "features_json" if name == "features" else name for name in FLAGGED_SCHEMA}
    schema.TABLES["anomalies"].pick(*stored_as.values())  # each one is checked to be an anomalies column
    # exploration is NULL in rows stored before it existed, when every row was a flag
    columns = ", ".join(f"coalesce({stored}, false) AS {name}" if name == "exploration" else f"{stored} AS {name}"
                        for name, stored in stored_as.items())
    shown = con.sql(f"SELECT {columns} FROM anomalies WHERE run_id = $run ORDER BY rank",
                    params={"run": run_id}).pl()

    def part(explored: bool) -> pl.DataFrame:
        rows = shown.filter(pl.col("exploration") == explored)
        return pl.concat([pl.DataFrame(schema=FLAGGED_SCHEMA), rows.cast(FLAGGED_SCHEMA)], how="vertical")

    flagged, explored = part(False), part(True)
    if "exploration_share" not in stored:
        params = params.replace(exploration_share=0.0)  # stored before exploration: it showed none
    unavailable = []
    for item in json.loads(run.get("unavailable_json") or "[]"):
        if isinstance(item, dict):
            name = item.get("feature", "")
            unavailable.append(f"{features.FEATURES.get(name, name)} ({name}): {item.get('reason', '')}")
        else:
            unavailable.append(str(item))
    notes = json.loads(run.get("notes_json") or "[]") if "notes_json" in run else []
    return RunResult(run_id=run_id, params=params, flagged=flagged, candidates=int(run.get("candidates") or 0),
                     unavailable=unavailable, notes=notes, run_hash=run.get("run_hash") or "", windows=windows,
                     model_version=run.get("model_version") or MODEL_VERSION, vintage=run.get("vintage"),
                     exploration=explored)
