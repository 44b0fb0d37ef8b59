"""`tradewatch ingest comext|comtrade|files|baci|ecb` and `tradewatch status`: thin wrappers over flows.ingest and flows.prefect_flows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from tradewatch.cli.common import DbOption, VerboseOption, one_line_errors, parse_month, say, verbose_wanted

ingest_app = typer.Typer(
    name="ingest",
    help="Load real trade statistics (Eurostat Comext, UN Comtrade, CEPII BACI) and ECB exchange rates.",
    no_args_is_help=True,
)

# Which commands run the Prefect flow (and so pay for a temporary Prefect server when PREFECT_API_URL is
# unset): `ingest comext` and `ingest comtrade`, unless --task-runner none. `ingest files`, `ingest baci`,
# `ingest ecb` and `status` never start Prefect.
RunnerOption = Annotated[str, typer.Option(
    "--task-runner", help="thread (Prefect, default), dask (Prefect on Dask; needs tradewatch\\[dask]) or none "
                          "(no Prefect: the same steps in this process).")]
DaskOption = Annotated[Optional[str], typer.Option("--dask-address", help="Dask scheduler, e.g. tcp://host:8786 "
                                                                          "(default: a temporary local cluster).")]
FromOption = Annotated[str, typer.Option("--from", help="First month, YYYY-MM (a year for --freq A).")]
ToOption = Annotated[str, typer.Option("--to", help="Last month, YYYY-MM (a year for --freq A).")]
FreqOption = Annotated[str, typer.Option("--freq", help="M (monthly) or A (annual).")]
ForceOption = Annotated[bool, typer.Option("--force", help="Reload files even when their content was loaded before.")]
AllowShrinkOption = Annotated[bool, typer.Option(
    "--allow-shrink", help="Load a file even when it would replace a loaded month with less than half its rows "
                           "or value (refused otherwise: a file cut short looks like that).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")]


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")
    app.command("status")(status)


def _periods(first: str, last: str, freq: str) -> list[str]:
    from tradewatch.flows import ingest
    from tradewatch.flows.core.errors import InputError

    freq = freq.strip().upper()
    if freq not in ("M", "A"):
        raise InputError(f"--freq {freq}", "expected M (monthly) or A (annual)")
    if freq == "A":
        for value, option in ((first, "--from"), (last, "--to")):
            if not (len(value) in (4, 7) and value[:4].isdigit()):
                raise InputError(f"{option} {value}", "expected a year YYYY (or YYYY-MM) with --freq A")
        return ingest.years_between(first, last)
    return ingest.month_range(parse_month(first, "--from"), parse_month(last, "--to"))


def _check_runner(task_runner: str, dask_address: str | None) -> str:
    from tradewatch.flows.core.errors import InputError

    runner = task_runner.strip().lower()
    if runner not in ("thread", "dask", "none"):
        raise InputError(f"--task-runner {task_runner}", "expected thread, dask or none")
    if dask_address and runner != "dask":
        raise InputError(f"--dask-address {dask_address}", "only applies with --task-runner dask")
    return runner


def _local_or_url(local: Path | None, local_option: str, base_url: str | None) -> None:
    """A local file or folder, or --base-url (checked as an http(s) URL), not both."""
    if local is not None and base_url is not None:
        from tradewatch.flows.core.errors import InputError

        raise InputError(f"{local_option}/--base-url", "give one of them, not both")
    _check_url(base_url, "--base-url")


def _check_url(value: str | None, option: str) -> None:
    if value is None:
        return
    from urllib.parse import urlsplit

    from tradewatch.flows.core.errors import InputError

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{option} {value}", "expected an http(s) URL, e.g. https://ec.europa.eu/eurostat/api/dissemination")


def _demo_retired(db, before: bool) -> None:
    """Say once, when real data first reaches the default warehouse, that the demo is no longer used."""
    from tradewatch.flows import warehouse
    from tradewatch.flows.core import settings

    if before and not warehouse.demo_in_use(db):
        say(f"Real data loaded: the {warehouse.DEMO_LABEL} in {settings.demo_db_path()} is no longer used "
            "(delete it whenever you like).")


def _run(items, db, *, force: bool, runner: str, dask_address: str | None, allowed_hosts: list[str],
         as_json: bool, allow_shrink: bool = False, verbose: bool = False) -> None:
    from tradewatch.flows import warehouse

    demo_before = warehouse.demo_in_use(db)
    shrink_limit = None if allow_shrink else warehouse.SHRINK_LIMIT

    verbose = verbose_wanted(verbose)
    with _Progress() as progress:
        events = _counted(db, len(items), progress)
        if runner == "none":
            from tradewatch.flows import ingest

            summary = ingest.run_plain(db, items, force=force, allowed_hosts=allowed_hosts, on_event=events,
                                       shrink_limit=shrink_limit)
            report = summary.to_dict()
        else:
            from tradewatch.flows import prefect_flows

            say(f"running the Prefect flow 'ingest' ({runner} task runner) over {len(items)} file(s) …")
            report = prefect_flows.run_ingest_flow(items, db, force=force, shrink_limit=shrink_limit, task_runner=runner,
                                                   dask_address=dask_address, allowed_hosts=allowed_hosts,
                                                   on_event=events, quiet=not verbose)
    _print_summary(report, as_json=as_json)
    _demo_retired(db, demo_before)


@ingest_app.command("comext")
@one_line_errors
def comext(
    first: FromOption,
    last: ToOption,
    db: DbOption = None,
    freq: FreqOption = "M",
    source_dir: Annotated[Optional[Path], typer.Option("--source-dir", help="Read full_v2_YYYYMM.7z (or full_YYYYMM.dat) "
                                                                            "from this folder instead of downloading.")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="Eurostat dissemination API root or a mirror "
                                                                       "URL with {file} (default: Eurostat).")] = None,
    task_runner: RunnerOption = "thread",
    dask_address: DaskOption = None,
    force: ForceOption = False,
    allow_shrink: AllowShrinkOption = False,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Download Eurostat Comext bulk files for the months (or years, --freq A) and load them."""
    from tradewatch.flows import ingest

    _local_or_url(source_dir, "--source-dir", base_url)
    runner = _check_runner(task_runner, dask_address)
    items = ingest.plan_comext(_periods(first, last, freq), base_url=base_url, source_dir=source_dir)
    _run(items, db, force=force, allow_shrink=allow_shrink, runner=runner, dask_address=dask_address, as_json=as_json,
         allowed_hosts=[_host(base_url)] if base_url else [], verbose=verbose)


