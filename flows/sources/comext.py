"""Eurostat Comext bulk files (full_v2_YYYYMM.7z / full_YYYYMM.dat, annual full_v2_YYYY52.7z) read into canonical rows inside DuckDB."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import duckdb

from tradewatch.flows.core import countries, settings
from tradewatch.flows import schema
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.sources.common import (Fetch, StageResult, check_complete, download_to_cache, newline_count,
                                             read_header, reading, sql_path, summarise_quarantine, used_parameters)

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

SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"

# Eurostat's bulk download facility; `{file}` is full_v2_YYYYMM.7z (YYYY52 for a whole year).
DEFAULT_BASE_URL = "https://ec.europa.eu/eurostat/api/dissemination"
FILE_PATH = "/files?file=comext%2FCOMEXT_DATA%2FPRODUCTS%2F{file}"


def file_name(period: str) -> str:
    """Bulk file name for a period: 'YYYY-MM' -> full_v2_YYYYMM.7z, 'YYYY' -> full_v2_YYYY52.7z (annual)."""
    if len(period) == 4:
        return f"full_v2_{period}52.7z"
    return f"full_v2_{period.replace('-', '')}.7z"


def file_url(period: str, base_url: str | None = None) -> str:
    """Download URL of one period's bulk file. `base_url` is the dissemination API root (default
    Eurostat's) or a template holding `{file}` for a plain mirror."""
    base = (base_url or DEFAULT_BASE_URL).strip()
    if "{file}" in base:
        return base.replace("{file}", file_name(period))
    return base.rstrip("/") + FILE_PATH.format(file=file_name(period))


def looks_like(path: Path, head: bytes) -> bool:
    """True when the file is a Comext bulk file (7z signature, or the Comext header)."""
    if head.startswith(SEVEN_ZIP_MAGIC):
        return True
    first = head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0].upper()
    return first.startswith(b"REPORTER,PARTNER") or (b"PRODUCT_NC" in first and b"VALUE_EUR" in first)


def plan(periods: list[str], *, base_url: str | None = None, source_dir: Path | None = None) -> list[Fetch]:
    """One Fetch per period (YYYY-MM monthly, YYYY annual): from `source_dir` (a local copy of the bulk
    files, .7z or .dat) or downloaded from Eurostat (or `base_url`). InputError when a local file is missing."""
    items = []
    for period in periods:
        name = file_name(period)
        if source_dir is not None:
            found = _local_file(Path(source_dir), name, period)
            items.append(Fetch(SOURCE, period, local=str(found), display_name=str(found)))
        else:
            dest = settings.cache_dir() / SOURCE / name
            items.append(Fetch(SOURCE, period, url=file_url(period, base_url), dest=str(dest), display_name=name))
    return items


def _local_file(source_dir: Path, name: str, period: str) -> Path:
    folder = source_dir.expanduser()
    if not folder.is_dir():
        raise InputError(f"--source-dir {source_dir}", "is not a folder")
    candidates = [folder / name, folder / name.replace("full_v2_", "full_").replace(".7z", ".dat")]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        raise InputError(f"--source-dir {source_dir}", f"has no {name} (or {candidates[1].name}) for {period}")
    return found


def expect(head: bytes) -> str | None:
    """Why the head of a downloaded body is not a Comext bulk file; None when it is."""
    if looks_like(Path("x"), head):
        return None
    return f"expected a 7z archive or Comext .dat, got {head[:24]!r}"


def fetch(item: Fetch, *, allowed_hosts=(), progress=None) -> dict:
    """Bring one planned bulk file into the cache (see common.download_to_cache)."""
    return download_to_cache(item, expect=expect, allowed_hosts=allowed_hosts, progress=progress)


