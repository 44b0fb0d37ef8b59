"""The learned ranker: a calibrated gradient-boosted classifier over a route's own evidence, trained on test
worlds (detect/worlds.py), saved in skops' format with a manifest, and verified before it is loaded."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl

from tradewatch.flows.core import settings
from tradewatch.flows.core.errors import TradewatchError

FORMAT = "tradewatch-ranker/1"
MODEL_FILE = "ranker.skops"
MANIFEST_FILE = "ranker.json"

# The evidence a route's probability is computed from: its own legs and statistics, never the rank or the
# q-value (they depend on the other routes in the run). Sizes enter as log1p of money.
RAW_FEATURES = (
    "net_growth_log", "onward_net_log", "target_drop_log", "substitution_ratio", "persistence",
    "spike_share", "russia_share", "onward_cover", "mirror_gap_log", "unit_value_change_log", "product_risk",
    "pair_growth_log", "control_growth_log", "product_boom_log", "co_target_change", "growth_log",
    "did_log", "onward_growth_log", "null_scale", "target_change",
)
SIZE_FEATURES = ("excess_value", "base", "recent", "target_base", "onward_base", "onward_recent")
DERIVED_FEATURES = ("z", "minus_log10_p", "tested")
FEATURES = RAW_FEATURES + tuple(f"log1p_{name}" for name in SIZE_FEATURES) + DERIVED_FEATURES


def feature_matrix(scored: pl.DataFrame) -> np.ndarray:
    """The FEATURES of each scored route (engine.score_routes' frame) as a float matrix; NaN where a
    feature is missing (the gradient-boosted trees route missing values themselves)."""
    def column(name: str) -> pl.Expr:
        return pl.col(name).cast(pl.Float64) if name in scored.columns else pl.lit(None, pl.Float64)

    exprs = [column(name).alias(name) for name in RAW_FEATURES]
    exprs += [column(name).clip(lower_bound=0).log1p().alias(f"log1p_{name}") for name in SIZE_FEATURES]
    exprs += [
        (column("net_growth_log") / column("null_scale")).alias("z"),
        (-column("p_value").clip(lower_bound=1e-300).log10()).alias("minus_log10_p"),
        column("tested").alias("tested"),
    ]
    matrix = scored.select(exprs).to_numpy().astype(np.float64, copy=True)
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix


def new_model(random_state: int = 0):
    """The ranker before training: gradient-boosted trees whose probabilities are calibrated by isotonic
    regression on held-out folds (so 0.8 means right about 8 times in 10 on worlds like the training's)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier

    trees = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                           l2_regularization=1.0, random_state=random_state)
    return CalibratedClassifierCV(trees, method="isotonic", cv=3)


@dataclass
class Ranker:
    """A trained ranker and its manifest (version, training worlds, features, library versions, metrics)."""

    model: object
    manifest: dict

    @property
    def version(self) -> str:
        return str(self.manifest.get("version"))

    @property
    def checksum(self) -> str:
        return str(self.manifest.get("sha256"))

    def probabilities(self, scored: pl.DataFrame) -> np.ndarray:
        """The calibrated probability that each route of `scored` is a diversion route; a route's value
        depends on its own row only."""
        if scored.height == 0:
            return np.zeros(0)
        return self.model.predict_proba(feature_matrix(scored))[:, 1]


def fit(examples: pl.DataFrame, *, sample_weight: np.ndarray | None = None, random_state: int = 0):
    """A model trained on `examples` (scored routes with a boolean `label` column)."""
    labels = examples["label"].cast(pl.Int8).to_numpy()
    if labels.min(initial=1) == labels.max(initial=0):
        raise TradewatchError("the training examples hold only one class; use more worlds")
    model = new_model(random_state)
    model.fit(feature_matrix(examples), labels, sample_weight=sample_weight)
    return model


# --- saving and loading ----------------------------------------------------------------------------------

def shipped_dir() -> Path:
    """Where the package's own trained ranker lives (package data)."""
    return Path(str(resources.files("tradewatch.data").joinpath("model")))


def user_dir() -> Path:
    """Where `tradewatch model train` writes a ranker of one's own: TRADEWATCH_HOME/model."""
    return settings.home() / "model"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _library_versions() -> dict[str, str]:
    import sklearn
    import skops

    return {"scikit-learn": sklearn.__version__, "skops": skops.__version__, "numpy": np.__version__}


def save(model, folder: Path, manifest: dict) -> dict:
    """Write `model` (skops format, never pickle) and its manifest into `folder`; returns the manifest
    completed with format, features, library versions, time and the file's SHA-256."""
    import skops.io as sio

    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / (MODEL_FILE + ".partial")
    sio.dump(model, partial)
    checksum = _sha256(partial)
    manifest = {**manifest, "format": FORMAT, "features": list(FEATURES), "libraries": _library_versions(),
                "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "sha256": checksum,
                "file": MODEL_FILE}
    manifest.setdefault("version", f"ranker-{checksum[:12]}")
    partial.replace(folder / MODEL_FILE)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


# The types beyond skops' own defaults (builtins, containers, numpy arrays, scikit-learn estimators) that
# tradewatch's model holds. Anything else is refused by exact name: a prefix such as "builtins." would let
# a file name builtins.eval as a constructor, which skops calls with the file's arguments while loading.
TRUSTED_TYPES = frozenset({
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
})


def _is_sklearn_class(name: str) -> bool:
    """True when `name` is a class defined by scikit-learn (another version may move a helper class; a
    class is only instantiated, never a function called). Imports only scikit-learn's own modules."""
    import importlib

    module_name, _, attribute = name.rpartition(".")
    if not module_name.startswith("sklearn.") or not attribute.isidentifier():
        return False
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError):
        return False
    return isinstance(found, type) and str(getattr(found, "__module__", "")).startswith("sklearn.")


