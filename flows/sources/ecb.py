"""ECB euro reference exchange rates (series EXR/M.USD.EUR.SP00.A, monthly averages, ECB data API CSV) into the fx_rates table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from tradewatch.flows import archive, warehouse
from tradewatch.flows.core import settings
from tradewatch.flows.core.errors import InputError, TradewatchError
from tradewatch.flows.sources.common import Fetch, check_complete, download_to_cache, read_header, reading

SOURCE = "ecb"
SERIES = "EXR/M.USD.EUR.SP00.A"
SERIES_KEY = "EXR.M.USD.EUR.SP00.A"
BASE, QUOTE = "EUR", "USD"
DEFAULT_BASE_URL = "https://data-api.ecb.europa.eu/service"


def series_url(base_url: str | None = None) -> str:
    """CSV download URL of the monthly-average USD per EUR reference rate at the ECB data API."""
    return f"{(base_url or DEFAULT_BASE_URL).rstrip('/')}/data/{SERIES}?format=csvdata"


def looks_like(path: Path, head: bytes) -> bool:
    """True for an ECB data API CSV (columns TIME_PERIOD and OBS_VALUE)."""
    first = head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0].upper()
    return b"TIME_PERIOD" in first and b"OBS_VALUE" in first


def not_trade_data(path: Path, head: bytes) -> str | None:
    """Why an ECB file given where trade data was expected is not trade data; None for another file."""
    if looks_like(path, head):
        return "ECB exchange rates, not trade data; load them with `tradewatch ingest ecb --file`"
    return None


CACHE_NAME = "EXR_M.USD.EUR.SP00.A.csv"


def plan(*, file: Path | None = None, base_url: str | None = None) -> list[Fetch]:
    """The one Fetch of the series: `file` as is (InputError when missing), else the ECB data API (or
    `base_url`) into the cache."""
    if file is not None:
        if not Path(file).is_file():
            raise InputError(f"--file {file}", "no such file")
        return [Fetch(SOURCE, SERIES, local=str(file), display_name=str(file))]
    url = series_url(base_url)
    return [Fetch(SOURCE, SERIES, url=url, dest=str(settings.cache_dir() / SOURCE / CACHE_NAME), display_name=url)]


def expect(head: bytes) -> str | None:
    """Why the head of a downloaded body is not the ECB CSV; None when it is."""
    if looks_like(Path("x"), head):
        return None
    return f"expected ECB CSV with TIME_PERIOD and OBS_VALUE, got {head[:40]!r}"


def fetch(item: Fetch, *, allowed_hosts=(), progress=None) -> dict:
    """Bring the series into the cache (see common.download_to_cache)."""
    return download_to_cache(item, expect=expect, allowed_hosts=allowed_hosts, progress=progress)


@dataclass
class RatesResult:
    """What one ECB file load did: rates stored, months refused, the months covered, status."""

    file: str
    rows: int = 0
    quarantined: int = 0
    first_period: str | None = None
    last_period: str | None = None
    status: str = "ok"
    load_id: int = -1


def load_rates(con: duckdb.DuckDBPyConnection, path: Path, *, display_name: str | None = None,
               force: bool = False) -> RatesResult:
    """Load an ECB CSV of EXR/M.USD.EUR.SP00.A into fx_rates (USD per EUR, period = first day of the
    month): the rates are staged here and stored by warehouse.replace_by_key, which replaces the months
    they hold (keeping the replaced rates as vintages), stores the quarantine and records the load in
    one transaction. Observations that are missing or not positive numbers are quarantined, never
    filled in. Raises InputError for a file that is not this series."""
    path = Path(path)
    where = display_name or str(path)
    header, delimiter = read_header(path, where)
    upper = {h.strip().upper(): h for h in header}
    for needed in ("TIME_PERIOD", "OBS_VALUE"):
        if needed not in upper:
            raise InputError(f"{where} line 1", f"missing column {needed}; expected the ECB data API CSV")
    checksum = archive.sha256(path)
    if not force and _already_loaded(con, checksum):
        return RatesResult(file=where, status="unchanged")

    def col(name: str) -> str:
        return f'trim("{upper[name]}")' if name in upper else "NULL"

    with reading(path, where):
        _stage(con, path, delimiter, col)
        records, good = con.execute("SELECT count(*), count_if(problem IS NULL) FROM _ecb_typed").fetchone()
        check_complete(path, where, records, len(header), delimiter)
    wrong_series = con.execute("SELECT line, series FROM _ecb_typed WHERE problem LIKE 'series %' LIMIT 1").fetchone()
    if wrong_series:
        con.execute("DROP TABLE _ecb_typed")
        raise InputError(f"{where} line {wrong_series[0]}", f"series {wrong_series[1]}; expected {SERIES_KEY} (USD per EUR, monthly average)")
    if not good:
        first = con.execute("SELECT line, problem FROM _ecb_typed WHERE problem IS NOT NULL ORDER BY line LIMIT 1").fetchone()
        con.execute("DROP TABLE _ecb_typed")
        if first is None:
            raise InputError(where, "holds a header but no observations; expected monthly rows of the ECB data API CSV")
        raise InputError(f"{where} line {first[0]}", f"no observation could be read ({records:,} refused; first: {first[1]})")
    duplicate = con.execute("""SELECT period, min(line), max(line) FROM _ecb_typed WHERE problem IS NULL
                               GROUP BY period HAVING count(*) > 1 ORDER BY 2 LIMIT 1""").fetchone()
    if duplicate:
        con.execute("DROP TABLE _ecb_typed")
        raise InputError(f"{where} line {duplicate[2]}", f"month {duplicate[0]:%Y-%m} appears twice (first at line {duplicate[1]})")
    return _store(con, where=where, checksum=checksum)


def _stage(con: duckdb.DuckDBPyConnection, path: Path, delimiter: str, col) -> None:
    """TEMP _ecb_typed: every observation with its line, raw text, period, rate, series and `problem`
    (NULL when it loads). The file and the series are bound parameters; `col` gives column expressions
    from the header's own names (identifiers, which cannot be bound)."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _ecb_typed AS
        SELECT line, raw, period, rate, series,
               CASE WHEN series IS NOT NULL AND series <> $series
                         THEN 'series ' || series || ' is not ' || $series
                    WHEN period IS NULL THEN 'TIME_PERIOD ' || coalesce('"' || period_text || '"', 'empty') || ' is not YYYY-MM'
                    WHEN rate IS NULL THEN 'OBS_VALUE ' || coalesce('"' || value_text || '"', 'empty') || ' is not a number'
                    WHEN isnan(rate) OR isinf(rate) OR rate <= 0 THEN 'OBS_VALUE ' || value_text || ' is not a positive rate'
               END AS problem
        FROM (
            SELECT row_number() OVER () + 1 AS line, {col('TIME_PERIOD')} AS period_text, {col('OBS_VALUE')} AS value_text,
                   CASE WHEN {col('KEY')} IS NOT NULL THEN {col('KEY')}
                        WHEN {col('FREQ')} IS NOT NULL THEN concat_ws('.', 'EXR', {col('FREQ')}, {col('CURRENCY')},
                             {col('CURRENCY_DENOM')}, {col('EXR_TYPE')}, {col('EXR_SUFFIX')}) END AS series,
                   CAST(try_strptime({col('TIME_PERIOD')}, '%Y-%m') AS DATE) AS period,
                   TRY_CAST({col('OBS_VALUE')} AS DOUBLE) AS rate,
                   concat_ws(',', {col('TIME_PERIOD')}, {col('OBS_VALUE')}) AS raw
            FROM read_csv($path, header = true, all_varchar = true, delim = $delimiter, quote = '"',
                          strict_mode = false, null_padding = true))""",
                {"series": SERIES_KEY, "path": str(path), "delimiter": delimiter})


def _store(con: duckdb.DuckDBPyConnection, *, where: str, checksum: str) -> RatesResult:
    """Stage the readable rates (fx_rates columns) and the refused rows (quarantine columns) of
    _ecb_typed and store them through warehouse.replace_by_key."""
    stats = con.execute("""SELECT count_if(problem IS NULL), count_if(problem IS NOT NULL),
                                  strftime(min(period) FILTER (WHERE problem IS NULL), '%Y-%m'),
                                  strftime(max(period) FILTER (WHERE problem IS NULL), '%Y-%m')
                           FROM _ecb_typed""").fetchone()
    try:
        con.execute("""CREATE OR REPLACE TEMP TABLE _ecb_rates AS
                       SELECT period, $base AS base, $quote AS quote, rate, $source AS source
                       FROM _ecb_typed WHERE problem IS NULL""", {"base": BASE, "quote": QUOTE, "source": SOURCE})
        con.execute("""CREATE OR REPLACE TEMP TABLE _ecb_quarantine AS
                       SELECT $file AS file, CAST(line AS BIGINT) AS line, problem AS reason, raw
                       FROM _ecb_typed WHERE problem IS NOT NULL ORDER BY line""", {"file": where})
        loaded = warehouse.replace_by_key(con, "fx_rates", "_ecb_rates", file=where, checksum=checksum, source=SOURCE,
                                          freq="M", quarantine_table="_ecb_quarantine",
                                          message=f"{SERIES} {stats[2]}..{stats[3]}")
    except duckdb.Error as exc:
        text = " ".join(str(exc).split())[:200]
        raise TradewatchError(f"{where}: the warehouse could not be written, no rate from this file was stored "
                              f"({text})") from None
    finally:
        for table in ("_ecb_typed", "_ecb_rates", "_ecb_quarantine"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
    return RatesResult(file=where, rows=loaded.rows, quarantined=loaded.quarantined, first_period=stats[2],
                       last_period=stats[3], load_id=loaded.load_id)


def _already_loaded(con: duckdb.DuckDBPyConnection, checksum: str) -> bool:
    row = con.execute("SELECT count(*) FROM loads WHERE source = ? AND checksum = ? AND status = 'ok'",
                      [SOURCE, checksum]).fetchone()
    return bool(row[0])


def rates(con: duckdb.DuckDBPyConnection, base: str = BASE, quote: str = QUOTE) -> pl.DataFrame:
    """Monthly rates as a polars frame: period (Date, first day of month), base, quote, rate (units of
    `quote` per one `base`, e.g. USD per EUR), source. Empty (same columns) when none are loaded —
    callers report cross-currency features unavailable then; no rate is ever made up."""
    return con.sql("SELECT period, base, quote, rate, source FROM fx_rates WHERE base = ? AND quote = ? "
                   "ORDER BY period", params=[base, quote]).pl()


def status_row(con: duckdb.DuckDBPyConnection) -> dict | None:
    """One summary line for `tradewatch status`: months, first/last period, when and from which file; None if empty."""
    row = con.execute("""
        SELECT count(*), strftime(min(period), '%Y-%m'), strftime(max(period), '%Y-%m'),
               strftime(max(loaded_at), '%Y-%m-%d %H:%M:%S')
        FROM fx_rates WHERE source = ?""", [SOURCE]).fetchone()
    if not row[0]:
        return None
    file = con.execute("SELECT arg_max(file, load_id) FROM loads WHERE source = ? AND status = 'ok'",
                       [SOURCE]).fetchone()[0]
    return {"source": SOURCE, "series": SERIES, "rows": row[0], "first_period": row[1], "last_period": row[2],
            "loaded_at": row[3], "file": file, "unit": f"{QUOTE} per {BASE}"}