def stage(con: duckdb.DuckDBPyConnection, dat_path: Path, *, table: str, source: str = SOURCE,
          display_name: str | None = None, parquet_dir: Path | None = None) -> StageResult:
    """Read one extracted Comext .dat file into TEMP table `table` (canonical columns, totals over
    statistical procedures) and `{table}_quarantine` (file, line, reason, raw). Streams through DuckDB's
    CSV reader in one pass; the file is read again only when some rows must be quarantined, to number
    their lines. With `parquet_dir`, the totals go straight to Parquet there in that one pass (StageResult
    `parquet`; `table` is then a view of it) unless a row must be refused or repeats another: such a
    file is staged again as above. Raises InputError for a file that is not in the Comext layout or
    repeats a row."""
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
        twice = sorted({h for h in upper if upper.count(h) > 1})
        raise InputError(f"{where} line 1", f"column {', '.join(twice)} appears twice; expected each Comext column once")
    sql = _ComextSql(header, upper, delimiter, dat_path, source)
    with reading(dat_path, where):
        if parquet_dir is not None:
            staged = _stage_to_parquet(con, sql, dat_path, table=table, where=where, columns=len(header),
                                       delimiter=delimiter, target=Path(parquet_dir) / f"{table}.parquet")
            if staged is not None:
                return staged
        return _stage(con, sql, dat_path, table=table, where=where, columns=len(header), delimiter=delimiter)


# Bits of the _flags column staged_to_parquet writes per key: any of the first three sends the file down
# the TEMP-table path, which numbers, quarantines and names those rows.
_PROBLEM, _BAD_ROWS, _REPEATED, _CASE_ALIAS = 1, 2, 4, 8
_SPELLING_BASE = 16  # then one bit per spelling of a country that has several (GR/EL …), reporters then partners


