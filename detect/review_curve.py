"""The simulated-review curve (`tradewatch evaluate --simulate-review`): where it is stored under TRADEWATCH_HOME, reading it back checked, and its two charts for the HTML report."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from tradewatch.flows.core import settings
from tradewatch.flows.core.errors import InputError

CURVE_FILE = "simulated-review.json"
FORMAT = "tradewatch-simulated-review/1"
ROUND_KEYS = ("round", "precision_with_reviews", "precision_without", "found_with_reviews", "found_without")
HOW_TO = "tradewatch evaluate --simulate-review 5 --families mixed --first-seed 101"


def curve_path() -> Path:
    """$TRADEWATCH_HOME/evaluation/simulated-review.json: the latest curve measured on this machine."""
    return settings.home() / "evaluation" / CURVE_FILE


def save(result: dict, path: Path | None = None, *, now: datetime | None = None) -> Path:
    """Write a simulate_review result (with its world's `family` and `seed`) to `path` (default
    curve_path()), stamped with the format and the time measured (UTC); returns the path. The file is
    written beside and renamed, so a reader never sees half of it."""
    path = path or curve_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    stamped = {"format": FORMAT, "measured_at": (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ"),
               **result}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(stamped, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load(path: Path | None = None) -> dict | None:
    """The stored curve, or None when there is none; InputError naming the file when it is not one
    (not JSON, another format, rounds without their numbers)."""
    path = path or curve_path()
    if not path.is_file():
        return None
    try:
        curve = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(str(path), f"not a readable JSON file ({exc}); expected a curve written by "
                                    f"`{HOW_TO}`") from None
    if not isinstance(curve, dict) or curve.get("format") != FORMAT:
        raise InputError(str(path), f"expected format {FORMAT!r} (written by `{HOW_TO}`)")
    rounds = curve.get("rounds")
    if not isinstance(rounds, list) or not rounds or not all(
            isinstance(row, dict) and all(_number(row.get(key)) for key in ROUND_KEYS) for row in rounds):
        raise InputError(str(path), f"expected a list of rounds, each with {', '.join(ROUND_KEYS)}")
    if not isinstance(curve.get("family"), str) or not _number(curve.get("seed")):
        raise InputError(str(path), "expected the world it was measured on (family and seed)")
    return curve


# --- the report's charts -------------------------------------------------------------------------------

WIDTH, HEIGHT = 520, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 14, 36
LINES = (("with_reviews", "retrained on the reviews", "#c0392b", ""),
         ("without", "ranker without reviews", "#2c6fbb", "6 4"))


def _line_chart(rounds: list[dict], metric: str, top: float, y_label: str, batch: int) -> dict:
    """One chart of `metric` ('precision' or 'found') by reviews done: a polyline per arm, axes and ticks,
    all in SVG user units."""
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = len(rounds)

    def x(index: int) -> float:
        return LEFT + (inner_w * index / (count - 1) if count > 1 else inner_w / 2)

    def y(value: float) -> float:
        return TOP + inner_h * (1 - (value / top if top > 0 else 0))

    lines = []
    for key, name, colour, dash in LINES:
        values = [float(row[f"{metric}_{key}"]) for row in rounds]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        lines.append({"name": name, "colour": colour, "dash": dash, "points": points,
                      "dots": [{"x": f"{x(i):.1f}", "y": f"{y(v):.1f}", "title": f"{name}: {v:g}"}
                               for i, v in enumerate(values)]})
    steps = [top * k / 4 for k in range(5)]
    return {
        "width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "top": TOP, "bottom": HEIGHT - BOTTOM,
        "y_label": y_label, "lines": lines,
        "y_ticks": [{"y": f"{y(v):.1f}", "text": f"{v:.2f}" if top <= 1 else f"{v:.0f}"} for v in steps],
        "x_ticks": [{"x": f"{x(i):.1f}", "text": str(int(row["round"]) * batch)} for i, row in enumerate(rounds)],
        "x_label": "routes reviewed",
    }


def report_context(path: Path | None = None) -> dict:
    """What the report's simulated-review section shows: `charts` and `caption` of the stored curve, or
    `missing` (how to produce it) when there is none, or `error` when the file is not a curve."""
    empty = {"charts": None, "error": None, "how_to": HOW_TO, "path": str(path or curve_path())}
    try:
        curve = load(path)
    except InputError as exc:
        return {**empty, "error": str(exc)}
    if curve is None:
        return empty
    rounds = curve["rounds"]
    batch = int(curve.get("batch") or 20)
    planted = curve.get("planted")
    top_found = max([float(planted or 0)] + [float(row[key]) for row in rounds
                                             for key in ("found_with_reviews", "found_without")])
    share = curve.get("exploration_share") or 0
    return {
        **empty,
        "charts": [
            {"title": "Precision of each batch reviewed",
             "chart": _line_chart(rounds, "precision", 1.0, "batch precision", batch)},
            {"title": "Planted routes found so far",
             "chart": _line_chart(rounds, "found", max(top_found, 1.0), "planted found", batch)},
        ],
        "caption": (f"Measured {curve.get('measured_at', '?')} on the test world {curve['family']} seed "
                    f"{int(curve['seed'])} ({planted} planted among {curve.get('candidates')} candidate routes; "
                    f"synthetic): an oracle analyst reviews {batch} routes a round, the ranker retrained after each "
                    f"on a prior of one world per family plus the decisions, each counting {curve.get('weight')} "
                    f"simulated routes; exploration share {share:g}. Not measured on your data."),
        "legend": [{"name": name, "colour": colour, "dash": dash} for _, name, colour, dash in LINES],
        "how_to": HOW_TO,
    }
