"""The source registry: adding a source is one module here, one fixture folder in tests/flows/fixtures.

Every source module is the whole of that source (the generic runner in flows/ingest.py does the rest):
  SOURCE                                  its label in the warehouse
  looks_like(path, head) -> bool          recognise a file by content (head: its first 64 kB, ungzipped)
  plan(...) -> list[Fetch]                what to bring into the cache for the periods (or files) asked
  fetch(item, allowed_hosts, progress)    bring one Fetch into the cache -> {'path', 'status', 'sha256'}
  stage_file(con, path, table=…, …)       stage rows (canonical TEMP table + quarantine) inside DuckDB
and optionally
  expect(head) -> str | None              why a downloaded body is not this source's data
  not_trade_data(path, head) -> str|None  why a file of this source (a code table, rates) is not trade data
  is_release(path) -> bool                a bundle loaded one member per load (BACI release zip)
  FOLDER_COMPANIONS                       name prefixes of files read beside the data, skipped in folders
  REPLACE_BY_PRODUCT                      a file replaces only the products it holds
ECB rates are not trade rows: they load into fx_rates through ecb.load_rates.
"""

from __future__ import annotations

from types import ModuleType

from tradewatch.flows.sources import baci, comext, comext_sdmx, comtrade, ecb

# Order matters for recognition: the most specific signature first.
SOURCES: dict[str, ModuleType] = {
    comext.SOURCE: comext,
    comtrade.SOURCE: comtrade,
    baci.SOURCE: baci,
    # Before ECB's check: both are SDMX-style CSV with TIME_PERIOD and OBS_VALUE.
    comext_sdmx.SOURCE: comext_sdmx,
}

# Every source, trade or not, in the order their not_trade_data checks run.
ALL: dict[str, ModuleType] = {**SOURCES, ecb.SOURCE: ecb}


def module(source: str) -> ModuleType:
    """The module of a source label; KeyError for an unknown one."""
    return ALL[source]


def folder_companions() -> tuple[str, ...]:
    """Name prefixes of files that sit beside data files in a folder and are not loaded themselves."""
    return tuple(prefix for mod in ALL.values() for prefix in getattr(mod, "FOLDER_COMPANIONS", ()))
