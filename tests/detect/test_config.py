"""Detection parameters: shipped defaults, TOML overrides and one-line errors for bad values."""

from __future__ import annotations

import json
import tomllib
from importlib import resources

import pytest

from tradewatch.detect import config
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


def test_every_parameter_has_its_default_in_the_toml_file_and_nowhere_else():
    assert set(config.shipped_defaults()) == set(DetectParams.model_fields)
    assert all(field.is_required() for field in DetectParams.model_fields.values()), "a default in Python"


def test_editing_a_default_in_the_toml_file_changes_the_default(monkeypatch):
    shipped = config.read_resource(config.DEFAULTS_RESOURCE)
    edited = shipped.replace("baseline_months = 24", "baseline_months = 18").replace(
        'event = "2022-03"', 'event = "2022-02"')
    assert edited != shipped
    real = config.read_resource
    monkeypatch.setattr(config, "read_resource",
                        lambda name: edited if name == config.DEFAULTS_RESOURCE else real(name))
    config.shipped_defaults.cache_clear()
    try:
        assert (DetectParams().baseline_months, DetectParams().event) == (18, "2022-02")
        assert DetectParams.from_toml(None, recent_months=6).baseline_months == 18
        assert DetectParams.from_dict({"event": "2022-03"}).baseline_months == 18
    finally:
        config.shipped_defaults.cache_clear()
    monkeypatch.undo()
    assert DetectParams().baseline_months == 24


def test_a_key_missing_from_the_defaults_file_is_named(monkeypatch):
    shipped = config.read_resource(config.DEFAULTS_RESOURCE)
    monkeypatch.setattr(config, "read_resource", lambda name: shipped.replace("min_growth =", "# min_growth ="))
    config.shipped_defaults.cache_clear()
    try:
        with pytest.raises(InputError, match=r"detect_defaults.toml: min_growth: no value"):
            DetectParams()
    finally:
        config.shipped_defaults.cache_clear()


def test_file_errors_are_one_line_with_file_key_value_and_expectation(tmp_path):
    f = tmp_path / "f.toml"
    f.write_text("baseline_months = 0\n")
    with pytest.raises(InputError) as info:
        DetectParams.from_toml(f)
    assert str(info.value) == f"{f}: baseline_months 0: expected a whole number of months from 1 to 240"
    f.write_text('[detect]\nevent = "2022-13"\n')
    with pytest.raises(InputError, match=r"event '2022-13': month 13 is not between 01 and 12"):
        DetectParams.from_toml(f)
    f.write_text('fdr = 0.2\n')
    with pytest.raises(InputError, match=r"^--fdr 1.5: expected a false discovery rate"):
        DetectParams.from_toml(f, fdr=1.5)  # the typed value is the bad one, so the option is named


def test_typed_option_beats_the_config_file_which_beats_the_defaults(tmp_path):
    f = tmp_path / "f.toml"
    f.write_text('event = "2022-06"\nrecent_months = 6\n')
    from_file = DetectParams.from_toml(f, event=None, fdr=None)
    assert (from_file.event, from_file.recent_months, from_file.baseline_months) == ("2022-06", 6, 24)
    typed = DetectParams.from_toml(f, event="2022-04")
    assert (typed.event, typed.recent_months) == ("2022-04", 6)


def test_unknown_keywords_and_replace_are_checked():
    with pytest.raises(InputError, match=r"^--thresholds 3: unknown parameter"):
        DetectParams(thresholds=3)
    params = DetectParams()
    assert params.replace(event="2021-03", as_of="2022-02").event == "2021-03"
    assert params.replace(as_of=None).as_of is None
    with pytest.raises(InputError, match=r"^--recent-months 0: expected a whole number of months"):
        params.replace(recent_months=0)
    with pytest.raises(InputError, match=r"^--origins RUS: a country cannot be both origin and target"):
        params.replace(origins=["RUS"])


def test_stored_params_of_older_runs_still_load():
    stored = {"event": "2022-03", "baseline_months": 12, "product_levels": [6], "windows": {"recent_end": "2023-12"},
              "user_lists": ["/gone/since/list.csv"], "a_key_of_a_later_version": 1}
    params = DetectParams.from_dict(stored)
    assert params.baseline_months == 12 and params.product_levels == (6,)
    assert params.user_lists == ("/gone/since/list.csv",)
    assert params.min_growth == DetectParams().min_growth, "a key the old run lacks takes today's default"
    assert DetectParams.from_dict(params.to_dict()) == params
    assert json.loads(params.to_json())["as_of"] is None


def test_as_of_latest_and_comma_lists(tmp_path):
    f = tmp_path / "f.toml"
    f.write_text('as_of = "latest"\ncontrols = "bra, mex"\n')
    params = DetectParams.from_toml(f)
    assert params.as_of is None and params.controls == ("BRA", "MEX")
    assert hash(params) == hash(DetectParams.from_toml(f))
