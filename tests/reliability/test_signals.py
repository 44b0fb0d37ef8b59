"""SIGINT and SIGTERM at random moments (seeded) through the library, `tradewatch ingest files`, `tradewatch
detect` and the Prefect flow (`ingest comext`): the warehouse holds whole files only, the CLI ends with one
line on stderr saying what was kept (its counts equal what is stored), exit code 130 or 143, no traceback,
no scratch left, and the same command run again completes."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from corpus import seven_zip
from reliability_helpers import home  # noqa: F401  (fixture)
from test_kill import _month_text, _stale_scratch
from tradewatch.flows import ingest, warehouse

sys.path.insert(0, str(Path(__file__).parents[1] / "flows"))
from fakeserver import FakeServer, Reply  # noqa: E402

pytestmark = pytest.mark.slow

MONTHS = [f"2022-{m:02d}" for m in range(1, 9)]
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
COUNTED = re.compile(r"interrupted: (\d+) of (\d+) files? loaded")


def _month_file(folder: Path, month: str, rows: int, *, packed: bool = False) -> tuple[Path, tuple[int, int]]:
    """A Comext month (test_kill's rows, value × the month's number) as full_YYYYMM.dat, or as Eurostat's
    full_v2_YYYYMM.7z with `packed`. Returns the path and the month's (rows, value sum)."""
    text, (count, total) = _month_text(int(month[5:]), rows)
    text = text.replace(",202203,", f",{month.replace('-', '')},")
    folder.mkdir(parents=True, exist_ok=True)
    name = f"full_{month.replace('-', '')}.dat"
    if packed:
        path = folder / f"full_v2_{month.replace('-', '')}.7z"
        path.write_bytes(seven_zip({name: text.encode()}))
    else:
        path = folder / name
        path.write_text(text)
    return path, (count, total)


def _months(folder: Path, rows: int, **kwargs) -> dict[str, tuple[int, int]]:
    return {month: _month_file(folder, month, rows, **kwargs)[1] for month in MONTHS}


def _stored(db: Path, expected: dict[str, tuple[int, int]]) -> int:
    """Assert that the warehouse holds whole months only, each recorded by one `loads` row with the rows
    and value stored; returns how many months it holds."""
    if not db.exists():
        return 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        flows = {period.strftime("%Y-%m"): (rows, total) for period, rows, total in con.execute(
            "SELECT period, count(*), sum(value) FROM trade_flows GROUP BY period").fetchall()}
        loads = {period.strftime("%Y-%m"): (rows, value) for period, rows, value in con.execute(
            """SELECT period, rows, value_sum FROM loads WHERE status = 'ok'
               QUALIFY row_number() OVER (PARTITION BY period ORDER BY load_id DESC) = 1""").fetchall()}
    finally:
        con.close()
    for month, state in flows.items():
        assert state == expected[month], f"{month}: part of a file is stored: {state}, the file holds {expected[month]}"
        assert loads.get(month) == (state[0], float(state[1])), f"{month}: loads {loads.get(month)} ≠ stored {state}"
    assert set(loads) == set(flows), f"loads without rows or rows without loads: {set(loads) ^ set(flows)}"
    return len(flows)


def _signal(child: subprocess.Popen, signum: int) -> None:
    """SIGINT as a terminal sends it (to the whole process group), SIGTERM as `kill` does (to the process)."""
    if signum == signal.SIGINT:
        os.killpg(child.pid, signum)
    else:
        child.send_signal(signum)


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "tradewatch.cli.main", *map(str, args)]


def _start(command: list[str], env: dict | None = None) -> subprocess.Popen:
    # A session of its own, as a terminal's foreground job: SIGINT to the group reaches only this run.
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)


def _measured(command: list[str], env: dict | None = None) -> float:
    """Seconds `command` runs after its signal handlers are in place (the window a signal can land in:
    _interrupt counts its delay from the same moment, so Python's start-up is not part of it)."""
    child = _start(command, env)
    _handlers_installed(child)
    began = time.monotonic()
    _, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    return time.monotonic() - began


def _handlers_installed(child: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Wait until the child catches SIGTERM (Linux: /proc/PID/status SigCgt), i.e. tradewatch has installed
    its handlers. A signal before that, while Python itself starts, is outside the program's reach (and on
    a loaded machine that can take longer than any fixed delay)."""
    status = Path(f"/proc/{child.pid}/status")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.poll() is None:
        try:
            caught = next(line for line in status.read_text().splitlines() if line.startswith("SigCgt:"))
        except (OSError, StopIteration):
            return  # no /proc here: rely on the delay alone
        if int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1:
            return
        time.sleep(0.005)


def _interrupt(command: list[str], signum: int, delay: float, env: dict | None = None) -> tuple[int, list[str]]:
    """Run `command`, send `signum` `delay` seconds after its handlers are in place; returns the exit code
    and stderr's non-empty lines."""
    child = _start(command, env)
    _handlers_installed(child)
    time.sleep(delay)
    if child.poll() is None:
        _signal(child, signum)
    _, err = child.communicate(timeout=120)
    return child.returncode, [line for line in err.splitlines() if line.strip()]