@ingest_app.command("comtrade")
@one_line_errors
def comtrade(
    reporters: Annotated[str, typer.Option("--reporters", help="Reporting countries, alpha-3, comma separated (KAZ,ARM).")],
    first: FromOption,
    last: ToOption,
    db: DbOption = None,
    products: Annotated[Optional[str], typer.Option("--products", help="HS codes, comma separated (8542,8517); "
                                                                       "default every HS6 code (AG6).")] = None,
    freq: FreqOption = "M",
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="Comtrade API root (default https://comtradeapi.un.org).")] = None,
    task_runner: RunnerOption = "thread",
    dask_address: DaskOption = None,
    force: ForceOption = False,
    allow_shrink: AllowShrinkOption = False,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Fetch UN Comtrade data (keyed with $COMTRADE_API_KEY, else the 500-record keyless preview) and load it."""
    import os

    from tradewatch.flows import comtrade_api, ingest

    _check_url(base_url, "--base-url")
    runner = _check_runner(task_runner, dask_address)
    periods = _periods(first, last, freq)
    codes = [p.strip() for p in products.split(",")] if products else None
    items = ingest.comtrade_items(reporters.split(","), periods, freq=freq.strip().upper(), products=codes,
                                  base_url=base_url)
    if not os.environ.get(comtrade_api.KEY_ENV):
        say(f"no {comtrade_api.KEY_ENV} set: using the keyless preview (500 records a call, about one call a second)")
    _run(items, db, force=force, allow_shrink=allow_shrink, runner=runner, dask_address=dask_address, as_json=as_json,
         allowed_hosts=[_host(base_url)] if base_url else [], verbose=verbose)


@ingest_app.command("comext-api")
@one_line_errors
def comext_api(
    products: Annotated[str, typer.Option("--products", help="CN8 codes (85423190), HS codes of 2, 4 or 6 digits "
                                                             "or TOTAL, comma separated.")],
    partners: Annotated[str, typer.Option("--partners", help="Partner countries, alpha-3 (or Eurostat alpha-2), "
                                                             "comma separated (KAZ,ARM,RUS).")],
    first: Annotated[str, typer.Option("--from", help="First month, YYYY-MM.")],
    last: Annotated[str, typer.Option("--to", help="Last month, YYYY-MM.")],
    db: DbOption = None,
    reporters: Annotated[Optional[str], typer.Option("--reporters", help="EU reporters, alpha-3 or alpha-2, comma "
                                                                         "separated (default the EU-27).")] = None,
    flow: Annotated[str, typer.Option("--flow", help="import, export or both.")] = "both",
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="API root (default "
                                                    "https://ec.europa.eu/eurostat/api/comext/dissemination).")] = None,
    task_runner: RunnerOption = "thread",
    dask_address: DaskOption = None,
    force: ForceOption = False,
    allow_shrink: AllowShrinkOption = False,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Fetch Eurostat Comext DS-045409 (EUR) for a few products and partners from Eurostat's dissemination API
    (SDMX-CSV; queries split under its size limit, asynchronous answers followed) and load it."""
    from tradewatch.flows import ingest
    from tradewatch.flows.sources import comext_sdmx

    _check_url(base_url, "--base-url")
    runner = _check_runner(task_runner, dask_address)
    months = ingest.month_range(parse_month(first, "--from"), parse_month(last, "--to"))
    items = comext_sdmx.plan_api(products=products.split(","), partners=partners.split(","), months=months,
                                 reporters=reporters.split(",") if reporters is not None else None, flow=flow,
                                 base_url=base_url)
    _run(items, db, force=force, allow_shrink=allow_shrink, runner=runner, dask_address=dask_address, as_json=as_json,
         allowed_hosts=[_host(base_url)] if base_url else [], verbose=verbose)


