"""Detection parameters as one pydantic model. Every default lives in data/detect_defaults.toml (its empty
country lists meaning the groups of countries.toml); a --config TOML file overrides it and options typed on
the command line override both. Every bad value becomes one InputError naming the file or option and key."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError, ValidationInfo,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from tradewatch.flows.core.errors import InputError
from tradewatch.flows.core.months import checked_month

DEFAULTS_RESOURCE = "detect_defaults.toml"
OPTION = "option"  # the origin of a value typed on the command line (or passed as a keyword)
STORED = "stored run"
# An empty country list in the defaults file stands for these groups of countries.toml.
GROUPS = {"origins": ("eu27", "coalition_other"), "targets": ("targets",), "co_targets": ("co_targets",),
          "controls": ("controls",)}
LATEST = "latest"  # as_of: the latest month in the data


def read_resource(name: str) -> str:
    """A file shipped in tradewatch/data, as text."""
    return resources.files("tradewatch.data").joinpath(name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def shipped_defaults() -> dict[str, Any]:
    """The keys of data/detect_defaults.toml as parsed TOML."""
    return tomllib.loads(read_resource(DEFAULTS_RESOURCE))


@lru_cache(maxsize=1)
def country_groups() -> dict[str, tuple[str, ...]]:
    """The country groups of data/countries.toml (eu27, coalition_other, targets, co_targets, controls, …)."""
    return {key: tuple(value) for key, value in tomllib.loads(read_resource("countries.toml")).items()
            if isinstance(value, list)}


def defaults() -> dict[str, Any]:
    """Every parameter's default: the defaults file, its empty country lists filled from countries.toml."""
    values = dict(shipped_defaults())
    for key, groups in GROUPS.items():
        if key in values and not values[key]:
            values[key] = [code for group in groups for code in country_groups()[group]]
    return values


# A configuration is a page of keys; a file far larger is the wrong file (a data file, a log), refused
# before it is read into memory.
MAX_CONFIG_BYTES = 1_000_000


