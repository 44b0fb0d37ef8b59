"""cli/interrupts.py in-process: a signal that lands inside a finaliser prints no traceback and is still the command's signal."""

from __future__ import annotations

import gc
import signal
import sys

from tradewatch.cli import interrupts


class _Finalised:
    def __del__(self):
        interrupts._handle(signal.SIGINT, None)  # what the signal handler does when SIGINT lands here


def test_a_signal_during_a_finaliser_prints_no_traceback_and_is_kept(capsys, monkeypatch):
    reported = []  # what would print "Exception ignored in …" and a traceback (Python's hook, or pytest's)
    monkeypatch.setattr(sys, "unraisablehook", reported.append)  # install() chains to the hook it finds
    with interrupts.command():
        _Finalised()  # dropped at once: __del__ runs, raises Interrupted, Python cannot propagate it
        gc.collect()
        assert interrupts.received() == signal.SIGINT
        assert interrupts.exit_code() == 130
    assert reported == []
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_other_unraisable_exceptions_still_reach_the_previous_hook(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)

    class Broken:
        def __del__(self):
            raise ValueError("a real bug in a finaliser")

    with interrupts.command():
        Broken()
        gc.collect()
    assert [type(info.exc_value) for info in seen] == [ValueError]
