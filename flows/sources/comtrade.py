"""UN Comtrade data as the API and its web download return it (CSV, or JSON {"data": [...]}), read into canonical rows inside DuckDB."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import duckdb

from tradewatch.flows.core import countries
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.sources.common import (Fetch, StageResult, check_complete, download_to_cache, read_error,
                                             read_header, reading, sql_text, stage_from_typed)

SOURCE = "comtrade"
# Comtrade data arrives per query, usually for a list of products: a file replaces the products it holds
# within each reporter-month, not the whole reporter-month (warehouse.replace_partitions by_product).
REPLACE_BY_PRODUCT = True

# Every column of the UN Comtrade API v1 CSV answer, in order (the reader maps some and ignores the rest on
# purpose); the synthetic worlds write files in this layout.
API_COLUMNS = (
    "typeCode", "freqCode", "refPeriodId", "refYear", "refMonth", "period", "reporterCode", "reporterISO",
    "reporterDesc", "flowCode", "flowDesc", "partnerCode", "partnerISO", "partnerDesc", "partner2Code",
    "partner2ISO", "partner2Desc", "classificationCode", "classificationSearchCode", "isOriginalClassification",
    "cmdCode", "cmdDesc", "aggrLevel", "isLeaf", "customsCode", "customsDesc", "mosCode", "motCode", "motDesc",
    "qtyUnitCode", "qtyUnitAbbr", "qty", "isQtyEstimated", "altQtyUnitCode", "altQtyUnitAbbr", "altQty",
    "isAltQtyEstimated", "netWgt", "isNetWgtEstimated", "grossWgt", "isGrossWgtEstimated", "cifvalue", "fobvalue",
    "primaryValue", "legacyEstimationFlag", "isReported", "isAggregate",
)

# Columns the reader maps; everything else in a Comtrade file is a description or flag of these
# (reporterDesc, cmdDesc, isQtyEstimated, isLeaf, …) or a value we do not use (cifvalue, fobvalue:
# primaryValue is the one the reporter published) and is ignored on purpose.
MAPPED = {
    "freqCode": "freq_code", "refYear": "ref_year", "refMonth": "ref_month", "period": "period_text",
    "reporterCode": "reporter_code", "reporterISO": "reporter_iso", "flowCode": "flow_code",
    "partnerCode": "partner_code", "partnerISO": "partner_iso", "partner2Code": "partner2",
    "cmdCode": "cmd", "aggrLevel": "aggr_level", "customsCode": "customs", "motCode": "mot", "qty": "qty_text",
    "qtyUnitAbbr": "qty_unit", "netWgt": "kg_text", "primaryValue": "value_text",
}
REQUIRED_ANY = (("reporterCode", "reporterISO"), ("partnerCode", "partnerISO"), ("flowCode",), ("cmdCode",),
                ("primaryValue",), ("period", "refYear"))

FLOW_CODES = {"X": "export", "M": "import", "RX": "re-export", "RM": "re-import"}


def looks_like(path: Path, head: bytes) -> bool:
    """Comtrade CSV (header with cmdCode and primaryValue) or JSON as the API returns it."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith((b"{", b"[")):
        return b'"cmdCode"' in text or (b'"data"' in text and (b'"elapsedTime"' in text or b'"count"' in text))
    first = text.split(b"\n", 1)[0]
    return b"cmdCode" in first and b"primaryValue" in first and (b"reporterCode" in first or b"reporterISO" in first)


def plan(reporters: list[str], periods: list[str], *, freq: str, products: list[str] | None,
         base_url: str | None = None) -> list[Fetch]:
    """One Fetch per Comtrade unit of work (reporter × group of periods); keyed when COMTRADE_API_KEY is set."""
    from tradewatch.flows import comtrade_api

    units = comtrade_api.plan(reporters, periods, freq=freq, products=products,
                              keyed=bool(os.environ.get(comtrade_api.KEY_ENV)))
    items = []
    for unit in units:
        path = comtrade_api.unit_file(unit)
        items.append(Fetch(SOURCE, ",".join(unit.periods), url=base_url or comtrade_api.DEFAULT_BASE_URL,
                           dest=str(path), display_name=f"comtrade/{unit.freq}/{path.name}", request=asdict(unit)))
    return items


def fetch(item: Fetch, *, allowed_hosts=(), progress=None) -> dict:
    """Bring one unit of work into the cache through the Comtrade API client (split at the record cap,
    retried by download.fetch), or take a local file as is. Raises ComtradeError."""
    if item.request is None:
        return download_to_cache(item, allowed_hosts=allowed_hosts, progress=progress)
    from tradewatch.flows import comtrade_api

    client = comtrade_api.ComtradeClient(base_url=item.url or comtrade_api.DEFAULT_BASE_URL)
    request = comtrade_api.Request(**{k: tuple(v) if isinstance(v, list) else v for k, v in item.request.items()})
    return {"path": str(comtrade_api.fetch_unit(client, request)), "status": "downloaded", "sha256": None}


def _is_json(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4096).lstrip(b"\xef\xbb\xbf").lstrip().startswith((b"{", b"["))


def _mapped_columns(names, expression) -> tuple[list[str], set[str]]:
    """Select-list items giving every MAPPED column under its short name (matched case-insensitively among
    `names`, read with `expression(original_name)`, NULL when absent), and the source names present."""
    lower = {name.lower(): name for name in names}
    select, present = [], set()
    for source_name, short in MAPPED.items():
        original = lower.get(source_name.lower())
        if original is None:
            select.append(f"NULL AS {short}")
        else:
            present.add(source_name)
            select.append(f"{expression(original)} AS {short}")
    return select, present


def _csv_relation(con: duckdb.DuckDBPyConnection, path: Path, where: str) -> tuple[str, set[str], dict]:
    """A SELECT giving line + the mapped columns (as VARCHAR, canonical short names) of a CSV file, the
    source columns present, and the parameters the SELECT binds ($path, $delimiter)."""
    header, delimiter = read_header(path, where)
    select, present = _mapped_columns([h.strip() for h in header],
                                      lambda original: f'trim("{original.replace(chr(34), chr(34) * 2)}")')
    relation = f"""
        SELECT row_number() OVER () + 1 AS line, {', '.join(select)}
        FROM read_csv($path, header = true, all_varchar = true, delim = $delimiter,
                      quote = '"', strict_mode = false, null_padding = true)"""
    return relation, present, {"path": str(path), "delimiter": delimiter}


def _json_relation(con: duckdb.DuckDBPyConnection, path: Path, where: str) -> tuple[str, set[str], dict]:
    """A SELECT giving line (the 1-based record number) + the mapped columns of a Comtrade JSON file, the
    source columns present, and the parameters the SELECT binds ($path)."""
    bound = {"path": str(path)}
    # DuckDB's JSON parser refuses a byte order mark, which Windows tools put before saved answers.
    doc = ("SELECT CAST(CASE WHEN starts_with(content, chr(65279)) THEN substr(content, 2) ELSE content END AS JSON) "
           "AS j FROM read_text($path)")
    try:
        kind, error, message, data_kind = con.execute(f"""
            SELECT json_type(j), j->>'error', coalesce(j->>'message', j->>'Message'),
                   json_type(CASE WHEN json_type(j) = 'ARRAY' THEN j ELSE j->'data' END) FROM ({doc})""", bound).fetchone()
    except duckdb.Error as exc:
        if "utf-8" in str(exc).lower():
            raise read_error(exc, path, where) from None
        raise InputError(where, f"not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if data_kind != "ARRAY":
        detail = error or message
        if detail:
            raise InputError(where, f"Comtrade answered with an error instead of data: {str(detail)[:200]}")
        raise InputError(where, 'JSON without a "data" list; expected a Comtrade API response {"data": [...]}')
    if error:
        raise InputError(where, f"Comtrade answered with an error: {str(error)[:200]}")
    records = f"""
        SELECT row_number() OVER () AS line, r FROM (
            SELECT unnest(CAST(CASE WHEN json_type(j) = 'ARRAY' THEN j ELSE j->'data' END AS JSON[])) AS r FROM ({doc}))"""
    keys = {row[0] for row in con.execute(f"SELECT DISTINCT unnest(json_keys(r)) FROM ({records})", bound).fetchall()}
    # A key is written as a literal: only keys matching a MAPPED name (in some letter case) get here, and
    # a JSON path operand in a select list built per file is simpler as text than as a parameter each.
    select, present = _mapped_columns(keys, lambda original: f"trim(r->>{sql_text(original)})")
    return f"SELECT line, {', '.join(select)} FROM ({records})", present, bound


def stage_file(con: duckdb.DuckDBPyConnection, path: Path, *, table: str, source: str = SOURCE,
               scratch: Path, display_name: str | None = None) -> StageResult:
    """Stage one Comtrade CSV or JSON file into canonical rows in USD (value = primaryValue).
    Files may hold breakdowns by second partner, mode of transport and customs procedure, and several HS
    levels: per (reporter, partner, flow, product, period) the all-partners2/all-modes/all-procedures
    total row is used when present, otherwise the rows of one breakdown are summed, so nothing is
    counted twice; each HS level is stored with its product_level. Unreadable rows go to quarantine."""
    where = display_name or str(path)
    with reading(path, where):
        return _stage(con, path, table=table, source=source, where=where)


def _stage(con: duckdb.DuckDBPyConnection, path: Path, *, table: str, source: str, where: str) -> StageResult:
    relation, present, unit, bound = _relation(con, path, where)
    _require_columns(con, relation, present, unit, where, bound)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table}_typed AS {_typed_sql(relation, unit)}", bound)
    if unit == "line":
        header, delimiter = read_header(path, where)
        records = con.execute(f"SELECT count(*) FROM {table}_typed").fetchone()[0]
        check_complete(path, where, records, len(header), delimiter)
    return stage_from_typed(con, table=table, canonical_sql=_canonical_sql(table), where=where,
                            params={"source": source})


def _relation(con: duckdb.DuckDBPyConnection, path: Path, where: str) -> tuple[str, set[str], str, dict]:
    """(SELECT of line + mapped columns, source columns present, 'record' for JSON or 'line' for CSV, the
    parameters the SELECT binds)."""
    if _is_json(path):
        relation, present, bound = _json_relation(con, path, where)
        return relation, present, "record", bound
    relation, present, bound = _csv_relation(con, path, where)
    return relation, present, "line", bound


def _require_columns(con: duckdb.DuckDBPyConnection, relation: str, present: set[str], unit: str, where: str,
                     bound: dict) -> None:
    """InputError unless one column of each REQUIRED_ANY group is present (an empty API answer has no
    records to name columns, and passes)."""
    lowered = {p.lower() for p in present}
    for group in REQUIRED_ANY:
        if any(g.lower() in lowered for g in group):
            continue
        if unit == "record" and con.execute(f"SELECT count(*) FROM ({relation})", bound).fetchone()[0] == 0:
            return
        raise InputError(f"{where} {'line 1' if unit == 'line' else 'records'}",
                         f"missing column {' or '.join(group)}; expected Comtrade API columns")


def _typed_sql(relation: str, unit: str) -> str:
    """Every row with its coded values, `problem` (NULL when it loads; a repeated row is a problem) and
    `chosen`, the breakdown whose rows make the key's total."""
    m49 = countries.m49_mapping_sql_values()
    flows = ", ".join(f"('{code}', '{name}')" for code, name in FLOW_CODES.items())
    return f"""
        WITH m(num, a3) AS (VALUES {m49}),
        f(code, flow) AS (VALUES {flows}),
        parsed AS ({_parsed_sql(relation)}),
        coded AS ({_coded_sql()}),
        checked AS ({_checked_sql()}),
        numbered AS ({_numbered_sql()})
        SELECT *, coalesce(row_problem, CASE WHEN copy > 1 THEN 'row repeats an earlier {unit} (same reporter, partner, flow, product, period and breakdown)' END) AS problem,
               -- The breakdown to use per key: the total (0) when present, else the one with fewest dimensions.
               min(CASE WHEN row_problem IS NULL AND copy = 1 THEN bit_count(breakdown::TINYINT) * 8 + breakdown END)
                   OVER (PARTITION BY reporter_iso3, partner_iso3, flow, product, year, month) AS chosen
        FROM numbered
    """


def _parsed_sql(relation: str) -> str:
    return f"""
            SELECT *,
                   -- Spreadsheet round trips drop leading zeros; aggrLevel says how many digits there were.
                   CASE WHEN TRY_CAST(aggr_level AS INTEGER) IN (2, 4, 6) AND regexp_full_match(cmd, '[0-9]+')
                             AND length(cmd) < TRY_CAST(aggr_level AS INTEGER)
                        THEN lpad(cmd, TRY_CAST(aggr_level AS INTEGER), '0') ELSE cmd END AS product
            FROM ({relation})
    """


def _coded_sql() -> str:
    """Alpha-3 codes, flow, numbers, year and month, and which breakdowns a row belongs to."""
    return """
            SELECT p.*,
                   coalesce(r.a3, CASE WHEN regexp_full_match(upper(p.reporter_iso), '[A-Z]{3}') THEN upper(p.reporter_iso) END) AS reporter_iso3,
                   coalesce(q.a3, CASE WHEN regexp_full_match(upper(p.partner_iso), '[A-Z]{3}') AND upper(p.partner_iso) <> 'W00' THEN upper(p.partner_iso) END) AS partner_iso3,
                   f.flow,
                   TRY_CAST(value_text AS DOUBLE) AS value,
                   TRY_CAST(NULLIF(kg_text, '') AS DOUBLE) AS net_weight_kg,
                   TRY_CAST(NULLIF(qty_text, '') AS DOUBLE) AS quantity,
                   coalesce(TRY_CAST(substr(period_text, 1, 4) AS INTEGER), TRY_CAST(ref_year AS INTEGER)) AS year,
                   CASE WHEN length(period_text) = 6 THEN TRY_CAST(substr(period_text, 5, 2) AS INTEGER)
                        WHEN period_text IS NULL AND coalesce(freq_code, 'M') = 'M' AND TRY_CAST(ref_month AS INTEGER) <> 52
                             THEN TRY_CAST(ref_month AS INTEGER) END AS month,
                   -- Which breakdowns a row belongs to: 4 second partner, 2 mode of transport, 1 customs procedure.
                   (CASE WHEN coalesce(TRY_CAST(NULLIF(partner2, '') AS INTEGER), 0) <> 0 THEN 4 ELSE 0 END)
                   + (CASE WHEN coalesce(TRY_CAST(NULLIF(mot, '') AS INTEGER), 0) <> 0 THEN 2 ELSE 0 END)
                   + (CASE WHEN upper(coalesce(NULLIF(customs, ''), 'C00')) <> 'C00' THEN 1 ELSE 0 END) AS breakdown
            FROM parsed p
            LEFT JOIN m r ON r.num = CAST(TRY_CAST(p.reporter_code AS INTEGER) AS VARCHAR)
            LEFT JOIN m q ON q.num = CAST(TRY_CAST(p.partner_code AS INTEGER) AS VARCHAR)
            LEFT JOIN f ON f.code = upper(p.flow_code)
    """


def _checked_sql() -> str:
    """`raw` and `row_problem`: why a row cannot be loaded, NULL when it can."""
    return """
            SELECT *, concat_ws(',', period_text, reporter_code, partner_code, partner2, flow_code, cmd, customs, mot, value_text) AS raw,
                   CASE
                     WHEN reporter_iso3 IS NULL THEN 'unknown reporter code ' || coalesce(reporter_code, reporter_iso, 'empty')
                     WHEN partner_iso3 IS NULL THEN 'unknown partner code ' || coalesce(partner_code, partner_iso, 'empty')
                     WHEN flow IS NULL THEN 'flowCode ' || coalesce(flow_code, 'empty') || ' is not X, M, RX or RM'
                     WHEN upper(cmd) = 'TOTAL' THEN 'cmdCode TOTAL (all products) is not stored; request HS codes'
                     WHEN product IS NULL OR NOT regexp_full_match(product, '[0-9]{2}|[0-9]{4}|[0-9]{6}')
                          THEN 'cmdCode ' || coalesce('"' || cmd || '"', 'empty') || ' is not an HS 2/4/6-digit code'
                     WHEN year IS NULL OR year < 1962 OR (month IS NOT NULL AND NOT month BETWEEN 1 AND 12)
                          OR (period_text IS NOT NULL AND NOT regexp_full_match(period_text, '[0-9]{4}|[0-9]{6}'))
                          THEN 'period ' || coalesce(period_text, ref_year || '-' || ref_month, 'empty') || ' is not YYYY or YYYYMM (month 01-12)'
                     WHEN value IS NULL THEN 'primaryValue ' || coalesce('"' || value_text || '"', 'empty') || ' is not a number'
                     WHEN isnan(value) OR isinf(value) OR value < 0
                          THEN 'primaryValue ' || value_text || ' is not a finite non-negative number'
                     WHEN net_weight_kg IS NULL AND kg_text IS NOT NULL AND kg_text <> ''
                          THEN 'netWgt ' || kg_text || ' is not a number'
                     WHEN isnan(net_weight_kg) OR isinf(net_weight_kg) OR net_weight_kg < 0
                          THEN 'netWgt ' || kg_text || ' is not a finite non-negative number'
                   END AS row_problem
            FROM coded
    """


def _numbered_sql() -> str:
    """`copy`: 1 for the first of rows repeating one key and breakdown, 2 … for the repeats."""
    return """
            SELECT *, CASE WHEN row_problem IS NULL THEN row_number() OVER (
                          PARTITION BY row_problem IS NULL, reporter_iso3, partner_iso3, flow, product, year, month,
                                       breakdown, partner2, mot, upper(customs) ORDER BY line) END AS copy
            FROM checked
    """


def _canonical_sql(table: str) -> str:
    """Canonical rows: per key, the sum over the rows of the chosen breakdown; the source label is $source."""
    return f"""
        SELECT $source AS source, CASE WHEN month IS NULL THEN 'A' ELSE 'M' END AS freq,
               make_date(year, coalesce(month, 1), 1) AS period, reporter_iso3, partner_iso3, flow,
               product AS product_code, length(product) AS product_level, sum(value) AS value, 'USD' AS currency,
               sum(net_weight_kg) AS net_weight_kg, sum(quantity) AS quantity, any_value(NULLIF(qty_unit, '')) AS quantity_unit
        FROM {table}_typed
        WHERE problem IS NULL AND bit_count(breakdown::TINYINT) * 8 + breakdown = chosen
        GROUP BY ALL
    """
