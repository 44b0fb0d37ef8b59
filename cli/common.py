"""Shared CLI plumbing: the --db option, one-line errors and exit codes, console output."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

DbOption = Annotated[
    Optional[Path],
    typer.Option("--db", help="Warehouse file (default: $TRADEWATCH_HOME/tradewatch.duckdb).", show_default=False),
]

EXIT_INPUT = 2


def fail(message: str, code: int = EXIT_INPUT) -> None:
    """Print one line to stderr and exit."""
    first = " ".join(str(message).split("\n")[0].split())
    typer.echo(f"error: {first}", err=True)
    raise typer.Exit(code)


def say(message: str) -> None:
    """A status line on stderr (stdout stays clean for CSV/JSON)."""
    typer.echo(message, err=True)


def one_line_errors(func):
    """Turn tradewatch's user-facing errors (and a few library errors) into one line and exit code 2;
    anything unexpected still gets one line, with the exception type, and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from tradewatch.cli import interrupts

        with interrupts.command():
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                # DuckDB turns a signal during a query into RuntimeError("Query interrupted"), and Prefect may
                # wrap it again: once a signal was received, whatever comes out is the interrupt.
                if interrupts.received() is not None or isinstance(exc, KeyboardInterrupt):
                    _interrupted(exc)
                _one_line(exc)
            if interrupts.received() is not None:  # a library swallowed the interrupt: still say so
                _interrupted(None)
            return result

    return wrapper


def _interrupted(exc: BaseException | None):
    """The one line saying what was kept (cli/interrupts.py), exit code 130 (SIGINT) or 143 (SIGTERM)."""
    import atexit

    from tradewatch.cli import interrupts

    interrupts.say_and_silence()
    atexit.register(interrupts.remove_own_scratch)
    raise typer.Exit(interrupts.exit_code(exc))


def _one_line(exc: BaseException):
    """Re-raise `exc` as one_line_errors promises: one line and exit code 2, or 1 when unexpected."""
    from tradewatch.flows.core.errors import TradewatchError

    if isinstance(exc, (typer.Exit, SystemExit, GeneratorExit)) or not isinstance(exc, Exception):
        raise exc
    if isinstance(exc, TradewatchError):
        fail(str(exc))
    if isinstance(exc, BrokenPipeError):
        sys.stderr.close()
        raise typer.Exit(0)
    # never a traceback at the user; say what broke in one line
    if "--debug" in sys.argv or __import__("os").environ.get("TRADEWATCH_DEBUG"):
        raise exc
    fail(f"unexpected {type(exc).__name__}: {exc} (set TRADEWATCH_DEBUG=1 for a traceback)", 1)


def parse_month(value: str | None, option: str) -> str | None:
    """Validate a YYYY-MM option value; returns it normalised or raises InputError naming the option."""
    if value is None:
        return None
    from tradewatch.flows.core.months import checked_month

    return checked_month(value, f"{option} {value}")


@functools.lru_cache(maxsize=1)
def _detect_defaults() -> dict:
    import tomllib
    from importlib import resources

    return tomllib.loads(resources.files("tradewatch.data").joinpath("detect_defaults.toml").read_text(encoding="utf-8"))


def detect_default(key: str) -> str:
    """A detection default as help text shows it, read from data/detect_defaults.toml (where it lives)."""
    return str(_detect_defaults().get(key, "?"))


AsOfOption = Annotated[Optional[str], typer.Option(
    "--as-of", help="Last month of the recent window, YYYY-MM (default: the latest month in the data).")]
BaselineOption = Annotated[Optional[int], typer.Option(
    "--baseline-months", min=1, max=240,
    help=f"Months before the event in the baseline (default {detect_default('baseline_months')}).")]
RecentOption = Annotated[Optional[int], typer.Option(
    "--recent-months", min=1, max=240,
    help=f"Months in the recent window, ending at --as-of (default {detect_default('recent_months')}).")]
FdrOption = Annotated[Optional[float], typer.Option(
    "--fdr", help=f"False discovery rate of the flagged list, Benjamini–Hochberg (default {detect_default('fdr')}).")]


def window_options(event: str | None, as_of: str | None, baseline_months: int | None, recent_months: int | None,
                   fdr: float | None, config: Path | None = None) -> dict:
    """The detection options typed on the command line, None where not typed. Pass them with the --config
    file to DetectParams.from_toml, which applies typed option > --config file > data/detect_defaults.toml
    and checks every value in one place (a bad one fails naming its option, a bad file naming file and key).
    `config` is accepted for the callers' sake; the file is read there."""
    return {"event": event, "as_of": as_of, "baseline_months": baseline_months, "recent_months": recent_months,
            "fdr": fdr}


WideOption = Annotated[bool, typer.Option("--wide", help="Every column, whatever the terminal's width.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", help="Also show Prefect's own log lines (kept off the "
                                                               "terminal otherwise; TRADEWATCH_DEBUG=1 does the same).")]


def verbose_wanted(verbose: bool) -> bool:
    """--verbose, or TRADEWATCH_DEBUG set in the environment."""
    import os

    return verbose or bool(os.environ.get("TRADEWATCH_DEBUG"))


WIDE_COLUMNS = 160  # from this width up, tables show every column; below it, a compact layout that fits


def table_console(wide: bool = False):
    """A rich Console for a table, and whether to lay it out wide. A terminal (or $COLUMNS) sets the
    width, and below WIDE_COLUMNS the compact layout is used; `wide` (--wide), or piped output with no
    $COLUMNS (no width to fit), lays it out wide on at least 200 columns."""
    import os

    from rich.console import Console

    console = Console()
    if wide or (not console.is_terminal and not os.environ.get("COLUMNS")):
        # --wide asks for every column: lay the table out on at least 200 columns and let lines run on
        console = Console(width=max(console.width, 200))
    return console, wide or console.width >= WIDE_COLUMNS


def short_id(route_id: str | None) -> str:
    """A route id as tables show it: its first 10 characters, which `flags show` takes as a prefix."""
    return (route_id or "")[:10]
