"""Vintages: the data as it was after any load, what revisions changed, and whether a route's data was revised.

Every row of trade_flows, trade_totals and fx_rates records the load that stored it (`load_id`); a load
that replaces rows moves them to the table's history table (schema.HISTORY_OF) with the load that
superseded them. The data as of load W is every row stored by a load <= W that no load <= W replaced:
current rows with load_id <= W, and history rows with load_id <= W and superseded_by > W. Rows stored before
vintages were kept have no load (NULL) and count as present in every vintage until a load replaces them.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from tradewatch.flows import schema, warehouse

# The tables a detection run reads, shadowed by as_of(); `loads` too, so the run's record of the loads
# behind its data (and so its hash) is the one it had.
DATA_TABLES = tuple(schema.HISTORY_OF)


def current(con: duckdb.DuckDBPyConnection) -> int:
    """The vintage a reader sees now: the highest load id recorded (0 for a warehouse with no load)."""
    return int(con.execute("SELECT coalesce(max(load_id), 0) FROM loads").fetchall()[0][0])


def as_of(con: duckdb.DuckDBPyConnection, vintage: int) -> None:
    """Make this connection read the data as of load `vintage`: TEMP views named trade_flows, trade_totals,
    fx_rates and loads shadow the stored tables (unqualified names resolve to the views first). Works on a
    read-only connection; nothing is written. `drop_as_of` removes the views."""
    catalog = con.execute("SELECT current_database()").fetchall()[0][0]
    for table in DATA_TABLES:
        if not warehouse.has_table(con, table):
            continue
        columns = ", ".join(schema.TABLES[table].columns)
        stored = f'"{catalog}".main.{table}'
        history = f'"{catalog}".main.{schema.HISTORY_OF[table]}'
        con.execute(f"""CREATE OR REPLACE TEMP VIEW {table} AS
            SELECT {columns} FROM {stored} WHERE coalesce(load_id, 0) <= {int(vintage)}
            UNION ALL
            SELECT {columns} FROM {history} WHERE coalesce(load_id, 0) <= {int(vintage)} AND superseded_by > {int(vintage)}""")
    con.execute(f"""CREATE OR REPLACE TEMP VIEW loads AS
        SELECT * FROM "{catalog}".main.loads WHERE load_id <= {int(vintage)}""")


def as_run_read(con: duckdb.DuckDBPyConnection, vintage: int | None) -> bool:
    """Make this connection read the data a run read (as_of its `vintage`) when loads have come since;
    True when it does. A run stored before vintages (None) reads today's data."""
    if vintage is None or vintage >= current(con):
        return False
    as_of(con, vintage)
    return True


def drop_as_of(con: duckdb.DuckDBPyConnection) -> None:
    for table in (*DATA_TABLES, "loads"):
        con.execute(f"DROP VIEW IF EXISTS temp.main.{table}")


