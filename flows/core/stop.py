"""A stop asked for by a signal, seen by every writer: a load that has not started does not start, and the
one that is writing is waited for, so what an interrupted command reports as kept is what the warehouse
holds (a Prefect task thread would otherwise go on loading after the command has said it stopped)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tradewatch.flows.core.errors import TradewatchError

_requested = threading.Event()
_writing = threading.Lock()


class Stopped(TradewatchError):
    """A load not started because a stop was asked for."""


def request() -> None:
    """Ask every writer in this process to stop before its next load."""
    _requested.set()


@contextmanager
def writing(where: str) -> Iterator[None]:
    """Around one load's writes: refuses to start once a stop was asked for, and lets wait_idle() know
    when no load is writing."""
    with _writing:
        if _requested.is_set():
            raise Stopped(f"{where}: not loaded, the command was asked to stop")
        yield


def wait_idle(timeout_s: float) -> bool:
    """Wait up to `timeout_s` seconds for the load being written (in any thread) to end; True when none is."""
    if not _writing.acquire(timeout=timeout_s):
        return False
    _writing.release()
    return True
