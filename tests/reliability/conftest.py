"""The reliability tests' totals (inputs tried, faults injected, rows lost), printed after the run."""

from __future__ import annotations

# Every test in these files injects a fault (a full disk, a dropped connection, a held lock, an unreadable
# file, SIGKILL, SIGINT/SIGTERM); each one that passes counts once.
FAULT_FILES = ("test_faults.py", "test_kill.py", "test_signals.py")


def pytest_runtest_logreport(report):
    from reliability_helpers import TALLY

    if report.when == "call" and report.passed and report.nodeid.split("::")[0].endswith(FAULT_FILES):
        TALLY.injected(report.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from reliability_helpers import TALLY

    if not (TALLY.inputs or TALLY.faults):
        return
    terminalreporter.section("reliability corpus")
    for line in TALLY.summary():
        terminalreporter.write_line(line)
