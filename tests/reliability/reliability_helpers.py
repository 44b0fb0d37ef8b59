"""Shared helpers for the reliability tests: an isolated TRADEWATCH_HOME, a seeded warehouse, the real CLI, snapshots."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corpus import GOOD_ROWS, dat
from tradewatch.cli.main import app
from tradewatch.flows import ingest, warehouse
from tradewatch.flows.sources import ecb

FAKE_KEY = "tw-FAKE-comtrade-key-5f1c0ffee"
ECB_SEED = (b"KEY,FREQ,CURRENCY,CURRENCY_DENOM,EXR_TYPE,EXR_SUFFIX,TIME_PERIOD,OBS_VALUE\n"
            b"EXR.M.USD.EUR.SP00.A,M,USD,EUR,SP00,A,2021-12,1.1304\n")

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh TRADEWATCH_HOME; fast retries and lock waits; no API key unless a test sets one."""
    folder = tmp_path / "twhome"
    folder.mkdir()
    monkeypatch.setenv("TRADEWATCH_HOME", str(folder))
    monkeypatch.setenv("TRADEWATCH_RETRY_ATTEMPTS", "3")
    monkeypatch.setenv("TRADEWATCH_RETRY_BASE_DELAY_S", "0.01")
    monkeypatch.setenv("TRADEWATCH_RETRY_MAX_DELAY_S", "0.02")
    monkeypatch.setenv("TRADEWATCH_RETRY_MAX_AFTER_S", "0.05")
    monkeypatch.setenv("TRADEWATCH_HTTP_TIMEOUT_S", "3")
    monkeypatch.setenv("TRADEWATCH_COMTRADE_INTERVAL_S", "0")
    monkeypatch.setenv("TRADEWATCH_LOCK_WAIT_S", "2")
    monkeypatch.delenv("COMTRADE_API_KEY", raising=False)
    monkeypatch.delenv("TRADEWATCH_DEBUG", raising=False)
    return folder


def build_seeded(path: Path) -> Path:
    """A warehouse holding one good Comext month (2022-02, three rows) and one ECB rate, so a refused file
    can be seen to leave it untouched."""
    seed = path.parent / "seed"
    seed.mkdir(parents=True, exist_ok=True)
    (seed / "full_202202.dat").write_bytes(dat(GOOD_ROWS).replace(b"202203", b"202202"))
    (seed / "ecb.csv").write_bytes(ECB_SEED)
    con = warehouse.connect(path)
    try:
        ingest.load_file(con, seed / "full_202202.dat")
        ecb.load_rates(con, seed / "ecb.csv")
    finally:
        con.close()
    return path


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory) -> Path:
    return build_seeded(tmp_path_factory.mktemp("seeded") / "w.duckdb")


@pytest.fixture(scope="session")
def seeded_status(seeded_template) -> dict:
    """`tradewatch status --json` of the seeded warehouse (every copy answers the same)."""
    return status_json(seeded_template)


@pytest.fixture
def seeded_db(seeded_template, tmp_path) -> Path:
    """A private copy of the seeded warehouse."""
    path = tmp_path / "db" / "w.duckdb"
    path.parent.mkdir()
    shutil.copyfile(seeded_template, path)
    return path


def snapshot(con) -> dict:
    """What a refused file must not change: `status` rows, trade_flows and fx_rates counts and sums, the
    quarantine's size."""
    def one(sql):
        return con.execute(sql).fetchall()[0]

    return {
        "status": warehouse.status_rows(con),
        "trade_flows": one("SELECT count(*), sum(value), count(DISTINCT partner_iso3) FROM trade_flows"),
        "trade_totals": one("SELECT count(*), sum(value) FROM trade_totals"),
        "fx_rates": con.execute("SELECT period, rate FROM fx_rates ORDER BY period").fetchall(),
        "quarantine": one("SELECT count(*) FROM quarantine"),
        "ok_loads": one("SELECT count(*) FROM loads WHERE status IN ('ok', 'empty')"),
    }


def db_snapshot(db: Path) -> dict:
    with warehouse.opened(db, read_only=True) as con:
        return snapshot(con)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def cli(*args: str, env: dict | None = None) -> CliResult:
    """Run `tradewatch ARGS` in this process; stdout and stderr kept apart."""
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


def assert_one_line_error(result: CliResult, *needles: str) -> str:
    """Exit code 2, exactly one non-empty stderr line (`error: …`) holding every needle, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.stdout)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@dataclass
class Tally:
    """What the reliability tests of this session tried, for the summary tests/reliability/conftest.py prints:
    the distinct inputs per kind (a corpus case, a config file, a model folder, a review option, a generated
    file), the runs through the library and the CLI, the faults injected, and the input records of accepted
    files against those stored, quarantined or counted as not available (the difference is rows lost)."""

    inputs: dict[str, set] = field(default_factory=dict)
    runs: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    records: int = 0
    accounted: int = 0

    def tried(self, kind: str, name: str, via: str = "library") -> None:
        self.inputs.setdefault(kind, set()).add(name)
        self.runs[via] += 1

    def injected(self, fault: str, times: int = 1) -> None:
        self.faults[fault] += times

    def rows(self, records: int, accounted: int) -> None:
        self.records += records
        self.accounted += accounted

    @property
    def lost(self) -> int:
        return self.records - self.accounted

    def to_dict(self) -> dict:
        """Plain data, for a pytest-xdist worker to send to the controller (which prints the summary)."""
        return {"inputs": {kind: sorted(names) for kind, names in self.inputs.items()}, "runs": dict(self.runs),
                "faults": dict(self.faults), "records": self.records, "accounted": self.accounted}

    def merge(self, data: dict) -> None:
        """Add a worker's to_dict(): inputs are sets (a case tried on two workers counts once)."""
        for kind, names in data["inputs"].items():
            self.inputs.setdefault(kind, set()).update(names)
        self.runs.update(data["runs"])
        self.faults.update(data["faults"])
        self.records += data["records"]
        self.accounted += data["accounted"]

    def summary(self) -> list[str]:
        inputs = sum(len(names) for names in self.inputs.values())
        kinds = ", ".join(f"{kind} {len(names)}" for kind, names in sorted(self.inputs.items()))
        faults = ", ".join(f"{name} {count}" for name, count in sorted(self.faults.items()))
        runs = ", ".join(f"{via} {count}" for via, count in sorted(self.runs.items()))
        return [f"inputs tried: {inputs} ({kinds}); runs: {runs}",
                f"faults injected: {sum(self.faults.values())} ({faults or 'none'})",
                f"rows lost: {self.lost} of {self.records:,} input records of accepted files "
                f"({self.accounted:,} stored, quarantined or counted as not available)"]


TALLY = Tally()


def status_json(db: Path) -> dict:
    result = cli("status", "--db", db, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def files_under(folder: Path) -> set[Path]:
    return {p for p in Path(folder).rglob("*") if p.is_file()} if Path(folder).exists() else set()
