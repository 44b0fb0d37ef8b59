"""The monthly pipeline as Prefect flows (ingest what is new or revised → detect → publish → report), its deployment and serve process."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tradewatch.flows.core import settings
from tradewatch.flows.core.errors import InputError, TradewatchError
from tradewatch.flows.sources.common import used_parameters
from tradewatch.flows.pipeline_config import PipelineConfig, check_cron, load_config, source_months

ARTIFACT_KEY = "flagged-routes"
MARKDOWN_ARTIFACT_KEY = "flagged-routes-report"
FLOW_NAME = "pipeline"
# The load task waits this long for readers (detect, report …) to let go of the warehouse: a scheduled
# run should queue behind an analyst, not fail.
WRITER_WAIT_S = 600.0
# Pause between two file loads, so that commands waiting on the warehouse lock get their turn.
READER_WINDOW_S = 0.3


# ---------------------------------------------------------------------------------------------- tasks
# Downloading, parsing, checking and loading are the ingest task graph's steps (flows/ingest.py:
# download_step → parse_step → check_step → load_step, as the `ingest` flow and command run them); these
# tasks add what a scheduled run needs on top: months not published yet are skipped, not failures; the
# configured scope is applied; the warehouse is held one file at a time so readers get in between.


@task(task_run_name="download {item[source]}-{item[period]}")
def download_month(item: dict) -> dict:
    """Bring one planned file (an ingest.Fetch as a dict) into the cache; the server is asked only whether
    it changed when a copy is cached (retries, resume and checksums are download.fetch's). Returns the
    item plus path, sha256 and status: 'downloaded' | 'resumed' | 'unchanged' | 'local' | 'missing'
    (HTTP 404: not published yet)."""
    from tradewatch.flows import ingest
    from tradewatch.flows.download import DownloadError

    try:
        got = ingest.download_step(ingest.Fetch(**item))
    except DownloadError as exc:
        # 404 (the status of the answer, not words in the message) is a month Eurostat has not published
        # yet, which the next scheduled run will look for again.
        if exc.status == 404:
            return {**item, "path": None, "sha256": None, "status": "missing"}
        raise
    return {**item, **got}


@task(task_run_name="parse {download[display_name]}")
def parse_month(download: dict, reporters: list[str], products: list[str]) -> dict:
    """Parse one downloaded file to canonical Parquet in the cache (a private in-memory DuckDB, never the
    warehouse; reused when parsed before), run the declared checks, and keep only the configured
    reporters (alpha-3) and product-code prefixes. Returns the ingest.ParsedFile as a dict plus period."""
    from dataclasses import asdict

    from tradewatch.flows import ingest

    parsed = ingest.check_step(ingest.parse_step(download), download)
    if reporters or products:
        parsed = _apply_scope(parsed, reporters, products)
    return {**asdict(parsed), "period": download["period"]}


@task(task_run_name="load into the warehouse")
def load_parsed(parsed: list[dict], db: str | None, shrink_limit: float | None = 0.5) -> dict:
    """The only task that writes the warehouse (see load_parsed_files)."""
    logger = get_run_logger()
    return load_parsed_files(parsed, db, say=logger.info, warn=logger.warning, shrink_limit=shrink_limit)


def load_parsed_files(parsed: list[dict], db: str | None, *, say=lambda message: None,
                      warn=lambda message: None, shrink_limit: float | None = 0.5) -> dict:
    """Replace the partitions of each parsed file (ingest.ParsedFile dicts, loaded oldest period first)
    whose content is not in the warehouse yet. The warehouse is opened and closed per file, with a short
    pause between files, so readers (detect, status, report) get in between. A file that would lose more
    than `shrink_limit` of a loaded partition's rows or value is refused (recorded as a refused load, told
    through `warn`, listed under "refused"; its months keep their rows) and the other files load.
    Returns plain values: loaded, unchanged and refused files, load_ids, periods (YYYY-MM), rows loaded."""
    from tradewatch.flows import ingest, warehouse

    fields = set(ingest.ParsedFile.__dataclass_fields__)
    files = [ingest.ParsedFile(**{k: v for k, v in p.items() if k in fields})
             for p in sorted(parsed, key=lambda p: (p["source"], p.get("period", ""), p["file"]))]
    summary: dict[str, list] = {"loaded": [], "unchanged": [], "refused": [], "load_ids": [], "periods": []}
    rows = 0
    with warehouse.opened(db, wait_s=WRITER_WAIT_S, on_wait=warn) as con:
        todo = []
        for item in files:
            if ingest.already_loaded(con, item.file, item.checksum):
                summary["unchanged"].append(item.file)
            else:
                todo.append(item)
    for index, item in enumerate(todo):
        if index:
            # A reader waiting on the lock polls at most once a second; leave it a window to get in.
            time.sleep(READER_WINDOW_S)
        with warehouse.opened(db, wait_s=WRITER_WAIT_S, on_wait=warn) as con:
            try:
                result = ingest.load_step(con, item, shrink_limit=shrink_limit)
            except warehouse.ShrinkRefused as exc:
                summary["refused"].append(str(exc))
                warn(str(exc))
                continue
        if result.status == "unchanged":
            summary["unchanged"].append(item.file)
            continue
        summary["loaded"].append(item.file)
        summary["load_ids"].append(result.load_id)
        summary["periods"].extend(result.periods)
        rows += result.rows
        say(f"loaded {item.file}: {result.rows:,} rows, periods {', '.join(result.periods)}")
    return {**summary, "rows": rows}


def _apply_scope(parsed, reporters: list[str], products: list[str]):
    """A ParsedFile restricted to `reporters` and product-code prefixes `products`, in Parquet beside the
    parsed file. Its checksum carries the scope, so changing the scope reloads the months."""
    import dataclasses
    import hashlib

    import duckdb

    scope = json.dumps([sorted(reporters), sorted(products)])
    tag = hashlib.sha256(scope.encode()).hexdigest()[:12]
    target = Path(parsed.canonical).with_name(f"scope-{tag}.parquet")
    conditions = []
    if reporters:
        conditions.append("reporter_iso3 IN (SELECT unnest($reporters))")
    if products:
        conditions.append("list_has_any([product_code[1:length(p)] FOR p IN $products], $products)")
    con = duckdb.connect()
    try:
        if not target.exists():
            partial = target.with_name(".part-" + target.name)
            statement = (f"COPY (SELECT * FROM read_parquet($source) WHERE {' AND '.join(conditions)}) "
                         "TO $target (FORMAT parquet)")
            # Only the parameters the conditions use: DuckDB refuses an unused one (a scope of reporters alone).
            con.execute(statement, used_parameters(statement, {
                "source": parsed.canonical, "target": partial.as_posix(), "reporters": reporters, "products": products}))
            os.replace(partial, target)
        rows = con.execute("SELECT count(*) FROM read_parquet(?)", [str(target)]).fetchone()[0]
    finally:
        con.close()
    return dataclasses.replace(parsed, canonical=str(target), rows=int(rows), checksum=f"{parsed.checksum}+scope-{tag}")


@task(task_run_name="detect flagged routes")
def detect_routes(db: str | None, event: str, overrides: dict, report_dir: str | None, artifact_rows: int) -> dict:
    """Run detection on the warehouse and write the report file. Returns plain values: run_id, flagged,
    candidates, notes, unavailable, report (path), table (first `artifact_rows` rows as dicts), markdown."""
    from tradewatch.detect import report, service

    logger = get_run_logger()
    outcome = service.detect(db, event=event, seed_demo=False, say=logger.warning, **overrides)
    run = outcome.run
    table, markdown = report.artifact_table(run, top=artifact_rows), report.artifact_markdown(run, top=artifact_rows)
    path = _write_report(db, run.run_id, report_dir)
    return {
        "run_id": run.run_id, "flagged": int(run.flagged.height), "candidates": int(run.candidates),
        "notes": list(run.notes), "unavailable": list(run.unavailable), "report": str(path),
        "table": table, "markdown": markdown, "detect_s": round(outcome.detect_s, 2), "demo": bool(outcome.demo),
    }


@task(task_run_name="publish artifacts")
def publish(detection: dict, refused: list[str] | None = None) -> dict:
    """Create the Prefect table and markdown artifacts for one detection run (the markdown first lists the
    loads refused for shrinking, whose months kept their earlier rows; a run on the demo warehouse says
    "synthetic demo data" in both artifacts, their descriptions and every table row). Returns their ids."""
    from tradewatch.flows.warehouse import DEMO_LABEL

    markdown, table = detection["markdown"], detection["table"] or [{"note": "no route flagged"}]
    demo = f" ({DEMO_LABEL})" if detection.get("demo") else ""
    if refused:
        lines = "\n".join(f"- {text}" for text in refused)
        markdown = (f"**{len(refused)} revised file(s) refused** (each would have lost more than the configured "
                    f"`run.shrink_limit` of a loaded month; those months keep their earlier rows):\n\n{lines}\n\n"
                    + markdown)
    if demo:
        table = [{"data": DEMO_LABEL, **row} for row in table]
        markdown = (f"**{DEMO_LABEL.capitalize()}**: this run read the embedded demo world (planted routes, real "
                    "country names), not real statistics.\n\n" + markdown)
    table_id = create_table_artifact(
        table=table, key=ARTIFACT_KEY,
        description=f"Flagged diversion routes of detection run {detection['run_id']}{demo}; report: {detection['report']}",
    )
    markdown_id = create_markdown_artifact(
        markdown=markdown, key=MARKDOWN_ARTIFACT_KEY,
        description=f"Summary of detection run {detection['run_id']}{demo}",
    )
    return {"table": str(table_id), "markdown": str(markdown_id)}


# ---------------------------------------------------------------------------------------------- flows


@flow(name="ingest-new-months", log_prints=False)
def ingest_new_months(config: dict, db: str | None = None) -> dict:
    """For every configured source and month: download what is new or revised (parallel), parse it to
    Parquet (parallel), then load it in one task. `config` is PipelineConfig.to_dict(). Returns counts:
    downloaded, unchanged_downloads, missing months, parsed, loaded/unchanged files, periods, rows."""
    from dataclasses import asdict

    from tradewatch.flows import ingest

    items = []
    for source in config["sources"]:
        months = source_months(source["start"], source["end"])
        items += [asdict(item) for item in ingest.plan_comext(months, base_url=source["base_url"])]
    downloads = [download_month.submit(item) for item in items]
    fetched = [future.result() for future in downloads]
    present = [d for d in fetched if d["status"] != "missing"]
    parsed = [parse_month.submit(d, config["reporters"], config["products"]) for d in present]
    # Called, not submitted: the one writer runs in the flow's own process, next to the warehouse file,
    # never on a Dask worker that may be another machine.
    loaded = load_parsed([future.result() for future in parsed], db, config.get("shrink_limit", 0.5))
    summary = {
        "downloaded": sum(d["status"] in ("downloaded", "resumed") for d in fetched),
        "unchanged_downloads": sum(d["status"] in ("unchanged", "local") for d in fetched),
        "missing": [d["period"] for d in fetched if d["status"] == "missing"],
        **loaded,
    }
    get_run_logger().info(
        "ingest: %d downloaded, %d unchanged, %d not published; %d file(s) loaded (%s rows)",
        summary["downloaded"], summary["unchanged_downloads"], len(summary["missing"]), len(loaded["loaded"]),
        f"{loaded['rows']:,}",
    )
    return summary


@flow(name=FLOW_NAME, log_prints=False)
def pipeline(
    config: str | None = None,
    db: str | None = None,
    task_runner: str | None = None,
    dask_address: str | None = None,
) -> dict:
    """The monthly run: ingest what is new or revised for the configured sources → detect → publish the
    `flagged-routes` artifacts → say where the report is. `config` is a TOML file over the defaults,
    `db` the warehouse path; `task_runner`/`dask_address` override the config's [run] table.
    Returns a JSON-serialisable summary (ingest counts, run_id, flagged, report path)."""
    logger = get_run_logger()
    cfg = load_config(config)
    plain = cfg.to_dict()
    from tradewatch.flows.prefect_flows import make_task_runner

    runner = make_task_runner(task_runner or cfg.task_runner, dask_address or cfg.dask_address)
    ingested = ingest_new_months.with_options(task_runner=runner)(plain, db)
    report_dir = str(cfg.report_dir) if cfg.report_dir else None
    detection = detect_routes(db, cfg.event, cfg.detect_overrides, report_dir, cfg.artifact_rows)
    artifacts = publish(detection, ingested.get("refused", []))
    logger.info("detection run %s flagged %d of %d candidate routes; report: %s",
                detection["run_id"], detection["flagged"], detection["candidates"], detection["report"])
    return {
        "ingest": ingested,
        "refused": ingested.get("refused", []),
        "run_id": detection["run_id"],
        "flagged": detection["flagged"],
        "candidates": detection["candidates"],
        "notes": detection["notes"],
        "report": detection["report"],
        "artifacts": artifacts,
    }


# ------------------------------------------------------------------------------------ library entry points


@dataclass
class PipelineOutcome:
    """A finished pipeline run: the flow's summary dict, its flow run id, and wall time in seconds."""

    summary: dict
    flow_run_id: str | None
    seconds: float


