"""The pipeline's configuration: defaults only in data/pipeline_defaults.toml (detection's only in
data/detect_defaults.toml), strict keys, one-line errors naming file and key, cron checked by Prefect's own
schedule model."""

from __future__ import annotations

import json

import pytest

from tradewatch.detect.config import DetectParams
from tradewatch.flows import pipeline_config
from tradewatch.flows.core.errors import InputError
from tradewatch.flows.pipeline_config import check_cron, load_config


def test_every_default_comes_from_the_defaults_file(monkeypatch):
    shipped = pipeline_config.defaults_text()
    edited = shipped.replace('cron = "0 6 15 * *"', 'cron = "30 7 16 * *"').replace("artifact_rows = 50",
                                                                                   "artifact_rows = 7")
    assert edited != shipped
    monkeypatch.setattr(pipeline_config, "defaults_text", lambda: edited)
    config = load_config()
    assert (config.cron, config.artifact_rows) == ("30 7 16 * *", 7)
    assert all(field.is_required() for field in pipeline_config._ConfigFile.model_fields.values())


def test_a_key_missing_from_the_defaults_file_is_named(monkeypatch):
    shipped = pipeline_config.defaults_text()
    monkeypatch.setattr(pipeline_config, "defaults_text", lambda: shipped.replace("work_pool =", "# work_pool ="))
    with pytest.raises(InputError, match=r"^pipeline_defaults.toml: schedule.work_pool: no value"):
        load_config()


def test_detection_defaults_are_detections(tmp_path):
    assert load_config().event == DetectParams().event
    config = tmp_path / "p.toml"
    config.write_text('[detect]\nevent = "2022-06"\nfdr = 0.05\n')
    loaded = load_config(config)
    assert loaded.event == "2022-06" and loaded.detect_overrides == {"fdr": 0.05}
    assert json.loads(json.dumps(loaded.to_dict()))["detect"] == {"fdr": 0.05}
    assert loaded.files == ("pipeline_defaults.toml", str(config))


@pytest.mark.parametrize("text, expected", [
    ('[schedule]\ncron = "61 6 15 * *"\n', "schedule.cron '61 6 15 * *': expected five cron fields"),
    ('[schedule]\ncron = "0 6 15 *"\n', "schedule.cron '0 6 15 *': expected five cron fields"),
    ('[schedule]\ncron = "0 6 15 * * 2030"\n', "schedule.cron"),
    ('[schedule]\ncron = "@monthly"\n', "schedule.cron"),
    ('[schedule]\ncron = 6\n', "schedule.cron 6: expected text"),
    ('[schedule]\ncrontab = "0 6 15 * *"\n', "schedule.crontab '0 6 15 * *': unknown key; expected one of schedule.cron"),
    ('[shedule]\ncron = "0 6 15 * *"\n', "shedule {'cron': '0 6 15 * *'}: unknown key; expected one of sources"),
    ('schedule = "monthly"\n', "schedule 'monthly': expected a table [schedule]"),
    ('[sources.comext]\nstart = "2022-13"\n', "sources.comext.start '2022-13': month 13 is not between 01 and 12"),
    ('[sources.comext]\nbase_url = "ftp://x"\n', "sources.comext.base_url 'ftp://x': expected an http(s) URL"),
    ('[run]\ntask_runner = "spark"\n', "run.task_runner 'spark': expected one of thread, dask"),
    ('[detect]\nbaseline_months = 0\n', "detect.baseline_months 0: expected a whole number of months from 1 to 240"),
])
def test_errors_are_one_line_naming_file_key_and_expectation(tmp_path, text, expected):
    config = tmp_path / "p.toml"
    config.write_text(text)
    with pytest.raises(InputError) as failed:
        load_config(config)
    message = str(failed.value)
    assert message.startswith(f"{config}: ") and expected in message and "\n" not in message


@pytest.mark.parametrize("cron", ["0 6 15 * *", "*/15 2-4 * * MON-FRI", "  0  6 15 * * "])
def test_good_cron_expressions_pass_normalised(cron):
    assert check_cron(cron) == " ".join(cron.split())


@pytest.mark.parametrize("cron", ["61 6 15 * *", "0 25 * * *", "0 6 15 *", "monthly", "0 6 15 * * *", ""])
def test_bad_cron_options_name_the_option(cron):
    with pytest.raises(InputError) as failed:
        check_cron(cron, "--cron")
    assert str(failed.value).startswith(f"--cron {cron!r}: expected five cron fields")
