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
        from tradewatch.flows.core.errors import TradewatchError

        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except TradewatchError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; the warehouse keeps its last committed state", 130)
        except BrokenPipeError:
            sys.stderr.close()
            raise typer.Exit(0)
        except Exception as exc:  # never a traceback at the user; say what broke in one line
            if "--debug" in sys.argv or __import__("os").environ.get("TRADEWATCH_DEBUG"):
                raise
            fail(f"unexpected {type(exc).__name__}: {exc} (set TRADEWATCH_DEBUG=1 for a traceback)", 1)

    return wrapper


def parse_month(value: str | None, option: str) -> str | None:
    """Validate a YYYY-MM option value; returns it normalised or raises InputError naming the option."""
    if value is None:
        return None
    from tradewatch.flows.core.months import checked_month

    return checked_month(value, f"{option} {value}")


AsOfOption = Annotated[Optional[str], typer.Option(
    "--as-of", help="Last month of the recent window, YYYY-MM (default: the latest month in the data).")]
BaselineOption = Annotated[Optional[int], typer.Option(
    "--baseline-months", min=1, max=240, help="Months before the event in the baseline (default 24).")]
RecentOption = Annotated[Optional[int], typer.Option(
    "--recent-months", min=1, max=240, help="Months in the recent window, ending at --as-of (default 12).")]
FdrOption = Annotated[Optional[float], typer.Option(
    "--fdr", help="False discovery rate of the flagged list, Benjamini–Hochberg (default 0.10).")]


def window_options(event: str | None, as_of: str | None, baseline_months: int | None, recent_months: int | None,
                   fdr: float | None, config: Path | None) -> dict:
    """The detection options given on the command line (None: not given, so --config or the defaults
    decide), validated; raises InputError naming the option."""
    from tradewatch.flows.core.errors import InputError

    if config is not None and not config.is_file():
        raise InputError(f"--config {config}", "no such file; expected a TOML file")
    if fdr is not None and not 0 < fdr < 1:
        raise InputError(f"--fdr {fdr}", "expected a false discovery rate between 0 and 1, e.g. 0.10")
    return {"event": parse_month(event, "--event"), "as_of": parse_month(as_of, "--as-of"),
            "baseline_months": baseline_months, "recent_months": recent_months, "fdr": fdr}
