"""Detection parameters: shipped defaults, TOML overrides and one-line errors for bad values."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from tradewatch.detect.config import DetectParams, country_groups
from tradewatch.flows.core.errors import InputError


def test_defaults_come_from_the_shipped_files():
    params = DetectParams()
    shipped = tomllib.loads(resources.files("tradewatch.data").joinpath("detect_defaults.toml").read_text())
    assert params.event == shipped["event"] == "2022-03"
    assert params.baseline_months == shipped["baseline_months"] == 24
    assert params.recent_months == shipped["recent_months"] == 12
    assert params.min_excess == shipped["min_excess"]
    assert params.targets == ("RUS",) and params.co_targets == ("BLR",)
    groups = country_groups()
    assert set(params.origins) == set(groups["eu27"]) | set(groups["coalition_other"])
    assert params.controls == groups["controls"]
    assert not set(params.origins) & {"RUS", "BLR"}


def test_toml_file_and_keywords_override(tmp_path):
    config = tmp_path / "detect.toml"
    config.write_text('baseline_months = 12\nmin_excess = 5e5\norigins = ["deu", "FRA"]\nuse_chpl = false\n')
    params = DetectParams.from_toml(config, event="2021-03", recent_months=None)
    assert params.baseline_months == 12 and params.min_excess == 500_000.0
    assert params.origins == ("DEU", "FRA") and params.use_chpl is False
    assert params.event == "2021-03" and params.recent_months == 12
    assert DetectParams.from_dict(params.to_dict()) == params


@pytest.mark.parametrize("text, where, expected", [
    ("min_growth = 'a lot'\n", "min_growth", "expected a number"),
    ("baseline_months = 0\n", "baseline_months", "1 to 240"),
    ("event = '2022-13'\n", "event", "YYYY-MM"),
    ("thresholds = 3\n", "thresholds", "unknown parameter"),
    ("origins = ['RUS']\n", "origins", "both origin and target"),
    ("product_levels = [4]\n", "product_levels", "[6] or [6, 4]"),
    ("user_lists = ['/nonexistent/list.csv']\n", "user_lists", "no such file"),
    ("min_growth = \n", "", "not valid TOML"),
])
def test_bad_toml_values_name_file_key_and_expectation(tmp_path, text, where, expected):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(InputError) as info:
        DetectParams.from_toml(config)
    message = str(info.value)
    assert str(config) in message and where in message and expected in message
    assert "\n" not in message


def test_bad_keyword_names_the_option():
    with pytest.raises(InputError, match=r"--event 2022-3: expected a month as YYYY-MM"):
        DetectParams(event="2022-3")
    with pytest.raises(InputError, match="--as-of"):
        DetectParams.from_toml(None, as_of="March")
