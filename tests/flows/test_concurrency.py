"""While the pipeline's load step writes the warehouse, `detect`, `flags list`, `status` and `report` never crash."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_pipeline import REPORTERS, PARTNERS, PRODUCTS, months_between, write_comext_7z  # tests/flows on sys.path

MONTHS = months_between("2021-09", "2022-06")
READ_SECONDS = 14  # readers go round for at least this long (and at least one whole round)
WRITER_CAP_S = 300
BUSY = "another tradewatch process is writing the warehouse"
WAITING = "is being written by another process; waiting up to"

WRITER = """
import json, sys, time
from pathlib import Path
from tradewatch.flows.pipeline import load_parsed_files
versions, db, stop, cap = json.load(open(sys.argv[1])), sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])
end, loads, turn = time.monotonic() + cap, 0, 0
print("writing", flush=True)
# Until the readers are done (the stop file), however slow the machine; at least two loads.
while (not stop.exists() or turn < 2) and time.monotonic() < end:
    # Alternate two versions of the same months, so every load really replaces partitions.
    loads += len(load_parsed_files(versions[turn % 2], db)["loaded"])
    turn += 1
print(loads, flush=True)
"""


def _parsed(tmp_path: Path, bump: float) -> list[dict]:
    """Parquet files of the stand-in months as the pipeline's parse task writes them."""
    from tradewatch.flows.pipeline import parse_month

    out = []
    for month in MONTHS:
        name = f"full_v2_{month.replace('-', '')}.7z"
        path = write_comext_7z(tmp_path / f"v{bump}" / name, month, bump=bump)
        download = {"source": "comext", "period": month, "path": str(path), "display_name": name}
        out.append(parse_month.fn(download, [], []))
    return out


def _reader_commands() -> list[list[str]]:
    from tradewatch.cli.main import app

    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    commands = [["detect", "--top", "5"], ["flags", "list"], ["status"], ["report", "--out", "{tmp}/r.html"]]
    return [c for c in commands if c[0] in names]


def _cli(args: list[str], db: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tradewatch.cli.main", *args, "--db", str(db)],
                          capture_output=True, text=True, timeout=timeout)


def _read_while_writing(plan: Path, db: Path, tmp_path: Path, commands: list[list[str]], results: list, *,
                        stop_when_waiting: bool = False) -> tuple[str, str, int]:
    """Run `commands` round after round while a writer process loads, for at least READ_SECONDS and one
    whole round (with `stop_when_waiting`, until a reader met the lock), then tell the writer to stop; append
    (args, result, started, ended, writer still writing) to `results`; returns the writer's out, err, code.
    The writer loads until told (at most WRITER_CAP_S), so a slow machine cannot end it before a reader's turn."""
    stop = tmp_path / f"stop-{len(results)}"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(plan), str(db), str(stop), str(WRITER_CAP_S)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing", writer.stderr.read()
        began = time.monotonic()
        while writer.poll() is None:
            for command in commands:
                args = [a.replace("{tmp}", str(tmp_path)) for a in command]
                started = time.monotonic()
                done = _cli(args, db)
                results.append((args, done, started, time.monotonic(), writer.poll() is None))
            if stop_when_waiting:
                if WAITING in results[-1][1].stderr:
                    break
            elif time.monotonic() - began >= READ_SECONDS:
                break
        stop.touch()
        out, err = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    return out, err, writer.returncode


@pytest.mark.slow
def test_readers_wait_or_get_in_between_while_the_pipeline_loads(tmp_path):
    from tradewatch.flows.pipeline import load_parsed_files

    versions = [_parsed(tmp_path, 1.0), _parsed(tmp_path, 1.5)]
    db = tmp_path / "w.duckdb"
    load_parsed_files(versions[1], str(db))
    seeded = _cli(["detect", "--top", "1"], db)
    assert seeded.returncode == 0, seeded.stderr
    commands = _reader_commands()
    assert [c[0] for c in commands][:1] == ["detect"]

    plan = tmp_path / "versions.json"
    plan.write_text(json.dumps(versions))
    results: list = []
    out, err, returncode = _read_while_writing(plan, db, tmp_path, commands, results)
    assert returncode == 0, err
    assert int(out.split()[-1]) >= 5, "the writer kept loading while the readers ran"
    if not any(WAITING in done.stderr for _, done, *_ in results):
        # Whether a round of the four readers happens to start during a load is chance on a busy machine;
        # a second writer session with only the quickest reader makes meeting the lock near certain.
        _read_while_writing(plan, db, tmp_path, [["status"]], results, stop_when_waiting=True)

    # Acceptable for a reader: exit 0 (it got in between two loads, or waited for one with a message), or
    # exit 2 with the one-line busy error after its bounded wait (30 s) — never a traceback or a DuckDB error.
    for args, done, *_ in results:
        lines = done.stderr.strip().splitlines()
        assert "Traceback" not in done.stderr, (args, done.stderr)
        if done.returncode == 0:
            assert not [line for line in lines if line.startswith("error:")], (args, done.stderr)
        else:
            assert done.returncode == 2 and BUSY in lines[-1] and lines[-1].startswith("error:"), (args, done.stderr)
            assert sum(line.startswith("error:") for line in lines) == 1
    got_in = [args[0] for args, done, _, _, writing in results if done.returncode == 0 and writing]
    assert set(got_in) >= {c[0] for c in commands}, f"every reader got in while the writer was still loading: {got_in}"
    assert any(WAITING in done.stderr for _, done, *_ in results), "readers met the writer's lock at least once"

    from tradewatch.flows import warehouse

    with warehouse.opened(db, read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM trade_flows WHERE source = 'comext'").fetchone()[0]
    assert rows == len(MONTHS) * len(REPORTERS) * len(PARTNERS) * len(PRODUCTS), "no load was left half done"