def _stage_to_parquet(con: duckdb.DuckDBPyConnection, sql: _ComextSql, dat_path: Path, *, table: str, where: str,
                      columns: int, delimiter: str, target: Path) -> StageResult | None:
    """The one pass of the usual file: the grouped, coded totals written straight to Parquet `target` with
    two check columns (_source_rows, _flags), then the file's line breaks reconciled with the rows read.
    None (the Parquet removed) when some key must be refused or repeats a row."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        counting = pool.submit(newline_count, dat_path)
        sql.execute(con, f"COPY ({sql.staged_to_parquet(con, sql.rows())}) TO $target (FORMAT parquet)",
                    target=str(target))
        counted = counting.result()
    records, flags, rows = con.execute("SELECT coalesce(sum(_source_rows), 0), coalesce(bit_or(_flags), 0), "
                                       "count(*) FROM read_parquet(?)", [str(target)]).fetchone()
    check_complete(dat_path, where, records, columns, delimiter, counted=counted)
    if flags & (_PROBLEM | _BAD_ROWS | _REPEATED):
        target.unlink(missing_ok=True)
        return None
    con.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS SELECT * EXCLUDE (_source_rows, _flags) "
                f"FROM read_parquet({sql_path(target)})")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table}_quarantine (file VARCHAR, line BIGINT, reason VARCHAR, raw VARCHAR)")
    return StageResult(table=table, quarantine_table=f"{table}_quarantine", rows=rows, quarantined=0, reasons={},
                       key_unique=_one_to_one(int(flags)), parquet=str(target))


def _one_to_one(flags: int) -> bool:
    """From the bit_or of every key's _flags: no two raw country codes of the file map to one alpha-3 code
    (as _stage's distinct counts judge it), so the reader's grouping by raw codes left the canonical key
    unique. A raw code in lower case may share its alpha-3 with its upper-case self: not judged, False."""
    if flags & _CASE_ALIAS:
        return False
    shared = _shared_spellings()
    for base in (_SPELLING_BASE, _SPELLING_BASE + len(shared)):
        present = [a3 for i, (_, a3) in enumerate(shared) if flags >> (base + i) & 1]
        if len(present) != len(set(present)):
            return False
    return True


@lru_cache(maxsize=1)
def _shared_spellings() -> tuple[tuple[str, str], ...]:
    """(alpha-2, alpha-3) of every alpha-2 code whose alpha-3 code another alpha-2 code maps to as well."""
    con = duckdb.connect()
    try:
        found = con.execute(f"""WITH m(a2, a3) AS (VALUES {countries.alpha2_mapping_sql_values()})
            SELECT a2, a3 FROM m QUALIFY count(*) OVER (PARTITION BY a3) > 1 ORDER BY a2""").fetchall()
    finally:
        con.close()
    if _SPELLING_BASE + 2 * len(found) > 62:  # pragma: no cover - a handful today
        raise RuntimeError("too many shared country spellings for the _flags bits")
    return tuple((a2, a3) for a2, a3 in found)


def _code_tables(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """TEMP tables and ENUM types of `con` that staged_to_parquet joins and casts to: alpha-2 -> alpha-3
    for reporters and for partners (where 'Q' + a letter M-Z is a confidential partner, kept as 'Q?Q', as in
    _coded), every YYYYMM / YYYY52 period _coded accepts with its date and frequency, and the enums."""
    shared = _shared_spellings()
    spelling = "CASE a2 " + " ".join(f"WHEN '{a2}' THEN {i}" for i, (a2, _) in enumerate(shared)) + " END" \
        if shared else "NULL::INTEGER"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE tw_alpha2 AS
        SELECT a2, a3, {spelling} AS spelling FROM (VALUES {countries.alpha2_mapping_sql_values()}) m(a2, a3)""")
    con.execute("""CREATE OR REPLACE TEMP TABLE tw_q_codes AS
        SELECT 'Q' || chr(65 + i::INTEGER) AS a2, 'Q' || chr(65 + i::INTEGER) || 'Q' AS a3 FROM range(12, 26) t(i)""")
    con.execute("CREATE OR REPLACE TEMP TABLE tw_labels AS SELECT ?::VARCHAR AS label", [source])
    con.execute("""CREATE OR REPLACE TYPE tw_iso3 AS ENUM (
        SELECT DISTINCT a3 FROM (SELECT a3 FROM tw_alpha2 UNION ALL SELECT a3 FROM tw_q_codes) ORDER BY a3)""")
    con.execute("CREATE OR REPLACE TYPE tw_source AS ENUM (SELECT label FROM tw_labels)")
    con.execute("CREATE OR REPLACE TYPE tw_flow AS ENUM ('import', 'export')")
    con.execute("CREATE OR REPLACE TYPE tw_freq AS ENUM ('M', 'A')")
    con.execute("CREATE OR REPLACE TYPE tw_currency AS ENUM ('EUR')")
    con.execute("""CREATE OR REPLACE TEMP TABLE tw_reporter_codes AS
        SELECT a2, a3::tw_iso3 AS a3, spelling FROM tw_alpha2""")
    con.execute("""CREATE OR REPLACE TEMP TABLE tw_partner_codes AS
        SELECT a2, a3::tw_iso3 AS a3, spelling FROM tw_alpha2 WHERE NOT regexp_full_match(a2, 'Q[M-Z]')
        UNION ALL SELECT a2, a3::tw_iso3, NULL FROM tw_q_codes""")
    # regexp '(19[89][0-9]|2[0-9]{3})(0[1-9]|1[0-2]|52)' as a table: years 1980-2999, months 01-12 and 52.
    con.execute("""CREATE OR REPLACE TEMP TABLE tw_periods AS
        SELECT y::VARCHAR || lpad(m::VARCHAR, 2, '0') AS raw_period, make_date(y::INTEGER, CASE m WHEN 52 THEN 1 ELSE m END, 1) AS period,
               (CASE m WHEN 52 THEN 'A' ELSE 'M' END)::tw_freq AS freq
        FROM range(1980, 3000) y(y), (SELECT unnest([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 52]) AS m)""")


