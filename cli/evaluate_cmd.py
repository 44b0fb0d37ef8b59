"""`tradewatch evaluate`: ranking quality on the synthetic world against two analyst baselines, and the placebo in time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from tradewatch.cli.common import (AsOfOption, BaselineOption, DbOption, FdrOption, RecentOption, one_line_errors,
                                   say, window_options)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


@one_line_errors
def evaluate(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as one JSON object.")] = False,
    event: Annotated[Optional[str], typer.Option("--event", help="True event month for the placebo, YYYY-MM.")] = None,
    placebo_shift: Annotated[
        int, typer.Option("--placebo-shift", min=1, max=120, help="Months the placebo event is moved earlier.")
    ] = 12,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the synthetic world (default: the demo's).")] = None,
    scale: Annotated[float, typer.Option("--scale", min=0.05, max=20.0, help="Size of the synthetic world.")] = 1.0,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="TOML file overriding the detection defaults.")
    ] = None,
    families: Annotated[Optional[str], typer.Option(
        "--families", help="Evaluate on the family of test worlds instead: 'all' or names separated by commas "
                           "(transit_boom, sector_boom, inflation, fx_swing, hub_reexport, silent_transit, "
                           "provisional, classic, mixed).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, max=100, help="With --families: worlds per family.")] = 5,
    first_seed: Annotated[int, typer.Option(
        "--first-seed", min=0, help="With --families: the first seed (the defaults were tuned on 1-3).")] = 101,
    as_of: AsOfOption = None,
    baseline_months: BaselineOption = None,
    recent_months: RecentOption = None,
    fdr: FdrOption = None,
    simulate_review: Annotated[Optional[int], typer.Option(
        "--simulate-review", min=1, max=20, help="Instead: a simulated analyst reviews the ranker's top 20 "
        "unreviewed routes per round on one world (--families NAME, default mixed; --first-seed), the ranker "
        "retrained after each round, beside the ranker without reviews. Several minutes.")] = None,
    exploration_share: Annotated[Optional[float], typer.Option(
        "--exploration-share", metavar="SHARE", help="With --simulate-review: share of each batch drawn from just "
        "below the flag threshold, as `detect` shows them (default: the detection parameter's).")] = None,
) -> None:
    """Score tradewatch against the synthetic world's answer key, side by side with ranking by plain
    growth and the European Commission's 2023 rule, and run the placebo in time on the warehouse's data.

    The synthetic world goes into a scratch warehouse under TRADEWATCH_HOME, never into yours."""
    options = window_options(event, as_of, baseline_months, recent_months, fdr, config)
    from tradewatch.detect import evaluate as evaluation
    from tradewatch.detect.config import DetectParams

    params = DetectParams.from_toml(config, exploration_share=exploration_share, **options)
    if simulate_review is not None:
        _simulate(simulate_review, families, first_seed, params, as_json)
        return
    if families is not None:
        names = evaluation.family_names(families)
        result = evaluation.evaluate_families(names, list(range(first_seed, first_seed + seeds)), params,
                                              say=say if not as_json else (lambda message: None))
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        else:
            _print_families(result)
        return
    result = evaluation.evaluate(db, seed=seed, scale=scale, params=params, shift_months=placebo_shift,
                                 say=say if not as_json else (lambda message: None))
    for note in result["notes"]:
        say(f"note: {note}")
    if as_json:
        typer.echo(json.dumps({"synthetic": result["synthetic"], "placebo": result["placebo"]}, indent=2))
        return
    _print(result)


def _print(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from tradewatch.detect.evaluate import METRIC_NAMES

    console = Console()
    table = Table(title="Synthetic world: ranking against the answer key",
                  caption="EC 2023 rule: exports ≥ +100% vs their 2019–21 average and above €1 M, ranked by growth")
    table.add_column("method", no_wrap=True)
    headers = {"average_precision": "AP", "precision_at_10": "P@10", "precision_at_25": "P@25",
               "precision_at_50": "P@50", "recall_at_50": "R@50"}
    for name in METRIC_NAMES:
        table.add_column(headers[name], justify="right", no_wrap=True)
    labels = {"tradewatch": "tradewatch", "baseline_growth": "plain growth", "baseline_ec_rule": "EC 2023 rule"}
    for method, metrics in result["synthetic"].items():
        table.add_row(labels.get(method, method), *(f"{metrics[name]:.3f}" for name in METRIC_NAMES))
    console.print(table)
    placebo = result["placebo"]
    ratio = "–" if placebo["ratio"] is None else f"{placebo['ratio']:.1%}"
    console.print(f"Placebo in time: {placebo['flags_event']} routes flagged at {placebo['event']}, "
                  f"{placebo['flags_placebo']} at the placebo event {placebo['placebo_event']} (ratio {ratio}).")
    for goal, met in result["goals"].items():
        console.print(f"  {'met    ' if met else 'NOT met'}  {goal.replace('_', ' ')}")


def _print_families(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from tradewatch.detect.evaluate import FAMILY_METRICS, METHODS

    console = Console()
    headers = {"average_precision": "AP", "precision_at_25": "P@25", "list_precision": "list precision",
               "list_recall": "list recall"}
    table = Table(title=f"Test worlds, seeds {result['seeds'][0]}–{result['seeds'][-1]} "
                        f"(defaults tuned on {', '.join(map(str, result['tuning_seeds']))}): means over seeds",
                  caption="simple: origin→Russia fell ≥ 50 %, ranked by growth net of control countries × log excess")
    table.add_column("family", no_wrap=True)
    table.add_column("method", no_wrap=True)
    for name in FAMILY_METRICS:
        table.add_column(headers[name], justify="right", no_wrap=True)
    rows = [*result["families"].items(), ("overall", result["overall"])]
    for family, methods in rows:
        for method in METHODS:
            table.add_row(family if method == METHODS[0] else "", method,
                          *(f"{methods[method][name]:.3f}" for name in FAMILY_METRICS))
    console.print(table)


def _simulate(rounds: int, families: str | None, seed: int, params, as_json: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from tradewatch.detect import evaluate as evaluation, ranker

    quiet = (lambda message: None) if as_json else say
    names = evaluation.family_names(families or "mixed")
    family = names[0]
    quiet(f"Prior: one world of each family, seed {ranker.PRIOR_SEED} (the ranker before any review) …")
    prior = ranker.collect(evaluation.family_names("all"), [ranker.PRIOR_SEED], params, say=quiet)
    quiet(f"The world reviewed: {family}, seed {seed} …")
    world = ranker.world_examples(family, seed, params)
    from tradewatch.detect import review_curve

    result = {"family": family, "seed": seed, "prior_seed": ranker.PRIOR_SEED,
              **ranker.simulate_review(world, prior, rounds=rounds, exploration_share=params.exploration_share,
                                       params=params, say=quiet)}
    stored = review_curve.save(result)
    quiet(f"Curve stored in {stored}; `tradewatch report` plots it.")
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"Simulated analyst on {family} seed {seed}: {result['batch']} routes reviewed a round "
                        f"({result['planted']} planted among {result['candidates']:,} candidates)")
    for name in ("round", "precision with reviews", "without", "found with reviews", "without ",
                 "exploration (planted)"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in result["rounds"]:
        table.add_row(str(row["round"]), f"{row['precision_with_reviews']:.2f}", f"{row['precision_without']:.2f}",
                      str(row["found_with_reviews"]), str(row["found_without"]),
                      f"{row['explored']} ({row['explored_planted']})")
    Console().print(table)
