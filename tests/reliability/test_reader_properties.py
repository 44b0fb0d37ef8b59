"""Hypothesis properties of every reader: any bytes (and near-valid rows) either load as valid canonical rows
with every input row accounted for (loaded or quarantined with its line), or are refused with an InputError
that leaves the warehouse unchanged; canonical rows round-trip through the warehouse unchanged."""

from __future__ import annotations

import json
import math
import tempfile
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from corpus import BACI_HEADER, CT_HEADER, ECB_HEADER, HEADER, SDMX_HEADER, seven_zip
from reliability_helpers import TALLY, build_seeded, snapshot
from tradewatch.flows import ingest, schema, warehouse
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.sources import ecb

FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
FEWER = settings(FEW, max_examples=25)

NAMES = {"comext": "full_202203.dat", "comext-7z": "full_v2_202203.7z", "comtrade": "comtrade_KAZ.csv",
         "comtrade-json": "comtrade_KAZ.json", "baci": "BACI_HS17_Y2021_V202401.csv", "ecb": "EXR_M.USD.EUR.SP00.A.csv",
         "comext-sdmx": "ds-045409_2022.csv"}
VALID_ROWS_SQL = """
    SELECT count(*) FROM trade_flows WHERE NOT (
        value >= 0 AND isfinite(value) AND freq IN ('M', 'A') AND day(period) = 1 AND (freq = 'M' OR month(period) = 1)
        AND flow IN ('export', 'import', 're-export', 're-import') AND currency IN ('EUR', 'USD')
        AND product_level IN (2, 4, 6, 8) AND length(product_code) = product_level
        AND regexp_full_match(product_code, '[0-9]{2}[0-9A-Z]*')
        AND regexp_full_match(reporter_iso3, '[A-Z]{3}') AND regexp_full_match(partner_iso3, '[A-Z]{3}')
        AND (net_weight_kg IS NULL OR (net_weight_kg >= 0 AND isfinite(net_weight_kg)))
        AND (quantity IS NULL OR isfinite(quantity)))"""


