"""The detection runs a warehouse holds, one row each: when, which event and windows, what data, how many flags, which model."""

from __future__ import annotations

import json

import duckdb
import polars as pl

RUN_COLUMNS = ("run_id", "started_at", "event", "baseline", "recent", "data", "flagged", "candidates", "model_version")


def _window(windows: dict, name: str) -> str | None:
    start, end = windows.get(f"{name}_start"), windows.get(f"{name}_end")
    return f"{start}–{end}" if start and end else None


def _data(loads_json: str | None) -> str | None:
    """'comext 2019-01–2024-06, comtrade 2019-01–2024-05': each source's months the run read."""
    try:
        loads = json.loads(loads_json) if loads_json else []
    except ValueError:
        return None
    spans: dict[str, list[str]] = {}
    for load in loads if isinstance(loads, list) else []:
        if isinstance(load, dict) and load.get("source") and load.get("period"):
            spans.setdefault(str(load["source"]), []).append(str(load["period"]))
    return ", ".join(f"{source} {min(p)}–{max(p)}" for source, p in sorted(spans.items())) or None


def list_runs(con: duckdb.DuckDBPyConnection, *, limit: int | None = None) -> pl.DataFrame:
    """The runs, newest first (at most `limit`), with the columns of RUN_COLUMNS; an empty frame with
    those columns when the warehouse holds no run."""
    sql = ("SELECT run_id, started_at, params_json, loads_json, flagged, candidates, model_version FROM runs"
           " ORDER BY started_at DESC, run_id" + (" LIMIT ?" if limit else ""))
    cursor = con.execute(sql, [limit] if limit else [])
    names = [c[0] for c in cursor.description]
    rows = []
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        try:
            params = json.loads(row.pop("params_json") or "{}")
        except ValueError:
            params = {}
        windows = params.get("windows") if isinstance(params.get("windows"), dict) else {}
        rows.append({"run_id": row["run_id"], "started_at": row["started_at"], "event": params.get("event"),
                     "baseline": _window(windows, "baseline"), "recent": _window(windows, "recent"),
                     "data": _data(row.pop("loads_json")), "flagged": row["flagged"],
                     "candidates": row["candidates"], "model_version": row["model_version"]})
    schema = {"run_id": pl.String, "started_at": pl.Datetime("us"), "event": pl.String, "baseline": pl.String,
              "recent": pl.String, "data": pl.String, "flagged": pl.Int64, "candidates": pl.Int64,
              "model_version": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