@ingest_app.command("files")
@one_line_errors
def files(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders: Comext .7z/.dat, Comtrade CSV/JSON/bulk "
                                                     "TSV, BACI CSV or release zip (every year in it); any of "
                                                     "them may be gzipped.")],
    db: DbOption = None,
    country_codes: Annotated[Optional[Path], typer.Option("--country-codes", help="BACI country_codes_V*.csv "
                                                                                  "(default: the one beside each BACI file).")] = None,
    force: ForceOption = False,
    allow_shrink: AllowShrinkOption = False,
    as_json: JsonOption = False,
) -> None:
    """Load local files, each recognised by its content (no Prefect, no network)."""
    _load_local(paths, db, country_codes=country_codes, force=force, as_json=as_json, allow_shrink=allow_shrink)


@ingest_app.command("baci")
@one_line_errors
def baci(
    paths: Annotated[list[Path], typer.Argument(help="A BACI release zip (BACI_HS??_V??????.zip), its "
                                                     "BACI_HS??_Y????_V??????.csv files, or their folder.")],
    db: DbOption = None,
    country_codes: Annotated[Optional[Path], typer.Option("--country-codes", help="BACI country_codes_V*.csv "
                                                                                  "(default: the release's own, or the one beside each file).")] = None,
    first: Annotated[Optional[str], typer.Option("--from", help="First year, YYYY, to load from a release zip.")] = None,
    last: Annotated[Optional[str], typer.Option("--to", help="Last year, YYYY, to load from a release zip.")] = None,
    force: ForceOption = False,
    allow_shrink: AllowShrinkOption = False,
    as_json: JsonOption = False,
) -> None:
    """Load CEPII BACI annual data: the release zip as downloaded from CEPII, or its CSV files (no Prefect)."""
    from tradewatch.flows import ingest
    from tradewatch.flows.core.errors import InputError

    years = _years(first, last)
    for path in ingest.expand_paths(paths):
        if ingest.recognise(path).SOURCE != "baci":
            raise InputError(str(path), "not a BACI file (header t,i,j,k,v,q) or release zip; use `tradewatch ingest "
                             "files` for other sources")
    _load_local(paths, db, country_codes=country_codes, force=force, as_json=as_json, years=years,
                allow_shrink=allow_shrink)


