"""The source registry: adding a source is one module here, one fixture folder in tests/flows/fixtures."""

from __future__ import annotations

from types import ModuleType

from tradewatch.flows.sources import comext, comtrade

# Order matters for recognition: the most specific signature first.
SOURCES: dict[str, ModuleType] = {
    comext.SOURCE: comext,
    comtrade.SOURCE: comtrade,
}