def read_toml_file(path: Path | str, expected: str) -> dict[str, Any]:
    """The TOML file given with --config, parsed (a UTF-8 byte order mark, as Windows editors write, is
    allowed); InputError naming it when missing, a folder, unreadable, too large or not TOML."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"--config {path}", f"is a folder; expected {expected}")
    if not path.is_file():
        raise InputError(f"--config {path}", f"no such file; expected {expected}")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise InputError(str(path), f"larger than {MAX_CONFIG_BYTES:,} bytes; expected {expected}")
        return tomllib.loads(data.decode("utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(str(path), f"not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"{path} line {line}", f"not UTF-8 text; expected {expected}") from None
    except RecursionError:
        raise InputError(str(path), f"nested too deeply to be a configuration; expected {expected}") from None
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror or exc}") from None


# --- one-line errors ----------------------------------------------------------------------------------

def problem(text: str, key: str | None = None, **value) -> PydanticCustomError:
    """A validation failure whose message is `text` as it stands. A check over several fields names the
    field (`key`, below the model's own place) and may pass the offending `value`."""
    context = {"key": key, **value} if key is not None else None
    return PydanticCustomError("tradewatch", text, context)


def input_error(exc: ValidationError, origin: Callable[[str], str], *, unknown: Callable[[tuple], str],
                defaults_file: str, prefix: str = "") -> InputError:
    """The one place where pydantic's ValidationError becomes tradewatch's one-line InputError: the first
    error, as 'FILE: KEY VALUE: what was expected' (or '--KEY VALUE: …' for a typed option). `origin`
    says where a dotted key's value came from; `unknown(loc)` words an unknown key at `loc`."""
    error = exc.errors(include_url=False)[0]
    context = error.get("ctx") or {}
    loc = tuple(str(part) for part in error.get("loc") or ())
    if context.get("key") is not None:
        loc += (str(context["key"]),)
    key = ".".join(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        text = unknown(loc)
    elif kind == "missing":
        text = f"no value; every key needs one in {defaults_file}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        text = f"expected a table [{prefix}{key}]"
    elif kind == "tradewatch":
        text = error["msg"]
    else:
        text = error["msg"][:1].lower() + error["msg"][1:]
    where = origin(key)
    if where == defaults_file:
        prefix = ""  # the key is the defaults file's own, not a table's of the file that was read
    value = context.get("value") if "key" in context else error.get("input")
    if where == OPTION:
        shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        shown = shown if shown.isprintable() and len(shown) <= 80 else _shown(shown)
        return InputError(f"--{key.replace('_', '-')} {shown}", text)
    if not key.isprintable():  # a quoted TOML key may hold escapes ("\u001b[2J" = 1): shown, not sent
        key = _shown(key)[1:-1]
    if kind == "missing" or (context.get("key") is not None and "value" not in context):
        return InputError(where, f"{prefix}{key}: {text}")
    return InputError(where, f"{prefix}{key} {_shown(value)}: {text}")


def _shown(value, limit: int = 80) -> str:
    """A value as an error message quotes it: its repr (control characters escaped), cut at `limit`."""
    if isinstance(value, tuple):
        value = list(value)
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --- value checks ---------------------------------------------------------------------------------------

def month_value(value) -> str:
    """A 'YYYY-MM' configuration value checked strictly, as a validation problem (one message) otherwise."""
    try:
        return checked_month(value, "")
    except InputError as exc:
        raise problem(exc.problem) from None


def _month_or_latest(value) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", LATEST)):
        return None
    return month_value(value)


def _whole(low: int, high: int, text: str) -> BeforeValidator:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise problem(text)
        return value
    return BeforeValidator(check)


def _number(accept: Callable[[float], bool], text: str) -> BeforeValidator:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise problem("expected a number")
        if not accept(float(value)):
            raise problem(text)
        return float(value)
    return BeforeValidator(check)


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise problem("expected true or false")
    return value


def _texts(value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise problem("expected a list of text values")
    return tuple(v.strip() for v in value)


def _countries(value) -> tuple[str, ...]:
    codes = tuple(code.upper() for code in _texts(value))
    for code in codes:
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise problem(f"{code!r} is not a country code; expected ISO 3166 alpha-3 country codes, e.g. RUS")
    return codes


def _some(text: str) -> AfterValidator:
    def check(value):
        if not value:
            raise problem(text)
        return value
    return AfterValidator(check)


def _levels(value) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise problem("expected a list of whole numbers, [6] or [6, 4]")
    if not value or any(level not in (4, 6) for level in value) or 6 not in value:
        raise problem("expected [6] or [6, 4]")
    return tuple(value)


Month = Annotated[str, BeforeValidator(month_value)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Texts = Annotated[tuple[str, ...], BeforeValidator(_texts)]
Countries = Annotated[tuple[str, ...], BeforeValidator(_countries)]
Months = Annotated[int, _whole(1, 240, "expected a whole number of months from 1 to 240")]
Count = Annotated[int, _whole(1, 1000, "expected a whole number from 1 to 1000")]
Number = Annotated[float, _number(lambda v: v == v, "expected a number, not nan")]
AtLeastZero = Annotated[float, _number(lambda v: v >= 0, "expected a number ≥ 0")]
Positive = Annotated[float, _number(lambda v: v > 0, "expected a number > 0")]
Ratio = Annotated[float, _number(lambda v: v >= 1, "expected a ratio ≥ 1")]
Share = Annotated[float, _number(lambda v: 0 <= v <= 1, "expected a number from 0 to 1")]


class _KeywordsAreOptions(type(BaseModel)):
    """`DetectParams(event="2022-3")` checks its keywords as typed options: InputError naming --event. (Not
    an __init__: pydantic would route model_validate through it and lose where values came from.)"""

    def __call__(cls, **values: Any):
        try:
            return super().__call__(**values)
        except ValidationError as exc:
            raise _input_error(exc, lambda key: OPTION if key in values else DEFAULTS_RESOURCE) from None


class DetectParams(BaseModel, metaclass=_KeywordsAreOptions):
    """Everything a detection run depends on besides the data. Months are 'YYYY-MM'; money values are in
    the route's own currency; ratios are plain ratios (2.0 = doubled). No field has a default here: keys
    not given take data/detect_defaults.toml's (see its comments for what each one means)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: Month
    baseline_months: Months
    recent_months: Months
    as_of: Annotated[str | None, BeforeValidator(_month_or_latest)]
    targets: Annotated[tuple[str, ...], BeforeValidator(_countries), _some("expected at least one target country")]
    co_targets: Countries
    origins: Annotated[tuple[str, ...], BeforeValidator(_countries), _some("expected at least one origin country")]
    controls: Countries
    eu_rollup: Flag
    hs_revision: Month
    product_levels: Annotated[tuple[int, ...], BeforeValidator(_levels)]
    use_chpl: Flag
    user_lists: Texts
    source_priority: Texts
    smoothing: AtLeastZero
    cif_fob: Annotated[float, _number(lambda v: v >= 1, "expected a ratio ≥ 1 (CIF is FOB plus freight)")]
    control_floor: Number
    band: Ratio
    band_floor: AtLeastZero
    screen_share: Share
    yardstick_smoothing: AtLeastZero
    min_yardstick_products: Count
    min_chapter_products: Count
    fdr: Annotated[float, _number(lambda v: 0 < v < 1, "expected a false discovery rate between 0 and 1, e.g. 0.10")]
    weight_cap: Ratio
    null_dof: Count
    min_null_size: Count
    scale_floor: Positive
    small_null_scale: Positive
    size_aware_scale: Flag
    min_size_factor: Share
    min_excess: AtLeastZero
    min_growth: Ratio
    min_persistence: Share
    max_spike_share: Share
    min_target_drop: Share
    min_target_base: AtLeastZero
    min_onward_net: Number
    min_onward_growth: Ratio
    ranker: Flag
    ranker_min_probability: Share
    exploration_share: Annotated[float, _number(lambda v: 0 <= v <= 0.5,
                                                "expected a share of the routes shown from 0 to 0.5, e.g. 0.1")]

    @model_validator(mode="before")
    @classmethod
    def _under_defaults(cls, values: Any) -> Any:
        """Keys not given take the defaults file's values (the only place defaults live)."""
        return {**defaults(), **values} if isinstance(values, dict) else values

    @field_validator("user_lists")
    @classmethod
    def _lists_exist(cls, paths: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if (info.context or {}).get("check_files", True):
            for path in paths:
                if not Path(path).expanduser().is_file():
                    raise problem(f"{path}: no such file; expected a CSV of HS or CN codes")
        return paths

    @model_validator(mode="after")
    def _origins_are_not_targets(self) -> "DetectParams":
        overlap = set(self.origins) & (set(self.targets) | set(self.co_targets))
        if overlap:
            raise problem("a country cannot be both origin and target", "origins", value=sorted(overlap))
        return self

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_layers(cls, layers: list[tuple[str, dict[str, Any]]], *, prefix: str = "",
                    check_files: bool = True) -> "DetectParams":
        """Parameters from the defaults overlaid with each (origin, values) of `layers` in turn, the last
        winning. An error names the origin of the bad key's value (a file, OPTION for a typed option);
        `prefix` is put before key names (the pipeline's "detect.")."""
        values: dict[str, Any] = {}
        for _, layer in layers:
            values.update(layer)

        def origin(key: str) -> str:
            return next((where for where, layer in reversed(layers) if key in layer), DEFAULTS_RESOURCE)

        try:
            return cls.model_validate(values, context={"check_files": check_files})
        except ValidationError as exc:
            raise _input_error(exc, origin, prefix) from None

    @classmethod
    def from_toml(cls, path: Path | str | None, **overrides) -> "DetectParams":
        """Parameters from the shipped defaults, then the TOML file at `path` (None: none), then keyword
        `overrides` (None values ignored): typed option > --config file > defaults. Raises InputError
        naming the file (or option) and key for bad content."""
        layers: list[tuple[str, dict[str, Any]]] = []
        if path is not None:
            data = read_toml_file(path, "a TOML file of detection parameters")
            if isinstance(data.get("detect"), dict) and len(data) == 1:
                data = data["detect"]
            layers.append((str(path), data))
        layers.append((OPTION, {k: v for k, v in overrides.items() if v is not None}))
        return cls.from_layers(layers)

    def replace(self, **changes) -> "DetectParams":
        """A copy with `changes` applied (validated, as typed options)."""
        return self.from_layers([(STORED, self.to_dict()), (OPTION, changes)],
                                check_files="user_lists" in changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every parameter (tuples as lists)."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in self}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DetectParams":
        """Rebuild from to_dict() output (a stored run's): unknown keys (from other versions) are ignored,
        keys an older run lacks take today's defaults, and user lists need not exist any more."""
        known = {key: value for key, value in data.items() if key in cls.model_fields}
        return cls.from_layers([(STORED, known)], check_files=False)


def parameter_names() -> list[str]:
    """The detection parameters' names, in the model's order."""
    return list(DetectParams.model_fields)


def _input_error(exc: ValidationError, origin: Callable[[str], str], prefix: str = "") -> InputError:
    def unknown(loc: tuple) -> str:
        return f"unknown parameter (not a detection parameter); expected one of {', '.join(sorted(parameter_names()))}"
    return input_error(exc, origin, unknown=unknown, defaults_file=DEFAULTS_RESOURCE, prefix=prefix)
