"""A corpus of bad source files for every reader, each with what tradewatch must say about it.

Each Case names its reader, a file name and its bytes, and one expectation:
  'error'       the whole file is refused with a one-line error naming the file (and `line` when given) and
                holding `text`; the warehouse is unchanged;
  'quarantine'  `count` rows go to quarantine with a reason holding `text`, the first at `line`, and the
                other `rows` canonical rows load;
  'ok'          `rows` canonical rows load, none quarantined (worth `total` in the source currency when given).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

HEADER = ("REPORTER,PARTNER,TRADE_TYPE,PRODUCT_NC,PRODUCT_SITC,PRODUCT_CPA21,PRODUCT_CPA22,PRODUCT_BEC,"
          "PRODUCT_BEC5,PRODUCT_SECTION,FLOW,STAT_PROCEDURE,SUPPL_UNIT,PERIOD,VALUE_EUR,VALUE_NAC,QUANTITY_KG,"
          "QUANTITY_SUPPL_UNIT")


@dataclass(frozen=True)
class Case:
    id: str
    reader: str  # comext, comext-7z, comtrade-csv, comtrade-json, baci, ecb
    name: str
    content: bytes
    expect: str  # error, quarantine, ok
    text: str = ""
    count: int = 0
    rows: int = 0
    line: int | None = None
    total: float | None = None
    env: tuple[tuple[str, str], ...] = ()

    @property
    def source(self) -> str:
        return {"comext-7z": "comext", "comtrade-csv": "comtrade", "comtrade-json": "comtrade"}.get(self.reader, self.reader)


def error(reader, case_id, name, content, text, line=None, env=()) -> Case:
    return Case(case_id, reader, name, content, "error", text=text, line=line, env=env)


def quarantine(reader, case_id, name, content, text, count=1, rows=3, line=5) -> Case:
    return Case(case_id, reader, name, content, "quarantine", text=text, count=count, rows=rows, line=line)


def ok(reader, case_id, name, content, rows=3, total=None) -> Case:
    return Case(case_id, reader, name, content, "ok", rows=rows, total=total)


# --------------------------------------------------------------------------------------------- Comext

def row(reporter="DE", partner="KZ", product="85423190", flow="2", period="202203", value="1000", kg=""):
    return f"{reporter},{partner},E,{product},,,,,,,{flow},,,{period},{value},,{kg},"


GOOD_ROWS = [row(), row(partner="AM"), row(partner="GE", value="250")]


def dat(rows, header=HEADER, newline="\n") -> bytes:
    return (newline.join([header, *rows]) + newline).encode()


def seven_zip(members: dict[str, bytes], password: str | None = None) -> bytes:
    """A 7z archive holding `members`; names may be hostile ('../x', '/abs'): py7zr refuses to write
    those, so the archive is written with placeholder names in a plain header and patched."""
    import struct
    import zlib

    import py7zr

    placeholders = {}
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", password=password) as archive:
        archive.encoded_header_mode = False
        if password:
            archive.set_encrypted_header(True)
        for index, (name, content) in enumerate(members.items()):
            safe = name
            if name.startswith("/") or ".." in name:
                safe = f"{index:0{len(name)}d}"[-len(name):]
                placeholders[safe] = name
            archive.writestr(content, safe)
    data = bytearray(buffer.getvalue())
    if placeholders:
        for safe, hostile in placeholders.items():
            old, new = safe.encode("utf-16-le"), hostile.encode("utf-16-le")
            at = data.find(old, 32)
            data[at:at + len(old)] = new
        next_offset, next_size = struct.unpack_from("<QQ", data, 12)
        header = bytes(data[32 + next_offset: 32 + next_offset + next_size])
        struct.pack_into("<I", data, 28, zlib.crc32(header))
        struct.pack_into("<I", data, 8, zlib.crc32(bytes(data[12:32])))
    return bytes(data)


def _reordered_comext() -> bytes:
    names = HEADER.split(",")
    order = list(reversed(range(len(names))))
    lines = [",".join(names[i] for i in order)]
    for text in GOOD_ROWS:
        fields = text.split(",")
        lines.append(",".join(fields[i] for i in order))
    return ("\n".join(lines) + "\n").encode()


def comext_cases() -> list[Case]:
    c = "comext"
    name = "full_202203.dat"
    good = dat(GOOD_ROWS)
    bad = lambda extra: dat(GOOD_ROWS + [extra])  # noqa: E731
    return [
        ok(c, "comext-good", name, good, total=2250),
        error(c, "comext-empty", name, b"", "empty"),
        error(c, "comext-only-whitespace", name, b"\n\n  \n", "empty"),
        error(c, "comext-missing-header", name, dat(GOOD_ROWS, header=GOOD_ROWS[0]), "not a recognised"),
        error(c, "comext-wrong-header", name, dat(GOOD_ROWS, header=HEADER.replace("VALUE_EUR", "VALUE_USD")),
              "VALUE_EUR", line=1),
        error(c, "comext-extra-column", name, dat([r + ",x" for r in GOOD_ROWS], header=HEADER + ",EXTRA"), "EXTRA",
              line=1),
        error(c, "comext-column-twice", name, dat([r + ",1" for r in GOOD_ROWS], header=HEADER + ",VALUE_EUR"),
              "VALUE_EUR", line=1),
        ok(c, "comext-reordered-columns", name, _reordered_comext(), total=2250),
        quarantine(c, "comext-non-numeric-value", name, bad(row(partner="TR", value="abc")), "VALUE_EUR"),
        quarantine(c, "comext-negative-value", name, bad(row(partner="TR", value="-5")), "non-negative"),
        quarantine(c, "comext-nan-value", name, bad(row(partner="TR", value="NaN")), "non-negative"),
        quarantine(c, "comext-overflow-value", name, bad(row(partner="TR", value="1e999")), "non-negative"),
        quarantine(c, "comext-negative-kg", name, bad(row(partner="TR", kg="-1")), "QUANTITY_KG"),
        quarantine(c, "comext-month-13", name, bad(row(partner="TR", period="202213")), "PERIOD"),
        quarantine(c, "comext-month-00", name, bad(row(partner="TR", period="202200")), "PERIOD"),
        quarantine(c, "comext-unknown-partner", name, bad(row(partner="ZZ")), "unknown PARTNER code ZZ"),
        quarantine(c, "comext-unknown-reporter", name, bad(row(reporter="ZZ")), "unknown REPORTER code ZZ"),
        quarantine(c, "comext-unknown-product", name, bad(row(product="85A")), "PRODUCT_NC"),
        quarantine(c, "comext-flow-9", name, bad(row(partner="TR", flow="9")), "FLOW"),
        error(c, "comext-duplicate-key", name, bad(GOOD_ROWS[0]), "duplicate row", line=5),
        ok(c, "comext-crlf", name, dat(GOOD_ROWS, newline="\r\n"), total=2250),
        ok(c, "comext-cr-only", name, dat(GOOD_ROWS, newline="\r"), total=2250),
        ok(c, "comext-bom", name, b"\xef\xbb\xbf" + good, total=2250),
        ok(c, "comext-no-final-newline", name, good.rstrip(b"\n"), total=2250),
        error(c, "comext-latin1", name, bad(row(partner="TR")).replace(b"DE,TR", "DÉ,TR".encode("latin-1")),
              "not UTF-8", line=5),
        error(c, "comext-utf16", name, good.decode().encode("utf-16"), "binary"),
        error(c, "comext-nul-bytes", name, good + b"\x00\x00\x00", "binary"),
        error(c, "comext-unterminated-quote", name, dat([GOOD_ROWS[0], 'DE,"AM,E,85423190,,,,,,,2,,,202203,1,,,',
                                                          GOOD_ROWS[2]]), "quote", line=3),
        error(c, "comext-truncated-last-line", name, good + b"DE,TR,E,85423190,,,,,,,2,,,2022", "truncated", line=5),
        error(c, "comext-html-error-page", name,
              b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>", "HTML"),
        error(c, "comext-json-error-body", name, b'{"error": "quota exceeded", "statusCode": 429}', "JSON"),
        error(c, "comext-every-row-bad", name, dat([row(partner="ZZ"), row(partner="YY")]), "no row could be read",
              line=2),
    ]


def seven_zip_cases() -> list[Case]:
    c = "comext-7z"
    name = "full_v2_202203.7z"
    good = dat(GOOD_ROWS)
    valid = seven_zip({"full_202203.dat": good})
    return [
        ok(c, "7z-good", name, valid, total=2250),
        ok(c, "7z-member-in-folder", name, seven_zip({"data/full_202203.dat": good}), total=2250),
        error(c, "7z-truncated", name, valid[: len(valid) // 2], "truncated"),
        error(c, "7z-cut-in-header", name, valid[:40], "truncated"),
        error(c, "7z-magic-only", name, valid[:6], "truncated"),
        error(c, "7z-garbage-after-magic", name, valid[:6] + bytes(range(256)) * 3, "archive"),
        error(c, "7z-not-7z-at-all", name, b"PK\x03\x04 this is a zip, not 7z" * 10, "not a recognised"),
        error(c, "7z-several-members", name, seven_zip({"full_202203.dat": good, "extra.dat": good}),
              "expected exactly one"),
        error(c, "7z-no-member", name, seven_zip({}), "expected exactly one"),
        error(c, "7z-traversal-member", name, seven_zip({"../evil.dat": good}), "leaves the extraction"),
        error(c, "7z-absolute-member", name, seven_zip({"/tmp/evil.dat": good}), "leaves the extraction"),
        error(c, "7z-encrypted", name, seven_zip({"full_202203.dat": good}, password="secret"), "encrypted"),
        error(c, "7z-bomb", name, seven_zip({"full_202203.dat": good + b"0" * 3_000_000}), "limit",
              env=(("TRADEWATCH_MAX_EXPANDED_BYTES", "1000000"),)),
        error(c, "7z-member-html", name, seven_zip({"full_202203.dat": b"<html>maintenance</html>"}), "HTML"),
        error(c, "7z-member-empty", name, seven_zip({"full_202203.dat": b""}), "empty"),
        error(c, "7z-member-latin1", name,
              seven_zip({"full_202203.dat": good.replace(b"DE,GE", "DÉ,GE".encode("latin-1"))}), "not UTF-8", line=4),
        error(c, "7z-member-not-comext", name, seven_zip({"full_202203.dat": b"a,b,c\n1,2,3\n"}), "REPORTER",
              line=1),
        quarantine(c, "7z-member-bad-row", name, seven_zip({"full_202203.dat": dat(GOOD_ROWS + [row(partner="ZZ")])}),
                   "unknown PARTNER code ZZ"),
    ]


# ------------------------------------------------------------------------------------ Comtrade CSV

CT_HEADER = ("freqCode,refYear,refMonth,period,reporterCode,reporterDesc,flowCode,partnerCode,partner2Code,cmdCode,"
             "aggrLevel,customsCode,motCode,qtyUnitAbbr,qty,netWgt,primaryValue")


def ct_row(partner="643", cmd="854231", period="202203", value="1000", flow="X", reporter="398", kg="10",
           desc="Kazakhstan"):
    return f"M,{period[:4]},{period[4:]},{period},{reporter},{desc},{flow},{partner},0,{cmd},6,C00,0,kg,{kg},{kg},{value}"


CT_GOOD = [ct_row(), ct_row(partner="51"), ct_row(partner="417", value="250")]


def ct_csv(rows, header=CT_HEADER, newline="\n") -> bytes:
    return (newline.join([header, *rows]) + newline).encode()


def _reordered_comtrade() -> bytes:
    names = CT_HEADER.split(",")
    order = list(reversed(range(len(names))))
    lines = [",".join(names[i] for i in order)] + [",".join(r.split(",")[i] for i in order) for r in CT_GOOD]
    return ("\n".join(lines) + "\n").encode()


def comtrade_csv_cases() -> list[Case]:
    c = "comtrade-csv"
    name = "comtrade_KAZ_202203.csv"
    good = ct_csv(CT_GOOD)
    bad = lambda extra: ct_csv(CT_GOOD + [extra])  # noqa: E731
    return [
        ok(c, "ct-csv-good", name, good, total=2250),
        error(c, "ct-csv-empty", name, b"", "empty"),
        ok(c, "ct-csv-header-only", name, ct_csv([]), rows=0),
        error(c, "ct-csv-missing-header", name, ct_csv(CT_GOOD[1:], header=CT_GOOD[0]), "not a recognised"),
        error(c, "ct-csv-wrong-header", name, ct_csv(CT_GOOD, header=CT_HEADER.replace("primaryValue", "tradeValue")),
              "not a recognised"),
        error(c, "ct-csv-missing-flow-column", name,
              ct_csv([r.replace(",X,", ",") for r in CT_GOOD], header=CT_HEADER.replace(",flowCode", "")),
              "missing column flowCode", line=1),
        ok(c, "ct-csv-extra-columns", name,
           ct_csv([r + ",,1.0,True" for r in CT_GOOD], header=CT_HEADER + ",cifvalue,fobvalue,isReported"), total=2250),
        ok(c, "ct-csv-reordered-columns", name, _reordered_comtrade(), total=2250),
        quarantine(c, "ct-csv-non-numeric-value", name, bad(ct_row(partner="268", value="n/a")), "primaryValue"),
        quarantine(c, "ct-csv-negative-value", name, bad(ct_row(partner="268", value="-5")), "non-negative"),
        quarantine(c, "ct-csv-nan-value", name, bad(ct_row(partner="268", value="NaN")), "non-negative"),
        quarantine(c, "ct-csv-overflow-value", name, bad(ct_row(partner="268", value="1e999")), "non-negative"),
        quarantine(c, "ct-csv-negative-weight", name, bad(ct_row(partner="268", kg="-3")), "netWgt"),
        quarantine(c, "ct-csv-month-13", name, bad(ct_row(partner="268", period="202213")), "period 202213"),
        quarantine(c, "ct-csv-unknown-partner", name, bad(ct_row(partner="999")), "unknown partner code 999"),
        quarantine(c, "ct-csv-unknown-reporter", name, bad(ct_row(reporter="999")), "unknown reporter code 999"),
        quarantine(c, "ct-csv-unknown-product", name, bad(ct_row(partner="268", cmd="85AB31")), "cmdCode"),
        quarantine(c, "ct-csv-total-product", name, bad(ct_row(partner="268", cmd="TOTAL")), "TOTAL"),
        quarantine(c, "ct-csv-unknown-flow", name, bad(ct_row(partner="268", flow="Q")), "flowCode"),
        quarantine(c, "ct-csv-duplicate-row", name, bad(CT_GOOD[0]), "repeats an earlier line"),
        ok(c, "ct-csv-crlf", name, ct_csv(CT_GOOD, newline="\r\n"), total=2250),
        ok(c, "ct-csv-bom", name, b"\xef\xbb\xbf" + good, total=2250),
        error(c, "ct-csv-latin1", name, ct_csv(CT_GOOD[:2] + [ct_row(partner="417", desc="Côte")]).replace(
            "Côte".encode(), "Côte".encode("latin-1")), "not UTF-8", line=4),
        error(c, "ct-csv-unterminated-quote", name, ct_csv([CT_GOOD[0], ct_row(partner="51", desc='"Kazakh'),
                                                            CT_GOOD[2]]), "quote", line=3),
        error(c, "ct-csv-truncated-last-line", name, good + b"M,2022,03,202203,398,Kaz", "truncated", line=5),
        error(c, "ct-csv-html", name, b"<html><head><title>502 Bad Gateway</title></head></html>", "HTML"),
        error(c, "ct-csv-every-row-bad", name, ct_csv([ct_row(partner="999"), ct_row(partner="998")]),
              "no row could be read", line=2),
        error(c, "ct-csv-semicolons-decimal-commas", name,
              ct_csv([r.replace(",", ";").replace(";1000", ";1000,5").replace(";250", ";250,5") for r in CT_GOOD],
                     header=CT_HEADER.replace(",", ";")), "no row could be read"),
    ]


# ----------------------------------------------------------------------------------- Comtrade JSON

def ct_record(partner=643, cmd="854231", period="202203", value=1000.0, flow="X", reporter=398, **extra) -> dict:
    record = {"typeCode": "C", "freqCode": "M", "period": period, "reporterCode": reporter, "flowCode": flow,
              "partnerCode": partner, "partner2Code": 0, "cmdCode": cmd, "aggrLevel": len(str(cmd)),
              "customsCode": "C00", "motCode": 0, "netWgt": 10.0, "primaryValue": value}
    record.update(extra)
    return record


CT_RECORDS = [ct_record(), ct_record(partner=51), ct_record(partner=417, value=250.0)]


def ct_json(records, **top) -> bytes:
    return json.dumps({"elapsedTime": "0.12 secs", "count": len(records), "data": records, "error": "", **top}).encode()


def comtrade_json_cases() -> list[Case]:
    c = "comtrade-json"
    name = "KAZ_202203_comtrade.json"
    bad = lambda extra: ct_json(CT_RECORDS + [extra])  # noqa: E731
    return [
        ok(c, "ct-json-good", name, ct_json(CT_RECORDS), total=2250),
        ok(c, "ct-json-bare-list", name, json.dumps(CT_RECORDS).encode(), total=2250),
        ok(c, "ct-json-no-records", name, ct_json([]), rows=0),
        ok(c, "ct-json-bom", name, b"\xef\xbb\xbf" + ct_json(CT_RECORDS), total=2250),
        error(c, "ct-json-401-body", name,
              b'{"statusCode": 401, "message": "Access denied due to invalid subscription key."}', "JSON"),
        error(c, "ct-json-error-answer", name,
              b'{"elapsedTime": "0.01 secs", "count": 0, "data": null, "error": "Invalid period: 202213"}',
              "answered with an error"),
        error(c, "ct-json-truncated", name, ct_json(CT_RECORDS)[:150], "not valid JSON"),
        error(c, "ct-json-data-not-a-list", name, b'{"elapsedTime": "1", "count": 1, "data": {"cmdCode": "8542"}}',
              "data"),
        error(c, "ct-json-records-not-objects", name, b'{"elapsedTime": "1", "count": 2, "data": [1, 2]}', "missing"),
        error(c, "ct-json-latin1", name, ct_json([ct_record(reporterDesc="Côte")]).replace(
            b"\\u00f4", "ô".encode("latin-1")), "not UTF-8", line=1),
        quarantine(c, "ct-json-text-value", name, bad(ct_record(partner=268, value="abc")), "primaryValue", line=4),
        quarantine(c, "ct-json-nan-value", name, bad(ct_record(partner=268, value="NaN")), "non-negative", line=4),
        quarantine(c, "ct-json-negative-value", name, bad(ct_record(partner=268, value=-1)), "non-negative", line=4),
        quarantine(c, "ct-json-overflow-value", name, bad(ct_record(partner=268, value="1e999")), "non-negative",
                   line=4),
        quarantine(c, "ct-json-object-value", name, bad(ct_record(partner=268, value={"a": 1})), "primaryValue", line=4),
        quarantine(c, "ct-json-month-13", name, bad(ct_record(partner=268, period="202213")), "period", line=4),
        quarantine(c, "ct-json-unknown-partner", name, bad(ct_record(partner=999)), "unknown partner code 999", line=4),
        quarantine(c, "ct-json-duplicate-record", name, bad(CT_RECORDS[0]), "repeats an earlier record", line=4),
        error(c, "ct-json-every-record-bad", name, ct_json([ct_record(partner=999)]), "no row could be read", line=1),
    ]


# -------------------------------------------------------------------------------------------- BACI

BACI_HEADER = "t,i,j,k,v,q"
BACI_GOOD = ["2021,276,643,854231,1.0,0.5", "2021,276,398,854231,1.0,0.5", "2021,276,417,854231,0.25,"]


def baci(rows, header=BACI_HEADER, newline="\n") -> bytes:
    return (newline.join([header, *rows]) + newline).encode()


def baci_cases() -> list[Case]:
    c = "baci"
    name = "BACI_HS17_Y2021_V202401.csv"
    good = baci(BACI_GOOD)
    bad = lambda extra: baci(BACI_GOOD + [extra])  # noqa: E731
    return [
        ok(c, "baci-good", name, good, total=2250),
        ok(c, "baci-quoted-header", name, baci(BACI_GOOD, header='"t","i","j","k","v","q"'), total=2250),
        error(c, "baci-empty", name, b"", "empty"),
        ok(c, "baci-header-only", name, baci([]), rows=0),
        error(c, "baci-missing-header", name, baci(BACI_GOOD[1:], header=BACI_GOOD[0]), "not a recognised"),
        error(c, "baci-wrong-header", name, baci(BACI_GOOD, header="t,i,j,k,v,x"), "not a recognised"),
        error(c, "baci-extra-column", name, baci([r + ",1" for r in BACI_GOOD], header="t,i,j,k,v,q,x"),
              "not a recognised"),
        error(c, "baci-reordered-columns", name, baci(BACI_GOOD, header="i,t,j,k,v,q"), "not a recognised"),
        quarantine(c, "baci-non-numeric-value", name, bad("2021,276,268,854231,abc,1"), "v \"abc\" is not a number"),
        quarantine(c, "baci-negative-value", name, bad("2021,276,268,854231,-1,1"), "non-negative"),
        quarantine(c, "baci-nan-value", name, bad("2021,276,268,854231,NaN,1"), "non-negative"),
        quarantine(c, "baci-overflow-value", name, bad("2021,276,268,854231,1e306,1"), "non-negative"),
        quarantine(c, "baci-negative-quantity", name, bad("2021,276,268,854231,1,-1"), "q -1"),
        quarantine(c, "baci-impossible-year", name, bad("20,276,268,854231,1,1"), "is not a year"),
        quarantine(c, "baci-unknown-exporter", name, bad("2021,999,643,854231,1,1"), "unknown exporter code i 999"),
        quarantine(c, "baci-unknown-importer", name, bad("2021,276,999,854231,1,1"), "unknown importer code j 999"),
        quarantine(c, "baci-unknown-product", name, bad("2021,276,268,85AB31,1,1"), "HS6"),
        error(c, "baci-duplicate-key", name, bad(BACI_GOOD[0]), "duplicate key"),
        ok(c, "baci-crlf", name, baci(BACI_GOOD, newline="\r\n"), total=2250),
        ok(c, "baci-bom", name, b"\xef\xbb\xbf" + good, total=2250),
        error(c, "baci-latin1", name, bad("2021,276,268,854231,1,é").replace("é".encode(), b"\xe9"), "not UTF-8",
              line=5),
        error(c, "baci-unterminated-quote", name, baci([BACI_GOOD[0], '2021,276,"398,854231,1,1', BACI_GOOD[2]]),
              "quote", line=3),
        error(c, "baci-truncated-last-line", name, good + b"2021,276,268,85", "truncated", line=5),
        error(c, "baci-every-row-bad", name, baci(["2021,999,643,854231,1,1"]), "no row could be read", line=2),
    ]


# --------------------------------------------------------------------------------------------- ECB

ECB_HEADER = "KEY,FREQ,CURRENCY,CURRENCY_DENOM,EXR_TYPE,EXR_SUFFIX,TIME_PERIOD,OBS_VALUE,OBS_STATUS,TITLE"


def ecb_row(period="2022-01", value="1.1314", key="EXR.M.USD.EUR.SP00.A") -> str:
    return f'{key},M,USD,EUR,SP00,A,{period},{value},A,"US dollar/Euro"'


ECB_GOOD = [ecb_row(), ecb_row("2022-02", "1.1342")]


def ecb(rows, header=ECB_HEADER, newline="\n") -> bytes:
    return (newline.join([header, *rows]) + newline).encode()


def ecb_cases() -> list[Case]:
    c = "ecb"
    name = "EXR_M.USD.EUR.SP00.A.csv"
    bad = lambda extra: ecb(ECB_GOOD + [extra])  # noqa: E731
    q = lambda case_id, extra, text: quarantine(c, case_id, name, bad(extra), text, rows=2, line=4)  # noqa: E731
    return [
        ok(c, "ecb-good", name, ecb(ECB_GOOD), rows=2),
        ok(c, "ecb-reordered-columns", name, b"OBS_VALUE,TIME_PERIOD\n1.1314,2022-01\n1.1342,2022-02\n", rows=2),
        ok(c, "ecb-crlf", name, ecb(ECB_GOOD, newline="\r\n"), rows=2),
        ok(c, "ecb-bom", name, b"\xef\xbb\xbf" + ecb(ECB_GOOD), rows=2),
        error(c, "ecb-empty", name, b"", "empty"),
        error(c, "ecb-header-only", name, ecb([]), "no observations"),
        error(c, "ecb-missing-column", name, ecb(ECB_GOOD, header=ECB_HEADER.replace("OBS_VALUE", "VALUE")),
              "missing column OBS_VALUE", line=1),
        error(c, "ecb-wrong-series", name, bad(ecb_row("2022-03", key="EXR.M.GBP.EUR.SP00.A")), "GBP", line=4),
        q("ecb-month-13", ecb_row("2022-13"), "TIME_PERIOD"),
        q("ecb-negative-rate", ecb_row("2022-03", "-1.1"), "positive rate"),
        q("ecb-nan-rate", ecb_row("2022-03", "NaN"), "positive rate"),
        q("ecb-overflow-rate", ecb_row("2022-03", "1e999"), "positive rate"),
        q("ecb-text-rate", ecb_row("2022-03", "n/a"), "not a number"),
        q("ecb-missing-rate", ecb_row("2022-03", ""), "OBS_VALUE empty"),
        error(c, "ecb-duplicate-month", name, bad(ECB_GOOD[0]), "appears twice", line=4),
        error(c, "ecb-daily-series", name, ecb([ecb_row("2022-01-03"), ecb_row("2022-01-04")]), "no observation",
              line=2),
        error(c, "ecb-latin1", name, bad(ecb_row("2022-03").replace("US dollar", "US dóllar")).replace(
            "dóllar".encode(), "dóllar".encode("latin-1")), "not UTF-8", line=4),
        error(c, "ecb-unterminated-quote", name, ecb([ECB_GOOD[0], ecb_row("2022-02").rstrip('"'), ecb_row("2022-03")]),
              "quote", line=3),
        error(c, "ecb-truncated-last-line", name, ecb(ECB_GOOD) + b"EXR.M.USD.EUR.SP00.A,M,USD,EUR,SP00,A,2022-0",
              "truncated", line=4),
        error(c, "ecb-html", name, b"<!DOCTYPE html><html><body>Service temporarily unavailable</body></html>",
              "HTML"),
        error(c, "ecb-json-error-body", name, b'{"status": 404, "message": "No results found"}', "JSON"),
    ]


def all_cases() -> list[Case]:
    return comext_cases() + seven_zip_cases() + comtrade_csv_cases() + comtrade_json_cases() + baci_cases() + ecb_cases()
