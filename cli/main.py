"""The `tradewatch` command: a typer app whose commands are thin wrappers over library functions."""

from __future__ import annotations

import importlib

import typer

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
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
