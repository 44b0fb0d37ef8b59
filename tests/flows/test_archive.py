"""Compressed inputs: gzip files (Comtrade's bulk downloads are tab-separated .txt.gz) load as their content would."""

from __future__ import annotations

import datetime
import gzip

import pytest

from ingest_helpers import FIXTURES, home  # noqa: F401  (fixtures)
from tradewatch.flows import archive, ingest, warehouse
from tradewatch.flows.core.errors import InputError


def _flows(db) -> list[tuple]:
    con = warehouse.connect(db)
    try:
        return con.execute("""SELECT source, period, reporter_iso3, partner_iso3, flow, product_code, product_level,
                                     value, currency, net_weight_kg FROM trade_flows ORDER BY ALL""").fetchall()
    finally:
        con.close()


def test_comtrade_bulk_tsv_gz_loads_like_the_csv(home, tmp_path):
    csv_text = (FIXTURES / "comtrade" / "breakdowns.csv").read_text()
    bulk = tmp_path / "C_M_398_202203_H6_O.txt.gz"
    bulk.write_bytes(gzip.compress(csv_text.replace(",", "\t").encode()))
    zipped = ingest.ingest_paths(home / "gz.duckdb", [bulk])
    plain = ingest.ingest_paths(home / "csv.duckdb", [FIXTURES / "comtrade" / "breakdowns.csv"])
    assert zipped.results[0].status == "ok" and zipped.results[0].file == str(bulk)
    assert (zipped.results[0].rows, zipped.results[0].quarantined) == (plain.results[0].rows, plain.results[0].quarantined)
    assert _flows(home / "gz.duckdb") == _flows(home / "csv.duckdb") != []
    assert ingest.ingest_paths(home / "gz.duckdb", [bulk]).results[0].status == "unchanged"
    assert [p for p in (home / "cache" / "extract").rglob("*") if p.is_file()] == []


BULK_HEADER = ("typeCode\tfreqCode\trefPeriodId\trefYear\trefMonth\tperiod\treporterCode\tflowCategory\tflowCode\t"
               "partnerCode\tpartner2Code\tclassificationCode\tclassificationSearchCode\tisOriginalClassification\t"
               "cmdCode\taggrLevel\tisLeaf\tcustomsCode\tmosCode\tmotCode\tqtyUnitCode\tqty\tisQtyEstimated\t"
               "altQtyUnitCode\taltQty\tisAltQtyEstimated\tnetWgt\tisNetWgtEstimated\tgrossWgt\t"
               "isGrossWgtEstimated\tcifvalue\tfobvalue\tprimaryValue\tlegacyEstimationFlag\tisReported\tisAggregate")


def test_comtrade_bulk_layout_without_iso_columns(home, tmp_path):
    # The bulk files carry numeric codes only (no reporterISO/partnerISO) and some columns the API lacks.
    rows = ["C\tM\t20220301\t2022\t3\t202203\t398\tX\tX\t643\t0\tH6\tHS\t1\t854231\t6\t1\tC00\t0\t0\t8\t"
            "5\t0\t-1\t0\t0\t5\t0\t5\t0\t0\t1500.5\t1500.5\t0\t1\t0",
            "C\tM\t20220301\t2022\t3\t202203\t398\tX\tX\t643\t0\tH6\tHS\t1\t854231\t6\t1\tC00\t0\t1000\t8\t"
            "2\t0\t-1\t0\t0\t2\t0\t2\t0\t0\t600\t600\t0\t1\t0"]
    bulk = tmp_path / "C_M_398_202203_H6_O.txt.gz"
    bulk.write_bytes(gzip.compress(("\n".join([BULK_HEADER, *rows]) + "\n").encode()))
    result = ingest.ingest_paths(home / "w.duckdb", [bulk]).results[0]
    assert (result.status, result.rows, result.quarantined) == ("ok", 1, 0)
    # The all-modes total row (motCode 0) is kept; the mode-1000 breakdown is not added to it.
    assert _flows(home / "w.duckdb") == [("comtrade", datetime.date(2022, 3, 1), "KAZ", "RUS", "export", "854231",
                                          6, 1500.5, "USD", 5.0)]


def test_comext_dat_gz_loads_like_the_dat(home, tmp_path):
    dat = FIXTURES / "comext" / "full_202203.dat"
    packed = tmp_path / "full_202203.dat.gz"
    packed.write_bytes(gzip.compress(dat.read_bytes()))
    assert ingest.recognise(packed).SOURCE == "comext"
    ingest.ingest_paths(home / "gz.duckdb", [packed])
    ingest.ingest_paths(home / "dat.duckdb", [dat])
    assert _flows(home / "gz.duckdb") == _flows(home / "dat.duckdb") != []


def test_quarantined_rows_name_the_gz_file_and_the_line_of_its_content(home, tmp_path):
    text = (FIXTURES / "comext" / "full_202203.dat").read_text().splitlines()
    text[2] = text[2].replace(",500,500,", ",lots,500,")
    packed = tmp_path / "full_202203.dat.gz"
    packed.write_bytes(gzip.compress(("\n".join(text) + "\n").encode()))
    result = ingest.ingest_paths(home / "w.duckdb", [packed]).results[0]
    assert result.quarantined >= 1
    con = warehouse.connect(home / "w.duckdb")
    assert (str(packed), 3) in con.execute("SELECT file, line FROM quarantine").fetchall()


@pytest.mark.parametrize("content, needle", [
    (None, "gzip file is damaged or truncated"),
    (b"<html><body>Service unavailable</body></html>", "an HTML page, not data"),
    (b"", "gzip file holds nothing"),
])
def test_bad_gzip_files_are_one_line_errors_and_load_nothing(home, tmp_path, content, needle):
    bad = tmp_path / "bulk.txt.gz"
    if content is None:  # a download cut short
        whole = gzip.compress((FIXTURES / "comtrade" / "breakdowns.csv").read_bytes())
        bad.write_bytes(whole[: len(whole) // 2])
    else:
        bad.write_bytes(gzip.compress(content))
    with pytest.raises(InputError) as info:
        ingest.ingest_paths(home / "w.duckdb", [bad])
    assert str(info.value).startswith(f"{bad}") and needle in str(info.value)
    assert "\n" not in str(info.value)
    assert not (home / "w.duckdb").exists() or warehouse.row_count(warehouse.connect(home / "w.duckdb")) == 0


def test_gzip_expanding_past_the_limit_is_refused(home, tmp_path, monkeypatch):
    packed = tmp_path / "full_202203.dat.gz"
    packed.write_bytes(gzip.compress((FIXTURES / "comext" / "full_202203.dat").read_bytes()))
    monkeypatch.setenv("TRADEWATCH_MAX_EXPANDED_BYTES", "200")
    with pytest.raises(InputError, match=r"expands past the 200-byte limit"):
        ingest.ingest_paths(home / "w.duckdb", [packed])
    assert [p for p in (home / "cache" / "extract").rglob("*") if p.is_file()] == []


def test_gunzip_names_the_content_after_the_file(tmp_path):
    packed = tmp_path / "C_A_398_2022_H6.txt.gz"
    packed.write_bytes(gzip.compress(b"a\tb\n1\t2\n"))
    out = archive.gunzip_to(packed, tmp_path / "out")
    assert out.name == "C_A_398_2022_H6.txt" and out.read_bytes() == b"a\tb\n1\t2\n"