def _check_one_line(code: int, lines: list[str], signum: int) -> str | None:
    """An interrupted run's stderr ends with one `interrupted:` line, with the signal's exit code and no
    traceback; returns that line (None when the run finished before the signal)."""
    text = "\n".join(lines)
    assert "Traceback" not in text, text
    if code == 0:
        return None
    assert code == EXIT_CODES[signum], (code, text)
    assert lines and lines[-1].startswith("interrupted: "), text
    assert sum(line.startswith("interrupted:") for line in lines) == 1, text
    return lines[-1]


def _signal_loop(command, signums, window, seed, db, expected, env=None) -> dict:
    """Interrupt `command` once per entry of `signums`, at a seeded random moment in `window` seconds,
    checking each time: the one line, its counts against the warehouse, whole files, no scratch left."""
    rng = random.Random(seed)
    outcomes = {"interrupted": 0, "finished": 0, "counted": 0}
    for signum in signums:
        code, lines = _interrupt(command, signum, rng.uniform(*window), env)
        line = _check_one_line(code, lines, signum)
        held = _stored(db, expected)
        assert not _stale_scratch(), f"scratch left after {signal.Signals(signum).name}: {_stale_scratch()}"
        if line is None:
            outcomes["finished"] += 1
            _reset(db)  # or the next run's line ("0 of 8 loaded") would be compared with this run's 8 months
            continue
        outcomes["interrupted"] += 1
        counted = COUNTED.match(line)
        if counted:
            outcomes["counted"] += 1
            assert (int(counted[1]), int(counted[2])) == (held, len(expected)), f"{line!r}, warehouse holds {held}"
        _reset(db)
    print(f"{command[3:5]}: {outcomes}")
    return outcomes


def _reset(db: Path) -> None:
    """An empty warehouse again, so the next signal can land anywhere in a whole run."""
    for path in (db, db.with_name(db.name + ".wal")):
        path.unlink(missing_ok=True)


LOADER = """
import sys
from pathlib import Path
from tradewatch.flows import ingest, warehouse
con = warehouse.connect(sys.argv[1])
print("open", flush=True)
for path in sys.argv[2:]:
    ingest.load_file(con, Path(path), force=True)
con.close()
"""


