"""A corpus of bad inputs, each with what tradewatch must say about it: source files for every reader
(Case, below), --config files (ConfigCase), changed ranker folders (ModelCase) and review options
(ReviewCase), the last three described where they are defined.

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
import re
from dataclasses import dataclass

HEADER = ("REPORTER,PARTNER,TRADE_TYPE,PRODUCT_NC,PRODUCT_SITC,PRODUCT_CPA21,PRODUCT_CPA22,PRODUCT_BEC,"
          "PRODUCT_BEC5,PRODUCT_SECTION,FLOW,STAT_PROCEDURE,SUPPL_UNIT,PERIOD,VALUE_EUR,VALUE_NAC,QUANTITY_KG,"
          "QUANTITY_SUPPL_UNIT")


@dataclass(frozen=True)
class Case:
    id: str
    reader: str  # comext, comext-7z, comtrade-csv, comtrade-json, baci, ecb, comext-sdmx
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
        return {"comext-7z": "comext", "comtrade-csv": "comtrade", "comtrade-json": "comtrade",
                "comext-sdmx": "comext_sdmx"}.get(self.reader, self.reader)

    @property
    def records(self) -> int | None:
        """The records an accepted file holds (its non-empty lines after the header; a JSON answer's
        records), each of which must be stored, quarantined or counted as not available; None for a 7z."""
        if self.reader == "comext-7z":
            return None
        text = self.content.decode("utf-8-sig")
        if self.reader == "comtrade-json":
            data = json.loads(text)
            return len(data["data"] if isinstance(data, dict) else data)
        return len([line for line in re.split(r"\r\n|\r|\n", text) if line.strip()]) - 1


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




# ---------------------------------------------------------------------------------- Eurostat SDMX-CSV

# The header of Eurostat's SDMX-CSV download of DS-045409, as in ../shared/data/comext_sdmx/ (lower-case
# dimension names, LAST UPDATE with a space).
SDMX_HEADER = "DATAFLOW,LAST UPDATE,freq,reporter,partner,product,flow,indicators,TIME_PERIOD,OBS_VALUE,OBS_FLAG"
SDMX_PREFIX = "ESTAT:DS-045409(1.0),13/01/23 11:00:00"


def sdmx_row(reporter="AT", partner="KZ", product="TOTAL", flow="2", period="2022-03", value="1000", flag="",
             freq="M", indicator="VALUE_IN_EUROS", dataflow="ESTAT:DS-045409(1.0)") -> str:
    return f"{dataflow},13/01/23 11:00:00,{freq},{reporter},{partner},{product},{flow},{indicator},{period},{value},{flag}"


SDMX_GOOD = [sdmx_row(), sdmx_row(partner="RU"), sdmx_row(partner="GE", value="250")]


def sdmx(rows, header=SDMX_HEADER, newline="\n") -> bytes:
    return (newline.join([header, *rows]) + newline).encode()


def _reordered_sdmx() -> bytes:
    names = SDMX_HEADER.split(",")
    order = list(reversed(range(len(names))))
    lines = [",".join(names[i] for i in order)] + [",".join(r.split(",")[i] for i in order) for r in SDMX_GOOD]
    return ("\n".join(lines) + "\n").encode()


def sdmx_cases() -> list[Case]:
    c = "comext-sdmx"
    name = "ds-045409_2022-03.csv"
    good = sdmx(SDMX_GOOD)
    bad = lambda extra: sdmx(SDMX_GOOD + [extra])  # noqa: E731
    mixed = [sdmx_row(product=code, value=str(value)) for code, value in
             (("TOTAL", 1000), ("27", 400), ("2710", 300), ("271019", 200), ("85423190", 50))]
    short_header = SDMX_HEADER.replace(",LAST UPDATE", "").replace(",OBS_FLAG", "")
    return [
        ok(c, "sdmx-good", name, good, total=2250),
        ok(c, "sdmx-aggregates-and-cn8", name, sdmx(mixed), rows=5, total=1950),
        ok(c, "sdmx-annual", name, sdmx([sdmx_row(freq="A", period="2021"), sdmx_row(freq="A", period="2022")]),
           rows=2, total=2000),
        ok(c, "sdmx-reordered-columns", name, _reordered_sdmx(), total=2250),
        ok(c, "sdmx-no-optional-columns", name,
           sdmx([",".join(r.split(",")[i] for i in (0, 2, 3, 4, 5, 6, 7, 8, 9)) for r in SDMX_GOOD],
                header=short_header), total=2250),
        ok(c, "sdmx-quoted-header", name, sdmx(SDMX_GOOD, header=",".join(f'"{h}"' for h in SDMX_HEADER.split(","))),
           total=2250),
        ok(c, "sdmx-crlf", name, sdmx(SDMX_GOOD, newline="\r\n"), total=2250),
        ok(c, "sdmx-cr-only", name, sdmx(SDMX_GOOD, newline="\r"), total=2250),
        ok(c, "sdmx-bom", name, b"\xef\xbb\xbf" + good, total=2250),
        ok(c, "sdmx-bom-crlf", name, b"\xef\xbb\xbf" + sdmx(SDMX_GOOD, newline="\r\n"), total=2250),
        ok(c, "sdmx-no-final-newline", name, good.rstrip(b"\n"), total=2250),
        ok(c, "sdmx-not-available-colon", name, bad(sdmx_row(partner="AM", value=": c")), total=2250),
        ok(c, "sdmx-not-available-empty", name, bad(sdmx_row(partner="AM", value="", flag="c")), total=2250),
        error(c, "sdmx-empty", name, b"", "empty"),
        error(c, "sdmx-only-whitespace", name, b"\n \n\n", "empty"),
        error(c, "sdmx-header-only", name, sdmx([]), "no observations"),
        error(c, "sdmx-missing-header", name, sdmx(SDMX_GOOD[1:], header=SDMX_GOOD[0]), "not a recognised"),
        error(c, "sdmx-missing-obs-value", name,
              sdmx([r.rsplit(",", 2)[0] + "," + r.rsplit(",", 1)[1] for r in SDMX_GOOD],
                   header=SDMX_HEADER.replace(",OBS_VALUE", "")), "missing column(s) OBS_VALUE", line=1),
        error(c, "sdmx-missing-time-period", name, sdmx([r.replace(",2022-03", "") for r in SDMX_GOOD],
                                                         header=SDMX_HEADER.replace(",TIME_PERIOD", "")),
              "missing column(s) TIME_PERIOD", line=1),
        ok(c, "sdmx-semicolons", name, sdmx([r.replace(",", ";") for r in SDMX_GOOD], header=SDMX_HEADER.replace(",", ";")),
           total=2250),
        error(c, "sdmx-missing-flow-column", name,
              sdmx([r.replace(",2,VALUE", ",VALUE") for r in SDMX_GOOD], header=SDMX_HEADER.replace(",flow", "")),
              "missing column(s) FLOW", line=1),
        error(c, "sdmx-missing-indicators-column", name,
              sdmx([r.replace(",VALUE_IN_EUROS", "") for r in SDMX_GOOD], header=SDMX_HEADER.replace(",indicators", "")),
              "missing column(s) INDICATORS", line=1),
        error(c, "sdmx-extra-column", name, sdmx([r + ",F" for r in SDMX_GOOD], header=SDMX_HEADER + ",CONF_STATUS"),
              "unexpected column(s) CONF_STATUS", line=1),
        error(c, "sdmx-column-twice", name, sdmx([r + ",1" for r in SDMX_GOOD], header=SDMX_HEADER + ",obs_value"),
              "OBS_VALUE appears twice", line=1),
        error(c, "sdmx-other-dataflow", name, bad(sdmx_row(partner="AM", dataflow="ESTAT:DS-059341(1.0)")),
              "DS-059341", line=5),
        error(c, "sdmx-quantity-indicator", name, bad(sdmx_row(partner="AM", indicator="QUANTITY_IN_100KG")),
              "expected VALUE_IN_EUROS", line=5),
        error(c, "sdmx-duplicate-key", name, bad(SDMX_GOOD[0].replace(",1000,", ",7,")), "appears twice", line=5),
        error(c, "sdmx-duplicate-greece-el", name, sdmx(SDMX_GOOD + [sdmx_row(reporter="GR"), sdmx_row(reporter="EL")]),
              "appears twice", line=6),
        quarantine(c, "sdmx-month-13", name, bad(sdmx_row(partner="AM", period="2022-13")), "TIME_PERIOD \"2022-13\""),
        quarantine(c, "sdmx-month-00", name, bad(sdmx_row(partner="AM", period="2022-00")), "TIME_PERIOD"),
        quarantine(c, "sdmx-period-compact", name, bad(sdmx_row(partner="AM", period="2022M03")), "TIME_PERIOD"),
        quarantine(c, "sdmx-period-quarter", name, bad(sdmx_row(partner="AM", period="2022-Q1")), "TIME_PERIOD"),
        quarantine(c, "sdmx-period-empty", name, bad(sdmx_row(partner="AM", period="")), "TIME_PERIOD empty"),
        quarantine(c, "sdmx-period-year-for-month", name, bad(sdmx_row(partner="AM", period="2022")), "YYYY-MM"),
        quarantine(c, "sdmx-period-month-for-year", name, bad(sdmx_row(partner="AM", freq="A", period="2022-03")),
                   "is not a year"),
        quarantine(c, "sdmx-text-value", name, bad(sdmx_row(partner="AM", value="abc")), "is not a number"),
        quarantine(c, "sdmx-negative-value", name, bad(sdmx_row(partner="AM", value="-5")), "non-negative"),
        quarantine(c, "sdmx-nan-value", name, bad(sdmx_row(partner="AM", value="NaN")), "non-negative"),
        quarantine(c, "sdmx-overflow-value", name, bad(sdmx_row(partner="AM", value="1e999")), "non-negative"),
        quarantine(c, "sdmx-thousands-separator", name, bad(sdmx_row(partner="AM", value='"1,234"')),
                   "is not a number"),
        quarantine(c, "sdmx-aggregate-reporter", name, bad(sdmx_row(reporter="EU27_2020")), "reporter \"EU27_2020\""),
        quarantine(c, "sdmx-aggregate-partner", name, bad(sdmx_row(partner="EXT_EU27_2020")),
                   "partner \"EXT_EU27_2020\""),
        quarantine(c, "sdmx-unknown-product", name, bad(sdmx_row(partner="AM", product="ABC")), "product \"ABC\""),
        quarantine(c, "sdmx-flow-3", name, bad(sdmx_row(partner="AM", flow="3")), "flow \"3\""),
        quarantine(c, "sdmx-quarterly-freq", name, bad(sdmx_row(partner="AM", freq="Q", period="2022-Q1")), "freq \"Q\""),
        quarantine(c, "sdmx-cut-after-reporter", name, bad(SDMX_PREFIX + ",M,AT"), "is empty"),
        error(c, "sdmx-latin1", name, bad(sdmx_row(partner="AM", flag="é")).replace("é".encode(), b"\xe9"),
              "not UTF-8", line=5),
        error(c, "sdmx-utf16", name, good.decode().encode("utf-16"), "binary"),
        error(c, "sdmx-nul-bytes", name, good + b"\x00\x00", "binary"),
        error(c, "sdmx-unterminated-quote", name, sdmx([SDMX_GOOD[0], sdmx_row(partner='"RU'), SDMX_GOOD[2]]),
              "quote", line=3),
        error(c, "sdmx-truncated-last-line", name, good[:-30], "truncated", line=4),
        error(c, "sdmx-html-error-page", name, b"<!DOCTYPE html><html><body>Service Unavailable</body></html>", "HTML"),
        error(c, "sdmx-json-error-body", name, b'{"error": {"status": 413, "label": "too many results"}}', "JSON"),
        error(c, "sdmx-every-row-bad", name, sdmx([sdmx_row(reporter="ZZ"), sdmx_row(value="x")]),
              "no row could be read", line=2),
    ]


def all_cases() -> list[Case]:
    return (comext_cases() + seven_zip_cases() + comtrade_csv_cases() + comtrade_json_cases() + baci_cases()
            + ecb_cases() + sdmx_cases())


# ----------------------------------------------------------------------------------- configuration files

@dataclass(frozen=True)
class ConfigCase:
    """A --config file for `detect` (DetectParams.from_toml) or `pipeline run` (pipeline_config.load_config):
    'error' is one line naming the file (`where` 'file', or '--config FILE' for a path that is no file),
    the `key` when there is one, and `text`; 'ok' is read, with `check` (key, value) when given."""

    id: str
    target: str  # detect, pipeline
    content: bytes | None  # None: the path is a folder; b"<missing>": no such file
    expect: str
    text: str = ""
    key: str = ""
    line: int | None = None
    check: tuple[str, object] | None = None


MISSING = b"<missing>"


def _config(target: str):
    def error_case(case_id, content, text, key="", line=None):
        return ConfigCase(f"{target}-{case_id}", target, content, "error", text=text, key=key, line=line)

    def ok_case(case_id, content, check=None):
        return ConfigCase(f"{target}-{case_id}", target, content, "ok", check=check)
    return error_case, ok_case


def _common_config_cases(target: str, good: bytes, expected: str) -> list[ConfigCase]:
    """The cases every configuration file shares: what makes a file unreadable as TOML at all."""
    e, o = _config(target)
    return [
        o("empty", b""),
        o("comments-only", b"# nothing to change\n\n"),
        o("bom", b"\xef\xbb\xbf" + good),
        o("bom-crlf", b"\xef\xbb\xbf" + good.replace(b"\n", b"\r\n")),
        e("not-toml", b"this is not toml\n", "not valid TOML"),
        e("json", b'{"event": "2022-03"}\n', "not valid TOML"),
        e("yaml", b"event: 2022-03\n", "not valid TOML"),
        e("duplicate-key", good + good, "not valid TOML"),
        e("latin1", b"# caf\xe9\n" + good, "not UTF-8 text", line=1),
        e("utf16", good.decode().encode("utf-16"), "not UTF-8 text", line=1),
        e("nul-byte", good.rstrip(b"\n") + b"\x00\n", "not valid TOML"),
        e("escape-in-bare-key", b"\x1b[2J = 1\n", "not valid TOML"),
        e("huge", b"# " + b"x" * 1_200_000 + b"\n", "larger than 1,000,000 bytes"),
        e("deep-nesting", b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n", "nested too deeply"),
        e("folder", None, f"is a folder; expected {expected}"),
        e("missing", MISSING, f"no such file; expected {expected}"),
    ]


def detect_config_cases() -> list[ConfigCase]:
    e, o = _config("detect")
    good = b'event = "2022-03"\nbaseline_months = 12\n'
    return _common_config_cases("detect", good, "a TOML file of detection parameters") + [
        o("good", good, check=("baseline_months", 12)),
        o("detect-table", b'[detect]\nrecent_months = 6\n', check=("recent_months", 6)),
        o("latest-as-of", b'as_of = "latest"\n', check=("as_of", None)),
        e("unknown-key", b'evnt = "2022-03"\n', "unknown parameter", key="evnt"),
        e("unknown-key-in-table", b'[detect]\nfdr = 0.1\nbaseline = 12\n', "unknown parameter", key="baseline"),
        e("escape-in-quoted-key", b'"\\u001b[2Jevil" = 1\n', "unknown parameter", key="\\x1b[2Jevil"),
        e("escape-in-value", b'event = "\\u001b]0;pwn\\u0007"\n', "expected a month", key="event"),
        e("text-for-months", b'baseline_months = "twelve"\n', "whole number of months", key="baseline_months"),
        e("float-for-months", b'baseline_months = 12.5\n', "whole number of months", key="baseline_months"),
        e("bool-for-months", b'recent_months = true\n', "whole number of months", key="recent_months"),
        e("text-for-flag", b'eu_rollup = "yes"\n', "expected true or false", key="eu_rollup"),
        e("text-for-number", b'fdr = "0.1"\n', "expected a number", key="fdr"),
        e("table-for-value", b'[fdr]\nvalue = 0.1\n', "expected a number", key="fdr"),
        e("number-for-list", b"targets = 5\n", "list of text values", key="targets"),
        e("text-for-levels", b'product_levels = "6"\n', "whole numbers", key="product_levels"),
        e("fdr-above-one", b"fdr = 1.5\n", "between 0 and 1", key="fdr"),
        e("fdr-zero", b"fdr = 0\n", "between 0 and 1", key="fdr"),
        e("fdr-nan", b"fdr = nan\n", "between 0 and 1", key="fdr"),
        e("fdr-inf", b"fdr = inf\n", "between 0 and 1", key="fdr"),
        e("months-zero", b"baseline_months = 0\n", "from 1 to 240", key="baseline_months"),
        e("months-too-many", b"recent_months = 241\n", "from 1 to 240", key="recent_months"),
        e("band-below-one", b"band = 0.5\n", "ratio ≥ 1", key="band"),
        e("share-negative", b"screen_share = -0.1\n", "from 0 to 1", key="screen_share"),
        e("count-too-large", b"min_null_size = 5000\n", "from 1 to 1000", key="min_null_size"),
        e("levels-without-6", b"product_levels = [4]\n", "[6] or [6, 4]", key="product_levels"),
        e("month-13", b'event = "2022-13"\n', "month 13", key="event"),
        e("month-words", b'event = "March 2022"\n', "YYYY-MM", key="event"),
        e("month-as-date", b"event = 2022-03-01\n", "YYYY-MM", key="event"),
        e("not-a-country", b'targets = ["RUSSIA"]\n', "not a country code", key="targets"),
        e("no-targets", b"targets = []\n", "at least one target", key="targets"),
        e("origin-is-target", b'origins = ["RUS", "DEU"]\n', "both origin and target", key="origins"),
        e("user-list-missing", b'user_lists = ["/nonexistent/tradewatch-list.csv"]\n', "no such file",
          key="user_lists"),
        e("huge-value", b"targets = [" + b'"RUSSIA",' * 20_000 + b"]\n", "not a country code", key="targets"),
    ]


def pipeline_config_cases() -> list[ConfigCase]:
    e, o = _config("pipeline")
    good = b'[scope]\nreporters = ["DE", "FRA"]\n'
    return _common_config_cases("pipeline", good, "a TOML pipeline configuration") + [
        o("good", good, check=("reporters", ("DEU", "FRA"))),
        o("detect-table", b'[detect]\nevent = "2022-04"\nrecent_months = 6\n', check=("event", "2022-04")),
        e("unknown-top-key", b"[sceduel]\ncron = \"0 6 15 * *\"\n", "unknown key", key="sceduel"),
        e("detect-key-at-top", b'event = "2022-03"\n', "unknown key", key="event"),
        e("unknown-source", b"[sources.comtrade]\nenabled = true\n", "unknown source", key="sources.comtrade"),
        e("sources-not-a-table", b"sources = 1\n", "expected a table", key="sources"),
        e("unknown-key-in-source", b"[sources.comext]\nenable = false\n", "unknown key", key="sources.comext.enable"),
        e("text-for-flag", b'[sources.comext]\nenabled = "yes"\n', "true or false", key="sources.comext.enabled"),
        e("no-source-enabled", b"[sources.comext]\nenabled = false\n", "no source is enabled", key="sources"),
        e("not-a-url", b'[sources.comext]\nbase_url = "ftp://x"\n', "http(s) URL", key="sources.comext.base_url"),
        e("start-month-13", b'[sources.comext]\nstart = "2020-13"\n', "month 13", key="sources.comext.start"),
        e("end-before-start", b'[sources.comext]\nstart = "2021-01"\nend = "2020-06"\n', "is before start",
          key="sources.comext.end"),
        e("reporter-not-a-code", b'[scope]\nreporters = ["XX1"]\n', "not a country code", key="scope.reporters"),
        e("reporters-not-a-list", b'[scope]\nreporters = "DE"\n', "expected a list", key="scope.reporters"),
        e("product-not-digits", b'[scope]\nproducts = ["85A"]\n', "not a product code", key="scope.products"),
        e("product-as-number", b"[scope]\nproducts = [8542]\n", "not a product code", key="scope.products"),
        e("cron-words", b'[schedule]\ncron = "every day"\n', "five cron fields", key="schedule.cron"),
        e("cron-number", b"[schedule]\ncron = 5\n", "expected text", key="schedule.cron"),
        e("cron-out-of-range", b'[schedule]\ncron = "0 25 15 * *"\n', "five cron fields", key="schedule.cron"),
        e("timezone-unknown", b'[schedule]\ntimezone = "Mars/Olympus"\n', "IANA time zone", key="schedule.timezone"),
        e("deployment-name-space", b'[schedule]\ndeployment_name = "my run"\n', "letters, digits",
          key="schedule.deployment_name"),
        e("task-runner-unknown", b'[run]\ntask_runner = "gpu"\n', "thread, dask", key="run.task_runner"),
        e("dask-address-without-dask", b'[run]\ndask_address = "tcp://10.0.0.5:8786"\n', "only applies",
          key="run.dask_address"),
        e("artifact-rows-zero", b"[publish]\nartifact_rows = 0\n", "whole number", key="publish.artifact_rows"),
        e("artifact-rows-bool", b"[publish]\nartifact_rows = true\n", "whole number", key="publish.artifact_rows"),
        e("detect-fdr-out-of-range", b"[detect]\nfdr = 2\n", "between 0 and 1", key="detect.fdr"),
        e("detect-unknown-key", b"[detect]\nevnt = \"2022-03\"\n", "unknown parameter", key="detect.evnt"),
        e("detect-not-a-table", b'detect = "2022-03"\n', "expected a table", key="detect"),
    ]


def config_cases() -> list[ConfigCase]:
    return detect_config_cases() + pipeline_config_cases()


# ----------------------------------------------------------------------------------------- model files

@dataclass(frozen=True)
class ModelCase:
    """A change to a copy of the shipped ranker folder (ranker.skops + ranker.json) and what loading it must
    say: 'error' one line naming `file` and holding `text`; 'ok' loads. Payloads that would run code write
    the file `executed` beside the folder: it must never appear."""

    id: str
    change: object  # Callable[[Path], None] on the folder
    expect: str
    text: str = ""
    file: str = "ranker.json"


EXECUTED = "executed"


def _manifest(folder) -> dict:
    return json.loads((folder / "ranker.json").read_text(encoding="utf-8"))


def _write_manifest(folder, manifest) -> None:
    (folder / "ranker.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _rehash(folder) -> None:
    """Make the manifest agree with whatever ranker.skops now holds, as someone who can write the folder can."""
    import hashlib

    manifest = _manifest(folder)
    manifest["sha256"] = hashlib.sha256((folder / "ranker.skops").read_bytes()).hexdigest()
    _write_manifest(folder, manifest)


def _edit(**changes):
    def change(folder):
        manifest = _manifest(folder)
        for key, value in changes.items():
            if value is _DROP:
                manifest.pop(key)
            else:
                manifest[key] = value
        _write_manifest(folder, manifest)
    return change


_DROP = object()


class _Payload:
    """Unpickling this runs code: it writes the `executed` file."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').close()",))


