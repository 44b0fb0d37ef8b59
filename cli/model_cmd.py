"""`tradewatch model train|status`: the learned ranker — train one on test worlds, see which one runs and how it measured."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tradewatch.cli.common import DbOption, one_line_errors, say

model_app = typer.Typer(name="model", help="The learned ranker: train it on test worlds, show which one is used.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")


@model_app.command("status")
@one_line_errors
def status(folder: Annotated[Optional[Path], typer.Option(
        "--model", help="A ranker folder (default: TRADEWATCH_HOME/model if trained, else the shipped one).")] = None,
           ) -> None:
    """Which ranker detection uses, verified (checksum, features, safe types), with its training and the
    leave-one-family-out measurements it was trained with."""
    from tradewatch.detect import ranker

    loaded = ranker.load(folder)
    manifest = loaded.manifest
    where = folder or (ranker.user_dir() if (ranker.user_dir() / ranker.MANIFEST_FILE).exists() else ranker.shipped_dir())
    training = manifest.get("training", {})
    typer.echo(f"Ranker {loaded.version} (verified: SHA-256 {loaded.checksum[:16]}…, {len(manifest['features'])} features)")
    typer.echo(f"  from {where}")
    typer.echo(f"  trained {manifest.get('trained_at')} on {training.get('examples', 0):,} routes "
               f"({training.get('positives', 0):,} planted) of families {', '.join(training.get('families', []))}, "
               f"seeds {', '.join(map(str, training.get('seeds', [])))}; reviews used: "
               f"{(training.get('reviews') or {}).get('used', 0)}")
    libraries = manifest.get("libraries", {})
    typer.echo("  libraries: " + ", ".join(f"{name} {version}" for name, version in sorted(libraries.items())))
    _print_held_out(manifest)


def _print_held_out(manifest: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Leave one family out: trained without it, measured on it",
                  caption=f"stat: p-value and BH flags alone; rank: the ranker's order, and the BH flags it gives "
                          f"probability ≥ {manifest.get('min_probability')}. P/R: the flagged list's precision/recall")
    for name in ("left out", "AP stat", "AP rank", "P stat", "P rank", "R stat", "R rank"):
        table.add_column(name, justify="left" if name == "left out" else "right", no_wrap=True)
    rows = [*manifest.get("leave_one_family_out", {}).items(), ("mean", manifest.get("leave_one_family_out_mean", {}))]
    for family, m in rows:
        table.add_row(family, *(f"{m.get(key, float('nan')):.3f}" for key in (
            "ap_statistic", "ap_ranker", "precision_statistic", "precision_ranker", "recall_statistic",
            "recall_ranker")))
    Console().print(table)


@model_app.command("train")
@one_line_errors
def train(
    families: Annotated[str, typer.Option("--families", help="'all' or family names separated by commas.")] = "all",
    seeds: Annotated[int, typer.Option("--seeds", min=1, max=50, help="Worlds per family.")] = 4,
    first_seed: Annotated[int, typer.Option(
        "--first-seed", min=0, help="First seed (the shipped ranker: 11; keep ≥ 101 for reporting).")] = 11,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder to write (default TRADEWATCH_HOME/model).")] = None,
    min_probability: Annotated[float, typer.Option(
        "--min-probability", min=0.0, max=1.0,
        help="The probability at which leave-one-family-out measures the ranker's flagged list.")] = 0.5,
    with_reviews: Annotated[bool, typer.Option(
        "--with-reviews", help="Also learn from the decisions in the warehouse (confirmed = diversion, "
                               "dismissed = not; watch is no answer).")] = False,
    db: DbOption = None,
    review_weight: Annotated[float, typer.Option(
        "--review-weight", min=1.0, max=1000.0, help="How many simulated routes one decision counts as.")] = 20.0,
    min_reviews: Annotated[int, typer.Option(
        "--min-reviews", min=2, help="Below this many decisions (with both kinds) nothing is trained.")] = 10,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="TOML file overriding the detection defaults the worlds are scored with (as for "
                         "detect and evaluate); a ranker reads the statistic's features, so train it with "
                         "the parameters detection will run with.")] = None,
) -> None:
    """Train a ranker on test worlds (a few minutes: about 15 s a world), measure it leaving one family out,
    and save it with its manifest. Detection then uses it instead of the shipped one."""
    from tradewatch.detect import evaluate, ranker
    from tradewatch.detect.config import DetectParams

    params = DetectParams.from_toml(config)  # a bad file is refused before minutes of world building
    names = evaluate.family_names(families)
    seed_list = list(range(first_seed, first_seed + seeds))
    reviews, weights, record = None, None, None
    if with_reviews:
        from tradewatch.flows import warehouse

        con = warehouse.connect(db, read_only=True, on_wait=say)
        try:
            reviews = ranker.review_examples(con)
        finally:
            con.close()
        ranker.check_reviews(reviews, min_reviews)  # before minutes of world building
    examples = ranker.collect(names, seed_list, params, say=say)
    if reviews is not None:
        examples, weights, record = ranker.with_reviews(examples, reviews, weight=review_weight, minimum=min_reviews)
        say(f"Learning from {record['used']} decisions ({record['confirmed']} confirmed, {record['dismissed']} "
            f"dismissed), each counting {review_weight:g} simulated routes.")
    folder = out or ranker.user_dir()
    manifest = ranker.train(examples, folder, min_probability=min_probability, seeds=seed_list, reviews=record,
                            sample_weight=weights, say=say)
    say(f"Saved ranker {manifest['version']} to {folder} (SHA-256 {manifest['sha256'][:16]}…).")
    _print_held_out(manifest)
