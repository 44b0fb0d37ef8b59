"""The monthly pipeline's configuration: one TOML file over the documented defaults in data/pipeline_defaults.toml."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

from tradewatch.flows.core.errors import InputError
from tradewatch.flows.core.months import month_labels, month_text

DEFAULTS_RESOURCE = "pipeline_defaults.toml"
SUPPORTED_SOURCES = ("comext",)
TASK_RUNNERS = ("thread", "dask")

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
# Cron with five fields (minute hour day month weekday); Prefect's CronSchedule takes the same.
_CRON_FIELD = re.compile(r"^[\d*/,\-A-Za-z?LW#]+$")


@dataclass(frozen=True)
class SourceConfig:
    """One source to keep current: where its files are and which months (YYYY-MM, inclusive) to keep."""

    name: str
    base_url: str
    start: str
    end: str | None  # None: up to the current month (months not yet published are skipped)


@dataclass(frozen=True)
class PipelineConfig:
    """Everything one pipeline run needs, resolved from the defaults and an optional user file."""

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
    report_dir: Path | None  # None: $TRADEWATCH_HOME/reports
    artifact_rows: int
    files: tuple[str, ...] = field(default=())  # the files read, defaults first (for messages)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON-serialisable) for Prefect parameters and run records."""
        return {
            "sources": [vars(s) for s in self.sources],
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
    defaults = tomllib.loads(defaults_text())
    files = [DEFAULTS_RESOURCE]
    merged = defaults
    if path is not None:
        path = Path(path).expanduser()
        where = str(path)
        if not path.is_file():
            raise InputError(f"--config {path}", "no such file; expected a TOML pipeline configuration")
        try:
            user = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise InputError(where, f"not valid TOML ({exc})") from None
        except UnicodeDecodeError:
            raise InputError(where, "not UTF-8 text; expected a TOML file") from None
        _check_known(user, defaults, where, prefix="")
        merged = _merge(defaults, user)
        files.append(where)
    return _build(merged, files[-1], tuple(files))


def _check_known(user: dict, defaults: dict, where: str, prefix: str) -> None:
    """Strict keys: a typo must not silently fall back to a default."""
    for key, value in user.items():
        dotted = f"{prefix}{key}"
        if prefix == "sources." and key not in defaults:
            raise InputError(where, f"[sources.{key}]: unknown source; expected one of {', '.join(SUPPORTED_SOURCES)}")
        if prefix == "detect.":
            continue  # detection parameters are checked against DetectParams in _detect_overrides
        if key not in defaults:
            raise InputError(where, f"unknown key {dotted!r}; expected one of {', '.join(prefix + k for k in defaults)}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise InputError(where, f"{dotted!r} must be a table [{dotted}]")
            _check_known(value, defaults[key], where, prefix=f"{dotted}.")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _build(raw: dict, where: str, files: tuple[str, ...]) -> PipelineConfig:
    sources = []
    for name, table in raw.get("sources", {}).items():
        if name not in SUPPORTED_SOURCES:
            raise InputError(where, f"[sources.{name}]: unknown source; expected one of {', '.join(SUPPORTED_SOURCES)}")
        if not _bool(table.get("enabled", True), where, f"sources.{name}.enabled"):
            continue
        base_url = _text(table.get("base_url"), where, f"sources.{name}.base_url")
        if not base_url.startswith(("http://", "https://")):
            raise InputError(where, f"sources.{name}.base_url {base_url!r}: expected an http(s) URL")
        start = _month(table.get("start"), where, f"sources.{name}.start")
        end_text = _text(table.get("end", "latest"), where, f"sources.{name}.end")
        end = None if end_text == "latest" else _month(end_text, where, f"sources.{name}.end")
        if end is not None and end < start:
            raise InputError(where, f"sources.{name}.end {end} is before start {start}")
        sources.append(SourceConfig(name=name, base_url=base_url, start=start, end=end))
    if not sources:
        raise InputError(where, "no source is enabled; enable at least one [sources.*] table")

    scope = raw.get("scope", {})
    reporters = tuple(_country(c, where) for c in _list(scope.get("reporters", []), where, "scope.reporters"))
    products = tuple(_product(p, where) for p in _list(scope.get("products", []), where, "scope.products"))

    detect = dict(raw.get("detect", {}))
    event = _month(detect.pop("event", None), where, "detect.event")
    overrides = _detect_overrides(detect, event, where)

    schedule = raw.get("schedule", {})
    cron = _cron(schedule.get("cron"), where)
    timezone = _text(schedule.get("timezone"), where, "schedule.timezone")
    _check_timezone(timezone, where)
    deployment_name = _text(schedule.get("deployment_name"), where, "schedule.deployment_name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", deployment_name):
        raise InputError(where, f"schedule.deployment_name {deployment_name!r}: use letters, digits, '-', '_', '.'")
    work_pool = _text(schedule.get("work_pool"), where, "schedule.work_pool")

    run = raw.get("run", {})
    task_runner = _text(run.get("task_runner"), where, "run.task_runner")
    if task_runner not in TASK_RUNNERS:
        raise InputError(where, f"run.task_runner {task_runner!r}: expected one of {', '.join(TASK_RUNNERS)}")
    dask_address = _text(run.get("dask_address", ""), where, "run.dask_address") or None
    if dask_address and task_runner != "dask":
        raise InputError(where, f"run.dask_address {dask_address!r} only applies with run.task_runner = \"dask\"")

    publish = raw.get("publish", {})
    report_dir_text = _text(publish.get("report_dir", ""), where, "publish.report_dir")
    artifact_rows = publish.get("artifact_rows")
    if not isinstance(artifact_rows, int) or isinstance(artifact_rows, bool) or artifact_rows < 1:
        raise InputError(where, f"publish.artifact_rows {artifact_rows!r}: expected a whole number ≥ 1")

    return PipelineConfig(
        sources=tuple(sources), reporters=reporters, products=products, event=event,
        detect_overrides=overrides, cron=cron, timezone=timezone, deployment_name=deployment_name,
        work_pool=work_pool, task_runner=task_runner, dask_address=dask_address,
        report_dir=_resolve(report_dir_text, where) if report_dir_text else None,
        artifact_rows=artifact_rows, files=files,
    )


def _detect_overrides(values: dict, event: str, where: str) -> dict[str, Any]:
    """Detection windows and thresholds, checked against DetectParams when the detection package is there."""
    try:
        import dataclasses

        from tradewatch.detect.config import DetectParams
    except ImportError:
        return values
    known = {f.name for f in dataclasses.fields(DetectParams)} - {"event"}
    for key in values:
        if key not in known:
            raise InputError(where, f"detect.{key}: not a detection parameter; expected one of {', '.join(sorted(known))}")
    try:
        DetectParams.from_toml(None, event=event, **values)
    except InputError as exc:
        raise InputError(where, f"[detect] {exc}") from None
    return values


def _resolve(text: str, where: str) -> Path:
    """A path from the config file, relative to the file's own folder (runs start in other folders)."""
    path = Path(text).expanduser()
    if not path.is_absolute() and where != DEFAULTS_RESOURCE:
        path = Path(where).resolve().parent / path
    return path


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise InputError(where, f"{key} {value!r}: expected text")
    return value.strip()


def _bool(value: Any, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(where, f"{key} {value!r}: expected true or false")
    return value


def _list(value: Any, where: str, key: str) -> list:
    if not isinstance(value, list):
        raise InputError(where, f"{key} {value!r}: expected a list, e.g. []")
    return value


def _month(value: Any, where: str, key: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    match = _MONTH.match(text)
    if not match or not 1 <= int(match.group(2)) <= 12 or not 1988 <= int(match.group(1)) <= 2100:
        raise InputError(where, f"{key} {value!r}: expected a month as YYYY-MM, e.g. 2022-03")
    return text


def _country(value: Any, where: str) -> str:
    text = value.strip().upper() if isinstance(value, str) else ""
    if len(text) == 2:
        from tradewatch.flows.core import countries

        iso3 = countries.alpha2_to_iso3(text)
        if iso3:
            return iso3
    elif len(text) == 3 and text.isalpha():
        return text
    raise InputError(where, f"scope.reporters: {value!r} is not a country code; expected ISO alpha-3 (DEU) or alpha-2 (DE)")


def _product(value: Any, where: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not (text.isdigit() and 2 <= len(text) <= 8):
        raise InputError(where, f"scope.products: {value!r} is not a product code; expected 2 to 8 digits as text, e.g. \"8471\"")
    return text


_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))  # minute hour day month weekday


def _cron(value: Any, where: str) -> str:
    text = " ".join(value.split()) if isinstance(value, str) else ""
    fields = text.split(" ")
    bad = len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields)
    if not bad:
        for text_field, (low, high) in zip(fields, _CRON_RANGES):
            numbers = [int(n) for n in re.findall(r"\d+", text_field.split("/")[0])]
            if any(not low <= n <= high for n in numbers):
                bad = True
    if bad:
        raise InputError(where, f"schedule.cron {value!r}: expected five cron fields (minute hour day month "
                         "weekday), e.g. \"0 6 15 * *\"")
    return text


def check_cron(value: str, option: str = "--cron") -> str:
    """Validate a cron expression given on the command line; returns it normalised or raises InputError."""
    try:
        return _cron(value, option)
    except InputError:
        raise InputError(f"{option} {value!r}", "expected five cron fields (minute hour day month weekday), "
                         "e.g. \"0 6 15 * *\"") from None


def _check_timezone(name: str, where: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(where, f"schedule.timezone {name!r}: not an IANA time zone, e.g. \"Europe/Luxembourg\"") from None