def _stage(con: duckdb.DuckDBPyConnection, sql: _ComextSql, dat_path: Path, *, table: str, where: str,
           columns: int, delimiter: str) -> StageResult:
    # Fast path: one read, grouped on the source's own key columns; code checks run on the totals. The
    # file's line breaks are counted on a thread meanwhile, to reconcile them with the rows read.
    with ThreadPoolExecutor(max_workers=1) as pool:
        counting = pool.submit(newline_count, dat_path)
        sql.execute(con, f"CREATE OR REPLACE TEMP TABLE {table} AS {sql.staged(sql.rows())}")
        repeated, key_problems, bad_rows, records = con.execute(
            f"""SELECT count_if(repeated), count_if(problem IS NOT NULL), coalesce(sum(bad_rows), 0),
                       coalesce(sum(source_rows), 0) FROM {table}"""
        ).fetchone()
        counted = counting.result()
    check_complete(dat_path, where, records, columns, delimiter, counted=counted)
    if repeated:
        _raise_repeated_row(con, sql, where)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table}_quarantine (file VARCHAR, line BIGINT, reason VARCHAR, raw VARCHAR)")
    if key_problems or bad_rows:
        sql.execute(con, f"""INSERT INTO {table}_quarantine
            SELECT $file, line, problem, raw FROM ({sql.numbered_problems()}) ORDER BY line""", file=where)
        if bad_rows:
            # Keys mixing readable and unreadable rows are summed again over the readable rows only.
            con.execute(f"""CREATE OR REPLACE TEMP TABLE {table}_redo AS
                SELECT raw_reporter, raw_partner, raw_product, raw_flow, raw_period FROM {table} WHERE bad_rows > 0""")
            con.execute(f"DELETE FROM {table} WHERE bad_rows > 0")
            sql.execute(con, f"""INSERT INTO {table} {sql.staged(sql.rows(value_ok_only=True,
                        keys_from=f'{table}_redo'))}""")
            con.execute(f"DROP TABLE {table}_redo")
        con.execute(f"DELETE FROM {table} WHERE problem IS NOT NULL")
    rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    # Rows are grouped by the raw codes; the canonical key is unique too when no two raw country codes
    # present map to one alpha-3 code (GR and EL are both Greece, gr is GR). Product, flow and period map
    # one-to-one. When some codes do merge, the warehouse runs its own duplicate-key check.
    reporters, reporter_codes, partners, partner_codes = con.execute(
        f"""SELECT count(DISTINCT raw_reporter), count(DISTINCT reporter_iso3),
                   count(DISTINCT raw_partner), count(DISTINCT partner_iso3) FROM {table}""").fetchone()
    one_to_one = reporters == reporter_codes and partners == partner_codes
    reasons = summarise_quarantine(con, f"{table}_quarantine")
    return StageResult(table=table, quarantine_table=f"{table}_quarantine", rows=rows,
                       quarantined=sum(reasons.values()), reasons=reasons, key_unique=one_to_one)


