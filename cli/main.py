"""The `tradewatch` command: a typer app whose commands are thin wrappers over library functions."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from tradewatch.cli import interrupts

# First, before the heavy imports, when this is the program (the console script or `python -m`), not a
# module imported by tests: a signal while it starts ends it with the one line too.
if __name__ == "__main__" or Path(sys.argv[0]).name == "tradewatch":
    interrupts.install()

import typer  # noqa: E402

app = typer.Typer(
    name="tradewatch",
    help="Find export-control diversion routes (origin → transit → Russia) in public trade statistics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines register(app). Heavy imports happen inside the commands, so --help is instant.
COMMAND_MODULES = [
    "tradewatch.cli.detect_cmd",
    "tradewatch.cli.pipeline_cmd",
    "tradewatch.cli.flags_cmd",
    "tradewatch.cli.report_cmd",
    "tradewatch.cli.evaluate_cmd",
    "tradewatch.cli.ingest_cmd",
    "tradewatch.cli.runs_cmd",
    "tradewatch.cli.model_cmd",
    "tradewatch.cli.backup_cmd",
    "tradewatch.cli.ui_cmd",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _one_line_usage_error(error) -> None:
    """Typer draws option and usage errors as a multi-line panel; tradewatch promises one line that names
    the option and what was expected, like its own errors."""
    import click

    message = " ".join(error.format_message().split())
    where = getattr(getattr(error, "ctx", None), "command_path", None)
    hint = f" (see `{where} --help`)" if where else ""
    click.echo(f"error: {message}{hint}", err=True)


# typer looks this function up on its module at the moment it reports an error, so replacing it here
# changes how every command reports bad options, under the console script and typer's test runner alike.
import typer.rich_utils  # noqa: E402

typer.rich_utils.rich_format_error = _one_line_usage_error


def _no_type_for_flags(display_type_rich):
    """Help shows a value's type (`<str>`, `<path>`) beside each option; a flag takes no value, so its
    `<bool>` is noise (every --json, --force, --help): show nothing there."""

    def shown(self, ctx):
        return None if getattr(self, "is_flag", False) else display_type_rich(self, ctx)

    return shown


import typer.core  # noqa: E402

typer.core.TyperOption.display_type_rich = _no_type_for_flags(typer.core.TyperOption.display_type_rich)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