def revisions(con: duckdb.DuckDBPyConnection, *, limit: int | None = None) -> list[dict]:
    """What each revision changed, newest first: per load that changed stored rows, table and period —
    source, freq, period (YYYY-MM, or YYYY for annual data), the rows and value of the partitions it
    replaced before and after it, how many stored rows it replaced (changed or gone; the rest stayed),
    currency, when the load finished and its file. Rates count one row per month and their value is the
    sum of the rates."""
    part = ", ".join(schema.PARTITION_KEY)

    def same(alias: str) -> str:
        return " AND ".join(f"{alias}.{c} = ev.{c}" for c in schema.PARTITION_KEY)

    parts = []
    for table, history in schema.HISTORY_OF.items():
        if not warehouse.has_table(con, history):
            continue
        if table == "fx_rates":
            before = f"""SELECT superseded_by AS load_id, '{table}' AS "table", source, 'M' AS freq, period,
                                count(*) AS rows_before, sum(rate) AS value_before, base || '/' || quote AS currency
                         FROM {history} GROUP BY ALL"""
            after = f"""SELECT load_id, source, period, count(*) AS rows_after, sum(rate) AS value_after
                        FROM (SELECT load_id, source, period, rate FROM fx_rates
                              UNION ALL SELECT load_id, source, period, rate FROM {history}) GROUP BY ALL"""
        else:
            # A load changes only the rows that differ (warehouse._replace_rows). Per partition, the rows as of
            # load L are those stored by loads <= L less those superseded by loads <= L: from two small
            # aggregates (per partition and load) the state before and after each load that touched it follows.
            parts.append(f"""
                WITH s AS (SELECT {part}, coalesce(load_id, 0) AS l, count(*) AS n, sum(value) AS v,
                                  any_value(currency) AS currency
                           FROM (SELECT {part}, load_id, value, currency FROM {table}
                                 UNION ALL SELECT {part}, load_id, value, currency FROM {history}) GROUP BY ALL),
                     x AS (SELECT {part}, superseded_by AS l, count(*) AS n, sum(value) AS v FROM {history} GROUP BY ALL),
                     ev AS (SELECT DISTINCT load_id AS l, {part} FROM load_partitions),
                     st AS (
                        SELECT ev.l, {', '.join('ev.' + c for c in schema.PARTITION_KEY)},
                               (SELECT coalesce(sum(n), 0) FROM s WHERE {same('s')} AND s.l < ev.l)
                                 - (SELECT coalesce(sum(n), 0) FROM x WHERE {same('x')} AND x.l < ev.l) AS rows_before,
                               (SELECT coalesce(sum(v), 0) FROM s WHERE {same('s')} AND s.l < ev.l)
                                 - (SELECT coalesce(sum(v), 0) FROM x WHERE {same('x')} AND x.l < ev.l) AS value_before,
                               (SELECT coalesce(sum(n), 0) FROM s WHERE {same('s')} AND s.l = ev.l) AS stored,
                               (SELECT coalesce(sum(n), 0) FROM x WHERE {same('x')} AND x.l = ev.l) AS replaced,
                               (SELECT coalesce(sum(v), 0) FROM s WHERE {same('s')} AND s.l = ev.l)
                                 - (SELECT coalesce(sum(v), 0) FROM x WHERE {same('x')} AND x.l = ev.l) AS value_change,
                               (SELECT any_value(currency) FROM s WHERE {same('s')}) AS currency
                        FROM ev)
                SELECT l AS load_id, '{table}' AS "table", source, freq, period,
                       sum(rows_before) AS rows_before, sum(value_before) AS value_before, any_value(currency) AS currency,
                       sum(rows_before + stored - replaced) AS rows_after, sum(value_before + value_change) AS value_after,
                       sum(replaced) AS rows_replaced
                FROM st WHERE rows_before > 0 AND (stored > 0 OR replaced > 0)
                GROUP BY ALL""")
            continue
        parts.append(f"""SELECT b.*, coalesce(a.rows_after, 0) AS rows_after, coalesce(a.value_after, 0) AS value_after,
                                b.rows_before AS rows_replaced
                         FROM ({before}) b LEFT JOIN ({after}) a USING (load_id, source, period)""")
    if not parts:
        return []
    sql = f"""
        WITH changed AS ({' UNION ALL '.join(f'SELECT * FROM ({piece})' for piece in parts)}),
             load AS (SELECT load_id, arg_max(file, finished_at) AS file, max(finished_at) AS finished_at
                      FROM loads GROUP BY load_id)
        SELECT c.load_id, c."table", c.source, c.freq,
               CASE c.freq WHEN 'A' THEN strftime(c.period, '%Y') ELSE strftime(c.period, '%Y-%m') END AS period,
               c.rows_before, c.value_before, c.rows_after, c.value_after, c.rows_replaced, c.currency,
               l.finished_at AS revised_at,
               l.file
        FROM changed c LEFT JOIN load l USING (load_id)
        ORDER BY c.load_id DESC, c."table", c.source, c.period
        {f'LIMIT {int(limit)}' if limit else ''}"""
    cursor = con.execute(sql)
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def revised_since(con: duckdb.DuckDBPyConnection, *, origin: str, transit: str, target: str, product_code: str,
                  since: datetime | None) -> list[dict]:
    """Revisions after `since` (UTC; None: any) of the rows a route's evidence reads: trade of product
    `product_code` (and the codes under it) reported by origin, transit or target with one of the others
    as partner. One dict per load and period: load_id, period (YYYY-MM), source, rows_before, revised_at,
    file; oldest first."""
    if not warehouse.has_table(con, "trade_flows_history"):
        return []
    countries = [origin, transit, target]
    cursor = con.execute("""
        SELECT h.superseded_by AS load_id,
               CASE h.freq WHEN 'A' THEN strftime(h.period, '%Y') ELSE strftime(h.period, '%Y-%m') END AS period,
               h.source, count(*) AS rows_before, max(l.finished_at) AS revised_at, arg_max(l.file, l.finished_at) AS file
        FROM trade_flows_history h JOIN loads l ON l.load_id = h.superseded_by
        WHERE starts_with(h.product_code, $product) AND list_contains($countries, h.reporter_iso3)
              AND list_contains($countries, h.partner_iso3) AND h.reporter_iso3 <> h.partner_iso3
              AND ($since IS NULL OR l.finished_at > $since)
        GROUP BY ALL ORDER BY load_id, period""",
        {"product": product_code, "countries": countries, "since": since})
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]