def _pickle_as_model(folder) -> None:
    import pickle

    (folder / "ranker.skops").write_bytes(pickle.dumps(_Payload(str(folder.parent / EXECUTED))))
    _rehash(folder)


def _pickle_instead(folder) -> None:
    import pickle

    (folder / "ranker.skops").unlink()
    (folder / "ranker.pkl").write_bytes(pickle.dumps(_Payload(str(folder.parent / EXECUTED))))


def _pickle_beside(folder) -> None:
    import pickle

    (folder / "ranker.pkl").write_bytes(pickle.dumps(_Payload(str(folder.parent / EXECUTED))))


def _forged_skops(module: str, name: str, loader: str):
    """A skops archive whose root object is `module.name`, built by `loader` from the arguments of a
    payload that writes the `executed` file (skops' ConstructorFromReduceNode calls it)."""
    import zipfile

    def change(folder):
        code = f"open({str(folder.parent / EXECUTED)!r}, 'w').close()"
        argument = {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "__id__": 3,
                    "content": json.dumps(code), "is_json": True}
        schema = {"__class__": name, "__module__": module, "__loader__": loader, "__id__": 1, "protocol": 2,
                  "_skops_version": "0.16.0",
                  "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode", "__id__": 2,
                              "content": [argument]}}
        with zipfile.ZipFile(folder / "ranker.skops", "w") as archive:
            archive.writestr("schema.json", json.dumps(schema))
        _rehash(folder)
    return change


