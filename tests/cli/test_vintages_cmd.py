"""After a revision: `detect --reproduce` recomputes a past run identically, `status --revisions` lists the
revision, `flags show` shows the evidence as the run read it and says the data were revised after the review;
a file that would shrink a loaded month is refused unless --allow-shrink."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tradewatch.cli.main import app

HEADER = ("REPORTER,PARTNER,TRADE_TYPE,PRODUCT_NC,PRODUCT_SITC,PRODUCT_CPA21,PRODUCT_CPA22,PRODUCT_BEC,PRODUCT_BEC5,"
          "PRODUCT_SECTION,FLOW,STAT_PROCEDURE,SUPPL_UNIT,PERIOD,VALUE_EUR,VALUE_NAC,QUANTITY_KG,QUANTITY_SUPPL_UNIT")
REPORTERS = ("DE", "FR", "PL", "IT")
PARTNERS = ("RU", "KZ", "GE", "AM", "TR", "US")
PRODUCTS = ("85423190", "84713000", "85176200", "90138000", "73181500")
DIVERTED = ("DE", "KZ", "85423190")
MONTHS = [f"{y}-{m:02d}" for y in (2021, 2022) for m in range(1, 13) if "2021-03" <= f"{y}-{m:02d}" <= "2022-08"]


def _month_file(folder: Path, month: str, *, diverted: float = 25.0, keep: int | None = None) -> Path:
    """full_YYYYMM.dat in the real Comext layout; after 2022-03 exports to Russia fall and DE→KZ chips grow
    ×`diverted`. `keep`: only the first `keep` rows (a file cut short)."""
    after = month >= "2022-03"
    lines = []
    for r, reporter in enumerate(REPORTERS):
        for p, partner in enumerate(PARTNERS):
            for k, product in enumerate(PRODUCTS):
                value = 10_000 * (1 + r) * (1 + p) + 1_000 * k + 37 * int(month[5:])
                value *= 0.1 if after and partner == "RU" else 1
                value *= diverted if after and (reporter, partner, product) == DIVERTED else 1
                lines.append(f"{reporter},{partner},E,{product},,,,,,,2,,,{month.replace('-', '')},{int(value)},,,")
    path = folder / f"full_{month.replace('-', '')}.dat"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "\n" + "\n".join(lines[:keep]) + "\n")
    return path


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def world(tmp_path):
    from tradewatch.flows import ingest

    db = tmp_path / "w.duckdb"
    ingest.ingest_paths(db, [_month_file(tmp_path / "v1", m) for m in MONTHS])
    config = tmp_path / "detect.toml"
    config.write_text('event = "2022-03"\nbaseline_months = 12\nrecent_months = 6\n')
    return db, config, tmp_path


def _flags(db: Path, config: Path) -> list[dict]:
    done = _cli("detect", "--db", str(db), "--config", str(config), "--format", "json", "--top", "500")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def test_a_past_run_is_reproduced_after_a_revision_and_the_revision_is_told(world):
    db, config, tmp = world
    before = _flags(db, config)
    route = next(r for r in before if (r["origin_iso3"], r["transit_iso3"]) == ("DEU", "KAZ")
                 and r["product_code"] == "854231")
    reviewed = _cli("flags", "review", route["id"], "--status", "watch", "--note", "checked the legs", "--db", str(db))
    assert reviewed.exit_code == 0, reviewed.output
    runs = _cli("runs", "--db", str(db), "--format", "json")
    first_run = json.loads(runs.stdout)[0]["run_id"]

    # August is revised: the diverted flow was a tenth of what was first published.
    result = _cli("ingest", "files", str(_month_file(tmp / "v2", "2022-08", diverted=2.5)), "--db", str(db))
    assert result.exit_code == 0, result.output
    after = _flags(db, config)
    old_score = route["score"]
    new = next(r for r in after if r["id"] == route["id"]) if any(r["id"] == route["id"] for r in after) else None
    assert new is None or new["score"] != old_score or new["excess_value"] != route["excess_value"]

    reproduced = _cli("detect", "--reproduce", first_run, "--db", str(db))
    assert reproduced.exit_code == 0, reproduced.output
    assert reproduced.stdout.startswith(f"identical: {len(before)} flag(s), the same routes, ranks and scores")
    assert "run hash equal" in reproduced.stdout
    assert "1 revision(s) loaded since are left out" in reproduced.stderr

    revisions = _cli("status", "--revisions", "--db", str(db), "--json")
    listed = json.loads(revisions.stdout)
    # Only Germany's partition changed, and in it only the diverted flow: one row replaced of 30.
    assert [(r["period"], r["rows_before"], r["rows_after"], r["rows_replaced"], Path(r["file"]).name)
            for r in listed] == [("2022-08", 30, 30, 1, "full_202208.dat")]
    assert listed[0]["value_after"] < listed[0]["value_before"]
    table = _cli("status", "--revisions", "--db", str(db))
    assert "2022-08" in table.stdout and "30 → 30" in table.stdout

    shown = _cli("flags", "show", route["id"], "--run", first_run, "--db", str(db))
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())
    assert "data revised after its last review: the evidence above is the data as the run read it" in text
    assert "comext 2022-08: 1 row(s) of this route's legs replaced by load" in text, text[-400:]

    report = _cli("report", "--run", first_run, "--db", str(db), "--out", str(tmp / "r.html"))
    assert report.exit_code == 0, report.output
    assert f"Data were revised after run {first_run}: the report shows the data as that run read them" in report.stderr
    latest = _cli("report", "--db", str(db), "--out", str(tmp / "latest.html"))
    assert latest.exit_code == 0 and "Data were revised" not in latest.stderr


def test_reproduce_says_when_the_recomputation_differs(world):
    """The check can fail: with the kept vintage of a month removed, the run's data cannot be rebuilt."""
    import duckdb

    db, config, tmp = world
    _flags(db, config)
    assert _cli("ingest", "files", str(_month_file(tmp / "v2", "2022-08", diverted=2.5)), "--db", str(db)).exit_code == 0
    _flags(db, config)  # a second run, on the revised data
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM trade_flows_history")
    con.close()
    done = _cli("detect", "--reproduce", "latest", "--db", str(db))
    assert done.exit_code == 0 and done.stdout.startswith("identical"), done.output  # read no replaced row
    first = json.loads(_cli("runs", "--db", str(db), "--format", "json").stdout)[-1]["run_id"]
    done = _cli("detect", "--reproduce", first, "--db", str(db))
    assert done.exit_code == 1 and done.stdout.startswith("differs:"), done.output


