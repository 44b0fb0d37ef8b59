"""Eurostat Comext dataset DS-045409 as its SDMX-CSV download (one observation a line): all-goods and HS chapter totals into trade_totals, CN8 rows into trade_flows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from tradewatch.flows.core import countries
from tradewatch.flows import schema
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.sources.common import (Fetch, StageResult, check_complete, download_to_cache, read_header,
                                             reading, summarise_quarantine)

SOURCE = "comext_sdmx"
# Product rows (CN8) found in such a file are Comext rows like those of the bulk files.
PRODUCT_SOURCE = "comext"
# An SDMX query names its products (TOTAL, 27, a few CN8 codes): a file replaces the products it holds
# within each (source, freq, period, reporter) partition, so a TOTAL-only file does not delete chapter
# rows an earlier file loaded, nor a few CN8 codes the bulk month of the same reporter.
REPLACE_BY_PRODUCT = True

DATAFLOW_PATTERN = r"(ESTAT:)?DS-045409(\(.*\))?"
INDICATOR = "VALUE_IN_EUROS"
CURRENCY = "EUR"

# Every source column is mapped, checked or ignored on purpose (strict interpretation). LAST UPDATE says
# when Eurostat last revised the dataset; the file's checksum already tells one vintage from another.
COLUMNS = ("DATAFLOW", "LAST UPDATE", "FREQ", "REPORTER", "PARTNER", "PRODUCT", "FLOW", "INDICATORS",
           "TIME_PERIOD", "OBS_VALUE", "OBS_FLAG")
OPTIONAL = ("LAST UPDATE", "OBS_FLAG")
REQUIRED = tuple(c for c in COLUMNS if c not in OPTIONAL)

TOTALS = schema.CANONICAL_TABLES["trade_totals"]


@dataclass
class SdmxStageResult(StageResult):
    """A StageResult whose `table` holds the CN8 rows (for trade_flows) plus `also`, the staged totals
    ({'trade_totals': table}), and the observations skipped as not available (':' or empty OBS_VALUE).
    `rows` counts both tables."""

    also: dict[str, str] = field(default_factory=dict)
    totals_rows: int = 0
    not_available: int = 0


def looks_like(path: Path, head: bytes) -> bool:
    """True for an SDMX-CSV file of trade observations: a header naming DATAFLOW and a reporter, partner or
    product dimension (stage_file then checks it is DS-045409's layout, so a header that lost OBS_VALUE or
    TIME_PERIOD is told which column is missing rather than that the file is not recognised)."""
    first = head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0].split(b"\r", 1)[0].decode("utf-8", "replace")
    names = {name.strip().strip('"').upper() for name in first.replace(";", ",").split(",")}
    return "DATAFLOW" in names and bool(names & {"REPORTER", "PARTNER", "PRODUCT"})


def plan(paths: list[Path]) -> list[Fetch]:
    """SDMX-CSV files are downloaded by hand from Eurostat's data browser: one local Fetch per file."""
    return [Fetch(SOURCE, "", local=str(path), display_name=str(path)) for path in paths]


def plan_api(*, products: list[str], partners: list[str], months: list[str], reporters: list[str] | None = None,
             flow: str = "both", base_url: str | None = None) -> list[Fetch]:
    """One Fetch per unit of work of Eurostat's dissemination API (eurostat_api.plan: up to 12 months of the
    reporters, partners, products and flows asked), each fetched into one SDMX-CSV file and loaded as one."""
    from tradewatch.flows import eurostat_api

    items = []
    for unit in eurostat_api.plan(products=products, partners=partners, months=months, reporters=reporters, flow=flow):
        path = eurostat_api.unit_file(unit)
        items.append(Fetch(SOURCE, f"{unit.months[0]}..{unit.months[-1]}", url=base_url or eurostat_api.DEFAULT_BASE_URL,
                           dest=str(path), display_name=f"comext-api/{path.name}", request=asdict(unit)))
    return items