def _trusted_types(path: Path) -> list[str]:
    """The types in the file beyond skops' defaults, refused unless each is one tradewatch's model holds
    (TRUSTED_TYPES) or a scikit-learn class."""
    import skops.io as sio

    types = sio.get_untrusted_types(file=path)
    foreign = [name for name in types if name not in TRUSTED_TYPES and not _is_sklearn_class(name)]
    if foreign:
        raise TradewatchError(f"{path}: refused: the model file holds types no tradewatch model has "
                              f"({', '.join(sorted(foreign)[:3])})")
    return types


# What save() writes into every manifest (name -> what is expected), and what a trained one may add.
_REQUIRED = {
    "format": (lambda v: v == FORMAT, FORMAT),
    "version": (lambda v: isinstance(v, str) and v.strip() != "", "text"),
    "sha256": (lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v),
               "64 hexadecimal digits"),
    "file": (lambda v: v == MODEL_FILE, repr(MODEL_FILE)),
    "features": (lambda v: isinstance(v, list) and all(isinstance(f, str) for f in v), "a list of feature names"),
    "trained_at": (lambda v: isinstance(v, str), "a time as text"),
    "libraries": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                  "a table of library versions"),
}
def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metrics(value) -> bool:
    return isinstance(value, dict) and all(_number(x) for x in value.values())


def _training(value) -> bool:
    kinds = {"families": list, "seeds": list, "examples": int, "positives": int, "reviews": dict}
    return isinstance(value, dict) and all(isinstance(value[key], kind) for key, kind in kinds.items() if key in value)


