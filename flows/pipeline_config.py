"""The monthly pipeline's configuration as pydantic models: one TOML file over the documented defaults in
data/pipeline_defaults.toml (the only place they live); its [detect] table over data/detect_defaults.toml."""

from __future__ import annotations

import re
import tomllib
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from tradewatch.detect.config import DetectParams, input_error, month_value, problem, read_toml_file
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.core.months import month_labels, month_text

DEFAULTS_RESOURCE = "pipeline_defaults.toml"
TASK_RUNNERS = ("thread", "dask")
CRON_EXPECTED = 'expected five cron fields (minute hour day month weekday), e.g. "0 6 15 * *"'


# --- value checks ---------------------------------------------------------------------------------------

def _text(value) -> str:
    if not isinstance(value, str):
        raise problem("expected text")
    return value.strip()


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise problem("expected true or false")
    return value


def _month_or_latest(value) -> str | None:
    text = _text(value)
    return None if text == "latest" else month_value(text)


def _url(value) -> str:
    text = _text(value)
    if not text.startswith(("http://", "https://")):
        raise problem("expected an http(s) URL")
    return text


def _list(value) -> list:
    if not isinstance(value, list):
        raise problem("expected a list, e.g. []")
    return value


def _reporters(value) -> tuple[str, ...]:
    from tradewatch.flows.core import countries

    codes = []
    for item in _list(value):
        text = item.strip().upper() if isinstance(item, str) else ""
        code = text if len(text) == 3 and text.isalpha() else None
        if len(text) == 2:
            code = countries.alpha2_to_iso3(text)
        if not code:
            raise problem(f"{item!r} is not a country code; expected ISO alpha-3 (DEU) or alpha-2 (DE)")
        codes.append(code)
    return tuple(codes)


def _products(value) -> tuple[str, ...]:
    codes = []
    for item in _list(value):
        text = item.strip() if isinstance(item, str) else ""
        if not (text.isdigit() and 2 <= len(text) <= 8):
            raise problem(f"{item!r} is not a product code; expected 2 to 8 digits as text, e.g. \"8471\"")
        codes.append(text)
    return tuple(codes)