class Harness:
    """One seeded warehouse for all examples of a property; loads a file and checks the outcome."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.con = warehouse.connect(build_seeded(self.folder / "w.duckdb"))
        self.count = 0
        self.loaded = 0
        self.refused = 0

    def load(self, kind: str, content: bytes):
        """The result, or None when the file was refused (after checking the refusal changed nothing)."""
        self.count += 1
        TALLY.tried("generated", str(self.count))
        path = self.folder / f"in{self.count}" / NAMES[kind]
        path.parent.mkdir()
        path.write_bytes(content)
        before = snapshot(self.con)
        try:
            result = ecb.load_rates(self.con, path, force=True) if kind == "ecb" else \
                ingest.load_file(self.con, path, force=True)
        except InputError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)
            assert snapshot(self.con) == before, "a refused file changed the warehouse"
            self.refused += 1
            return None
        assert self.con.execute(VALID_ROWS_SQL).fetchone()[0] == 0, "an invalid canonical row was stored"
        self.loaded += 1
        return result

    def quarantined_lines(self, load_id: int) -> set[int]:
        return {r[0] for r in self.con.execute("SELECT line FROM quarantine WHERE load_id = ?", [load_id]).fetchall()}

    def close(self):
        self.con.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    made = Harness(tmp_path_factory.mktemp("properties"))
    yield made
    made.close()


_CAST = duckdb.connect()


def as_double(text: str | None) -> float | None:
    """The number DuckDB reads from a field: the oracle for which values a row carries."""
    return _CAST.execute("SELECT TRY_CAST(trim(?) AS DOUBLE)", [text]).fetchone()[0]


# --------------------------------------------------------------------------------- arbitrary bytes

@FEW
@given(kind=st.sampled_from(sorted(NAMES)), content=st.binary(max_size=3000))
def test_any_bytes_load_validly_or_are_refused(harness, kind, content):
    harness.load(kind, content)


HEADERS = {"comext": HEADER, "comtrade": CT_HEADER, "baci": BACI_HEADER, "ecb": ECB_HEADER, "comext-sdmx": SDMX_HEADER}


@FEW
@given(kind=st.sampled_from(sorted(HEADERS)), tail=st.binary(max_size=2000),
       newline=st.sampled_from([b"\n", b"\r\n", b"\r"]), bom=st.booleans())
def test_any_bytes_after_a_valid_header(harness, kind, tail, newline, bom):
    harness.load(kind, (b"\xef\xbb\xbf" if bom else b"") + HEADERS[kind].encode() + newline + tail)


@FEWER
@given(content=st.binary(max_size=1500), members=st.integers(1, 2))
def test_any_bytes_inside_a_7z(harness, content, members):
    names = ["full_202203.dat", "other.dat"][:members]
    harness.load("comext-7z", seven_zip({name: HEADER.encode() + b"\n" + content for name in names}))


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=8)


@FEWER
@given(data=st.lists(st.dictionaries(st.sampled_from(["cmdCode", "primaryValue", "reporterCode", "partnerCode",
                                                      "flowCode", "period", "netWgt", "freqCode", "x"]),
                                     JSON_VALUES, max_size=9), max_size=5),
       extra=st.dictionaries(st.sampled_from(["error", "count", "elapsedTime", "message"]), JSON_VALUES, max_size=3))
def test_any_json_in_a_comtrade_answer(harness, data, extra):
    harness.load("comtrade-json", json.dumps({"elapsedTime": "1", "count": len(data), **extra, "data": data}).encode())


# --------------------------------------------------------------------- configuration files

CONFIG_KEYS = st.sampled_from(["event", "fdr", "baseline_months", "targets", "eu_rollup", "as_of", "band", "x",
                               "product_levels", "detect", "schedule", "sources"])
TOML_VALUES = st.one_of(st.integers(-5, 300).map(str), st.floats(allow_nan=True).map(lambda v: str(v).lower()),
                        st.sampled_from(['"2022-03"', '"2022-13"', '"latest"', "true", "[]", '["RUS"]', '["DEU", 5]',
                                         "[6, 4]", '"x"', "{}", "{ cron = 1 }", "1979-05-27", '"\\u001b[2J"']))


@FEWER
@given(target=st.sampled_from(["detect", "pipeline"]),
       content=st.one_of(st.binary(max_size=300),
                         st.lists(st.tuples(st.sampled_from(["", "[detect]\n", "[schedule]\n", "[sources.comext]\n"]),
                                            CONFIG_KEYS, TOML_VALUES), max_size=4).map(
                             lambda items: "".join(f"{table}{key} = {value}\n" for table, key, value in items).encode())))
def test_any_config_file_is_read_or_refused_in_one_line(tmp_path_factory, target, content):
    """Whatever a --config file holds, it is read or refused with one printable line naming the file: never
    another exception."""
    from tradewatch.detect.config import DetectParams
    from tradewatch.flows.pipeline_config import load_config

    path = tmp_path_factory.mktemp("config") / "tradewatch.toml"
    path.write_bytes(content)
    TALLY.tried("generated", f"config-{path}")
    try:
        DetectParams.from_toml(path) if target == "detect" else load_config(path)
    except InputError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and message.isprintable() and len(message) < 1000, message


# --------------------------------------------------------------------- near-valid rows: nothing is lost

VALUE = st.one_of(st.integers(0, 10**9).map(str), st.floats(0, 1e12, allow_nan=False).map(lambda v: f"{v:.2f}"),
                  st.sampled_from(["", "abc", "-5", "NaN", "inf", "1e999", "1e308", " 7 ", "0x10", "1_000", "1.5.2",
                                   "+3", "٣", "1e-400"]))
COUNTRY2 = st.sampled_from(["DE", "FR", "IT", "KZ", "AM", "GE", "RU", "QU", "ZZ", "", "de", "D", "DEU", "EL", "GR"])
CN8 = st.one_of(st.from_regex(r"[0-9]{8}", fullmatch=True), st.sampled_from(["8542319", "85A", "", "8542 3190", "TOTAL"]))
PERIOD = st.one_of(st.sampled_from(["202201", "202202", "202203", "202152", "202213", "202200", "2022", "", "1899",
                                    "20220", "abcdef"]), st.from_regex(r"20[0-9]{2}(0[1-9]|1[0-2])", fullmatch=True))


@st.composite
def comext_rows(draw):
    rows = draw(st.lists(st.tuples(COUNTRY2, COUNTRY2, CN8, st.sampled_from(["1", "2", "3", ""]), PERIOD, VALUE,
                                   st.sampled_from(["", "1", "-2", "x"]), st.sampled_from(["", "1", "2"])),
                         min_size=1, max_size=12))
    return [f"{r},{p},E,{c},,,,,,,{f},{s},,{per},{v},,{kg}," for r, p, c, f, per, v, kg, s in rows]


@FEW
@given(rows=comext_rows())
def test_comext_rows_are_loaded_or_quarantined_never_lost(harness, rows):
    result = harness.load("comext", ("\n".join([HEADER, *rows]) + "\n").encode())
    if result is None:
        return
    refused = harness.quarantined_lines(result.load_id)
    assert len(refused) == result.quarantined
    expected = sum(as_double(row.split(",")[14]) for line, row in enumerate(rows, start=2) if line not in refused)
    assert math.isclose(result.value_sum.get("EUR", 0.0), expected, rel_tol=1e-9, abs_tol=1e-6), (rows, refused)


M49 = st.sampled_from(["398", "643", "51", "417", "276", "0", "999", "", "abc", "398.0", "0398"])


@st.composite
def comtrade_rows(draw):
    rows = draw(st.lists(st.tuples(PERIOD, M49, st.sampled_from(["X", "M", "RX", "x", "Q", ""]), M49,
                                   st.one_of(st.from_regex(r"[0-9]{2}([0-9]{2}){0,2}", fullmatch=True),
                                             st.sampled_from(["TOTAL", "85AB", "", "8542319"])), VALUE,
                                   st.sampled_from(["", "10", "-1", "x"])), min_size=1, max_size=12))
    return [f"M,{per[:4]},{per[4:]},{per},{rep},desc,{flow},{par},0,{cmd},{len(cmd)},C00,0,kg,,{kg},{v}"
            for per, rep, flow, par, cmd, v, kg in rows]


@FEW
@given(rows=comtrade_rows())
def test_comtrade_rows_are_loaded_or_quarantined_never_lost(harness, rows):
    result = harness.load("comtrade", ("\n".join([CT_HEADER, *rows]) + "\n").encode())
    if result is None:
        return
    refused = harness.quarantined_lines(result.load_id)
    expected = sum(as_double(row.split(",")[-1]) for line, row in enumerate(rows, start=2) if line not in refused)
    assert math.isclose(result.value_sum.get("USD", 0.0), expected, rel_tol=1e-9, abs_tol=1e-6), (rows, refused)


@st.composite
def baci_rows(draw):
    rows = draw(st.lists(st.tuples(st.sampled_from(["2021", "2022", "20", "", "x", "2101"]), M49, M49,
                                   st.one_of(st.from_regex(r"[0-9]{5,6}", fullmatch=True), st.sampled_from(["8542", "85AB31", ""])),
                                   VALUE, st.sampled_from(["", "NA", "1.5", "-1", "x"])), min_size=1, max_size=12))
    return [",".join(r) for r in rows]


@FEW
@given(rows=baci_rows())
def test_baci_rows_are_loaded_or_quarantined_never_lost(harness, rows):
    result = harness.load("baci", ("\n".join([BACI_HEADER, *rows]) + "\n").encode())
    if result is None:
        return
    refused = harness.quarantined_lines(result.load_id)
    expected = sum(as_double(row.split(",")[4]) * 1000 for line, row in enumerate(rows, start=2) if line not in refused)
    assert math.isclose(result.value_sum.get("USD", 0.0), expected, rel_tol=1e-9, abs_tol=1e-6), (rows, refused)


def _mostly(valid: list[str], damaged: list[str]):
    """A field that is usually valid (so most files load and the quarantine is exercised row by row)."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(damaged))