_OPTIONAL = {
    "training": (_training, "a table (families and seeds lists, examples and positives counts, reviews table)"),
    "min_probability": (lambda v: _number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "leave_one_family_out": (lambda v: isinstance(v, dict) and all(_metrics(x) for x in v.values()),
                             "a table of measurements per family"),
    "leave_one_family_out_mean": (_metrics, "a table of measurements"),
}


def _check_manifest(manifest: dict, path: Path) -> None:
    for key, (accept, expected) in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in manifest:
            if key in _REQUIRED:
                raise TradewatchError(f"{path}: refused: no {key!r}; expected {expected} (a manifest "
                                      "`tradewatch model train` writes has it)")
            continue
        if not accept(manifest[key]):
            shown = repr(manifest[key])
            shown = shown if len(shown) <= 40 else shown[:39] + "…"
            raise TradewatchError(f"{path}: refused: {key} is {shown}; expected {expected}")


def read_manifest(folder: Path) -> dict:
    """The manifest of the ranker in `folder`; TradewatchError naming the file when it is missing, unreadable
    or lacks (or mistypes) a key that save() writes."""
    path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TradewatchError(f"{path}: no ranker manifest here; run `tradewatch model train`") from None
    except IsADirectoryError:
        raise TradewatchError(f"{path}: not a ranker manifest (a folder)") from None
    except OSError as exc:
        raise TradewatchError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise TradewatchError(f"{path}: not a ranker manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TradewatchError(f"{path}: not a {FORMAT} manifest")
    _check_manifest(manifest, path)
    return manifest


def load(folder: Path | None = None) -> Ranker:
    """The ranker in `folder` (default: the user's if trained, else the shipped one), after checking that the
    file's SHA-256 and features are the manifest's and that it holds only scikit-learn types; any mismatch
    is refused in one line (TradewatchError), and nothing is unpickled."""
    import skops.io as sio

    folder = folder or (user_dir() if (user_dir() / MANIFEST_FILE).exists() else shipped_dir())
    manifest = read_manifest(folder)
    path = folder / MODEL_FILE
    if not path.is_file():
        raise TradewatchError(f"{path}: the model file named by {folder / MANIFEST_FILE} is missing")
    try:
        checksum = _sha256(path)
    except OSError as exc:
        raise TradewatchError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if checksum != manifest.get("sha256"):
        raise TradewatchError(f"{path}: refused: its SHA-256 {checksum[:12]}… is not the manifest's "
                              f"{str(manifest.get('sha256'))[:12]}… (changed after training?)")
    if list(manifest.get("features") or []) != list(FEATURES):
        raise TradewatchError(f"{folder / MANIFEST_FILE}: refused: trained on other features than this "
                              "tradewatch computes; run `tradewatch model train`")
    try:
        model = sio.load(path, trusted=_trusted_types(path))
    except TradewatchError:
        raise
    except Exception as exc:  # a corrupt archive: one line, never a traceback
        raise TradewatchError(f"{path}: refused: not a readable skops model ({type(exc).__name__})") from None
    return Ranker(model=model, manifest=manifest)


# --- training data from test worlds ----------------------------------------------------------------------

def world_examples(family: str, seed: int, params=None) -> pl.DataFrame:
    """The HS-6 routes of one test world, scored by the statistic, with `label` (planted or not),
    `family` and `seed` columns."""
    from tradewatch.detect import engine, evaluate, features
    from tradewatch.detect.config import DetectParams
    from tradewatch.flows import warehouse

    params = params or DetectParams()
    world = evaluate.seed_family_world(family, seed)
    try:
        con = warehouse.connect(world.db)
        try:
            run_params = params.replace(event=world.answer_key.get("event", params.event))
            frame = features.build_routes(con, run_params)
            scored = engine.score_routes(frame.routes, run_params, frame.windows, frame.placebo)
        finally:
            con.close()
        positives = evaluate.answer_routes(world.answer_key)
    finally:
        world.remove()
    six = scored.filter(pl.col("level") == 6)
    keys = zip(six["origin_iso3"], six["transit_iso3"], six["target_iso3"], six["product"])
    six = six.with_columns(label=pl.Series([key in positives for key in keys], dtype=pl.Boolean),
                           family=pl.lit(family), seed=pl.lit(seed, pl.Int64),
                           planted=pl.lit(len(positives), pl.Int64))
    return six.select([name for name, dtype in six.schema.items() if dtype != pl.Object])


def average_precision(scores: np.ndarray, labels: np.ndarray, planted: int) -> float:
    """AP as `tradewatch evaluate` computes it: the mean over the planted routes of the precision at each
    one's rank (planted routes that are not candidates count 0); ties keep the frame's order."""
    if planted <= 0:
        return math.nan
    order = np.argsort(-scores, kind="stable")
    hits = labels[order].astype(float)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / planted)


def collect(families: list[str], seeds: list[int], params=None, *, say=lambda message: None) -> pl.DataFrame:
    """Training examples: the scored HS-6 routes of one world per (family, seed), labelled from its answer key."""
    frames = []
    for family in families:
        for seed in seeds:
            say(f"World {family} seed {seed} …")
            frames.append(world_examples(family, seed, params))
    return pl.concat(frames, how="diagonal_relaxed")


def list_quality(flagged: np.ndarray, labels: np.ndarray, planted: int) -> tuple[float, float]:
    """(precision, recall) of a flagged list; an empty list has precision 0."""
    hits = int(labels[flagged].sum())
    return (hits / int(flagged.sum()) if flagged.sum() else 0.0), (hits / planted if planted else math.nan)


def world_metrics(world: pl.DataFrame, probability: np.ndarray, min_probability: float) -> dict[str, float]:
    """Statistic alone vs ranker on one world's examples: AP of each ranking, and precision and recall of
    the statistic's flagged list and of the ranker's (the statistic's flags the ranker keeps)."""
    order = world.with_columns(probability=pl.Series(probability, dtype=pl.Float64)).sort(
        ["tested", "p_value", "excess_value", "route_id"], descending=[True, False, True, False], nulls_last=True)
    labels = order["label"].to_numpy()
    planted = int(order["planted"][0])
    flags = order["flag"].to_numpy()
    kept = flags & (order["probability"].to_numpy() >= min_probability)
    statistic_p, statistic_r = list_quality(flags, labels, planted)
    ranker_p, ranker_r = list_quality(kept, labels, planted)
    return {
        "ap_statistic": ordered_ap(labels, planted),
        "ap_ranker": average_precision(order["probability"].to_numpy(), labels, planted),
        "precision_statistic": statistic_p, "recall_statistic": statistic_r,
        "precision_ranker": ranker_p, "recall_ranker": ranker_r,
    }


def ordered_ap(labels: np.ndarray, planted: int) -> float:
    """AP of a ranking already in order (best first)."""
    return average_precision(np.arange(len(labels), 0, -1, dtype=float), labels, planted)


def _mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    return {name: round(float(np.mean([row[name] for row in rows])), 4) for name in rows[0]}


def leave_one_family_out(examples: pl.DataFrame, min_probability: float, *, say=lambda message: None) -> dict:
    """For each family: a ranker trained on the other families' worlds, measured on this family's worlds
    (means over its seeds). The 'mixed' family (all confounders at once) is left out like the others,
    though its worlds share mechanisms with every other family's."""
    table = {}
    for family in sorted(set(examples["family"])):
        say(f"Leaving out {family} …")
        model = fit(examples.filter(pl.col("family") != family))
        rows = []
        for (_, _), world in examples.filter(pl.col("family") == family).group_by(["family", "seed"],
                                                                                 maintain_order=True):
            rows.append(world_metrics(world, model.predict_proba(feature_matrix(world))[:, 1], min_probability))
        table[family] = _mean_metrics(rows)
    return table


def train(examples: pl.DataFrame, folder: Path, *, min_probability: float, seeds: list[int],
          reviews: dict | None = None, sample_weight: np.ndarray | None = None, say=lambda message: None) -> dict:
    """Measure leave-one-family-out, fit on every example, and save the ranker with its manifest in
    `folder`; returns the manifest."""
    families = sorted(set(examples["family"]))
    held_out = leave_one_family_out(examples, min_probability, say=say)
    say("Training on every world …")
    model = fit(examples, sample_weight=sample_weight)
    manifest = {
        "training": {"families": families, "seeds": list(seeds), "examples": examples.height,
                     "positives": int(examples["label"].sum()), "reviews": reviews or {"used": 0}},
        "min_probability": min_probability,
        "leave_one_family_out": held_out,
        "leave_one_family_out_mean": _mean_metrics(list(held_out.values())),
    }
    return save(model, folder, manifest)


# --- explanations ------------------------------------------------------------------------------------------

FEATURE_WORDS = {  # short words for the reasons line; `flags show` lists the features in full
    "net_growth_log": "net growth", "onward_net_log": "onward net growth", "target_drop_log": "fall to the target",
    "substitution_ratio": "substitution", "persistence": "persistence", "spike_share": "spikiness",
    "russia_share": "target's share before", "onward_cover": "onward cover", "mirror_gap_log": "mirror gap",
    "unit_value_change_log": "unit value change", "product_risk": "product listing",
    "pair_growth_log": "pair's ordinary growth", "control_growth_log": "control countries' growth",
    "product_boom_log": "product boom", "co_target_change": "change to co-targets", "growth_log": "raw growth",
    "did_log": "growth net of controls", "onward_growth_log": "onward growth", "null_scale": "null scale",
    "target_change": "change to the target", "z": "net growth in null scales", "minus_log10_p": "p-value",
    "tested": "tested", "log1p_excess_value": "excess value", "log1p_base": "baseline value",
    "log1p_recent": "recent value", "log1p_target_base": "target baseline", "log1p_onward_base": "onward baseline",
    "log1p_onward_recent": "onward recent value",
}


def explain(model: Ranker, rows: pl.DataFrame, top: int = 3) -> list[list[tuple[str, float]]]:
    """For each row, the `top` features that moved its probability most: the change in probability when
    the feature is withheld (treated as missing, the trees' no-information path), largest first. It uses
    the row alone, like the probability itself."""
    if rows.height == 0:
        return []
    matrix = feature_matrix(rows)
    n, width = matrix.shape
    # One call for the rows and every withheld copy (block j has feature j missing): a prediction is row by
    # row, so this equals one call per feature, without walking every tree once per feature.
    stacked = np.tile(matrix, (width + 1, 1))
    for j in range(width):
        stacked[(j + 1) * n:(j + 2) * n, j] = np.nan
    probabilities = model.model.predict_proba(stacked)[:, 1]
    base = probabilities[:n]
    effects = base[:, None] - probabilities[n:].reshape(width, n).T
    out = []
    for i in range(matrix.shape[0]):
        order = np.argsort(-np.abs(effects[i]), kind="stable")[:top]
        out.append([(FEATURES[j], round(float(effects[i, j]), 4)) for j in order if abs(effects[i, j]) >= 0.005])
    return out


def feature_words(name: str) -> str:
    """A ranker feature's name in a few words."""
    return FEATURE_WORDS.get(name, name)


# --- learning from analysts' decisions ----------------------------------------------------------------------

PRIOR_SEED = 11  # the simulated analyst's prior: one world of each family at this (training) seed
REVIEW_LABELS = {"confirmed": True, "dismissed": False}  # 'watch' is no answer yet: unlabelled


def review_labels(con) -> pl.DataFrame:
    """Each reviewed route's latest decision that is a label (confirmed → True, dismissed → False; a later
    'watch' leaves the route unlabelled): route_id, status, reviewed_at, label."""
    from tradewatch.detect.review import LATEST_DECISIONS

    rows = con.execute(f"SELECT route_id, status, reviewed_at FROM ({LATEST_DECISIONS}) ORDER BY route_id").fetchall()
    labelled = [(r, s, t, REVIEW_LABELS[s]) for r, s, t in rows if s in REVIEW_LABELS]
    return pl.DataFrame(labelled, schema={"route_id": pl.String, "status": pl.String,
                                          "reviewed_at": pl.Datetime("us"), "label": pl.Boolean}, orient="row")


def review_examples(con, params=None) -> pl.DataFrame:
    """The analysts' labelled routes as training examples: every route of the warehouse scored by the
    statistic for `params` (default: the latest run's), kept where its id has a label. The features are
    those of today's data, which a revision may have changed since the decision."""
    from tradewatch.detect import engine, features

    labels = review_labels(con)
    if labels.height == 0:
        return labels
    params = params or _latest_params(con)
    frame = features.build_routes(con, params)
    scored = engine.score_routes(frame.routes, params, frame.windows, frame.placebo)
    examples = scored.join(labels.select("route_id", "label"), on="route_id", how="inner")
    return examples.with_columns(family=pl.lit("reviews"), seed=pl.lit(-1, pl.Int64),
                                 planted=pl.lit(int(examples["label"].sum()), pl.Int64))


def _latest_params(con):
    from tradewatch.detect.config import DetectParams

    row = con.execute("SELECT params_json FROM runs ORDER BY started_at DESC, run_id DESC LIMIT 1").fetchone()
    if row is None:
        return DetectParams()
    stored = json.loads(row[0])
    stored.pop("windows", None)
    return DetectParams.from_dict(stored)


def check_reviews(reviews: pl.DataFrame, minimum: int) -> tuple[int, int]:
    """(confirmed, dismissed) among the labelled examples; TradewatchError, before anything is trained, below
    `minimum` or without both kinds."""
    confirmed = int(reviews["label"].sum()) if reviews.height else 0
    dismissed = reviews.height - confirmed
    if reviews.height < minimum or not confirmed or not dismissed:
        raise TradewatchError(
            f"{reviews.height} usable decisions ({confirmed} confirmed, {dismissed} dismissed) on routes of "
            f"this warehouse; at least {minimum}, with both kinds, are needed to learn from them: nothing trained")
    return confirmed, dismissed


def with_reviews(examples: pl.DataFrame, reviews: pl.DataFrame, *, weight: float, minimum: int
                 ) -> tuple[pl.DataFrame, np.ndarray, dict]:
    """The simulated examples joined by the analysts' (each counting `weight` times), the sample weights,
    and what the manifest records of the labels. Below `minimum` labels, or without both a confirmed and a
    dismissed route among them, nothing changes: TradewatchError saying so."""
    confirmed, dismissed = check_reviews(reviews, minimum)
    joined = pl.concat([examples, reviews.select(examples.columns)], how="diagonal_relaxed")
    weights = np.concatenate([np.ones(examples.height), np.full(reviews.height, float(weight))])
    record = {"used": reviews.height, "confirmed": confirmed, "dismissed": dismissed, "weight": weight,
              "labels": sorted(reviews["route_id"].to_list())}
    return joined, weights, record


# --- a simulated analyst ------------------------------------------------------------------------------------

def simulate_review(world: pl.DataFrame, prior: pl.DataFrame, *, rounds: int, batch: int = 20,
                    weight: float = 20.0, exploration_share: float = 0.0, params=None,
                    say=lambda message: None) -> dict:
    """An oracle analyst reviews, each round, the `batch` unreviewed routes the ranker puts first (its
    decisions are the world's answer key) and the ranker is retrained on `prior` plus the decisions so far;
    beside it, the ranker without reviews walks down its own fixed order. With `exploration_share`,
    round(share × batch) of each batch are instead the unreviewed routes nearest the flag threshold
    (detect/exploration.py, for `params`), as `tradewatch detect` shows them. Returns per round the
    precision of the batch reviewed, for both, the planted routes found so far, and how many of the batch
    were exploration routes (and planted)."""
    labels = world["label"].to_numpy()
    matrix = feature_matrix(world)
    fixed = np.argsort(-fit(prior).predict_proba(matrix)[:, 1], kind="stable")
    explore = _exploration_order(world, params) if exploration_share > 0 else []
    explored_per_batch = int(round(exploration_share * batch))
    reviewed: list[int] = []
    curve = []
    model = None
    for number in range(1, rounds + 1):
        ranking = fixed if model is None else np.argsort(-model.predict_proba(matrix)[:, 1], kind="stable")
        order, explored = _next_batch(ranking, explore, set(reviewed), batch, explored_per_batch)
        reviewed += order
        without = fixed[(number - 1) * batch:number * batch]
        curve.append({"round": number, "precision_with_reviews": round(float(labels[order].mean()), 4),
                      "precision_without": round(float(labels[without].mean()), 4),
                      "found_with_reviews": int(labels[reviewed].sum()),
                      "found_without": int(labels[fixed[:number * batch]].sum()),
                      "explored": len(explored), "explored_planted": int(labels[explored].sum()) if explored else 0})
        say(f"Round {number}: reviewed {len(reviewed)}; batch precision {curve[-1]['precision_with_reviews']:.2f} "
            f"with reviews, {curve[-1]['precision_without']:.2f} without"
            + (f"; {len(explored)} exploration route(s), {curve[-1]['explored_planted']} planted" if explore else ""))
        decided = world[reviewed].with_columns(family=pl.lit("reviews"))
        if decided["label"].any() and not decided["label"].all():
            examples, weights, _ = with_reviews(prior, decided, weight=weight, minimum=2)
            model = fit(examples, sample_weight=weights)
    return {"rounds": curve, "batch": batch, "weight": weight, "planted": int(labels.sum()),
            "candidates": int(len(labels)), "exploration_share": exploration_share}


def _exploration_order(world: pl.DataFrame, params) -> list[int]:
    """Row numbers of `world` that exploration would draw from, nearest the flag threshold first."""
    from tradewatch.detect import exploration
    from tradewatch.detect.config import DetectParams

    numbered = world.with_row_index("row_number")
    return exploration.below_threshold(numbered, params or DetectParams())["row_number"].to_list()


def _next_batch(ranking: np.ndarray, explore: list[int], seen: set[int], batch: int,
                explored: int) -> tuple[list[int], list[int]]:
    """The next `batch` unreviewed rows: the ranker's first batch − k, then k from `explore` (k = `explored`
    when exploration is on) not already taken, topped up from the ranking when `explore` runs out."""
    wanted = batch - explored if explore else batch
    order = [int(i) for i in ranking if int(i) not in seen][:wanted]
    taken = seen | set(order)
    chosen = [i for i in explore if i not in taken][:batch - len(order)]
    taken |= set(chosen)
    order += chosen + [int(i) for i in ranking if int(i) not in taken][:batch - len(order) - len(chosen)]
    return order, chosen