def _years(first: str | None, last: str | None) -> tuple[int, int] | None:
    """--from/--to as (first, last) years; either alone means an open end. None when neither is given."""
    from tradewatch.flows.core.errors import InputError

    if first is None and last is None:
        return None
    bounds = []
    for value, option, default in ((first, "--from", 1900), (last, "--to", 9999)):
        if value is None:
            bounds.append(default)
            continue
        text = value.strip()
        if not (len(text) == 4 and text.isdigit()):
            raise InputError(f"{option} {value}", "expected a year YYYY")
        bounds.append(int(text))
    if bounds[0] > bounds[1]:
        raise InputError(f"--from {first} --to {last}", "the first year is after the last")
    return bounds[0], bounds[1]


def _load_local(paths, db, *, country_codes, force, as_json, years=None, allow_shrink: bool = False) -> None:
    from tradewatch.flows import ingest
    from tradewatch.flows.core.errors import InputError

    if country_codes is not None and not country_codes.is_file():
        raise InputError(f"--country-codes {country_codes}", "no such file; expected BACI's country_codes_V*.csv")
    from tradewatch.flows import warehouse

    demo_before = warehouse.demo_in_use(db)
    with _Progress() as progress:
        events = _counted(db, _file_count(paths), progress)
        summary = ingest.ingest_paths(db, paths, force=force, country_codes=country_codes, years=years,
                                      on_event=events,
                                      shrink_limit=None if allow_shrink else warehouse.SHRINK_LIMIT)
    _print_summary(summary.to_dict(), as_json=as_json)
    _demo_retired(db, demo_before)


@ingest_app.command("ecb")
@one_line_errors
def ecb(
    db: DbOption = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="A saved ECB CSV instead of downloading.")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="ECB data API root "
                                                                       "(default https://data-api.ecb.europa.eu/service).")] = None,
    force: ForceOption = False,
    as_json: JsonOption = False,
) -> None:
    """Load ECB euro reference rates (USD per EUR, monthly averages, series EXR/M.USD.EUR.SP00.A)."""
    from tradewatch.flows import ingest

    _local_or_url(file, "--file", base_url)
    result = ingest.ingest_ecb(db, file=file, base_url=base_url, force=force)
    if as_json:
        typer.echo(json.dumps(result))
    elif result["status"] == "unchanged":
        typer.echo(f"ECB rates unchanged ({result['file']})")
    else:
        refused = f", {result['quarantined']} quarantined" if result["quarantined"] else ""
        typer.echo(f"ECB USD per EUR: {result['rows']} months {result['first_period']} … {result['last_period']}{refused}")


@one_line_errors
def status(
    db: DbOption = None,
    as_json: JsonOption = False,
    revisions: Annotated[bool, typer.Option("--revisions", help="List what revisions changed instead: per "
                                            "replacing load and period, rows and value before → after, when, file.")] = False,
) -> None:
    """Per source and period: rows, value sum, currency, reporters, when and from which file."""
    from tradewatch.flows import warehouse
    from tradewatch.flows.sources import ecb as ecb_source

    with warehouse.opened(db, read_only=True, demo=True) as con:
        if warehouse.is_demo(con):
            say(f"{warehouse.DEMO_LABEL}: the embedded demo world, not real statistics")
        if revisions:
            from tradewatch.flows import vintages

            _print_revisions(vintages.revisions(con), as_json=as_json)
            return
        rows = warehouse.status_rows(con)
        totals = warehouse.status_rows(con, "trade_totals")
        rates = ecb_source.status_row(con) if _has_table(con, "fx_rates") else None
    _print_status(rows, rates, as_json=as_json, totals=totals)


