"""The source registry: adding a source is one module here, one fixture folder in tests/flows/fixtures."""

from __future__ import annotations

from types import ModuleType

from tradewatch.flows.sources import baci, comext, comext_sdmx, comtrade

# Order matters for recognition: the most specific signature first. ECB rates are not trade rows and
# load through flows.sources.ecb.load_rates instead.
SOURCES: dict[str, ModuleType] = {
    comext.SOURCE: comext,
    comtrade.SOURCE: comtrade,
    baci.SOURCE: baci,
    # Before ECB's check in ingest.recognise: both are SDMX-style CSV with TIME_PERIOD and OBS_VALUE.
    comext_sdmx.SOURCE: comext_sdmx,
}