class _ComextSql:
    """The SQL that reads one Comext .dat: per-row values, totals per key, and the reasons rows are refused."""

    def __init__(self, header: list[str], upper: list[str], delimiter: str, path: Path, source: str):
        self.header, self.upper, self.has, self.source = header, upper, set(upper), source
        # The file, its delimiter and the source label are bound ($path, $delimiter, $source: see execute);
        # only the header's own column names, identifiers, are written into the SQL.
        self.parameters = {"path": str(path), "delimiter": delimiter, "source": source}
        self.reader = ("read_csv($path, header = true, all_varchar = true, delim = $delimiter, "
                       "quote = '\"', strict_mode = false, null_padding = true)")

    def execute(self, con: duckdb.DuckDBPyConnection, statement: str, **values) -> duckdb.DuckDBPyConnection:
        """Run `statement` (built from these pieces) with the parameters it uses bound."""
        return con.execute(statement, used_parameters(statement, {**self.parameters, **values}))

    def col(self, name: str) -> str:
        if name not in self.has:
            return "NULL"
        return '"' + self.header[self.upper.index(name)].replace('"', '""') + '"'

    def _value_checks(self) -> str:
        c = self.col
        return f"""TRY_CAST({c('VALUE_EUR')} AS DOUBLE) AS value,
               TRY_CAST(NULLIF({c('QUANTITY_KG')}, '') AS DOUBLE) AS net_weight_kg,
               TRY_CAST(NULLIF({c('QUANTITY_SUPPL_UNIT')}, '') AS DOUBLE) AS quantity"""

    def _value_ok(self) -> str:
        # NaN compares greater than every number in DuckDB, hence the explicit isnan.
        return """(value >= 0 AND NOT isinf(value) AND NOT isnan(value)
                   AND (net_weight_kg IS NULL AND kg_text = ''
                        OR net_weight_kg >= 0 AND NOT isinf(net_weight_kg) AND NOT isnan(net_weight_kg)))"""

    def _procedure_bit(self) -> str:
        # A bit per (trade type, statistical procedure) pair: a key whose rows' bits overlap repeats a row.
        # An empty procedure counts as procedure 0; codes outside 0-19 are not checked.
        if "STAT_PROCEDURE" not in self.has:
            return "1::BIGINT"
        c = self.col
        procedure = f"coalesce(TRY_CAST(NULLIF({c('STAT_PROCEDURE')}, '') AS INTEGER), 0)"
        return (f"CASE WHEN {procedure} BETWEEN 0 AND 19 THEN 1::BIGINT << (CASE upper(coalesce({c('TRADE_TYPE')}, '')) "
                f"WHEN 'I' THEN 0 WHEN 'E' THEN 20 ELSE 40 END + {procedure}) END")

    def rows(self, *, value_ok_only: bool = False, keys_from: str | None = None) -> str:
        """Per-row key texts and numbers (no line numbers: numbering costs a sort-free but serial pass)."""
        c = self.col
        keys = ("raw_reporter, raw_partner, raw_product, raw_flow, raw_period")
        sql = f"""
            SELECT {c('REPORTER')} AS raw_reporter, {c('PARTNER')} AS raw_partner, {c('PRODUCT_NC')} AS raw_product,
                   {c('FLOW')} AS raw_flow, {c('PERIOD')} AS raw_period, NULLIF({c('SUPPL_UNIT')}, '') AS quantity_unit,
                   coalesce({c('QUANTITY_KG')}, '') AS kg_text, {self._procedure_bit()} AS procedure_bit,
                   {self._value_checks()}
            FROM {self.reader}"""
        sql = f"SELECT *, {self._value_ok()} AS value_ok FROM ({sql})"
        filters = []
        if value_ok_only:
            filters.append("value_ok")
        if keys_from:
            filters.append(f"({keys}) IN (SELECT ({keys}) FROM {keys_from})")
        if filters:
            sql = f"SELECT * FROM ({sql}) WHERE {' AND '.join(filters)}"
        return sql

    def key_problem(self, prefix: str = "") -> str:
        """SQL for why a key (reporter, partner, product, flow, period) cannot be loaded; NULL when it can."""
        p = prefix
        return f"""CASE
            WHEN {p}raw_reporter IS NULL OR {p}raw_reporter = '' THEN 'REPORTER is empty'
            WHEN reporter_iso3 IS NULL THEN 'unknown REPORTER code ' || {p}raw_reporter
            WHEN {p}raw_partner IS NULL OR {p}raw_partner = '' THEN 'PARTNER is empty'
            WHEN partner_iso3 IS NULL THEN 'unknown PARTNER code ' || {p}raw_partner
            WHEN {p}raw_product IS NULL OR NOT coalesce(product_ok, false)
                 THEN 'PRODUCT_NC ' || coalesce('"' || {p}raw_product || '"', 'empty') || ' is not a CN8 code'
            WHEN {p}raw_flow IS NULL OR {p}raw_flow NOT IN ('1', '2')
                 THEN 'FLOW ' || coalesce({p}raw_flow, 'empty') || ' is not 1 (import) or 2 (export)'
            WHEN period_start IS NULL
                 THEN 'PERIOD ' || coalesce({p}raw_period, 'empty') || ' is not YYYYMM (month 01-12) or YYYY52'
        END"""

    def _coded(self, relation: str) -> str:
        """`relation` (with raw_* key columns) plus reporter_iso3, partner_iso3, period_start and product_ok."""
        alpha2 = countries.alpha2_mapping_sql_values()
        return f"""
            WITH m(a2, a3) AS (VALUES {alpha2})
            SELECT k.*, r.a3 AS reporter_iso3,
                   CASE WHEN regexp_full_match(upper(k.raw_partner), 'Q[M-Z]') THEN upper(k.raw_partner) || 'Q'
                        ELSE q.a3 END AS partner_iso3,
                   CASE WHEN regexp_full_match(k.raw_period, '(19[89][0-9]|2[0-9]{{3}})(0[1-9]|1[0-2]|52)')
                        THEN make_date(CAST(substr(k.raw_period, 1, 4) AS INTEGER),
                                       CASE WHEN substr(k.raw_period, 5, 2) = '52' THEN 1
                                            ELSE CAST(substr(k.raw_period, 5, 2) AS INTEGER) END, 1) END AS period_start,
                   regexp_full_match(k.raw_product, '[0-9]{{2}}[0-9A-Z]{{6}}') AS product_ok
            FROM ({relation}) k
            LEFT JOIN m r ON r.a2 = upper(k.raw_reporter)
            LEFT JOIN m q ON q.a2 = upper(k.raw_partner)"""

    def _totals(self, rows: str) -> str:
        return f"""
            SELECT raw_reporter, raw_partner, raw_product, raw_flow, raw_period,
                   sum(value) AS value, sum(net_weight_kg) AS net_weight_kg, sum(quantity) AS quantity,
                   any_value(quantity_unit) AS quantity_unit, count(*) AS source_rows,
                   count_if(NOT coalesce(value_ok, false)) AS bad_rows,
                   bit_count(bit_or(procedure_bit)) <> count(procedure_bit) AS repeated
            FROM ({rows}) GROUP BY ALL"""

    def _canonical(self) -> str:
        return """$source AS source,
                   CASE WHEN substr(raw_period, 5, 2) = '52' THEN 'A' ELSE 'M' END AS freq,
                   period_start AS period, reporter_iso3, partner_iso3,
                   CASE raw_flow WHEN '1' THEN 'import' ELSE 'export' END AS flow,
                   raw_product AS product_code, 8 AS product_level, value, 'EUR' AS currency,
                   net_weight_kg, quantity, quantity_unit"""

    def staged(self, rows: str) -> str:
        """Canonical columns per key (totals over statistical procedures and trade types, as Comext
        reports one row per procedure), plus raw_* keys, problem, bad_rows, source_rows and repeated."""
        canonical = f"""
            SELECT {self._canonical()},
                   raw_reporter, raw_partner, raw_product, raw_flow, raw_period,
                   {self.key_problem()} AS problem, bad_rows, source_rows, repeated
            FROM ({self._coded(self._totals(rows))})"""
        return (f"SELECT {schema.cast_sql()}, raw_reporter, raw_partner, raw_product, raw_flow, raw_period, "
                f"problem, bad_rows, source_rows, repeated FROM ({canonical})")

    def staged_to_parquet(self, con: duckdb.DuckDBPyConnection, rows: str) -> str:
        """The canonical columns per key as `staged` gives them, plus _source_rows and _flags (bits: a key
        problem, unreadable values, a repeated row, country spellings; see _stage_to_parquet). Codes come
        from small tables joined in (made here in `con`), not from per-row regular expressions, and the
        few-valued text columns are ENUMs, which Parquet stores as its dictionary without hashing each
        value (they read back as VARCHAR)."""
        _code_tables(con, self.source)
        problem = """r.a3 IS NULL OR q.a3 IS NULL OR p.period IS NULL OR raw_flow IS NULL OR raw_flow NOT IN ('1', '2')
                     OR raw_product IS NULL OR NOT regexp_full_match(raw_product, '[0-9]{2}[0-9A-Z]{6}')"""
        partner_base = _SPELLING_BASE + len(_shared_spellings())
        values = {
            "source": "CAST($source AS tw_source)", "freq": "p.freq", "period": "p.period",
            "reporter_iso3": "r.a3", "partner_iso3": "q.a3",
            "flow": "CASE raw_flow WHEN '1' THEN 'import'::tw_flow ELSE 'export'::tw_flow END",
            "product_code": "raw_product", "product_level": "8", "currency": "'EUR'::tw_currency",
        }
        enums = {"source", "freq", "reporter_iso3", "partner_iso3", "flow", "currency"}
        select = ", ".join(f"{values.get(f.name, f.name)} AS {f.name}" if f.name in enums
                           else f"CAST({values.get(f.name, f.name)} AS {f.duckdb_type}) AS {f.name}"
                           for f in schema.TRADE_FLOWS)
        return f"""
            SELECT {select}, source_rows AS _source_rows,
                   CASE WHEN {problem} THEN {_PROBLEM} ELSE 0 END
                   | CASE WHEN bad_rows > 0 THEN {_BAD_ROWS} ELSE 0 END
                   | CASE WHEN repeated THEN {_REPEATED} ELSE 0 END
                   | coalesce(1::BIGINT << ({_SPELLING_BASE} + r.spelling), 0)
                   | coalesce(1::BIGINT << ({partner_base} + q.spelling), 0)
                   | CASE WHEN raw_reporter <> upper(raw_reporter) OR raw_partner <> upper(raw_partner)
                          THEN {_CASE_ALIAS} ELSE 0 END AS _flags
            FROM ({self._totals(rows)}) k
            LEFT JOIN tw_reporter_codes r ON r.a2 = upper(k.raw_reporter)
            LEFT JOIN tw_partner_codes q ON q.a2 = upper(k.raw_partner)
            LEFT JOIN tw_periods p ON p.raw_period = k.raw_period"""

    def numbered_problems(self) -> str:
        """Every refused row with its 1-based line number (header is line 1), reason and raw text."""
        c = self.col
        numbered = f"""SELECT row_number() OVER () + 1 AS line, *,
                   concat_ws(',', {', '.join(c(n) for n in ('REPORTER', 'PARTNER', 'TRADE_TYPE', 'PRODUCT_NC', 'FLOW', 'STAT_PROCEDURE', 'PERIOD', 'VALUE_EUR', 'QUANTITY_KG'))}) AS raw_line
            FROM {self.reader}"""
        rows = f"""
            SELECT line, raw_line, {c('REPORTER')} AS raw_reporter, {c('PARTNER')} AS raw_partner,
                   {c('PRODUCT_NC')} AS raw_product, {c('FLOW')} AS raw_flow, {c('PERIOD')} AS raw_period,
                   {c('VALUE_EUR')} AS value_text, coalesce({c('QUANTITY_KG')}, '') AS kg_text, {self._value_checks()}
            FROM ({numbered})"""
        return f"""
            SELECT line, raw_line AS raw, coalesce({self.key_problem()}, CASE
                WHEN value IS NULL THEN 'VALUE_EUR ' || coalesce('"' || value_text || '"', 'empty') || ' is not a number'
                WHEN isnan(value) OR isinf(value) OR value < 0
                     THEN 'VALUE_EUR ' || value_text || ' is not a finite non-negative number'
                WHEN net_weight_kg IS NULL AND kg_text <> '' THEN 'QUANTITY_KG ' || kg_text || ' is not a number'
                WHEN isnan(net_weight_kg) OR isinf(net_weight_kg) OR net_weight_kg < 0
                     THEN 'QUANTITY_KG ' || kg_text || ' is not a finite non-negative number'
            END) AS problem
            FROM ({self._coded(rows)})
            WHERE problem IS NOT NULL"""


