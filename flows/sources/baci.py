"""CEPII BACI annual bilateral trade (BACI_HS??_Y????_V??????.csv: t,i,j,k,v,q, alone or inside the release
zip) read into canonical rows inside DuckDB."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from tradewatch.flows.core import countries
from tradewatch.flows import archive, schema
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.sources.common import (Fetch, StageResult, check_complete, download_to_cache, read_header,
                                             reading, summarise_quarantine, used_parameters)

SOURCE = "baci"

# t year, i exporter, j importer (numeric codes), k HS6 product, v value in thousands of USD, q quantity
# in metric tonnes. Every column is mapped.
COLUMNS = ("t", "i", "j", "k", "v", "q")
COUNTRY_CODES_GLOB = "country_codes_V*.csv"
_HEADER = re.compile(rb'^\s*"?t"?\s*,\s*"?i"?\s*,\s*"?j"?\s*,\s*"?k"?\s*,\s*"?v"?\s*,\s*"?q"?\s*$')


# Inside a release zip (BACI_HS17_V202401.zip): one data file per year, the code tables, a readme.
DATA_MEMBER = re.compile(r"(?:.*/)?BACI_HS\d\d_Y(\d{4})_V\w+\.csv", re.IGNORECASE)
COUNTRY_CODES_MEMBER = re.compile(r"(?:.*/)?country_codes_V\w+\.csv", re.IGNORECASE)


def looks_like(path: Path, head: bytes) -> bool:
    """True for a BACI data file (header t,i,j,k,v,q) or a BACI release zip (holding BACI_HS??_Y????_V*.csv)."""
    if head.startswith(archive.ZIP_MAGIC):
        try:
            return any(DATA_MEMBER.fullmatch(name) for name in archive.zip_member_names(path))
        except InputError:
            return False  # a zip that cannot be read is no BACI release; recognise() says what it is
    first = head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0].rstrip(b"\r")
    return bool(_HEADER.match(first))


# Files a folder of BACI downloads holds beside the data files: read from there, never loaded themselves.
FOLDER_COMPANIONS = ("country_codes_", "product_codes_")


def not_trade_data(path: Path, head: bytes) -> str | None:
    """Why a file that no source recognised is not trade data, when it is BACI's: one of its code tables,
    or a zip archive that is no BACI release; None otherwise."""
    if is_reference_table(head):
        return ("a BACI code table, not trade data; it is read from beside the BACI data files "
                "(or pass it with --country-codes)")
    if not head.startswith(archive.ZIP_MAGIC):
        return None
    try:
        archive.zip_member_names(path)
    except InputError as exc:
        return (f"not a recognised trade-data file: a zip archive that cannot be read ({exc.problem}); expected "
                "a BACI release zip, a Comext .7z or CSV/JSON")
    return ("not a recognised trade-data file: a zip archive without BACI data files (BACI_HS??_Y????_V*.csv); "
            "unzip it and load the files inside")


def is_release(path: Path) -> bool:
    """True for a BACI release zip (one data file per year: ingest loads each year as its own load)."""
    return archive.is_zip(path)


def plan(paths: list[Path]) -> list[Fetch]:
    """BACI releases are downloaded by hand from CEPII: one local Fetch per file or release zip."""
    return [Fetch(SOURCE, "", local=str(path), display_name=str(path)) for path in paths]


def fetch(item: Fetch, *, allowed_hosts=(), progress=None) -> dict:
    return download_to_cache(item, allowed_hosts=allowed_hosts, progress=progress)


def release_years(path: Path) -> dict[int, str]:
    """Year -> member name of the data files inside a BACI release zip (empty when it holds none);
    InputError when the zip cannot be read, or holds two data files for one year."""
    years: dict[int, str] = {}
    for name in archive.zip_member_names(path):
        found = DATA_MEMBER.fullmatch(name)
        if found:
            year = int(found.group(1))
            if year in years:
                raise InputError(str(path), f"holds two data files for {year} ({years[year]}, {name}); "
                                 "expected one BACI release")
            years[year] = name
    return dict(sorted(years.items()))


def release_plan(path: Path, years: tuple[int, int] | None = None) -> dict[int, str]:
    """Year -> member of a BACI release zip to load (those of `years`, first and last included, when
    given); InputError when there are none."""
    members = release_years(path)
    if not members:
        raise InputError(str(path), "zip archive holds no BACI data file (BACI_HS??_Y????_V*.csv)")
    chosen = {y: m for y, m in members.items() if years is None or years[0] <= y <= years[1]}
    if not chosen:
        raise InputError(str(path), f"holds the years {min(members)}–{max(members)}, none of {years[0]}–{years[1]}")
    return chosen


def release_country_codes(path: Path) -> str | None:
    """Member name of the country_codes_V*.csv inside a BACI release zip (the last when several), or None."""
    names = sorted(n for n in archive.zip_member_names(path) if COUNTRY_CODES_MEMBER.fullmatch(n))
    return names[-1] if names else None


def is_reference_table(head: bytes) -> bool:
    """True for BACI's own code tables (country_codes_V*.csv, product_codes_HS*_V*.csv), which hold no trade."""
    first = head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0].strip().lower().replace(b'"', b"")
    return first.startswith(b"country_code,") or first.startswith(b"code,description")