def fetch(item: Fetch, *, allowed_hosts=(), progress=None) -> dict:
    """A downloaded or local SDMX-CSV file as is; an API unit of work (item.request) through the
    dissemination API client (split, asynchronous answers followed, retried by download.fetch)."""
    if item.request is None:
        return download_to_cache(item, allowed_hosts=allowed_hosts, progress=progress)
    from tradewatch.flows import eurostat_api

    client = eurostat_api.EurostatClient(base_url=item.url or eurostat_api.DEFAULT_BASE_URL,
                                         allowed_hosts=tuple(allowed_hosts))
    unit = eurostat_api.Query(**{k: tuple(v) if isinstance(v, list) else v for k, v in item.request.items()})
    path = eurostat_api.fetch_unit(client, unit, Path(item.dest).parent.parent)
    return {"path": str(path), "status": "downloaded", "sha256": None}


def stage_file(con: duckdb.DuckDBPyConnection, path: Path, *, table: str, source: str = SOURCE,
               scratch: Path, display_name: str | None = None) -> SdmxStageResult:
    """Stage one DS-045409 SDMX-CSV file: TEMP `table` holds its CN8 rows as canonical trade_flows rows
    (source 'comext', level 8), TEMP `{table}_totals` its aggregates as staged trade_totals rows (product
    'TOTAL' level 0, HS chapters/headings/subheadings levels 2/4/6), TEMP `{table}_quarantine` the rows
    refused (file, line, reason, raw). Values are in euros; period is the first day of the month (freq M)
    or year (freq A); flow 1 is import, 2 export. Observations with ':' or an empty OBS_VALUE are skipped
    and counted, never loaded as 0. Raises InputError (one line naming file and line) for a file that is
    not this layout, another dataflow, another indicator than VALUE_IN_EUROS, or repeats an observation."""
    where = display_name or str(path)
    header, delimiter = read_header(path, where)
    upper = [h.strip().strip('"').upper() for h in header]
    missing = [c for c in REQUIRED if c not in upper]
    if missing:
        raise InputError(f"{where} line 1", f"missing column(s) {', '.join(missing)}; expected Eurostat DS-045409 "
                         f"SDMX-CSV ({','.join(COLUMNS)})")
    unknown = [h for h in upper if h not in COLUMNS]
    if unknown or len(set(upper)) != len(upper):
        problem = (f"unexpected column(s) {', '.join(unknown[:5])}" if unknown
                   else f"column {', '.join(sorted({h for h in upper if upper.count(h) > 1}))} appears twice")
        raise InputError(f"{where} line 1", f"{problem}; expected the DS-045409 SDMX-CSV columns {','.join(COLUMNS)}")
    typed = f"{table}_typed"
    with reading(path, where):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {typed} AS {_typed_sql(header, upper)}",
                    {"path": str(path), "delimiter": delimiter})
        records = con.execute(f"SELECT count(*) FROM {typed}").fetchone()[0]
        check_complete(path, where, records, len(header), delimiter)
    try:
        _refuse_file(con, typed, where, records)
        return _split(con, typed, table=table, source=source, where=where)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {typed}")