def _print_revisions(rows: list[dict], *, as_json: bool) -> None:
    """`status --revisions`: one row per load that replaced stored rows and period, newest first."""
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("No revision: no load has replaced stored rows yet.")
        return
    from rich.table import Table

    from tradewatch.cli.common import table_console
    from tradewatch.flows.core.numbers import money

    console, wide = table_console()
    table = Table(title="Revisions, newest first: each revised partition before → after the load, and the stored "
                        "rows it replaced (changed or gone; the replaced rows are kept)")
    for name in ("when (UTC)", "load", "source", "period", "rows before → after", "replaced", "value before → after",
                 "file"):
        table.add_column(name, overflow="fold", justify="right" if "→" in name or name in ("load", "replaced") else "left")
    for r in rows:
        value = (lambda v: money(v, r["currency"])) if r["table"] != "fx_rates" else (lambda v: f"{v:.4f}")
        source = r["source"] if r["table"] == "trade_flows" else f"{r['source']} ({r['table']})"
        table.add_row(f"{r['revised_at']:%Y-%m-%d %H:%M}" if r["revised_at"] else "", str(r["load_id"]), source,
                      r["period"], f"{r['rows_before']:,} → {r['rows_after']:,}", f"{r['rows_replaced']:,}",
                      f"{value(r['value_before'])} → {value(r['value_after'])}", str(r["file"] or ""))
    console.print(table)


def _has_table(con, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "").lower()


def _counted(db, total: int | None, progress: "_Progress"):
    """progress.event, counting the files loaded so that an interrupt can say what was kept (cli/interrupts.py)."""
    from tradewatch.cli import interrupts

    progress.expected = total
    return interrupts.LoadCount(db, total, progress.event)


def _file_count(paths) -> int | None:
    """How many loads `ingest files` makes of `paths`: one a file, unknown when a zip may be a BACI release
    (one load a year)."""
    from tradewatch.flows import archive, ingest

    files = ingest.expand_paths(paths)
    return None if any(archive.is_zip(path) for path in files) else len(files)


# ------------------------------------------------------------------------------------------ rendering

class _Progress:
    """Rich progress bars on stderr for downloads and loads, fed by the library's on_event callbacks; a line
    above them for every download retry (download.retry_notices), and a total of files and rows loaded."""

    expected: int | None = None  # the files to load, when known (set by _counted)

    def __enter__(self):
        import sys

        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TransferSpeedColumn)

        console = Console(stderr=True)
        self.enabled = console.is_terminal or bool(__import__("os").environ.get("TRADEWATCH_PROGRESS"))
        self.tasks: dict[str, int] = {}
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeElapsedColumn(), console=console, transient=False,
                                 disable=not self.enabled)
        self.progress.__enter__()
        from tradewatch.flows import download

        self.files, self.rows = 0, 0
        self._notices = download.retry_notices(self.retry)
        self._notices.__enter__()
        del sys
        return self

    def __exit__(self, *exc):
        self._notices.__exit__(*exc)
        self.progress.__exit__(*exc)

    def retry(self, line: str) -> None:
        """A download retry, said on the terminal whether or not the bars are shown."""
        self.progress.console.print(f"retrying: {line}", markup=False, highlight=False)

    def _loaded(self, rows: int) -> None:
        self.files, self.rows = self.files + 1, self.rows + rows
        of = f" of {self.expected}" if self.expected else ""
        self.progress.update(self._task("total", "loaded", total=self.expected), completed=self.files,
                             description=f"loaded {self.files}{of} file(s), {self.rows:,} rows")

    def _task(self, key: str, description: str, total=None) -> int:
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(description, total=total)
        return self.tasks[key]

    def event(self, kind: str, **info) -> None:
        name = Path(str(info.get("name", ""))).name or str(info.get("name", ""))
        if kind == "download":
            self._task("d:" + name, f"download {name}")
        elif kind == "download-progress":
            self.progress.update(self._task("d:" + name, f"download {name}"), completed=info["done"], total=info["total"])
        elif kind == "downloaded":
            task = self._task("d:" + name, f"download {name}")
            total = self.progress.tasks[task].completed or 1
            self.progress.update(task, description=f"{info['status']} {name}", total=total, completed=total)
        elif kind == "load":
            self._task("l:" + name, f"load {name}", total=1)
        elif kind == "loaded":
            result = info["result"]
            self.progress.update(self._task("l:" + name, f"load {name}", total=1), completed=1,
                                 description=f"{result.status} {name}: {result.rows:,} rows")
            self._loaded(result.rows if result.status != "unchanged" else 0)