@st.composite
def sdmx_rows(draw):
    rows = draw(st.lists(st.tuples(
        _mostly(["M"], ["A", "Q", ""]), _mostly(["AT", "DE", "GR", "at"], ["EL", "ZZ", "EU27_2020", ""]),
        _mostly(["KZ", "RU", "AM", "QU"], ["EXT_EU27_2020", "", "XX"]),
        _mostly(["TOTAL", "27", "2710", "271019", "85423190"], ["8542319", "ABC", ""]), _mostly(["1", "2"], ["3", ""]),
        st.one_of(st.from_regex(r"20[0-9]{2}-(0[1-9]|1[0-2])", fullmatch=True),
                  st.sampled_from(["2022", "2022-13", "2022M03", "2022-Q1", ""])),
        st.one_of(VALUE, st.sampled_from([":", ": c", ""])), st.sampled_from(["", "p", "c"])), min_size=1, max_size=12))
    return [f"ESTAT:DS-045409(1.0),13/01/23 11:00:00,{freq},{rep},{par},{prod},{flow},VALUE_IN_EUROS,{per},{v},{flag}"
            for freq, rep, par, prod, flow, per, v, flag in rows]


@FEWER
@given(rows=sdmx_rows())
def test_sdmx_rows_are_loaded_quarantined_or_not_available_never_lost(harness, rows):
    result = harness.load("comext-sdmx", ("\n".join([SDMX_HEADER, *rows]) + "\n").encode())
    if result is None:
        return
    refused = harness.quarantined_lines(result.load_id)
    assert len(refused) == result.quarantined
    assert result.rows + result.quarantined + result.not_available == len(rows), (result, rows)
    TALLY.rows(len(rows), result.rows + result.quarantined + result.not_available)
    values = [as_double(row.split(",")[9]) for line, row in enumerate(rows, start=2) if line not in refused]
    expected = sum(value for value in values if value is not None)
    assert math.isclose(result.value_sum.get("EUR", 0.0), expected, rel_tol=1e-9, abs_tol=1e-6), (rows, refused)


