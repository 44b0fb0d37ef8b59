"""SIGINT and SIGTERM: every command ends with one line on stderr saying what was kept, exit code 130 or 143."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as shells report it
NOTHING_CHANGED = "nothing was changed; the warehouse keeps its last committed state"
# Every write to the warehouse is one transaction: whatever a command was doing, nothing is half-written.
KEPT_BY_DEFAULT = "the warehouse keeps its last committed state; nothing is half-written"


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT or SIGTERM while a command runs; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    """One command per process: the signals received, what the command has kept so far, where it is."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.kept: Callable[[], str] | None = None
        self.running = False  # inside a command's body: the first signal raises there, so cleanup runs
        self.started = False  # a command's body began (before that, nothing can have changed)
        self.said = False
        self.at_exit = getattr(self, "at_exit", False)  # _ignore_late_signals is registered


_state = _State()


def install() -> None:
    """Handle SIGINT and SIGTERM in this process (main thread only; a SIGINT the parent made the process
    ignore, as `nohup` and background jobs of a script do, stays ignored)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _handle)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _handle)
    if not _state.at_exit:
        _state.at_exit = True
        atexit.register(_ignore_late_signals)  # registered first, so it runs after every other exit handler
    if sys.unraisablehook is not _unraisable:
        global _previous_unraisable
        _previous_unraisable = sys.unraisablehook
        sys.unraisablehook = _unraisable


_previous_unraisable = sys.unraisablehook


def _unraisable(info) -> None:
    """A signal that lands while a finaliser runs (a ZipFile's __del__, say) raises Interrupted where Python
    cannot propagate it: it would print "Exception ignored in …" and a traceback. The signal is already
    recorded, and the command ends with its one line and exit code, so that report is left out."""
    if isinstance(info.exc_value, Interrupted):
        return
    _previous_unraisable(info)


def _ignore_late_signals() -> None:
    """The last exit handler: the command is over and its exit code set. Python's finalisation would put
    SIGINT back to the system default next, so a signal in the last milliseconds would kill the process
    (exit -2, no line); ignoring it keeps the exit code the command chose."""
    for sig in EXIT_CODES:
        if signal.getsignal(sig) is _handle:
            signal.signal(sig, signal.SIG_IGN)


def _handle(signum: int, frame) -> None:
    _state.received.append(signum)
    from tradewatch.flows.core import stop

    stop.request()  # no load starts from now on, in any thread (a Prefect task's included)
    if _state.running and len(_state.received) == 1:
        raise Interrupted(signum)
    if not _state.running and not _state.said:
        # Before a command starts or after it has finished: nothing is half done, leave at once.
        say_and_silence()
        os._exit(EXIT_CODES.get(_state.received[0], 130))
    if len(_state.received) >= 3:
        os._exit(EXIT_CODES.get(_state.received[0], 130))  # a third signal: stop cleaning up, leave now
    # A second signal while finally blocks run is ignored, so the scratch and the warehouse are put right.


def received() -> int | None:
    """The first signal received while this command ran, or None."""
    return _state.received[0] if _state.received else None


def exit_code(exc: BaseException | None = None) -> int:
    """130 for SIGINT (and a bare KeyboardInterrupt), 143 for SIGTERM."""
    signum = received() or getattr(exc, "signum", signal.SIGINT)
    return EXIT_CODES.get(signum, 130)


@contextmanager
def command() -> Iterator[None]:
    """Around one command's body: signals raise Interrupted inside it; handlers are installed (and the
    previous ones restored after, for callers that run several commands in one process, like tests)."""
    previous = {sig: signal.getsignal(sig) for sig in EXIT_CODES} if _main_thread() else {}
    install()
    _state.__init__()
    _state.running = _state.started = True
    try:
        yield
    finally:
        _state.running = False
        for sig, handler in previous.items():
            if handler is not None and signal.getsignal(sig) is _handle and handler is not _handle:
                signal.signal(sig, handler)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def keep(describe: Callable[[], str]) -> None:
    """Register what the one line says is kept if the command is interrupted now: `describe()` is called
    then and returns the text after "interrupted: "."""
    _state.kept = describe


def line() -> str:
    """The one line an interrupted command ends with. No load starts after it is written (the signal may
    have been taken by Prefect's own handler, so the stop is asked for here too)."""
    from tradewatch.flows.core import stop

    stop.request()
    if _state.kept is None:
        text = KEPT_BY_DEFAULT if _state.started else NOTHING_CHANGED
    else:
        try:
            text = _state.kept()
        except Exception:  # what was kept cannot be read back: say what is always true
            text = KEPT_BY_DEFAULT
    return f"interrupted: {text}"


def say_and_silence() -> None:
    """Print the one line on stderr, then point stderr at /dev/null (unless TRADEWATCH_DEBUG is set): what
    runs after it (finally blocks of worker threads, Prefect's log workers and its temporary server's
    shutdown at exit) must not print tracebacks under the line."""
    if _state.said:
        return
    _state.said = True
    import logging

    logging.disable(logging.CRITICAL)
    try:
        sys.stderr.write(line() + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    if os.environ.get("TRADEWATCH_DEBUG") or not _is_real_stderr():
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _is_real_stderr() -> bool:
    """True when sys.stderr writes to file descriptor 2 (not a test runner's capture buffer)."""
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def remove_own_scratch() -> None:
    """Remove the scratch folders of this process (flows.ingest names them extract-<pid>-*): an interrupt
    can land in the finally block that would have removed one. Called at exit, after worker threads end."""
    from tradewatch.flows import archive
    from tradewatch.flows.core import settings

    root = settings.cache_dir() / "extract"
    for folder in root.glob(f"extract-{os.getpid()}-*") if root.is_dir() else ():
        archive.remove_tree(folder)


class LoadCount:
    """What an ingest command has kept so far, for the one line: the files whose load committed in this
    run (read back from the warehouse's `loads` when interrupted, so a file committed just before the
    signal counts) and the files found unchanged. Call it with the library's on_event callbacks; it
    passes each on to `forward`."""

    def __init__(self, db, total: int | None, forward: Callable[..., None]):
        self.db, self.total, self.forward = db, total, forward
        self.last_load_id = _last_load_id(db)
        self.loaded: set[str] = set()
        self.unchanged: set[str] = set()
        keep(self.describe)

    def __call__(self, kind: str, **info) -> None:
        if kind == "loaded":
            status = getattr(info.get("result"), "status", "ok")
            (self.unchanged if status == "unchanged" else self.loaded).add(str(info.get("name")))
        self.forward(kind, **info)

    def describe(self) -> str:
        from tradewatch.flows.core import stop

        stop.wait_idle(120.0)  # a load another thread is writing ends (or rolls back) before we count
        committed = _files_loaded_since(self.db, self.last_load_id) if self.last_load_id is not None else None
        done = len((self.loaded if committed is None else committed) | self.unchanged)
        files = "file" if (self.total or done) == 1 else "files"
        counted = f"{done} of {self.total} {files}" if self.total is not None else f"{done} {files}"
        if committed is None:
            # The warehouse could not be read back (a load was committing): the events may lag behind it,
            # so claim no count that could be wrong.
            return (f"at least {counted} loaded and kept (a load was committing as the signal came, so the count "
                    "may be short); run the same command again to load the rest")
        if done == 0:
            return f"{counted} loaded; {NOTHING_CHANGED}"
        if self.total is not None and done >= self.total:
            return f"{counted} loaded and kept"
        return f"{counted} loaded and kept; run the same command again to load the rest"


def _last_load_id(db) -> int | None:
    """The highest load id in the warehouse before this run (0 when there is no warehouse yet), or None
    when it cannot be read now (another process writes: the count then comes from the events alone)."""
    from tradewatch.flows import warehouse

    try:
        if not warehouse.resolve_db_path(db).exists():
            return 0
        with warehouse.opened(db, read_only=True, wait_s=0, on_wait=lambda message: None) as con:
            return int(con.execute("SELECT coalesce(max(load_id), 0) FROM loads").fetchall()[0][0])
    except Exception:
        return None


def _files_loaded_since(db, last_load_id: int) -> set[str] | None:
    """The files (as `loads` names them) whose load committed after `last_load_id`; None when unreadable."""
    from tradewatch.flows import warehouse

    try:
        with warehouse.opened(db, wait_s=1.0, on_wait=lambda message: None) as con:
            rows = con.execute("SELECT DISTINCT file FROM loads WHERE load_id > ? AND status IN ('ok', 'empty')",
                               [last_load_id]).fetchall()
    except Exception:
        return None
    return {file for (file,) in rows}