def find_country_codes(path: Path) -> Path | None:
    """The country_codes_V*.csv beside a BACI data file (the newest version when several), or None."""
    candidates = sorted(Path(path).parent.glob(COUNTRY_CODES_GLOB))
    return candidates[-1] if candidates else None


def _country_cte(country_codes: Path | None) -> str:
    """SQL for a relation m(num, a3): numeric code without leading zeros -> alpha-3, from BACI's own
    table when given (its alpha-3 codes win), completed by UN M49."""
    m49 = f"SELECT * FROM (VALUES {countries.m49_mapping_sql_values()}) v(num, a3)"
    if country_codes is None:
        return m49
    header, _ = read_header(country_codes, str(country_codes))
    lower = [h.strip().lower() for h in header]
    code_col = next((h for h, name in zip(header, lower) if name == "country_code"), None)
    iso_col = next((h for h, name in zip(header, lower) if name in ("country_iso3", "iso_3digit_alpha")), None)
    if code_col is None or iso_col is None:
        raise InputError(f"{country_codes} line 1", "expected columns country_code and country_iso3 "
                         "(or iso_3digit_alpha), as in BACI's country_codes_V*.csv")
    own = f"""SELECT CAST(TRY_CAST(trim("{code_col}") AS INTEGER) AS VARCHAR) AS num, upper(trim("{iso_col}")) AS a3
              FROM read_csv($codes, header = true, all_varchar = true)
              WHERE TRY_CAST(trim("{code_col}") AS INTEGER) IS NOT NULL AND regexp_full_match(upper(trim("{iso_col}")), '[A-Z]{{3}}')"""
    return f"""SELECT num, any_value(a3) AS a3 FROM ({own}) GROUP BY num
               UNION ALL SELECT num, a3 FROM ({m49}) WHERE num NOT IN (SELECT num FROM ({own}))"""


def stage_file(con: duckdb.DuckDBPyConnection, path: Path, *, table: str, source: str = SOURCE,
               scratch: Path, display_name: str | None = None, country_codes: Path | None = None) -> StageResult:
    """Stage one BACI CSV: exports reported by i to j, freq 'A', value = v × 1000 USD, net_weight_kg =
    q × 1000, product k padded to 6 digits (BACI drops leading zeros). Country codes come from
    `country_codes` or the country_codes_V*.csv beside the file, else UN M49."""
    where = display_name or str(path)
    header, delimiter = read_header(path, where)
    names = [h.strip().strip('"').lower() for h in header]
    if names != list(COLUMNS):
        raise InputError(f"{where} line 1", f"header {','.join(names)[:60]!r}; expected BACI's t,i,j,k,v,q")
    codes = country_codes or find_country_codes(path)
    with reading(path, where):
        return _stage(con, path, table=table, source=source, where=where, codes=codes, delimiter=delimiter)


