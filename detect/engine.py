"""Detection runs: score candidate routes (transparent robust scores + IsolationForest), flag, explain, store and reload."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import duckdb
import numpy as np
import polars as pl

from tradewatch.detect import features, products
from tradewatch.detect.config import DetectParams
from tradewatch.detect.report import money

__all__ = ["DetectParams", "RunResult", "run_detection", "load_run", "score_routes", "route_id", "MODEL_VERSION"]

MODEL_VERSION = "tradewatch-detect/1.0 rules+isolation-forest"

# How much each transparent component (each scaled to 0-1) counts in the rule score. Components a route's
# data cannot support drop out of both the numerator and the denominator.
RULE_WEIGHTS: dict[str, float] = {
    "growth": 0.20,        # o→t rise net of controls
    "drop": 0.10,          # o→target collapse (the flow the rise replaces)
    "substitution": 0.15,  # the rise fits inside what the target lost
    "share": 0.05,         # target was a big market for o's product
    "onward": 0.20,        # t→target rose too
    "cover": 0.05,         # … by about as much as o→t rose
    "persistence": 0.12,   # sustained, not one month
    "material": 0.08,      # size of the excess
    "risk": 0.05,          # CHPL tier / user list
}

# IsolationForest inputs: one-sided (diversion direction only, the rest clipped to 0), so "anomalous"
# means "unusually strong evidence", not "unusual in any direction".
MODEL_FEATURES = ("did_pos", "drop_pos", "substitution_f", "onward_pos", "persistence_f", "material_f", "russia_share_f",
                  "product_risk")

FLAGGED_SCHEMA: dict[str, pl.DataType] = {
    "rank": pl.Int32(), "route_id": pl.String(), "score": pl.Float64(),
    "origin_iso3": pl.String(), "transit_iso3": pl.String(), "target_iso3": pl.String(),
    "product_code": pl.String(), "product_level": pl.Int8(), "product_name": pl.String(), "tier": pl.String(),
    "currency": pl.String(), "baseline_start": pl.Date(), "baseline_end": pl.Date(),
    "recent_start": pl.Date(), "recent_end": pl.Date(), "baseline_value": pl.Float64(),
    "recent_value": pl.Float64(), "growth": pl.Float64(), "target_change": pl.Float64(),
    "onward_growth": pl.Float64(), "excess_value": pl.Float64(), "features": pl.String(), "reasons": pl.String(),
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


def route_id(origin: str, transit: str, target: str, product_code: str, product_level: int) -> str:
    """Stable identity of a route across runs: a hash of what the route is, never of the run."""
    text = f"{origin}|{transit}|{target}|{product_code}|{int(product_level)}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


# --- scoring -------------------------------------------------------------------------------------------

def _components(params: DetectParams, windows: features.Windows) -> list[pl.Expr]:
    log20 = math.log(20.0)
    floor = max(params.min_excess, 1.0)
    return [
        (pl.col("did_log") / log20).clip(0.0, 1.0).alias("c_growth"),
        pl.when(pl.col("target_change").is_not_null())
        .then((-pl.col("target_change")).clip(0.0, 1.0)).alias("c_drop"),
        _substitution_fit().alias("c_substitution"),
        (pl.col("russia_share") / 0.5).clip(0.0, 1.0).alias("c_share"),
        (pl.col("onward_growth_log") / math.log(10.0)).clip(0.0, 1.0).alias("c_onward"),
        pl.col("onward_cover").clip(0.0, 1.0).alias("c_cover"),
        pl.col("persistence").clip(0.0, 1.0).alias("c_persistence"),
        ((pl.col("excess_value").clip(lower_bound=floor) / floor).log10() / 2.0).clip(0.0, 1.0).alias("c_material"),
        pl.col("product_risk").alias("c_risk"),
    ]


def _substitution_fit() -> pl.Expr:
    """1 when the o→t excess fits inside the o→target fall, shrinking as it exceeds it (a rise several
    times larger than what the target lost is not explained by substitution); null without a fall."""
    ratio = pl.col("substitution_ratio")
    return pl.when(ratio.is_null()).then(None).when(ratio <= 1.0).then(1.0).otherwise(1.0 / ratio)


def _rule_score() -> pl.Expr:
    numerator = pl.sum_horizontal([pl.col(f"c_{name}").fill_null(0.0) * weight for name, weight in RULE_WEIGHTS.items()])
    denominator = pl.sum_horizontal([pl.col(f"c_{name}").is_not_null().cast(pl.Float64) * weight
                                     for name, weight in RULE_WEIGHTS.items()])
    return (numerator / denominator).alias("rule_score")


def _gates(params: DetectParams) -> pl.Expr:
    """All must hold for a route to be flagged; each is a plain test an analyst can check."""
    target_ok = pl.when(pl.col("target_change").is_not_null()).then(
        (pl.col("target_change") <= -params.min_target_drop) & (pl.col("target_base") >= params.min_target_base)
    ).otherwise(pl.col("onward_growth_log").fill_null(0.0) >= math.log(2.0))
    return (
        pl.col("comparable")
        & (pl.col("excess_value") >= params.min_excess)
        & (pl.col("did_log") >= math.log(params.min_growth))
        & (pl.col("persistence").fill_null(0.0) >= params.min_persistence)
        & (pl.col("spike_share").fill_null(1.0) <= params.max_spike_share)
        & target_ok
    )


MIN_MODEL_ROUTES = 8


def _model_scores(frame: pl.DataFrame, params: DetectParams) -> np.ndarray | None:
    """IsolationForest anomaly scores (0-1, higher = stronger evidence) of the screened routes; None
    when too few routes or features vary to fit a model."""
    if frame.height < MIN_MODEL_ROUTES:
        return None
    from sklearn.ensemble import IsolationForest

    columns = [c for c in MODEL_FEATURES if frame[c].null_count() < frame.height and frame[c].n_unique() > 1]
    if not columns:
        return None
    matrix = frame.select([pl.col(c).fill_null(0.0) for c in columns]).to_numpy()
    model = IsolationForest(n_estimators=100, max_samples=min(256, frame.height), random_state=params.random_state)
    model.fit(matrix)
    raw = -model.score_samples(matrix)
    low, high = float(raw.min()), float(raw.max())
    if high - low < 1e-12:
        return None
    return np.round((raw - low) / (high - low), 9)


def score_routes(routes: pl.DataFrame, params: DetectParams, windows: features.Windows) -> pl.DataFrame:
    """Every candidate route with its components, rule score, model score, combined `score` (0-1) and
    `flag` (gates passed and score ≥ params.score_threshold; an HS-4 route only when none of its HS-6
    routes is flagged), sorted best first with stable tie-breakers."""
    user_lists = [products.read_user_list(path) for path in params.user_lists]
    product_keys = routes.select("product").unique().sort("product")
    risk = [products.product_risk(code, use_chpl=params.use_chpl, user_lists=user_lists)
            for code in product_keys["product"].to_list()]
    product_keys = product_keys.with_columns(
        product_risk=pl.Series([r[0] for r in risk], dtype=pl.Float64),
        risk_label=pl.Series([r[1] for r in risk], dtype=pl.String),
    )
    floor = max(params.min_excess, 1.0)
    frame = (
        routes.join(product_keys, on="product", how="left")
        .with_columns(_components(params, windows))
        .with_columns(_rule_score())
        .with_columns(
            did_pos=pl.col("did_log").clip(lower_bound=0.0),
            drop_pos=pl.col("target_drop_log").clip(lower_bound=0.0),
            onward_pos=pl.col("onward_growth_log").clip(lower_bound=0.0),
            persistence_f=pl.col("persistence"),
            substitution_f=_substitution_fit(),
            material_f=(pl.col("excess_value").clip(lower_bound=floor) / floor).log10(),
            russia_share_f=pl.col("russia_share"),
            screened=features.screen(params) & pl.col("comparable"),
        )
        .sort("route_id")
    )
    screened = frame.filter(pl.col("screened"))
    scores = _model_scores(screened, params)
    # Without a model (a handful of candidates) the transparent score stands alone.
    weight = params.model_weight if scores is not None else 0.0
    model = screened.select("route_id").with_columns(
        model_score=pl.Series(scores if scores is not None else np.zeros(screened.height), dtype=pl.Float64))
    frame = frame.join(model, on="route_id", how="left").with_columns(
        pl.col("model_score").fill_null(0.0)
    ).with_columns(
        score=((1 - weight) * pl.col("rule_score") + weight * pl.col("model_score")).round(6),
    ).with_columns(
        flag=_gates(params) & (pl.col("score") >= params.score_threshold),
    )
    # The same evidence is not shown twice: an HS-4 route is flagged only when its HS-6 routes are not.
    six = frame.filter(pl.col("flag") & (pl.col("level") == 6)).select(
        "origin_iso3", "transit_iso3", "target_iso3", heading=pl.col("product").str.slice(0, 4)).unique()
    frame = frame.with_columns(heading=pl.col("product").str.slice(0, 4)).join(
        six.with_columns(covered=pl.lit(True)), on=["origin_iso3", "transit_iso3", "target_iso3", "heading"], how="left"
    ).with_columns(
        flag=pl.col("flag") & ~((pl.col("level") == 4) & pl.col("covered").fill_null(False))
    ).drop("heading", "covered")
    return frame.sort(["flag", "score", "excess_value", "route_id"], descending=[True, True, True, False],
                      nulls_last=True).with_columns(model_fitted=pl.lit(scores is not None))


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


def reasons(row: dict, windows: features.Windows, params: DetectParams) -> str:
    """One line in words with numbers: the route's core evidence, then the few other features that
    contributed most to its score."""
    origin, transit, target = row["origin_iso3"], row["transit_iso3"], row["target_iso3"]
    label = windows.baseline_label()
    mirror = " (as the transit reports its imports)" if row.get("basis") == "mirror" else ""
    core = f"{origin}→{transit} exports of {row['product']} {_growth_words(row['base'], row['recent'], row['currency'], label)}{mirror}"
    if row.get("target_change") is not None:
        change = row["target_change"]
        verb = f"fell {-change * 100:.0f}%" if change < 0 else f"rose {change * 100:.0f}%"
        core += f" while {origin}→{target} {verb}"
    parts = [core]
    extras: list[tuple[float, str]] = []
    if row.get("onward_growth_log") is not None:
        base, recent = row.get("onward_base") or 0.0, row.get("onward_recent") or 0.0
        onward = f"{transit}→{target} {_times(recent / base)}" if base > 0 else \
            f"{transit}→{target} from nothing to {money(recent, row.get('onward_currency'))}/month"
        if row.get("onward_cover") is not None and row["onward_cover"] > 0:
            onward += f", covering {row['onward_cover'] * 100:.0f}% of the rise"
        extras.append((RULE_WEIGHTS["onward"] * (row.get("c_onward") or 0) + 1.0, onward))
    if row.get("persistence") is not None:
        months = round(row["persistence"] * windows.recent_count)
        extras.append((RULE_WEIGHTS["persistence"] * row["persistence"],
                       f"{months} of {windows.recent_count} months above the baseline band"))
    extras.append((RULE_WEIGHTS["material"] * (row.get("c_material") or 0),
                   f"{money(row['excess_value'], row['currency'])} excess over {windows.recent_count} months"))
    if row.get("control_growth_log") is not None:
        ratio = math.exp(row["control_growth_log"])
        extras.append((RULE_WEIGHTS["growth"] * 0.5, f"to controls only {_times(ratio)}" if ratio >= 1
                       else f"to controls {(ratio - 1) * 100:.0f}%"))
    if row.get("russia_share") is not None and row["russia_share"] >= 0.1:
        extras.append((RULE_WEIGHTS["share"] * (row.get("c_share") or 0) + 0.01,
                       f"{target} took {row['russia_share'] * 100:.0f}% of {origin}'s exports of it before"))
    if row.get("risk_label"):
        extras.append((RULE_WEIGHTS["risk"] * (row.get("product_risk") or 0) + 0.02, row["risk_label"]))
    if row.get("mirror_gap_log") is not None and abs(row["mirror_gap_log"]) >= math.log(1.5):
        extras.append((0.01, f"{transit} reports {math.exp(-row['mirror_gap_log']) * 100:.0f}% of it as imports"))
    extras.sort(key=lambda item: -item[0])
    parts += [text for _, text in extras[:3]]
    return "; ".join(parts)


def _features_json(row: dict, unavailable: dict[str, str]) -> str:
    values = {}
    for name in features.FEATURES:
        value = row.get(name)
        if name in unavailable or value is None or (isinstance(value, float) and not math.isfinite(value)):
            values[name] = None
        else:
            values[name] = round(float(value), 6)
    values["rule_score"] = round(float(row["rule_score"]), 6)
    values["model_score"] = round(float(row["model_score"]), 6)
    values["basis"] = row.get("basis")
    return json.dumps(values, sort_keys=True)


def flagged_table(scored: pl.DataFrame, windows: features.Windows, params: DetectParams,
                  unavailable: dict[str, str]) -> pl.DataFrame:
    """The user-facing table of flagged routes (FLAGGED_SCHEMA), best first."""
    rows = []
    for rank, row in enumerate(scored.filter(pl.col("flag")).iter_rows(named=True), start=1):
        code, level = row["product"], int(row["level"])
        onward = None
        if row.get("onward_growth_log") is not None and (row.get("onward_base") or 0) > 0:
            onward = row["onward_recent"] / row["onward_base"]
        rows.append({
            "rank": rank,
            "route_id": route_id(row["origin_iso3"], row["transit_iso3"], row["target_iso3"], code, level),
            "score": row["score"],
            "origin_iso3": row["origin_iso3"], "transit_iso3": row["transit_iso3"], "target_iso3": row["target_iso3"],
            "product_code": code, "product_level": level, "product_name": products.product_name(code),
            "tier": products.chpl_tier(code) if params.use_chpl else None,
            "currency": row["currency"],
            "baseline_start": windows.baseline_start, "baseline_end": windows.baseline_end,
            "recent_start": windows.recent_start, "recent_end": windows.recent_end,
            "baseline_value": row["base"], "recent_value": row["recent"],
            "growth": row["recent"] / row["base"] if row["base"] > 0 else None,
            "target_change": row.get("target_change"),
            "onward_growth": onward,
            "excess_value": row["excess_value"],
            "features": _features_json(row, unavailable),
            "reasons": reasons(row, windows, params),
        })
    return pl.DataFrame(rows, schema=FLAGGED_SCHEMA, orient="row")


# --- runs -----------------------------------------------------------------------------------------------

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
    params = params or DetectParams()
    started = _now()
    frame = features.build_routes(con, params)
    windows = frame.windows
    scored = score_routes(frame.routes, params, windows)
    flagged = flagged_table(scored, windows, params, frame.unavailable)
    notes = list(frame.notes)
    if scored.height and not scored["model_fitted"][0]:
        notes.append(f"too few routes pass the screening (fewer than {MIN_MODEL_ROUTES}) to fit the IsolationForest: "
                     "scores are the transparent rule scores alone")
    unavailable_words = [f"{features.FEATURES.get(name, name)} ({name}): {why}" for name, why in frame.unavailable.items()]
    loads = _loads_read(con)
    run_hash = hashlib.sha256(json.dumps(
        {"params": params.to_dict(), "loads": loads, "model": MODEL_VERSION}, sort_keys=True, default=str
    ).encode()).hexdigest()
    window_text = {
        "baseline_start": features.month_text(windows.baseline_start),
        "baseline_end": features.month_text(windows.baseline_end),
        "recent_start": features.month_text(windows.recent_start),
        "recent_end": features.month_text(windows.recent_end),
    }
    result = RunResult(
        run_id="", params=params, flagged=flagged, candidates=frame.routes.height,
        unavailable=unavailable_words, notes=notes, run_hash=run_hash, windows=window_text,
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
        con.execute(
            "INSERT INTO runs (run_id, started_at, finished_at, params_json, loads_json, model_version, run_hash,"
            " flagged, candidates, unavailable_json, notes_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, started, _now(), params_json, json.dumps(loads), MODEL_VERSION, result.run_hash,
             result.flagged.height, result.candidates, unavailable_json, json.dumps(result.notes)],
        )
        if result.flagged.height:
            table = result.flagged.with_columns(pl.lit(run_id).alias("run_id")).rename(
                {"features": "features_json"})
            con.register("tw_detect_flags_arrow", table.to_arrow())
            con.execute("""
                INSERT INTO anomalies (run_id, route_id, rank, score, origin_iso3, transit_iso3, target_iso3,
                    product_code, product_level, currency, baseline_start, baseline_end, recent_start, recent_end,
                    baseline_value, recent_value, growth, target_change, excess_value, features_json, reasons,
                    onward_growth, product_name, tier)
                SELECT run_id, route_id, rank, score, origin_iso3, transit_iso3, target_iso3, product_code,
                    product_level, currency, baseline_start, baseline_end, recent_start, recent_end, baseline_value,
                    recent_value, growth, target_change, excess_value, features_json, reasons, onward_growth,
                    product_name, tier
                FROM tw_detect_flags_arrow ORDER BY rank
            """)
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
    flagged = con.sql(
        """SELECT rank, route_id, score, origin_iso3, transit_iso3, target_iso3, product_code, product_level,
                  product_name, tier, currency, baseline_start, baseline_end, recent_start, recent_end,
                  baseline_value, recent_value, growth, target_change, onward_growth, excess_value,
                  features_json AS features, reasons
           FROM anomalies WHERE run_id = $run ORDER BY rank""", params={"run": run_id}).pl()
    flagged = pl.concat([pl.DataFrame(schema=FLAGGED_SCHEMA), flagged.cast(FLAGGED_SCHEMA)], how="vertical")
    unavailable = []
    for item in json.loads(run.get("unavailable_json") or "[]"):
        if isinstance(item, dict):
            name = item.get("feature", "")
            unavailable.append(f"{features.FEATURES.get(name, name)} ({name}): {item.get('reason', '')}")
        else:
            unavailable.append(str(item))
    notes = json.loads(run.get("notes_json") or "[]") if "notes_json" in run else []
    return RunResult(run_id=run_id, params=params, flagged=flagged, candidates=int(run.get("candidates") or 0),
                     unavailable=unavailable, notes=notes, run_hash=run.get("run_hash") or "", windows=windows)