def cron_problem(text: str) -> str | None:
    """What is wrong with a cron expression (None: nothing), checked by Prefect's own schedule model, the one
    a deployment is registered with; five fields only (no seconds or years)."""
    if len(text.split()) != 5:
        return CRON_EXPECTED
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=text)
    except (ValueError, ValidationError) as exc:
        reason = exc.errors(include_url=False)[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        return f"{CRON_EXPECTED} ({' '.join(reason.removeprefix('Value error, ').split())})"
    return None


def _cron(value) -> str:
    text = " ".join(_text(value).split())
    reason = cron_problem(text)
    if reason:
        raise problem(reason)
    return text


def _timezone(value) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = _text(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise problem('not an IANA time zone, e.g. "Europe/Luxembourg"') from None
    return name


def _deployment_name(value) -> str:
    text = _text(value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise problem("use letters, digits, '-', '_', '.'")
    return text


def _task_runner(value) -> str:
    text = _text(value)
    if text not in TASK_RUNNERS:
        raise problem(f"expected one of {', '.join(TASK_RUNNERS)}")
    return text


def _rows(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise problem("expected a whole number ≥ 1")
    return value


def _share(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise problem("expected a share of the partition, a number > 0 and ≤ 1 (1: any shrink is loaded)")
    return float(value)


Text = Annotated[str, BeforeValidator(_text)]


# --- the file's shape -------------------------------------------------------------------------------------
# Every key is required: load_config always lays the user's file over the defaults file, so a key that
# neither has is a defect of the defaults file, reported as such.

class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SourceTable(_Table):
    enabled: Annotated[bool, BeforeValidator(_flag)]
    base_url: Annotated[str, BeforeValidator(_url)]
    start: Annotated[str, BeforeValidator(month_value)]
    end: Annotated[str | None, BeforeValidator(_month_or_latest)]

    @model_validator(mode="after")
    def _end_after_start(self) -> "_SourceTable":
        if self.end is not None and self.end < self.start:
            raise problem(f"{self.end} is before start {self.start}", "end")
        return self


class _Sources(_Table):
    comext: _SourceTable


SUPPORTED_SOURCES = tuple(_Sources.model_fields)


class _Scope(_Table):
    reporters: Annotated[tuple[str, ...], BeforeValidator(_reporters)]  # ISO alpha-3; empty: every reporter
    products: Annotated[tuple[str, ...], BeforeValidator(_products)]  # code prefixes; empty: every product


class _Schedule(_Table):
    cron: Annotated[str, BeforeValidator(_cron)]
    timezone: Annotated[str, BeforeValidator(_timezone)]
    deployment_name: Annotated[str, BeforeValidator(_deployment_name)]
    work_pool: Text


class _Run(_Table):
    task_runner: Annotated[str, BeforeValidator(_task_runner)]
    dask_address: Text
    shrink_limit: Annotated[float, BeforeValidator(_share)]

    @model_validator(mode="after")
    def _address_needs_dask(self) -> "_Run":
        if self.dask_address and self.task_runner != "dask":
            raise problem('only applies with run.task_runner = "dask"', "dask_address", value=self.dask_address)
        return self


class _Publish(_Table):
    report_dir: Text
    artifact_rows: Annotated[int, BeforeValidator(_rows)]


class _ConfigFile(_Table):
    sources: _Sources
    scope: _Scope
    detect: dict[str, Any]  # checked by DetectParams (tradewatch.detect.config)
    schedule: _Schedule
    run: _Run
    publish: _Publish

    @model_validator(mode="after")
    def _some_source(self) -> "_ConfigFile":
        if not any(table.enabled for _, table in self.sources):
            raise problem("no source is enabled; enable at least one [sources.*] table", "sources")
        return self


# --- the resolved configuration --------------------------------------------------------------------------

class SourceConfig(BaseModel):
    """One source to keep current: where its files are and which months (YYYY-MM, inclusive) to keep."""

    model_config = ConfigDict(frozen=True)

    name: str
    base_url: str
    start: str
    end: str | None  # None: up to the current month (months not yet published are skipped)


class PipelineConfig(BaseModel):
    """Everything one pipeline run needs, resolved from the defaults and an optional user file."""

    model_config = ConfigDict(frozen=True)

    sources: tuple[SourceConfig, ...]
    reporters: tuple[str, ...]  # ISO alpha-3; empty: every reporter in the files
    products: tuple[str, ...]  # product-code prefixes (2-8 digits); empty: every product
    event: str  # YYYY-MM the restrictions took effect
    detect_overrides: dict[str, Any]  # further DetectParams fields (windows, thresholds)
    cron: str
    timezone: str
    deployment_name: str
    work_pool: str
    task_runner: str
    dask_address: str | None
    shrink_limit: float  # share of a loaded partition's rows or value a replacing file may lose (1: no limit)
    report_dir: Path | None  # None: $TRADEWATCH_HOME/reports
    artifact_rows: int
    files: tuple[str, ...]  # the files read, defaults first (for messages)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON-serialisable) for Prefect parameters and run records."""
        return {
            "sources": [source.model_dump() for source in self.sources],
            "reporters": list(self.reporters),
            "products": list(self.products),
            "event": self.event,
            "detect": dict(self.detect_overrides),
            "cron": self.cron,
            "timezone": self.timezone,
            "deployment_name": self.deployment_name,
            "work_pool": self.work_pool,
            "task_runner": self.task_runner,
            "dask_address": self.dask_address,
            "shrink_limit": self.shrink_limit,
            "report_dir": str(self.report_dir) if self.report_dir else None,
            "artifact_rows": self.artifact_rows,
        }


def source_months(start: str, end: str | None, today: date | None = None) -> list[str]:
    """The months (YYYY-MM, oldest first) from `start` to `end`, or to the current month when `end` is None."""
    today = today or date.today()
    return month_labels(start, end or month_text(today))


def defaults_text() -> str:
    """The documented default configuration, as TOML text."""
    return resources.files("tradewatch.data").joinpath(DEFAULTS_RESOURCE).read_text(encoding="utf-8")


def load_config(path: Path | str | None = None) -> PipelineConfig:
    """Read the defaults, overlay the TOML file at `path` (keys left out keep their default) and
    validate. Raises InputError naming the file and key for a missing file, bad TOML, an unknown key
    or a value of the wrong kind."""
    layers = [(DEFAULTS_RESOURCE, tomllib.loads(defaults_text()))]
    if path is not None:
        path = Path(path).expanduser()
        layers.append((str(path), read_toml_file(path, "a TOML pipeline configuration")))
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = _merge(merged, layer)

    def origin(key: str) -> str:
        return next((where for where, layer in reversed(layers) if _has(layer, key)), DEFAULTS_RESOURCE)

    try:
        raw = _ConfigFile.model_validate(merged)
    except ValidationError as exc:
        raise input_error(exc, origin, unknown=_unknown, defaults_file=DEFAULTS_RESOURCE) from None
    detect_layers = [(where, layer["detect"]) for where, layer in layers if isinstance(layer.get("detect"), dict)]
    params = DetectParams.from_layers(detect_layers, prefix="detect.")
    report_dir = origin("publish.report_dir")
    return PipelineConfig(
        sources=tuple(SourceConfig(name=name, base_url=table.base_url, start=table.start, end=table.end)
                      for name, table in raw.sources if table.enabled),
        reporters=raw.scope.reporters, products=raw.scope.products, event=params.event,
        detect_overrides={key: value for key, value in raw.detect.items() if key != "event"},
        cron=raw.schedule.cron, timezone=raw.schedule.timezone, deployment_name=raw.schedule.deployment_name,
        work_pool=raw.schedule.work_pool, task_runner=raw.run.task_runner, dask_address=raw.run.dask_address or None,
        shrink_limit=raw.run.shrink_limit,
        report_dir=_resolve(raw.publish.report_dir, report_dir) if raw.publish.report_dir else None,
        artifact_rows=raw.publish.artifact_rows, files=tuple(where for where, _ in layers),
    )


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _has(table: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(table, dict) or part not in table:
            return False
        table = table[part]
    return True


def _unknown(loc: tuple) -> str:
    """Strict keys: a typo must not silently fall back to a default."""
    model: Any = _ConfigFile
    for part in loc[:-1]:
        model = model.model_fields[part].annotation
    if model is _Sources:
        return f"unknown source; expected one of {', '.join(SUPPORTED_SOURCES)}"
    prefix = ".".join(loc[:-1]) + "." if len(loc) > 1 else ""
    return f"unknown key; expected one of {', '.join(prefix + key for key in model.model_fields)}"


def _resolve(text: str, where: str) -> Path:
    """A path from the config file, relative to the file's own folder (runs start in other folders)."""
    path = Path(text).expanduser()
    if not path.is_absolute() and where != DEFAULTS_RESOURCE:
        path = Path(where).resolve().parent / path
    return path


def check_cron(value: str, option: str = "--cron") -> str:
    """Validate a cron expression given on the command line; returns it normalised or raises InputError."""
    text = " ".join(value.split()) if isinstance(value, str) else ""
    reason = cron_problem(text)
    if reason:
        raise InputError(f"{option} {value!r}", reason)
    return text
