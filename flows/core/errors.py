"""User-facing errors: one line naming the file, line or option and what was expected."""

from __future__ import annotations


class TradewatchError(Exception):
    """An error the CLI prints as one line (no traceback) before exiting with status 2."""


class InputError(TradewatchError):
    """A source file or option that cannot be read as expected."""

    def __init__(self, where: str, problem: str):
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class WarehouseBusy(TradewatchError):
    """The warehouse is held by another writing process longer than we were willing to wait."""