def run_pipeline(
    config: Path | str | None = None,
    db: Path | str | None = None,
    *,
    task_runner: str | None = None,
    dask_address: str | None = None,
    say: Callable[[str], None] = lambda message: None,
    quiet: bool = False,
) -> PipelineOutcome:
    """Run the pipeline flow once, in this process (a temporary Prefect server is started when
    PREFECT_API_URL is not set; `say` is told so). Raises InputError for a bad config file or option
    before anything runs, TradewatchError when a step fails (with the step's one-line message). `quiet`
    keeps Prefect's console log lines off stderr."""
    load_config(config)  # a bad file fails here, in one line, before Prefect starts
    if task_runner is not None and task_runner not in ("thread", "dask"):
        raise InputError(f"--task-runner {task_runner}", "expected thread or dask")
    if dask_address and (task_runner or "dask") != "dask":
        raise InputError(f"--dask-address {dask_address}", "only applies with --task-runner dask")
    if dask_address:
        task_runner = "dask"
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        say(f"Running the pipeline on the Prefect server at {get_current_settings().api.url} …")
    else:
        say("Running the pipeline (no PREFECT_API_URL: Prefect starts a temporary server for this run) …")
        settings.offline_prefect_server()
        from tradewatch.flows.prefect_flows import temporary_server_apart

        temporary_server_apart()  # a terminal's Ctrl-C reaches this process only, which ends in one line
    from tradewatch.flows.prefect_flows import patient_server, prefect_console

    started = time.perf_counter()
    with prefect_console(quiet=quiet), patient_server():
        state = pipeline(
            config=str(Path(config).expanduser().resolve()) if config else None,
            db=str(Path(db).expanduser().resolve()) if db else None,
            task_runner=task_runner, dask_address=dask_address, return_state=True,
        )
    seconds = time.perf_counter() - started
    if not state.is_completed():
        raise TradewatchError(f"pipeline run {state.name.lower()}: {_state_message(state)}")
    return PipelineOutcome(summary=state.result(), flow_run_id=str(state.state_details.flow_run_id), seconds=seconds)