def _typed_sql(header: list[str], upper: list[str]) -> str:
    """Every row of the file: line (1-based, header is 1), raw text, trimmed source texts, coded values
    (reporter_iso3, partner_iso3, period, value, product_level), `not_available` and `problem` (NULL
    when the row loads)."""
    def col(name: str) -> str:
        if name not in upper:
            return "NULL"
        return 'trim("' + header[upper.index(name)].replace('"', '""') + '")'

    # The file and its delimiter are parameters ($path, $delimiter); the header's own names are identifiers.
    reader = ("read_csv($path, header = true, all_varchar = true, delim = $delimiter, quote = '\"', "
              "strict_mode = false, null_padding = true)")
    texts = f"""
        SELECT row_number() OVER () + 1 AS line, concat_ws(',', {', '.join(col(c) for c in COLUMNS if c in upper)}) AS raw,
               {col('DATAFLOW')} AS dataflow, upper({col('INDICATORS')}) AS indicator, upper({col('FREQ')}) AS freq,
               upper({col('REPORTER')}) AS raw_reporter, upper({col('PARTNER')}) AS raw_partner,
               upper({col('PRODUCT')}) AS raw_product, {col('FLOW')} AS raw_flow, {col('TIME_PERIOD')} AS raw_period,
               {col('OBS_VALUE')} AS value_text, NULLIF({col('OBS_FLAG')}, '') AS obs_flag
        FROM {reader}"""
    coded = f"""
        WITH m(a2, a3) AS (VALUES {countries.alpha2_mapping_sql_values()})
        SELECT t.*, r.a3 AS reporter_iso3,
               CASE WHEN regexp_full_match(t.raw_partner, 'Q[M-Z]') THEN t.raw_partner || 'Q' ELSE p.a3 END AS partner_iso3,
               CASE WHEN t.freq = 'M' AND regexp_full_match(t.raw_period, '(19[89][0-9]|2[0-9]{{3}})-(0[1-9]|1[0-2])')
                        THEN make_date(CAST(substr(t.raw_period, 1, 4) AS INTEGER), CAST(substr(t.raw_period, 6, 2) AS INTEGER), 1)
                    WHEN t.freq = 'A' AND regexp_full_match(t.raw_period, '19[89][0-9]|2[0-9]{{3}}')
                        THEN make_date(CAST(t.raw_period AS INTEGER), 1, 1) END AS period,
               TRY_CAST(t.value_text AS DOUBLE) AS value,
               CASE WHEN t.raw_product = '{schema.TOTAL_GROUP}' THEN 0
                    WHEN regexp_full_match(t.raw_product, '[0-9]{{2}}|[0-9]{{4}}|[0-9]{{6}}') THEN length(t.raw_product)
                    WHEN regexp_full_match(t.raw_product, '[0-9]{{2}}[0-9A-Z]{{6}}') THEN 8 END AS product_level,
               -- Eurostat shows a missing observation as ':' (possibly with a flag after it), or leaves it empty.
               coalesce(t.value_text, '') = '' OR regexp_full_match(t.value_text, ':\\s*[a-z]*') AS missing_value
        FROM ({texts}) t
        LEFT JOIN m r ON r.a2 = t.raw_reporter
        LEFT JOIN m p ON p.a2 = t.raw_partner"""
    # A row whose key cannot be read is quarantined even without a value: a line cut short (no fields after
    # the reporter) must not pass for a month Eurostat reports as not available.
    return f"""SELECT * EXCLUDE (missing_value), missing_value AND problem IS NULL AS not_available FROM (
                   SELECT *, coalesce({_key_problem_sql()}, CASE WHEN NOT missing_value THEN {_value_problem_sql()} END)
                          AS problem FROM ({coded}))"""


def _quoted(column: str) -> str:
    return f"""coalesce('"' || NULLIF({column}, '') || '"', 'empty')"""


def _key_problem_sql() -> str:
    """SQL for why the key of one row (dataflow, indicator, freq, reporter, partner, product, flow, period)
    cannot be read; NULL when it can. Another dataflow or indicator refuses the whole file (_refuse_file);
    here only their absence is a row's problem."""
    quoted = _quoted
    return f"""CASE
        WHEN coalesce(dataflow, '') = '' THEN 'DATAFLOW is empty'
        WHEN coalesce(indicator, '') = '' THEN 'indicators is empty'
        WHEN freq IS NULL OR freq NOT IN ('M', 'A') THEN 'freq ' || {quoted('freq')} || ' is not M (monthly) or A (annual)'
        WHEN reporter_iso3 IS NULL THEN 'reporter ' || {quoted('raw_reporter')} || ' is not a known ISO alpha-2 country code'
        WHEN partner_iso3 IS NULL THEN 'partner ' || {quoted('raw_partner')} || ' is not a known ISO alpha-2 country code'
        WHEN product_level IS NULL THEN 'product ' || {quoted('raw_product')}
             || ' is not TOTAL, an HS code of 2, 4 or 6 digits or a CN8 code'
        WHEN raw_flow IS NULL OR raw_flow NOT IN ('1', '2') THEN 'flow ' || {quoted('raw_flow')} || ' is not 1 (import) or 2 (export)'
        WHEN period IS NULL THEN 'TIME_PERIOD ' || {quoted('raw_period')}
             || CASE freq WHEN 'A' THEN ' is not a year YYYY' ELSE ' is not a month YYYY-MM (01-12)' END
    END"""


def _value_problem_sql() -> str:
    """SQL for why the OBS_VALUE of one row that has one cannot be loaded; NULL when it can."""
    quoted = _quoted
    return f"""CASE
        WHEN value IS NULL THEN 'OBS_VALUE ' || {quoted('value_text')} || ' is not a number'
        WHEN isnan(value) OR isinf(value) OR value < 0 THEN 'OBS_VALUE ' || {quoted('value_text')}
             || ' is not a finite non-negative number'
    END"""