def _flip_byte(folder) -> None:
    data = bytearray((folder / "ranker.skops").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "ranker.skops").write_bytes(bytes(data))


def _truncate(rehash: bool, keep: int):
    def change(folder):
        path = folder / "ranker.skops"
        path.write_bytes(path.read_bytes()[:keep])
        if rehash:
            _rehash(folder)
    return change


def _replace(name: str, content: bytes | None):
    def change(folder):
        path = folder / name
        path.unlink()
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
    return change


def _features(edit):
    def change(folder):
        manifest = _manifest(folder)
        manifest["features"] = edit(list(manifest["features"]))
        _write_manifest(folder, manifest)
    return change


def model_cases() -> list[ModelCase]:
    skops, manifest = "ranker.skops", "ranker.json"

    def e(case_id, change, text, file=manifest):
        return ModelCase(f"model-{case_id}", change, "error", text=text, file=file)
    missing = [e(f"manifest-without-{key}", _edit(**{key: _DROP}), f"no '{key}'")
               for key in ("version", "sha256", "file", "features", "trained_at", "libraries")]
    return [
        ModelCase("model-shipped-copy", lambda folder: None, "ok"),
        ModelCase("model-pickle-dropped-beside", _pickle_beside, "ok"),
        ModelCase("model-without-optional-keys", _edit(training=_DROP, leave_one_family_out=_DROP,
                                                       leave_one_family_out_mean=_DROP, min_probability=_DROP), "ok"),
        e("tampered-byte", _flip_byte, "SHA-256", skops),
        e("truncated", _truncate(False, 100_000), "SHA-256", skops),
        e("truncated-rehashed", _truncate(True, 100_000), "not a readable skops model", skops),
        e("empty-rehashed", _truncate(True, 0), "not a readable skops model", skops),
        e("pickle-as-model", _pickle_as_model, "not a readable skops model", skops),
        e("pickle-instead-of-model", _pickle_instead, "is missing", skops),
        e("forged-eval-constructor", _forged_skops("builtins", "eval", "ConstructorFromReduceNode"),
          "types no tradewatch model has (builtins.eval)", skops),
        e("forged-exec-constructor", _forged_skops("builtins", "exec", "ConstructorFromReduceNode"),
          "types no tradewatch model has (builtins.exec)", skops),
        e("forged-os-system", _forged_skops("os", "system", "ConstructorFromReduceNode"),
          "types no tradewatch model has (os.system)", skops),
        e("forged-numpy-load", _forged_skops("numpy", "load", "ConstructorFromReduceNode"),
          "types no tradewatch model has (numpy.load)", skops),
        e("forged-sklearn-function", _forged_skops("sklearn.utils", "check_array", "ConstructorFromReduceNode"),
          "types no tradewatch model has (sklearn.utils.check_array)", skops),
        e("model-is-a-folder", _replace(skops, None), "is missing", skops),
        *missing,
        e("manifest-missing", lambda folder: (folder / manifest).unlink(), "no ranker manifest here"),
        e("manifest-is-a-folder", _replace(manifest, None), "not a ranker manifest"),
        e("manifest-empty", _replace(manifest, b""), "not a ranker manifest"),
        e("manifest-not-json", _replace(manifest, b"version = 1\n"), "not a ranker manifest"),
        e("manifest-a-list", _replace(manifest, b"[]"), "not a tradewatch-ranker/1 manifest"),
        e("manifest-latin1", _replace(manifest, b'{"format": "tradewatch-ranker/1", "note": "\xe9"}'),
          "not a ranker manifest"),
        e("manifest-other-format", _edit(format="tradewatch-ranker/0"), "not a tradewatch-ranker/1 manifest"),
        e("manifest-names-a-pickle", _edit(file="ranker.pkl"), "file is 'ranker.pkl'"),
        e("manifest-short-checksum", _edit(sha256="abc"), "sha256 is 'abc'"),
        e("manifest-training-a-list", _edit(training=[1]), "training is [1]"),
        e("manifest-reviews-a-list", _edit(training={"reviews": []}), "training is"),
        e("manifest-libraries-a-list", _edit(libraries=["sklearn"]), "libraries is"),
        e("manifest-probability-above-one", _edit(min_probability=2), "min_probability is 2"),
        e("manifest-measurement-text", _edit(leave_one_family_out={"classic": {"ap_ranker": "high"}}),
          "leave_one_family_out is"),
        e("features-reversed", _features(lambda names: names[::-1]), "other features"),
        e("features-one-missing", _features(lambda names: names[:-1]), "other features"),
        e("features-one-extra", _features(lambda names: names + ["secret_sauce"]), "other features"),
        e("features-not-a-list", _edit(features="z"), "features is 'z'"),
    ]