def _stage(con: duckdb.DuckDBPyConnection, path: Path, *, table: str, source: str, where: str, codes: Path | None,
           delimiter: str) -> StageResult:
    # One table holds the canonical columns plus `problem`, `raw` and `line` (a BACI year is ~10 million rows:
    # a second copy would cost a second of time and half a gigabyte). Numbering lines needs the whole file in
    # order (a serial window), so the file is read with numbers only when some row must be quarantined.
    def staged(numbered: bool) -> str:
        return f"""CREATE OR REPLACE TEMP TABLE {table} AS
            SELECT {schema.cast_sql()}, problem, raw, line FROM (
                SELECT $source AS source, 'A' AS freq, make_date(year, 1, 1) AS period,
                       reporter_iso3, partner_iso3, 'export' AS flow, product AS product_code, 6 AS product_level,
                       value, 'USD' AS currency, net_weight_kg, NULL AS quantity, NULL AS quantity_unit,
                       problem, raw, line
                FROM ({_typed_sql(codes, numbered=numbered)}))"""

    # The file, its delimiter, the code table and the source label are bound parameters.
    values = {"source": source, "path": str(path), "delimiter": delimiter, "codes": str(codes) if codes else None}

    def run(statement: str) -> None:
        con.execute(statement, used_parameters(statement, values))

    run(staged(numbered=False))
    records, problems = con.execute(f"SELECT count(*), count_if(problem IS NOT NULL) FROM {table}").fetchone()
    check_complete(path, where, records, len(COLUMNS), delimiter)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table}_quarantine (file VARCHAR, line BIGINT, reason VARCHAR, raw VARCHAR)")
    if problems:
        run(staged(numbered=True))
        con.execute(f"""INSERT INTO {table}_quarantine SELECT ?, line, problem, raw FROM {table}
                        WHERE problem IS NOT NULL ORDER BY line""", [where])
        con.execute(f"DELETE FROM {table} WHERE problem IS NOT NULL")
    rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    reasons = summarise_quarantine(con, f"{table}_quarantine")
    return StageResult(table=table, quarantine_table=f"{table}_quarantine", rows=rows,
                       quarantined=sum(reasons.values()), reasons=reasons)


def _typed_sql(codes: Path | None, *, numbered: bool) -> str:
    """Every row of the file ($path, split at $delimiter) with its coded values, `problem` (NULL when it
    loads) and, for refused rows, the raw text; `line` is the 1-based line number when `numbered`, else NULL.
    Country codes from the table `codes` ($codes) when given."""
    line = "row_number() OVER () + 1" if numbered else "NULL::BIGINT"
    return f"""
        WITH m AS ({_country_cte(codes)}),
        raw AS (
            SELECT {line} AS line, trim(column0) AS t, trim(column1) AS i, trim(column2) AS j,
                   trim(column3) AS k, trim(column4) AS v, trim(column5) AS q
            FROM read_csv($path, header = true, all_varchar = true, delim = $delimiter, quote = '"',
                          strict_mode = false, null_padding = true,
                          names = ['column0', 'column1', 'column2', 'column3', 'column4', 'column5'])
        ), coded AS (
            SELECT raw.*, r.a3 AS reporter_iso3, p.a3 AS partner_iso3,
                   TRY_CAST(t AS INTEGER) AS year,
                   CASE WHEN regexp_full_match(k, '[0-9]{{5,6}}') THEN lpad(k, 6, '0') END AS product,
                   TRY_CAST(v AS DOUBLE) * 1000 AS value,
                   TRY_CAST(CASE WHEN q IN ('', 'NA') THEN NULL ELSE q END AS DOUBLE) * 1000 AS net_weight_kg
            FROM raw
            LEFT JOIN m r ON r.num = CAST(TRY_CAST(raw.i AS INTEGER) AS VARCHAR)
            LEFT JOIN m p ON p.num = CAST(TRY_CAST(raw.j AS INTEGER) AS VARCHAR)
        ), checked AS (
            SELECT *, CASE
                 WHEN year IS NULL OR year NOT BETWEEN 1988 AND 2100 THEN 't ' || coalesce('"' || t || '"', 'empty') || ' is not a year'
                 WHEN reporter_iso3 IS NULL THEN 'unknown exporter code i ' || coalesce(i, 'empty')
                 WHEN partner_iso3 IS NULL THEN 'unknown importer code j ' || coalesce(j, 'empty')
                 WHEN product IS NULL THEN 'k ' || coalesce('"' || k || '"', 'empty') || ' is not an HS6 code'
                 WHEN value IS NULL THEN 'v ' || coalesce('"' || v || '"', 'empty') || ' is not a number'
                 WHEN isnan(value) OR isinf(value) OR value < 0 THEN 'v ' || v || ' is not a finite non-negative number'
                 WHEN net_weight_kg IS NULL AND q IS NOT NULL AND q NOT IN ('', 'NA') THEN 'q ' || q || ' is not a number'
                 WHEN isnan(net_weight_kg) OR isinf(net_weight_kg) OR net_weight_kg < 0
                      THEN 'q ' || q || ' is not a finite non-negative number'
               END AS problem
            FROM coded
        )
        -- The raw text is kept for refused rows only: a BACI year is ~10 million rows.
        SELECT * EXCLUDE (t, i, j, k, v, q),
               CASE WHEN problem IS NOT NULL THEN concat_ws(',', t, i, j, k, v, q) END AS raw
        FROM checked
    """