def _refuse_file(con: duckdb.DuckDBPyConnection, typed: str, where: str, records: int) -> None:
    """Raise InputError for what makes the whole file the wrong one: no observations, another dataflow,
    another indicator than VALUE_IN_EUROS (a quantity is no value: refused rather than quarantined row by
    row, so a download with the wrong indicator is asked again), or an observation given twice."""
    if records == 0:
        raise InputError(where, "holds a header but no observations; expected DS-045409 SDMX-CSV rows")
    other = con.execute(f"""SELECT line, dataflow FROM {typed}
                            WHERE dataflow <> '' AND NOT regexp_full_match(upper(dataflow), '{DATAFLOW_PATTERN}')
                            ORDER BY line LIMIT 1""").fetchone()
    if other:
        raise InputError(f"{where} line {other[0]}", f"DATAFLOW {other[1]!r}; expected Eurostat's "
                         "ESTAT:DS-045409 (EU trade by HS2-4-6 and CN8)")
    other = con.execute(f"""SELECT line, indicator FROM {typed} WHERE indicator <> '' AND indicator <> '{INDICATOR}'
                            ORDER BY line LIMIT 1""").fetchone()
    if other:
        raise InputError(f"{where} line {other[0]}", f"indicators {other[1]!r}; expected {INDICATOR} "
                         "(values in euros; download the dataset with indicators=VALUE_IN_EUROS)")
    twice = con.execute(f"""SELECT min(line), max(line), any_value(raw_reporter), any_value(raw_partner),
                                   any_value(raw_product), any_value(raw_flow), any_value(raw_period)
                            FROM {typed} WHERE problem IS NULL AND NOT not_available
                            GROUP BY freq, period, reporter_iso3, partner_iso3, raw_product, raw_flow
                            HAVING count(*) > 1 ORDER BY 2 LIMIT 1""").fetchone()
    if twice:
        raise InputError(f"{where} line {twice[1]}", f"observation {twice[2]}→{twice[3]} product {twice[4]} flow "
                         f"{twice[5]} {twice[6]} appears twice (first at line {twice[0]})")


def _split(con: duckdb.DuckDBPyConnection, typed: str, *, table: str, source: str, where: str) -> SdmxStageResult:
    """From the typed rows build TEMP `table` (CN8 rows, canonical trade_flows columns), TEMP
    `{table}_totals` (staged trade_totals columns) and TEMP `{table}_quarantine`."""
    product_source = PRODUCT_SOURCE if source == SOURCE else source
    common = """freq, period, reporter_iso3, partner_iso3,
                CASE raw_flow WHEN '1' THEN 'import' ELSE 'export' END AS flow"""
    loadable = "problem IS NULL AND NOT not_available"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {table} AS SELECT {schema.cast_sql()} FROM (
        SELECT $source AS source, {common}, raw_product AS product_code, 8 AS product_level,
               value, '{CURRENCY}' AS currency, NULL AS net_weight_kg, NULL AS quantity, NULL AS quantity_unit
        FROM {typed} WHERE {loadable} AND product_level = 8)""", {"source": product_source})
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {table}_totals AS SELECT {schema.cast_sql(TOTALS.staged_fields)} FROM (
        SELECT $source AS source, {common}, raw_product AS product_group, product_level,
               value, '{CURRENCY}' AS currency, obs_flag
        FROM {typed} WHERE {loadable} AND product_level < 8)""", {"source": source})
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {table}_quarantine AS
        SELECT $file AS file, CAST(line AS BIGINT) AS line, problem AS reason, raw
        FROM {typed} WHERE problem IS NOT NULL ORDER BY line""", {"file": where})
    products, totals, not_available = con.execute(
        f"""SELECT count_if({loadable} AND product_level = 8), count_if({loadable} AND product_level < 8),
                   count_if(not_available) FROM {typed}""").fetchone()
    reasons = summarise_quarantine(con, f"{table}_quarantine")
    return SdmxStageResult(table=table, quarantine_table=f"{table}_quarantine", rows=products + totals,
                           quarantined=sum(reasons.values()), reasons=reasons, key_unique=True,
                           also={TOTALS.name: f"{table}_totals"}, totals_rows=totals, not_available=not_available)