def _raise_repeated_row(con: duckdb.DuckDBPyConnection, sql: _ComextSql, where: str) -> None:
    c = sql.col
    key = ", ".join(c(n) for n in ("REPORTER", "PARTNER", "PRODUCT_NC", "FLOW", "PERIOD", "STAT_PROCEDURE", "TRADE_TYPE"))
    row = sql.execute(con, f"""
        SELECT min(line), max(line), {c('REPORTER')}, {c('PARTNER')}, {c('PRODUCT_NC')}, {c('PERIOD')}
        FROM (SELECT row_number() OVER () + 1 AS line, * FROM {sql.reader})
        GROUP BY {key} HAVING count(*) > 1 ORDER BY 1 LIMIT 1
    """).fetchone()
    if row is None:  # pragma: no cover - the bit test and this query agree on every readable procedure code
        return
    raise InputError(f"{where} line {row[1]}",
                     f"duplicate row for {row[2]}→{row[3]} {row[4]} {row[5]} (first at line {row[0]})")


def confidential_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Staged rows whose partner is a confidential/unallocated Q-code (kept as 'Q?Q')."""
    return int(con.execute(
        f"SELECT count(*) FROM {table} WHERE partner_iso3 LIKE 'Q_Q'").fetchone()[0])


def stage_file(con: duckdb.DuckDBPyConnection, path: Path, *, table: str, source: str = SOURCE,
               scratch: Path, display_name: str | None = None) -> StageResult:
    """Stage a Comext .7z (its single .dat member is extracted to `scratch`) or a plain .dat file."""
    where = display_name or str(path)
    with open(path, "rb") as handle:
        is_7z = handle.read(6) == SEVEN_ZIP_MAGIC
    if is_7z:
        from tradewatch.flows.archive import extract_single_member

        dat = extract_single_member(path, scratch)
        try:
            return stage(con, dat, table=table, source=source, display_name=f"{where}:{dat.name}",
                         parquet_dir=scratch)
        finally:
            # The extracted member is as large as the month (~400 MB); free the disk as soon as it is read.
            dat.unlink(missing_ok=True)
    return stage(con, path, table=table, source=source, display_name=where, parquet_dir=scratch)