# ------------------------------------------------------------------------------------- review options

@dataclass(frozen=True)
class ReviewCase:
    """`tradewatch flags review ROUTE --status STATUS --note NOTE [--by BY] [--run RUN]`: 'error' is one line
    holding `text` (and nothing stored); 'ok' stores the decision with note `stored` (and reviewer `by`)."""

    id: str
    expect: str
    text: str = ""
    route: str | None = None  # None: the test world's chips route
    status: str = "watch"
    note: str = "checked the invoices"
    by: str | None = None
    run: str | None = None
    stored: str | None = None


def review_cases() -> list[ReviewCase]:
    def e(case_id, text, **options):
        return ReviewCase(f"review-{case_id}", "error", text=text, **options)

    def o(case_id, stored=None, **options):
        case = ReviewCase(f"review-{case_id}", "ok", **options)
        return ReviewCase(**{**case.__dict__, "stored": case.note if stored is None else stored})
    return [
        e("note-empty", "--note: expected a note", note=""),
        e("note-whitespace-only", "--note: expected a note", note=" \t  "),
        e("note-huge", "--note: 100,000 characters; expected at most 4,000", note="x" * 100_000),
        e("note-just-over-limit", "--note: 4,001 characters", note="y" * 4_001),
        e("note-bell", "--note: holds control character U+0007 at character 2", note="a\x07b"),
        e("note-nul", "--note: holds control character U+0000", note="a\x00b"),
        e("note-backspace", "U+0008", note="approved\x08\x08\x08\x08\x08\x08\x08\x08rejected"),
        e("note-carriage-return", "U+000D", note="fine\rforged line"),
        e("note-ansi-colour", "U+001B at character 1", note="\x1b[31mred\x1b[0m"),
        e("note-ansi-clear-screen", "U+001B", note="ok \x1b[2J\x1b[H"),
        e("note-osc-title", "U+001B", note="\x1b]0;owned\x07"),
        e("note-osc-hyperlink", "U+001B", note="\x1b]8;;https://example.org\x1b\\click\x1b]8;;\x1b\\"),
        e("note-c1-csi", "U+009B", note="\x9b31mred"),
        e("note-delete", "U+007F", note="a\x7fb"),
        e("note-bidi-override", "U+202E", note="invoice \u202efdp.exe"),
        e("note-not-utf8", "--note: is not UTF-8 text (byte 0xe9 at character 4)", note="caf\udce9"),
        e("by-ansi", "--by: holds control character U+001B", by="\x1b[31mmallory"),
        e("by-newline", "--by: holds control character U+000A at character 4; expected plain text on one line",
          by="ann\nbob"),
        e("by-huge", "--by: 101 characters; expected at most 100", by="a" * 101),
        e("by-not-utf8", "--by: is not UTF-8 text (byte 0xff", by="\udcffann"),
        e("status-unknown", "--status", status="maybe"),
        e("status-empty", "--status", status=""),
        e("status-escape", "--status", status="\x1b[31mwatch"),
        e("route-unknown", "route r-nope: not flagged in any run", route="r-nope"),
        e("route-ambiguous-prefix", "route r-deu-k: matches several routes", route="r-deu-k"),
        e("route-empty", "route id: empty", route=""),
        e("route-whitespace", "route id: empty", route="   "),
        e("route-escape", "route \\x1b]0;x\\x07r-deu: not flagged", route="\x1b]0;x\x07r-deu"),
        e("route-newline", "route r-deu-kaz-854231\\nforged: not flagged", route="r-deu-kaz-854231\nforged"),
        e("route-not-utf8", "route r-\\udce9: is not UTF-8 text", route="r-\udce9"),
        e("route-sql", "not flagged in any run", route="r-deu' OR '1'='1"),
        e("run-unknown", "--run run-nope: no such run", run="run-nope"),
        e("run-not-utf8", "--run \\udce9: is not UTF-8 text", run="\udce9"),
        e("run-escape", "--run \\x1b[2J: no such run", run="\x1b[2J"),
        o("note-multiline", note="checked invoices\nand bills of lading"),
        o("note-crlf", note="line one\r\nline two", stored="line one\nline two"),
        o("note-tab", note="HS\t854231"),
        o("note-padded", note="  trimmed  ", stored="trimmed"),
        o("note-unicode", note="Überprüft: 出口 ✓ — Ελλάδα"),
        o("note-html", note="<script>alert(1)</script> & <img src=x onerror=alert(2)>"),
        o("note-rich-markup", note="[red]alarm[/red] [link=https://example.org]x[/link]"),
        o("note-attribute-breakout", note='" onmouseover="alert(3)" x=\''),
        o("note-at-limit", note="z" * 4_000),
        o("by-unicode", by="José Ñúñez"),
        o("route-unique-prefix", route="r-deu-kaz"),
        o("route-padded", route="  r-deu-kaz-854231  "),
        o("run-given", run="run-2023-01-10-aaaa"),
        o("status-dismissed", status="dismissed", note="known distributor"),
    ]
