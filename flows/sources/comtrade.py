"""UN Comtrade data as the API and its download return it (CSV), read into canonical rows inside DuckDB."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tradewatch.flows import countries
from tradewatch.flows.errors import InputError
from tradewatch.flows.sources.common import StageResult, read_header, sql_path, stage_from_typed

SOURCE = "comtrade"

# Columns the reader maps; everything else in a Comtrade file is a description or flag of these
# (reporterDesc, cmdDesc, isQtyEstimated, …) and is ignored on purpose.
MAPPED = ("freqCode", "refYear", "refMonth", "period", "reporterCode", "reporterISO", "flowCode", "partnerCode",
          "partnerISO", "partner2Code", "cmdCode", "aggrLevel", "customsCode", "motCode", "qty", "qtyUnitAbbr",
          "netWgt", "primaryValue")
REQUIRED_ANY = (("reporterCode", "reporterISO"), ("partnerCode", "partnerISO"), ("flowCode",), ("cmdCode",),
                ("primaryValue",), ("period", "refYear"))

FLOW_CODES = {"X": "export", "M": "import", "RX": "re-export", "RM": "re-import"}


def looks_like(path: Path, head: bytes) -> bool:
    first = head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0]
    return b"cmdCode" in first and b"primaryValue" in first and (b"reporterCode" in first or b"reporterISO" in first)


def stage_file(con: duckdb.DuckDBPyConnection, path: Path, *, table: str, source: str = SOURCE,
               scratch: Path, display_name: str | None = None) -> StageResult:
    """Stage one Comtrade CSV file: total rows (all partners2, modes of transport, customs procedures)
    become canonical rows in USD; rows that cannot be read go to quarantine."""
    where = display_name or str(path)
    header, delimiter = read_header(path, where)
    names = [h.strip() for h in header]
    lower = {h.lower(): h for h in names}
    for group in REQUIRED_ANY:
        if not any(g.lower() in lower for g in group):
            raise InputError(f"{where} line 1", f"missing column {' or '.join(group)}; expected Comtrade API CSV columns")

    def col(name: str) -> str:
        original = lower.get(name.lower())
        return f'trim("{original}")' if original else "NULL"

    m49 = countries.m49_mapping_sql_values()
    flows = ", ".join(f"('{code}', '{name}')" for code, name in FLOW_CODES.items())
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {table}_typed AS
        WITH m(num, a3) AS (VALUES {m49}),
        f(code, flow) AS (VALUES {flows}),
        raw AS (
            SELECT row_number() OVER () + 1 AS line, *
            FROM read_csv({sql_path(path)}, header = true, all_varchar = true, delim = '{delimiter}',
                          quote = '"', strict_mode = false, null_padding = true)
        ), parsed AS (
            SELECT line, {col('freqCode')} AS freq_code, {col('period')} AS period_text,
                   {col('refYear')} AS ref_year, {col('refMonth')} AS ref_month,
                   {col('reporterCode')} AS reporter_code, {col('reporterISO')} AS reporter_iso,
                   {col('partnerCode')} AS partner_code, {col('partnerISO')} AS partner_iso,
                   {col('partner2Code')} AS partner2, {col('customsCode')} AS customs, {col('motCode')} AS mot,
                   {col('flowCode')} AS flow_code, {col('cmdCode')} AS cmd, {col('primaryValue')} AS value_text,
                   {col('netWgt')} AS kg_text, {col('qty')} AS qty_text, {col('qtyUnitAbbr')} AS qty_unit
            FROM raw
        ), coded AS (
            SELECT p.*,
                   coalesce(r.a3, CASE WHEN regexp_full_match(upper(p.reporter_iso), '[A-Z]{{3}}') THEN upper(p.reporter_iso) END) AS reporter_iso3,
                   coalesce(q.a3, CASE WHEN regexp_full_match(upper(p.partner_iso), '[A-Z]{{3}}') AND upper(p.partner_iso) <> 'W00' THEN upper(p.partner_iso) END) AS partner_iso3,
                   f.flow,
                   TRY_CAST(value_text AS DOUBLE) AS value,
                   TRY_CAST(NULLIF(kg_text, '') AS DOUBLE) AS net_weight_kg,
                   TRY_CAST(NULLIF(qty_text, '') AS DOUBLE) AS quantity,
                   coalesce(TRY_CAST(substr(period_text, 1, 4) AS INTEGER), TRY_CAST(ref_year AS INTEGER)) AS year,
                   CASE WHEN length(period_text) = 6 THEN TRY_CAST(substr(period_text, 5, 2) AS INTEGER)
                        WHEN period_text IS NULL AND coalesce(freq_code, 'M') = 'M' THEN TRY_CAST(ref_month AS INTEGER) END AS month
            FROM parsed p
            LEFT JOIN m r ON r.num = CAST(TRY_CAST(p.reporter_code AS INTEGER) AS VARCHAR)
            LEFT JOIN m q ON q.num = CAST(TRY_CAST(p.partner_code AS INTEGER) AS VARCHAR)
            LEFT JOIN f ON f.code = upper(p.flow_code)
            -- Breakdown rows (second partner, mode of transport, customs procedure) would double count:
            -- only the all-partners2 / all-modes / all-procedures totals are read.
            WHERE coalesce(TRY_CAST(partner2 AS INTEGER), 0) = 0 AND coalesce(TRY_CAST(mot AS INTEGER), 0) = 0
              AND coalesce(customs, 'C00') IN ('C00', '')
        )
        SELECT *, concat_ws(',', period_text, reporter_code, partner_code, flow_code, cmd, value_text) AS raw,
               CASE
                 WHEN reporter_iso3 IS NULL THEN 'unknown reporter code ' || coalesce(reporter_code, reporter_iso, 'empty')
                 WHEN partner_iso3 IS NULL THEN 'unknown partner code ' || coalesce(partner_code, partner_iso, 'empty')
                 WHEN flow IS NULL THEN 'flowCode ' || coalesce(flow_code, 'empty') || ' is not X, M, RX or RM'
                 WHEN cmd IS NULL OR NOT regexp_full_match(cmd, '[0-9]{{2}}|[0-9]{{4}}|[0-9]{{6}}')
                      THEN 'cmdCode ' || coalesce('"' || cmd || '"', 'empty') || ' is not an HS 2/4/6-digit code'
                 WHEN year IS NULL OR year < 1962 OR (month IS NOT NULL AND NOT month BETWEEN 1 AND 12)
                      OR (period_text IS NOT NULL AND NOT regexp_full_match(period_text, '[0-9]{{4}}|[0-9]{{6}}'))
                      THEN 'period ' || coalesce(period_text, ref_year || '-' || ref_month, 'empty') || ' is not YYYY or YYYYMM (month 01-12)'
                 WHEN value IS NULL THEN 'primaryValue ' || coalesce('"' || value_text || '"', 'empty') || ' is not a number'
                 WHEN isnan(value) OR isinf(value) OR value < 0
                      THEN 'primaryValue ' || value_text || ' is not a finite non-negative number'
                 WHEN net_weight_kg IS NULL AND kg_text IS NOT NULL AND kg_text <> ''
                      THEN 'netWgt ' || kg_text || ' is not a number'
                 WHEN isnan(net_weight_kg) OR isinf(net_weight_kg) OR net_weight_kg < 0
                      THEN 'netWgt ' || kg_text || ' is not a finite non-negative number'
               END AS problem
        FROM coded
    """)
    canonical = f"""
        SELECT '{source}' AS source, CASE WHEN month IS NULL THEN 'A' ELSE 'M' END AS freq,
               make_date(year, coalesce(month, 1), 1) AS period, reporter_iso3, partner_iso3, flow,
               cmd AS product_code, length(cmd) AS product_level, value, 'USD' AS currency,
               net_weight_kg, quantity, NULLIF(qty_unit, '') AS quantity_unit
        FROM {table}_typed WHERE problem IS NULL
    """
    return stage_from_typed(con, table=table, canonical_sql=canonical, where=where)