@FEW
@given(rows=st.lists(st.tuples(st.one_of(st.from_regex(r"20[0-9]{2}-(0[1-9]|1[0-2])", fullmatch=True),
                                         st.sampled_from(["2022-13", "2022-1", "2022-01-03", "", "x"])), VALUE),
                     min_size=1, max_size=12))
def test_ecb_rows_are_loaded_or_quarantined_never_lost(harness, rows):
    lines = [f"EXR.M.USD.EUR.SP00.A,M,USD,EUR,SP00,A,{period},{value},A,title" for period, value in rows]
    result = harness.load("ecb", ("\n".join([ECB_HEADER, *lines]) + "\n").encode())
    if result is None:
        return
    refused = harness.quarantined_lines(result.load_id)
    assert result.rows + result.quarantined == len(rows) and len(refused) == result.quarantined


# ------------------------------------------------------------------------------- warehouse round trip

LETTERS = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3)
FINITE = st.floats(min_value=0, max_value=1e15, allow_nan=False, allow_infinity=False)


@st.composite
def canonical_row(draw) -> dict:
    freq = draw(st.sampled_from(schema.FREQS))
    year = draw(st.integers(1988, 2035))
    level = draw(st.sampled_from(schema.PRODUCT_LEVELS))
    return {
        "source": draw(st.sampled_from(["comext", "comtrade", "baci", "demo", "it's"])),
        "freq": freq,
        "period": date(year, draw(st.integers(1, 12)) if freq == "M" else 1, 1),
        "reporter_iso3": draw(LETTERS),
        "partner_iso3": draw(LETTERS),
        "flow": draw(st.sampled_from(schema.FLOWS)),
        "product_code": draw(st.from_regex(rf"[0-9]{{{level}}}", fullmatch=True)),
        "product_level": level,
        "value": draw(FINITE),
        "currency": draw(st.sampled_from(schema.CURRENCIES)),
        "net_weight_kg": draw(st.none() | FINITE),
        "quantity": draw(st.none() | FINITE),
        "quantity_unit": draw(st.none() | st.text(max_size=12)),
    }


