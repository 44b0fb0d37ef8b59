"""A corpus of bad source files, each with what tradewatch must say about it.

Each case is (id, file name, bytes, expectation) where expectation is either
  ("error", substring)       the whole file is refused with a one-line error containing substring, or
  ("quarantine", n, substring)  n rows go to quarantine with a reason containing substring, the rest load.
"""

from __future__ import annotations

import io

HEADER = ("REPORTER,PARTNER,TRADE_TYPE,PRODUCT_NC,PRODUCT_SITC,PRODUCT_CPA21,PRODUCT_CPA22,PRODUCT_BEC,"
          "PRODUCT_BEC5,PRODUCT_SECTION,FLOW,STAT_PROCEDURE,SUPPL_UNIT,PERIOD,VALUE_EUR,VALUE_NAC,QUANTITY_KG,"
          "QUANTITY_SUPPL_UNIT")


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


def comext_cases() -> list[tuple[str, str, bytes, tuple]]:
    good = dat(GOOD_ROWS)
    valid_7z = seven_zip({"full_202203.dat": good})
    cases = [
        ("empty", "full_202203.dat", b"", ("error", "empty")),
        ("only-whitespace", "full_202203.dat", b"\n\n  \n", ("error", "empty")),
        ("missing-header", "full_202203.dat", dat(GOOD_ROWS, header=GOOD_ROWS[0]), ("error", "not a recognised")),
        ("wrong-header", "full_202203.dat",
         dat(GOOD_ROWS, header=HEADER.replace("VALUE_EUR", "VALUE_USD")), ("error", "VALUE_EUR")),
        ("extra-column", "full_202203.dat",
         dat([r + ",x" for r in GOOD_ROWS], header=HEADER + ",EXTRA"), ("error", "EXTRA")),
        ("non-numeric-value", "full_202203.dat", dat(GOOD_ROWS + [row(partner="TR", value="abc")]),
         ("quarantine", 1, "VALUE_EUR")),
        ("negative-value", "full_202203.dat", dat(GOOD_ROWS + [row(partner="TR", value="-5")]),
         ("quarantine", 1, "non-negative")),
        ("nan-value", "full_202203.dat", dat(GOOD_ROWS + [row(partner="TR", value="NaN")]),
         ("quarantine", 1, "non-negative")),
        ("overflow-value", "full_202203.dat", dat(GOOD_ROWS + [row(partner="TR", value="1e999")]),
         ("quarantine", 1, "non-negative")),
        ("month-13", "full_202203.dat", dat(GOOD_ROWS + [row(partner="TR", period="202213")]),
         ("quarantine", 1, "PERIOD")),
        ("unknown-partner", "full_202203.dat", dat(GOOD_ROWS + [row(partner="ZZ")]),
         ("quarantine", 1, "unknown PARTNER code ZZ")),
        ("unknown-product", "full_202203.dat", dat(GOOD_ROWS + [row(product="85A")]),
         ("quarantine", 1, "PRODUCT_NC")),
        ("duplicate-key", "full_202203.dat", dat(GOOD_ROWS + [GOOD_ROWS[0]]), ("error", "duplicate")),
        ("crlf", "full_202203.dat", dat(GOOD_ROWS, newline="\r\n"), ("ok", 3)),
        ("bom", "full_202203.dat", b"\xef\xbb\xbf" + good, ("ok", 3)),
        ("html-error-page", "full_202203.dat",
         b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>", ("error", "HTML")),
        ("json-error-body", "full_202203.dat", b'{"error": "quota exceeded", "statusCode": 429}',
         ("error", "not a recognised")),
        ("truncated-7z", "full_v2_202203.7z", valid_7z[: len(valid_7z) // 2], ("error", "")),
        ("not-7z", "full_v2_202203.7z", b"PK\x03\x04 this is a zip, not 7z" * 10, ("error", "not a recognised")),
        ("several-members", "full_v2_202203.7z",
         seven_zip({"full_202203.dat": good, "extra.dat": good}), ("error", "expected exactly one")),
        ("traversal-member", "full_v2_202203.7z", seven_zip({"../evil.dat": good}), ("error", "leaves the extraction")),
        ("absolute-member", "full_v2_202203.7z", seven_zip({"/tmp/evil.dat": good}), ("error", "")),
        ("encrypted", "full_v2_202203.7z", seven_zip({"full_202203.dat": good}, password="secret"),
         ("error", "encrypted")),
    ]
    return cases
