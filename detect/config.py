"""Detection parameters: defaults from data/detect_defaults.toml and countries.toml, overridable by a TOML file or keywords."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from tradewatch.flows.core.errors import InputError

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@lru_cache(maxsize=1)
def shipped_defaults() -> dict[str, Any]:
    """The keys of data/detect_defaults.toml as parsed TOML."""
    text = resources.files("tradewatch.data").joinpath("detect_defaults.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@lru_cache(maxsize=1)
def country_groups() -> dict[str, tuple[str, ...]]:
    """The country groups of data/countries.toml (eu27, coalition_other, targets, co_targets, controls, …)."""
    text = resources.files("tradewatch.data").joinpath("countries.toml").read_text(encoding="utf-8")
    return {key: tuple(value) for key, value in tomllib.loads(text).items() if isinstance(value, list)}


def _group_default(key: str, groups: tuple[str, ...]):
    def make() -> tuple[str, ...]:
        given = shipped_defaults().get(key) or []
        if given:
            return tuple(given)
        return tuple(code for group in groups for code in country_groups()[group])
    return make


def _default(key: str):
    def make():
        value = shipped_defaults()[key]
        return tuple(value) if isinstance(value, list) else value
    return make


@dataclass
class DetectParams:
    """Everything a detection run depends on besides the data. Months are 'YYYY-MM'; money values are in
    the route's own currency; ratios are plain ratios (2.0 = doubled)."""

    event: str = field(default_factory=_default("event"))
    baseline_months: int = field(default_factory=_default("baseline_months"))
    recent_months: int = field(default_factory=_default("recent_months"))
    as_of: str | None = None
    targets: tuple[str, ...] = ("RUS",)
    co_targets: tuple[str, ...] = ("BLR",)
    origins: tuple[str, ...] = field(default_factory=_group_default("origins", ("eu27", "coalition_other")))
    controls: tuple[str, ...] = field(default_factory=_group_default("controls", ("controls",)))
    eu_rollup: bool = field(default_factory=_default("eu_rollup"))
    hs_revision: str = field(default_factory=_default("hs_revision"))
    product_levels: tuple[int, ...] = field(default_factory=_default("product_levels"))
    use_chpl: bool = field(default_factory=_default("use_chpl"))
    user_lists: tuple[str, ...] = field(default_factory=_default("user_lists"))
    source_priority: tuple[str, ...] = field(default_factory=_default("source_priority"))
    smoothing: float = field(default_factory=_default("smoothing"))
    cif_fob: float = field(default_factory=_default("cif_fob"))
    control_floor: float = field(default_factory=_default("control_floor"))
    band: float = field(default_factory=_default("band"))
    screen_share: float = field(default_factory=_default("screen_share"))
    yardstick_smoothing: float = field(default_factory=_default("yardstick_smoothing"))
    min_yardstick_products: int = field(default_factory=_default("min_yardstick_products"))
    min_chapter_products: int = field(default_factory=_default("min_chapter_products"))
    fdr: float = field(default_factory=_default("fdr"))
    weight_cap: float = field(default_factory=_default("weight_cap"))
    null_dof: int = field(default_factory=_default("null_dof"))
    min_null_size: int = field(default_factory=_default("min_null_size"))
    scale_floor: float = field(default_factory=_default("scale_floor"))
    small_null_scale: float = field(default_factory=_default("small_null_scale"))
    min_excess: float = field(default_factory=_default("min_excess"))
    min_growth: float = field(default_factory=_default("min_growth"))
    min_persistence: float = field(default_factory=_default("min_persistence"))
    max_spike_share: float = field(default_factory=_default("max_spike_share"))
    min_target_drop: float = field(default_factory=_default("min_target_drop"))
    min_target_base: float = field(default_factory=_default("min_target_base"))
    min_onward_net: float = field(default_factory=_default("min_onward_net"))
    min_onward_growth: float = field(default_factory=_default("min_onward_growth"))

    def __post_init__(self) -> None:
        self._validate("option")

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: Path | str | None, **overrides) -> "DetectParams":
        """Parameters from the shipped defaults, then the TOML file at `path` (None: none), then keyword
        `overrides` (None values ignored). Raises InputError naming the file and key for bad content."""
        values: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            where = str(path)
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise InputError(where, "no such file; expected a TOML file of detection parameters") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(where, f"cannot read: {exc}") from None
            except tomllib.TOMLDecodeError as exc:
                raise InputError(where, f"not valid TOML ({exc})") from None
            if isinstance(data.get("detect"), dict) and len(data) == 1:
                data = data["detect"]
            values.update(_coerce(data, where))
        values.update(_coerce({k: v for k, v in overrides.items() if v is not None}, "option"))
        params = cls.__new__(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            setattr(params, f.name, values.get(f.name, getattr(defaults, f.name)))
        params._validate(str(path) if path is not None else "option")
        return params

    def replace(self, **changes) -> "DetectParams":
        """A copy with `changes` applied (validated)."""
        return dataclasses.replace(self, **_coerce(changes, "option"))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every parameter (tuples as lists)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DetectParams":
        """Rebuild from to_dict() output; unknown keys (from other versions) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**_coerce({k: v for k, v in data.items() if k in known}, "stored run"))

    # --- checks ---------------------------------------------------------------------------------

    def _validate(self, where: str) -> None:
        for name in ("event", "hs_revision") + (("as_of",) if self.as_of is not None else ()):
            value = getattr(self, name)
            match = _MONTH.match(str(value))
            if not match or not 1 <= int(match.group(2)) <= 12:
                raise InputError(_where(where, name, value), "expected a month as YYYY-MM, e.g. 2022-03")
        for name in ("baseline_months", "recent_months"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 240:
                raise InputError(_where(where, name, value), "expected a whole number of months from 1 to 240")
        for name in ("targets", "co_targets", "origins", "controls"):
            for code in getattr(self, name):
                if not isinstance(code, str) or not re.fullmatch(r"[A-Z]{3}", code):
                    raise InputError(_where(where, name, code), "expected ISO 3166 alpha-3 country codes, e.g. RUS")
        if not self.targets:
            raise InputError(_where(where, "targets", "[]"), "expected at least one target country")
        if not self.origins:
            raise InputError(_where(where, "origins", "[]"), "expected at least one origin country")
        overlap = set(self.origins) & (set(self.targets) | set(self.co_targets))
        if overlap:
            raise InputError(_where(where, "origins", ",".join(sorted(overlap))), "a country cannot be both origin and target")
        if not self.product_levels or any(level not in (4, 6) for level in self.product_levels) or 6 not in self.product_levels:
            raise InputError(_where(where, "product_levels", list(self.product_levels)), "expected [6] or [6, 4]")
        for name in ("smoothing", "yardstick_smoothing", "min_excess", "min_target_base"):
            if not getattr(self, name) >= 0:
                raise InputError(_where(where, name, getattr(self, name)), "expected a number ≥ 0")
        if not self.cif_fob >= 1:
            raise InputError(_where(where, "cif_fob", self.cif_fob), "expected a ratio ≥ 1 (IMF default 1.06)")
        if not self.min_growth >= 1:
            raise InputError(_where(where, "min_growth", self.min_growth), "expected a ratio ≥ 1")
        for name in ("min_yardstick_products", "min_chapter_products", "null_dof", "min_null_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
                raise InputError(_where(where, name, value), "expected a whole number from 1 to 1000")
        for name in ("band", "min_onward_growth", "weight_cap"):
            if not getattr(self, name) >= 1:
                raise InputError(_where(where, name, getattr(self, name)), "expected a ratio ≥ 1")
        if not 0 < self.fdr < 1:
            raise InputError(_where(where, "fdr", self.fdr), "expected a false discovery rate between 0 and 1, e.g. 0.10")
        for name in ("scale_floor", "small_null_scale"):
            if not getattr(self, name) > 0:
                raise InputError(_where(where, name, getattr(self, name)), "expected a number > 0")
        for name in ("min_persistence", "max_spike_share", "min_target_drop", "screen_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(_where(where, name, getattr(self, name)), "expected a number from 0 to 1")
        for path in self.user_lists:
            if not Path(path).expanduser().is_file():
                raise InputError(_where(where, "user_lists", path), "no such file; expected a CSV of HS or CN codes")


def _where(where: str, key: str, value) -> str:
    if where == "option":
        return f"--{key.replace('_', '-')} {value}"
    return f"{where}: {key} = {value!r}"


def _field_kinds() -> dict[str, str]:
    kinds = {}
    for f in dataclasses.fields(DetectParams):
        text = str(f.type)
        if text.startswith("tuple[str"):
            kinds[f.name] = "strs"
        elif text.startswith("tuple[int"):
            kinds[f.name] = "ints"
        elif text == "bool":
            kinds[f.name] = "bool"
        elif text == "int":
            kinds[f.name] = "int"
        elif text == "float":
            kinds[f.name] = "float"
        else:
            kinds[f.name] = "str"
    return kinds


def _coerce(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Check names and types of user-given values; lists become tuples, country codes upper case."""
    kinds = _field_kinds()
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in kinds:
            raise InputError(_where(where, key, value) if where != "option" else f"{where} {key}",
                             f"unknown parameter; expected one of {', '.join(sorted(kinds))}")
        kind = kinds[key]
        bad = InputError(_where(where, key, value), f"expected {_KIND_WORDS[kind]}")
        if kind in ("strs", "ints"):
            if isinstance(value, str):
                value = [v for v in re.split(r"[,\s]+", value) if v]
            if not isinstance(value, (list, tuple)):
                raise bad
            if kind == "ints":
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                    raise bad
                value = tuple(value)
            else:
                if not all(isinstance(v, str) for v in value):
                    raise bad
                value = tuple(v.strip().upper() if key not in ("user_lists", "source_priority") else v.strip()
                              for v in value)
        elif kind == "bool":
            if not isinstance(value, bool):
                raise bad
        elif kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad
            value = float(value)
        else:
            if value is not None and not isinstance(value, str):
                raise bad
        out[key] = value
    return out


_KIND_WORDS = {
    "strs": "a list of text values", "ints": "a list of whole numbers", "bool": "true or false",
    "int": "a whole number", "float": "a number", "str": "text",
}