def _key(row: dict) -> tuple:
    return tuple(row[k] for k in schema.TRADE_FLOWS_KEY)


def _stage(con, rows: list[dict], table: str) -> None:
    frame = schema.conform(pl.DataFrame(rows, schema=schema.polars_schema()))
    con.register("_frame", frame)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {schema.cast_sql()} FROM _frame")
    con.unregister("_frame")


def _read_back(con, rows: list[dict]) -> list[dict]:
    parts = sorted({tuple(r[k] for k in schema.PARTITION_KEY) for r in rows})
    out = []
    for part in parts:
        cursor = con.execute(f"SELECT {', '.join(schema.COLUMN_NAMES)} FROM trade_flows WHERE "
                             + " AND ".join(f"{k} = ?" for k in schema.PARTITION_KEY), list(part))
        out += [dict(zip(schema.COLUMN_NAMES, values)) for values in cursor.fetchall()]
    return sorted(out, key=_key)


@FEW
@given(rows=st.lists(canonical_row(), min_size=1, max_size=25, unique_by=_key))
def test_canonical_rows_round_trip_through_the_warehouse(harness, rows):
    assume(all(r["quantity_unit"] is None or "\x00" not in r["quantity_unit"] for r in rows))
    con = harness.con
    _stage(con, rows, "_prop_staged")
    try:
        loaded = warehouse.replace_partitions(con, "_prop_staged", file="property-test", checksum=None, source="prop")
    finally:
        con.execute("DROP TABLE IF EXISTS _prop_staged")
    assert loaded.rows == len(rows)
    assert _read_back(con, rows) == sorted(rows, key=_key)


@FEWER
@given(rows=st.lists(canonical_row(), min_size=1, max_size=25, unique_by=_key))
def test_canonical_rows_round_trip_through_parquet_and_load_parsed(harness, rows):
    """The pipeline's path: canonical rows in Parquet under the cache, checked, then loaded."""
    assume(all(r["quantity_unit"] is None or "\x00" not in r["quantity_unit"] for r in rows))
    folder = Path(tempfile.mkdtemp(dir=harness.folder))
    scratch = duckdb.connect()
    try:
        _stage(scratch, rows, "s")
        scratch.execute(f"COPY s TO '{folder / 'canonical.parquet'}' (FORMAT parquet)")
        scratch.execute(f"COPY (SELECT 'f' AS file, 1::BIGINT AS line, 'r' AS reason, 'x' AS raw LIMIT 0) "
                        f"TO '{folder / 'quarantine.parquet'}' (FORMAT parquet)")
    finally:
        scratch.close()
    parsed = ingest.ParsedFile(file=f"property-{harness.count}", path="-", source="prop", checksum=str(folder),
                               canonical=str(folder / "canonical.parquet"), quarantine=str(folder / "quarantine.parquet"),
                               rows=len(rows), quarantined=0, confidential=0, reasons={})
    loaded = ingest.load_parsed(harness.con, ingest.check_parsed(parsed), force=True)
    assert loaded.rows == len(rows)
    assert _read_back(harness.con, rows) == sorted(rows, key=_key)


def test_properties_met_both_outcomes(harness):
    """Runs after the properties above (same module fixture): they loaded files and refused files, so both
    branches of every property were exercised."""
    print(f"properties: {harness.count} generated files, {harness.loaded} loaded, {harness.refused} refused")
    assert harness.loaded >= 50 and harness.refused >= 50, (harness.loaded, harness.refused)
