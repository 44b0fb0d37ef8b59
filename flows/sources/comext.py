"""Eurostat Comext bulk files (full_v2_YYYYMM.7z / full_YYYYMM.dat) read into canonical rows inside DuckDB."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from tradewatch.flows import countries
from tradewatch.flows.errors import InputError
from tradewatch.flows.sources.common import StageResult, read_header, sql_path, stage_from_typed

SOURCE = "comext"

COLUMNS = (
    "REPORTER", "PARTNER", "TRADE_TYPE", "PRODUCT_NC", "PRODUCT_SITC", "PRODUCT_CPA21", "PRODUCT_CPA22",
    "PRODUCT_BEC", "PRODUCT_BEC5", "PRODUCT_SECTION", "FLOW", "STAT_PROCEDURE", "SUPPL_UNIT", "PERIOD",
    "VALUE_EUR", "VALUE_NAC", "QUANTITY_KG", "QUANTITY_SUPPL_UNIT",
)
# Every source column is mapped or explicitly ignored (strict interpretation):
MAPPED = {"REPORTER", "PARTNER", "PRODUCT_NC", "FLOW", "PERIOD", "VALUE_EUR", "QUANTITY_KG",
          "QUANTITY_SUPPL_UNIT", "SUPPL_UNIT", "STAT_PROCEDURE", "TRADE_TYPE"}
# Other classifications of the same product, and the value in national currency, are derivable or
# redundant with VALUE_EUR; they are ignored on purpose.
IGNORED = set(COLUMNS) - MAPPED
REQUIRED = ("REPORTER", "PARTNER", "PRODUCT_NC", "FLOW", "PERIOD", "VALUE_EUR")

FILE_NAME = re.compile(r"full(?:_v2)?_(\d{6})\.(7z|dat)$", re.IGNORECASE)


def looks_like(path: Path, head: bytes) -> bool:
    """True when the file is a Comext bulk file (7z signature with a Comext name, or the Comext header)."""
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return True
    first = head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0].upper()
    return first.startswith(b"REPORTER,PARTNER") or (b"PRODUCT_NC" in first and b"VALUE_EUR" in first)


def stage(con: duckdb.DuckDBPyConnection, dat_path: Path, *, table: str, source: str = SOURCE,
          display_name: str | None = None) -> StageResult:
    """Read one extracted Comext .dat file into TEMP table `table` (canonical columns, totals over
    statistical procedures) and `{table}_quarantine` (file, line, reason, raw). Streams through DuckDB's
    CSV reader. Raises InputError for a file that is not in the Comext layout."""
    where = display_name or str(dat_path)
    header, delimiter = read_header(dat_path, where)
    upper = [h.strip().upper() for h in header]
    missing = [c for c in REQUIRED if c not in upper]
    if missing:
        raise InputError(f"{where} line 1", f"missing column(s) {', '.join(missing)}; expected the Comext header "
                         f"{','.join(COLUMNS[:4])},…")
    unknown = [h for h in upper if h not in COLUMNS]
    if unknown:
        raise InputError(f"{where} line 1", f"unexpected column(s) {', '.join(unknown[:5])}; expected the 18 Comext columns")
    if len(set(upper)) != len(upper):
        raise InputError(f"{where} line 1", "a column name appears twice")
    has = set(upper)

    def col(name: str) -> str:
        return f'trim("{header[upper.index(name)]}")' if name in has else "NULL"

    alpha2 = countries.alpha2_mapping_sql_values()
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {table}_typed AS
        WITH m(a2, a3) AS (VALUES {alpha2}),
        raw AS (
            SELECT row_number() OVER () + 1 AS line, *
            FROM read_csv({sql_path(dat_path)}, header = true, all_varchar = true, delim = '{delimiter}',
                          quote = '"', strict_mode = false, null_padding = true)
        ), parsed AS (
            SELECT line,
                   {col('REPORTER')} AS reporter, {col('PARTNER')} AS partner, {col('PRODUCT_NC')} AS product,
                   {col('FLOW')} AS flow_code, {col('PERIOD')} AS period_text,
                   {col('VALUE_EUR')} AS value_text, {col('QUANTITY_KG')} AS kg_text,
                   {col('QUANTITY_SUPPL_UNIT')} AS qty_text, {col('SUPPL_UNIT')} AS qty_unit,
                   {col('STAT_PROCEDURE')} AS stat_procedure, {col('TRADE_TYPE')} AS trade_type
            FROM raw
        ), coded AS (
            SELECT p.*, r.a3 AS reporter_iso3,
                   CASE WHEN regexp_full_match(upper(p.partner), 'Q[A-Z]') THEN upper(p.partner) || 'Q'
                        ELSE q.a3 END AS partner_iso3,
                   TRY_CAST(value_text AS DOUBLE) AS value,
                   TRY_CAST(NULLIF(kg_text, '') AS DOUBLE) AS net_weight_kg,
                   TRY_CAST(NULLIF(qty_text, '') AS DOUBLE) AS quantity,
                   TRY_CAST(substr(period_text, 1, 4) AS INTEGER) AS year,
                   TRY_CAST(substr(period_text, 5, 2) AS INTEGER) AS month
            FROM parsed p
            LEFT JOIN m r ON r.a2 = upper(p.reporter)
            LEFT JOIN m q ON q.a2 = upper(p.partner)
        )
        SELECT line, reporter, partner, product, flow_code, period_text, value_text, stat_procedure, trade_type,
               reporter_iso3, partner_iso3, value, net_weight_kg, quantity, NULLIF(qty_unit, '') AS qty_unit,
               year, month,
               concat_ws(',', reporter, partner, trade_type, product, flow_code, stat_procedure, period_text, value_text, kg_text) AS raw,
               CASE
                 WHEN reporter IS NULL OR reporter = '' THEN 'REPORTER is empty'
                 WHEN reporter_iso3 IS NULL THEN 'unknown REPORTER code ' || reporter
                 WHEN partner IS NULL OR partner = '' THEN 'PARTNER is empty'
                 WHEN partner_iso3 IS NULL THEN 'unknown PARTNER code ' || partner
                 WHEN product IS NULL OR NOT regexp_full_match(product, '[0-9]{{2}}[0-9A-Z]{{6}}')
                      THEN 'PRODUCT_NC ' || coalesce('"' || product || '"', 'empty') || ' is not a CN8 code'
                 WHEN flow_code IS NULL OR flow_code NOT IN ('1', '2')
                      THEN 'FLOW ' || coalesce(flow_code, 'empty') || ' is not 1 (import) or 2 (export)'
                 WHEN period_text IS NULL OR NOT regexp_full_match(period_text, '[0-9]{{6}}') OR year < 1988
                      OR NOT (month BETWEEN 1 AND 12 OR month = 52)
                      THEN 'PERIOD ' || coalesce(period_text, 'empty') || ' is not YYYYMM (month 01-12) or YYYY52'
                 WHEN value IS NULL THEN 'VALUE_EUR ' || coalesce('"' || value_text || '"', 'empty') || ' is not a number'
                 WHEN isnan(value) OR isinf(value) OR value < 0
                      THEN 'VALUE_EUR ' || value_text || ' is not a finite non-negative number'
                 WHEN net_weight_kg IS NULL AND kg_text IS NOT NULL AND kg_text <> ''
                      THEN 'QUANTITY_KG ' || kg_text || ' is not a number'
                 WHEN isnan(net_weight_kg) OR isinf(net_weight_kg) OR net_weight_kg < 0
                      THEN 'QUANTITY_KG ' || kg_text || ' is not a finite non-negative number'
               END AS problem
        FROM coded
    """)
    canonical = f"""
        SELECT '{source}' AS source,
               CASE WHEN month = 52 THEN 'A' ELSE 'M' END AS freq,
               make_date(year, CASE WHEN month = 52 THEN 1 ELSE month END, 1) AS period,
               reporter_iso3, partner_iso3,
               CASE flow_code WHEN '1' THEN 'import' ELSE 'export' END AS flow,
               product AS product_code, 8 AS product_level,
               sum(value) AS value, 'EUR' AS currency,
               sum(net_weight_kg) AS net_weight_kg, sum(quantity) AS quantity, any_value(qty_unit) AS quantity_unit
        FROM {table}_typed WHERE problem IS NULL
        -- Totals over statistical procedures (and trade types): Comext reports one row per procedure.
        GROUP BY ALL
    """
    duplicate = con.execute(f"""
        SELECT min(line), max(line), reporter, partner, product, period_text FROM {table}_typed WHERE problem IS NULL
        GROUP BY reporter, partner, product, flow_code, period_text, stat_procedure, trade_type
        HAVING count(*) > 1 LIMIT 1
    """).fetchone()
    if duplicate:
        raise InputError(
            f"{where} line {duplicate[1]}",
            f"duplicate row for {duplicate[2]}→{duplicate[3]} {duplicate[4]} {duplicate[5]} (first at line {duplicate[0]})",
        )
    return stage_from_typed(con, table=table, canonical_sql=canonical, where=where)


def stage_file(con: duckdb.DuckDBPyConnection, path: Path, *, table: str, source: str = SOURCE,
               scratch: Path, display_name: str | None = None) -> StageResult:
    """Stage a Comext .7z (its single .dat member is extracted to `scratch`) or a plain .dat file."""
    where = display_name or str(path)
    with open(path, "rb") as handle:
        is_7z = handle.read(6) == b"7z\xbc\xaf\x27\x1c"
    if is_7z:
        from tradewatch.flows.archive import extract_single_member

        dat = extract_single_member(path, scratch)
        return stage(con, dat, table=table, source=source, display_name=f"{where}:{dat.name}")
    return stage(con, path, table=table, source=source, display_name=where)