def _print_summary(report: dict, *, as_json: bool) -> None:
    """The end-of-run table: per file status, rows, partitions, quarantined, Q-code rows; then totals."""
    if as_json:
        typer.echo(json.dumps(report, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ingest summary", title_justify="left")
    for name in ("file", "status", "rows", "partitions", "quarantined", "Q-codes", "value"):
        table.add_column(name, justify="left" if name in ("file", "status") else "right")
    for item in report["files"]:
        values = ", ".join(f"{v:,.0f} {c}" for c, v in item["value_sum"].items())
        table.add_row(Path(item["file"]).name if "/" in item["file"] else item["file"], item["status"],
                      f"{item['rows']:,}", f"{item['partitions']:,}", f"{item['quarantined']:,}",
                      f"{item['confidential']:,}", values)
    totals = report["totals"]
    table.add_row("total", f"{totals['unchanged']} unchanged", f"{totals['rows']:,}", f"{totals['partitions']:,}",
                  f"{totals['quarantined']:,}", f"{totals['confidential']:,}",
                  ", ".join(f"{v:,.0f} {c}" for c, v in totals["value_sum"].items()), end_section=True)
    Console(width=160).print(table)
    if totals["quarantined"]:
        say(f"{totals['quarantined']:,} row(s) quarantined: see the quarantine table (file, line, reason)")
    if totals["confidential"]:
        say(f"{totals['confidential']:,} row(s) kept under confidential/unallocated partner Q-codes (stored as Q?Q)")


def _print_status(rows: list[dict], rates: dict | None, *, as_json: bool, totals: list[dict] | None = None) -> None:
    totals = totals or []
    if as_json:
        typer.echo(json.dumps({"trade_flows": rows, "trade_totals": totals, "fx_rates": rates}, default=str))
        return
    if not rows and not totals and rates is None:
        say("the warehouse holds no trade data yet; run `tradewatch ingest …`")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="warehouse status", title_justify="left")
    for name in ("source", "freq", "period", "rows", "value", "currency", "reporters", "loaded", "file"):
        table.add_column(name, justify="right" if name in ("rows", "value", "reporters") else "left")
    for row in rows:
        table.add_row(row["source"], row["freq"], row["period"], f"{row['rows']:,}", f"{row['value_sum']:,.0f}",
                      row["currency"], str(row["reporters"]), row["loaded_at"] or "", row["file"] or "")
    if rows:
        by_currency: dict[str, list[float]] = {}
        for row in rows:
            entry = by_currency.setdefault(row["currency"], [0, 0.0])
            entry[0] += row["rows"]
            entry[1] += row["value_sum"]
        for currency, (count, value) in by_currency.items():
            table.add_row("total", "", "", f"{count:,}", f"{value:,.0f}", currency, "", "", "", style="bold")
    console = Console(width=200)
    if rows:
        console.print(table)
    if totals:
        console.print(_totals_table(totals))
    if rates is not None:
        console.print(f"fx_rates: {rates['series']} ({rates['unit']}) {rates['rows']} months "
                      f"{rates['first_period']} … {rates['last_period']}, loaded {rates['loaded_at']} from {rates['file']}")
    else:
        console.print("fx_rates: none loaded (cross-currency features unavailable); run `tradewatch ingest ecb`")


def _totals_table(totals: list[dict]):
    """The trade_totals part of `status`: one line per source, period and product group (TOTAL = all goods)."""
    from rich.table import Table

    table = Table(title="trade_totals (all goods and HS chapters, kept apart from trade_flows)", title_justify="left")
    for name in ("source", "freq", "period", "product", "rows", "value", "currency", "reporters", "loaded", "file"):
        table.add_column(name, justify="right" if name in ("rows", "value", "reporters") else "left")
    for row in totals:
        table.add_row(row["source"], row["freq"], row["period"], row["product_group"], f"{row['rows']:,}",
                      f"{row['value_sum']:,.0f}", row["currency"], str(row["reporters"]), row["loaded_at"] or "",
                      row["file"] or "")
    return table