@dataclass
class DeploymentInfo:
    """A registered deployment: its id, full name (flow/deployment), cron, time zone and work pool."""

    id: str
    name: str
    cron: str
    timezone: str
    work_pool: str | None


def _api_url_or_fail(command: str) -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise TradewatchError(
            f"`tradewatch {command}` needs a running Prefect server: start one with `prefect server start`, then "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
    return url


def _to_deployment(cfg: PipelineConfig, config: Path | str | None, cron: str, db: Path | str | None,
                   work_pool: str | None):
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.types.entrypoint import EntrypointType

    parameters: dict[str, Any] = {}
    if config:
        parameters["config"] = str(Path(config).expanduser().resolve())
    if db:
        parameters["db"] = str(Path(db).expanduser().resolve())
    return pipeline.to_deployment(
        name=cfg.deployment_name,
        schedules=[CronSchedule(cron=cron, timezone=cfg.timezone)],
        parameters=parameters,
        work_pool_name=work_pool,
        # A module path, not a file path: runs import the installed package wherever the worker starts.
        entrypoint_type=EntrypointType.MODULE_PATH,
        description="Monthly: ingest what is new or revised, detect diversion routes, publish `flagged-routes`.",
        tags=["tradewatch"],
    )


def register_deployment(
    config: Path | str | None = None,
    *,
    cron: str | None = None,
    work_pool: str | None = None,
    db: Path | str | None = None,
) -> DeploymentInfo:
    """Register (create or update) the `pipeline/<deployment_name>` deployment on the Prefect server at
    PREFECT_API_URL with a cron schedule (default: the config's, mid-month) in a process work pool
    (created when missing). Runs execute where `prefect worker start --pool <pool>` runs.
    Raises TradewatchError when no server is configured, InputError for a bad cron or config."""
    cfg = load_config(config)
    cron = check_cron(cron) if cron else cfg.cron
    pool = work_pool or cfg.work_pool
    _api_url_or_fail("deploy")
    _ensure_process_pool(pool)
    deployment = _to_deployment(cfg, config, cron, db, pool)
    deployment_id = deployment.apply()
    return DeploymentInfo(id=str(deployment_id), name=f"{FLOW_NAME}/{cfg.deployment_name}", cron=cron,
                          timezone=cfg.timezone, work_pool=pool)


def _ensure_process_pool(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            except ObjectAlreadyExists:
                pass


def serve(
    config: Path | str | None = None,
    *,
    cron: str | None = None,
    db: Path | str | None = None,
    limit: int | None = 1,
    say: Callable[[str], None] = lambda message: None,
) -> None:
    """Register the deployment with its cron schedule (no work pool) and execute its runs from this
    process until interrupted: the way to schedule without a work pool. Blocks."""
    cfg = load_config(config)
    cron = check_cron(cron) if cron else cfg.cron
    url = _api_url_or_fail("serve")
    from prefect import serve as prefect_serve

    say(f"Serving pipeline/{cfg.deployment_name} (cron \"{cron}\", {cfg.timezone}) from the Prefect server at {url}; "
        "Ctrl-C stops, and pauses its schedule until it is served again …")

    deployment = _to_deployment(cfg, config, cron, db, None)
    # One run at a time: two pipeline runs would only queue behind each other on the warehouse lock.
    prefect_serve(deployment, limit=limit, print_starting_message=True)


# ---------------------------------------------------------------------------------------------- helpers


def _state_message(state) -> str:
    try:
        state.result()
    except TradewatchError as exc:
        return str(exc)
    except Exception as exc:  # a failed task's own error, told in one line
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return state.message or "no result"


def _write_report(db: str | None, run_id: str, report_dir: str | None) -> Path:
    """The HTML report of detection run `run_id` (detect/report.py), in `report_dir` or, when None, in
    $TRADEWATCH_HOME/reports. Reads the warehouse through a read-only connection."""
    from tradewatch.detect import report
    from tradewatch.flows import warehouse

    out = Path(report_dir) / report.default_report_path(run_id).name if report_dir else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    with warehouse.opened(db, read_only=True, wait_s=WRITER_WAIT_S) as con:
        return Path(report.write_report(con, run_id, out))