def test_signals_during_library_loads_leave_whole_files(home, tmp_path):
    expected = _months(tmp_path / "in", 20_000)
    files = sorted((tmp_path / "in").iterdir())
    db = tmp_path / "w.duckdb"

    def run(signum: int | None, delay: float) -> int:
        child = subprocess.Popen([sys.executable, "-c", LOADER, db, *files], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
        assert child.stdout.readline().strip() == "open"
        began = time.monotonic()
        if signum is not None:
            time.sleep(delay)
            if child.poll() is None:
                child.send_signal(signum)
        child.wait(timeout=120)
        return time.monotonic() - began if signum is None else child.returncode

    whole = run(None, 0)
    assert _stored(db, expected) == len(MONTHS)
    rng = random.Random(20220101)
    landed = 0
    for signum in (signal.SIGTERM, signal.SIGINT) * 2:
        _reset(db)
        code = run(signum, rng.uniform(0.05, 0.9 * whole))
        landed += code != 0
        _stored(db, expected)
    assert landed >= 3, f"the loads finished too fast ({whole:.2f} s) for the signals to land"
    run(None, 0)
    assert _stored(db, expected) == len(MONTHS), "the next run completes"
    assert not _stale_scratch(), f"scratch of interrupted runs is removed by the next run: {_stale_scratch()}"


def test_signals_during_cli_ingest_files(home, tmp_path):
    expected = _months(tmp_path / "in", 20_000)
    db = tmp_path / "w.duckdb"
    command = _cli("ingest", "files", tmp_path / "in", "--db", db, "--force")
    whole = _measured(command)
    _reset(db)
    outcomes = _signal_loop(command, (signal.SIGINT, signal.SIGTERM) * 2, (0.0, 0.8 * whole), 1601, db, expected)
    # A signal that comes as the command finishes (its loads committed) is ignored and the run ends 0:
    # on a busy machine most of a short run is start-up and shut-down, so only some land mid-run.
    assert outcomes["interrupted"] >= 1 and outcomes["counted"] >= 1, outcomes
    _measured(command)
    assert _stored(db, expected) == len(MONTHS), "the same command run again completes"
    assert not _stale_scratch()


def test_signals_during_cli_detect(home, tmp_path):
    expected = _months(tmp_path / "in", 20_000)
    db = tmp_path / "w.duckdb"
    with warehouse.opened(db) as con:
        ingest.load_files(con, sorted((tmp_path / "in").iterdir()))
    command = _cli("detect", "--db", db)
    rng = random.Random(1602)
    interrupted = 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        before = _runs(db)
        # Detection of these months takes several seconds after start-up: no run is measured, to save time.
        code, lines = _interrupt(command, signum, rng.uniform(0.0, 3.0))
        line = _check_one_line(code, lines, signum)
        interrupted += line is not None
        after = _runs(db)
        # One transaction stores a run and its flags: an interrupt leaves it stored whole or not at all.
        assert after[0] in (before[0], before[0] + 1) and after[1] == after[2], (before, after, lines)
        assert _stored(db, expected) == len(MONTHS) and not _stale_scratch()
    assert interrupted >= 1, "detect finished too fast for the signals to land"
    runs = _runs(db)[0]
    _measured(command)
    assert _runs(db)[0] == runs + 1, "the same command run again completes"


def _runs(db: Path) -> tuple[int, int, int]:
    """(runs stored, flags stored, flags the runs say they hold)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("""SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM anomalies),
                                     (SELECT coalesce(sum(flagged), 0) FROM runs)""").fetchone()
    finally:
        con.close()


def _eurostat(folder: Path, rows: int, server: FakeServer) -> dict[str, tuple[int, int]]:
    """The months as packed bulk files, served by the loopback stand-in `server` as Eurostat's bulk facility
    answers `?file=…`; returns what a whole load of them stores."""
    expected = _months(folder, rows, packed=True)
    bodies = {path.name: path.read_bytes() for path in folder.iterdir()}

    def answer(path, query, headers):
        name = query.get("file", "").rsplit("/", 1)[-1]
        return Reply(200, bodies[name], {"ETag": f'"{name}"'}) if name in bodies else None

    server.handle(answer)
    return expected


def _prefect_env() -> dict:
    """The environment of a user without a Prefect server (Prefect starts a temporary one), or, in CI, the
    server .ci/run started."""
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    if os.environ.get("TRADEWATCH_TEST_PREFECT_API_URL"):
        env["PREFECT_API_URL"] = os.environ["TRADEWATCH_TEST_PREFECT_API_URL"]
    return env


def test_signals_during_the_prefect_flow(home, tmp_path):
    env, db = _prefect_env(), tmp_path / "w.duckdb"
    with FakeServer() as server:
        expected = _eurostat(tmp_path / "eurostat", 5_000, server)
        command = _cli("ingest", "comext", "--from", MONTHS[0], "--to", MONTHS[-1], "--base-url", server.url,
                       "--db", db, "--force")
        whole = _measured(command, env)
        _reset(db)
        outcomes = _signal_loop(command, (signal.SIGINT, signal.SIGTERM), (1.0, whole), 1603, db, expected, env)
        assert outcomes["interrupted"] >= 1, outcomes
        _measured(command, env)
        assert _stored(db, expected) == len(MONTHS), "the same command run again completes"
    assert not _stale_scratch()


def test_a_signal_during_pipeline_run(home, tmp_path):
    """`tradewatch pipeline run` (ingest → detect → publish as one Prefect flow): SIGINT to the terminal's
    process group ends it in one line with exit 130, the warehouse holds whole months, no scratch is left,
    and the same command run again completes."""
    env, db = _prefect_env(), tmp_path / "w.duckdb"
    with FakeServer() as server:
        expected = _eurostat(tmp_path / "eurostat", 2_000, server)
        config = tmp_path / "pipeline.toml"
        config.write_text(f'[sources.comext]\nbase_url = "{server.url}"\nstart = "{MONTHS[0]}"\nend = "{MONTHS[-1]}"\n'
                          '[detect]\nevent = "2022-03"\nbaseline_months = 2\nrecent_months = 3\n')
        command = _cli("pipeline", "run", "--config", config, "--db", db)
        rng = random.Random(2205)
        code, lines = _interrupt(command, signal.SIGINT, rng.uniform(1.0, 6.0), env)
        line = _check_one_line(code, lines, signal.SIGINT)
        # A signal before the first migration committed leaves a warehouse file with no table yet.
        opened = duckdb.connect(str(db), read_only=True) if db.exists() else None
        has_rows = opened is not None and opened.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'trade_flows'").fetchone()[0] > 0
        if opened is not None:
            opened.close()
        held = _stored(db, expected) if has_rows else 0
        assert 0 <= held <= len(MONTHS)
        assert not _stale_scratch()
        child = _start(command, env)
        _, err = child.communicate(timeout=300)
        assert child.returncode in (0, 2), err  # 2: detection may find the tiny world unfit, in one line
        assert "Traceback" not in err
        assert _stored(db, expected) == len(MONTHS), "the same command run again loads every month"
        print(f"pipeline run: {line or 'finished before the signal'}")