def test_reproduce_refuses_other_options_and_unknown_runs_in_one_line(world):
    db, config, _ = world
    _flags(db, config)
    done = _cli("detect", "--reproduce", "latest", "--fdr", "0.1", "--db", str(db))
    assert done.exit_code == 2 and done.stderr.strip().count("\n") == 0
    assert "--reproduce latest --fdr" in done.stderr and "run's own parameters" in done.stderr
    done = _cli("detect", "--reproduce", "nosuchrun", "--db", str(db))
    assert done.exit_code == 2 and "--reproduce nosuchrun: no such run" in done.stderr


def test_a_file_cut_short_is_refused_unless_allowed(world):
    db, _, tmp = world
    cut = _month_file(tmp / "cut", "2022-05", keep=10)
    done = _cli("ingest", "files", str(cut), "--db", str(db))
    assert done.exit_code == 2, done.output
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {cut}: refused: it would replace comext 2022-05 ") and "--allow-shrink" in line
    assert "loaded with 30 rows" in line and "with 10 worth" in line
    status = json.loads(_cli("status", "--db", str(db), "--json").stdout)
    may = [r for r in status["trade_flows"] if r["period"] == "2022-05"]
    assert sum(r["rows"] for r in may) == 120
    done = _cli("ingest", "files", str(cut), "--db", str(db), "--allow-shrink")
    assert done.exit_code == 0, done.output
    status = json.loads(_cli("status", "--db", str(db), "--json").stdout)
    may = [r for r in status["trade_flows"] if r["period"] == "2022-05"]
    assert sum(r["rows"] for r in may) == 10 + 90  # DE cut to its first 10 rows; FR, PL, IT untouched
