"""Writers (and readers, for round trips) of flagged-route tables as CSV, JSON and Parquet."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import polars as pl

from tradewatch.flows.core.errors import InputError
from tradewatch.flows.core.numbers import finite, finite_only

FORMATS = ("csv", "json", "parquet")
BINARY_FORMATS = ("parquet",)


def _json_value(value):
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return finite(value)
    return value


def to_json_text(frame: pl.DataFrame) -> str:
    """A JSON array of row objects; dates as YYYY-MM-DD, timestamps as ISO 8601 (UTC, no offset)."""
    rows = [{key: _json_value(value) for key, value in row.items()} for row in frame.to_dicts()]
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"


def to_csv_text(frame: pl.DataFrame) -> str:
    """CSV with a header row; null as an empty field; timestamps ISO 8601 to the microsecond."""
    return frame.write_csv(datetime_format="%Y-%m-%dT%H:%M:%S%.6f", date_format="%Y-%m-%d")


def output_path(out, expected: str = "a file path") -> Path:
    """The path an `--out` option names; InputError when it is a folder or its folder does not exist."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise InputError(f"--out {out}", f"is a folder; expected {expected}")
    if not path.parent.exists():
        raise InputError(f"--out {out}", f"folder {path.parent} does not exist")
    return path


def write_atomically(path: Path, write_to: Callable[[Path], object], option: str) -> None:
    """Call `write_to(partial)` on a file beside `path`, then rename it to `path`, so a failed write never
    leaves half a file under its name; an OSError becomes InputError naming `option`."""
    partial = path.with_name(path.name + ".partial")
    try:
        write_to(partial)
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputError(option, f"cannot write: {exc.strerror or exc}") from None


def write(frame: pl.DataFrame, format: str, out: Path | str | None = None) -> str | None:
    """Write `frame` (non-finite floats become null) as `format` to the file `out`, or return the text
    when `out` is None (CSV and JSON only). Parquet needs a file. Returns None when a file was written."""
    format = format.lower()
    if format not in FORMATS:
        raise InputError(f"--format {format}", f"expected one of {', '.join(FORMATS)}")
    frame = finite_only(frame)
    if out is None:
        if format in BINARY_FORMATS:
            raise InputError(f"--format {format}", "writes a binary file; give --out FILE")
        return to_csv_text(frame) if format == "csv" else to_json_text(frame)
    path = output_path(out)
    if format == "parquet":
        write_atomically(path, frame.write_parquet, f"--out {out}")
    else:
        text = to_csv_text(frame) if format == "csv" else to_json_text(frame)
        write_atomically(path, lambda partial: partial.write_text(text, encoding="utf-8"), f"--out {out}")
    return None


def read(source: Path | str | bytes, format: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Read back what `write` wrote (a path, or the text/bytes) into a frame with `schema`'s columns and dtypes."""
    format = format.lower()
    if isinstance(source, str) and format != "parquet" and ("\n" in source or source.startswith("[")):
        payload = io.BytesIO(source.encode("utf-8"))
    elif isinstance(source, bytes):
        payload = io.BytesIO(source)
    else:
        payload = Path(source)
    if format == "parquet":
        frame = pl.read_parquet(payload)
    elif format == "csv":
        frame = pl.read_csv(payload, schema_overrides={k: pl.String() for k in schema}, infer_schema=False)
        frame = frame.with_columns([_from_text(name, dtype) for name, dtype in schema.items()])
    elif format == "json":
        raw = payload.read_bytes() if isinstance(payload, Path) else payload.read()
        rows = json.loads(raw)
        as_text = {k: pl.String() if v.is_temporal() else v for k, v in schema.items()}
        frame = pl.DataFrame(rows or None, schema=as_text, orient="row")
        frame = frame.with_columns([_from_text(n, d) for n, d in schema.items() if d.is_temporal()])
    else:
        raise InputError(f"--format {format}", f"expected one of {', '.join(FORMATS)}")
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


def _from_text(name: str, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    if dtype == pl.Date():
        return column.str.to_date("%Y-%m-%d")
    if isinstance(dtype, pl.Datetime):
        return column.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit=dtype.time_unit)
    if dtype == pl.String():
        return column
    if dtype == pl.Boolean():  # CSV writes true/false
        return pl.when(column.is_null()).then(None).otherwise(column.str.to_lowercase() == "true").alias(name)
    return column.cast(dtype)
