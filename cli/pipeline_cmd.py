"""`tradewatch pipeline run`, `tradewatch deploy`, `tradewatch serve`: run, schedule and serve the monthly pipeline flow."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tradewatch.cli.common import DbOption, VerboseOption, one_line_errors, say, verbose_wanted


class Runner(str, Enum):
    thread = "thread"
    dask = "dask"


ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", help="Pipeline TOML file over the documented defaults (data/pipeline_defaults.toml).",
                 show_default=False),
]
CronOption = Annotated[
    Optional[str],
    typer.Option("--cron", help='Cron schedule, e.g. "0 6 15 * *" (default: the config\'s, mid-month when Comext publishes).',
                 show_default=False),
]

pipeline_app = typer.Typer(help="Run the monthly pipeline: ingest what is new → detect → publish → report.",
                           no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(pipeline_app, name="pipeline")
    app.command("deploy")(deploy)
    app.command("serve")(serve)


@pipeline_app.command("run")
@one_line_errors
def run(
    db: DbOption = None,
    config: ConfigOption = None,
    task_runner: Annotated[
        Optional[Runner], typer.Option("--task-runner", help="thread (one machine) or dask (default: the config's).",
                                       show_default=False)
    ] = None,
    dask_address: Annotated[
        Optional[str], typer.Option("--dask-address", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 "
                                    "(implies --task-runner dask; default: a temporary local cluster).",
                                    show_default=False)
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Run the pipeline once, now: ingest what is new or revised, detect, publish, print the report path.

    Without PREFECT_API_URL, Prefect starts a temporary server for the run."""
    from tradewatch.flows import download, pipeline

    # Each download retry of this process's tasks is said as it comes (a Dask worker's are not relayed).
    with download.retry_notices(lambda line: say(f"retrying: {line}")):
        outcome = pipeline.run_pipeline(config, db, task_runner=task_runner.value if task_runner else None,
                                        dask_address=dask_address, say=say, quiet=not verbose_wanted(verbose))
    summary = outcome.summary
    ingest = summary["ingest"]
    say(f"Ingest: {ingest['downloaded']} file(s) downloaded, {ingest['unchanged_downloads']} unchanged, "
        f"{len(ingest['missing'])} month(s) not published yet; {len(ingest['loaded'])} file(s) loaded "
        f"({ingest['rows']:,} rows{', periods ' + ', '.join(ingest['periods']) if ingest['periods'] else ''}).")
    for refused in ingest.get("refused") or []:
        say(f"refused: {refused}")
    for note in summary.get("notes") or []:
        say(f"note: {note}")
    say(f"Detection run {summary['run_id']}: {summary['flagged']} of {summary['candidates']:,} candidate routes "
        f"flagged. Pipeline took {outcome.seconds:.1f} s (flow run {outcome.flow_run_id}).")
    say("Report:")
    typer.echo(summary["report"])


@one_line_errors
def deploy(
    db: DbOption = None,
    config: ConfigOption = None,
    cron: CronOption = None,
    pool: Annotated[
        Optional[str], typer.Option("--pool", help="Process work pool (created when missing; default: the config's, "
                                    "'tradewatch').", show_default=False)
    ] = None,
) -> None:
    """Register the scheduled pipeline deployment on the Prefect server at PREFECT_API_URL.

    Its runs execute where `prefect worker start --pool tradewatch` runs."""
    from tradewatch.flows import pipeline

    info = pipeline.register_deployment(config, cron=cron, work_pool=pool, db=db)
    say(f"Deployment {info.name} registered (id {info.id}): cron \"{info.cron}\" ({info.timezone}), "
        f"work pool {info.work_pool}.")
    say(f"Start a worker to execute its runs:  prefect worker start --pool {info.work_pool}")
    say(f"Run it now:                         prefect deployment run '{info.name}'")
    typer.echo(info.name)


@one_line_errors
def serve(
    db: DbOption = None,
    config: ConfigOption = None,
    cron: CronOption = None,
) -> None:
    """Serve the scheduled pipeline deployment from this process until Ctrl-C (no work pool needed).

    Registers the deployment with its cron schedule on the Prefect server at PREFECT_API_URL."""
    from tradewatch.flows import pipeline

    pipeline.serve(config, cron=cron, db=db, say=say)
