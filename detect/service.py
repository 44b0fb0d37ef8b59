"""What `tradewatch detect` does: open the warehouse (the demo's own while the real one holds no trade data, seeding it first), run detection, return the flags."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tradewatch.flows.core import settings
from tradewatch.flows import warehouse


@dataclass
class DetectOutcome:
    """A finished detection: the run, whether the demo world was seeded first, and timings in seconds."""

    run: object  # tradewatch.detect.engine.RunResult
    seeded: bool = False
    seed_s: float = 0.0
    detect_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    demo: bool = False  # the run read the synthetic demo world


def detect(
    db: Path | str | None = None,
    *,
    event: str | None = None,
    config: Path | None = None,
    seed_demo: bool = True,
    say: Callable[[str], None] = lambda message: None,
    **overrides,
) -> DetectOutcome:
    """Run detection on the warehouse at `db` (default under TRADEWATCH_HOME) for `event` (YYYY-MM; None:
    the --config file's, else the defaults'). Options given (not None) win over the config file.
    An empty warehouse is first seeded with the embedded demo world (announced through `say`) when
    `seed_demo`. Returns the DetectOutcome whose `run.flagged` lists the flagged routes best first."""
    from tradewatch.detect import engine

    params = engine.DetectParams.from_toml(config, event=event, **overrides)
    use_demo = db is None and seed_demo and not warehouse.holds_trade_data(settings.default_db_path())
    own_demo = use_demo or (db is not None and _is_demo_path(db))
    if db is not None and not own_demo:
        _refuse_empty(db)
    if use_demo:
        # The demo lives apart: its own warehouse, used only while the real one holds no trade rows.
        say(f"The warehouse {settings.default_db_path()} holds no trade data yet: using the {warehouse.DEMO_LABEL} "
            f"in {settings.demo_db_path()} (`tradewatch ingest …` loads real data; the demo is then left alone).")
        db = settings.demo_db_path()
        db.parent.mkdir(parents=True, exist_ok=True)
    con = warehouse.connect(db, on_wait=say)
    try:
        outcome = DetectOutcome(run=None, demo=use_demo)
        if warehouse.row_count(con) == 0:
            if not (seed_demo and own_demo):
                from tradewatch.flows.core.errors import TradewatchError

                raise TradewatchError("the warehouse is empty; run `tradewatch ingest …` or allow the demo world")
            from tradewatch.detect import demo

            say(f"Empty warehouse: seeding the embedded demo world (synthetic, seed {demo.DEFAULT_SEED}) …")
            started = time.perf_counter()
            demo.seed_warehouse(con, settings.demo_dir())
            outcome.seeded = True
            outcome.seed_s = time.perf_counter() - started
        started = time.perf_counter()
        outcome.run = engine.run_detection(con, params)
        outcome.detect_s = time.perf_counter() - started
        outcome.demo = outcome.demo or warehouse.is_demo(con)
        return outcome
    finally:
        con.close()


def _is_demo_path(db: Path | str) -> bool:
    """Whether `db` names the demo's own warehouse ($TRADEWATCH_HOME/demo.duckdb), the one place it lives."""
    return Path(db).expanduser().resolve() == settings.demo_db_path().resolve()


def _refuse_empty(db: Path | str) -> None:
    """An explicit --db that is new or holds no trade rows is refused before anything is created in it: the
    demo is never seeded there (it lives only in its own warehouse)."""
    path = warehouse.resolve_db_path(db)  # a folder, a missing folder or another file type: refused there
    if warehouse.holds_trade_data(path):
        return
    from tradewatch.flows.core.errors import InputError

    what = "does not exist yet" if not path.exists() else "holds no trade data"
    raise InputError(f"--db {db}", f"{what}; load data into it with `tradewatch ingest files … --db {db}` (or "
                     f"`ingest comext`), or run `tradewatch detect` without --db to try the {warehouse.DEMO_LABEL}")


@dataclass
class Reproduction:
    """A stored run recomputed on the data as of its vintage, compared flag by flag with what it stored."""

    run_id: str
    vintage: int
    flags: int  # flags the run stored
    recomputed: int  # flags the recomputation gives
    missing: list[str] = field(default_factory=list)  # stored route ids the recomputation does not flag
    added: list[str] = field(default_factory=list)  # route ids flagged now that the run did not store
    moved: int = 0  # routes flagged by both at another rank
    max_score_change: float = 0.0
    same_hash: bool = False
    model_then: str = ""
    model_now: str = ""
    revisions_since: int = 0  # loads since the vintage that replaced rows
    seconds: float = 0.0
    explored: int = 0  # exploration routes the run stored (compared like the flags)

    @property
    def identical(self) -> bool:
        return not self.missing and not self.added and not self.moved and self.max_score_change <= SCORE_TOLERANCE


SCORE_TOLERANCE = 1e-9  # scores are recomputed from the same rows by the same code: equal up to rounding


def reproduce(db: Path | str | None, run: str = "latest") -> Reproduction:
    """Recompute stored run `run` (an id, a unique prefix or 'latest') on the data as it was when it ran
    (flows/vintages.py: as of the load recorded as its vintage), with its stored parameters, on a read-only
    connection (nothing is written), and compare flags, ranks and scores with the stored ones. Raises
    TradewatchError for an unknown run or one stored before vintages were kept."""
    from tradewatch.detect import engine, review
    from tradewatch.flows import vintages
    from tradewatch.flows.core.errors import InputError, TradewatchError

    started = time.perf_counter()
    con = warehouse.connect(db, read_only=True, demo=True)
    try:
        try:
            run_id = review.resolve_run(con, run)
        except InputError as exc:
            raise InputError(f"--reproduce {review.shown(run)}", exc.problem) from None
        stored = engine.load_run(con, run_id)
        if stored.vintage is None:
            raise TradewatchError(f"run {run_id} was stored before tradewatch kept vintages (warehouse schema 6): "
                                  "the data it read cannot be rebuilt")
        later = con.execute("SELECT count(DISTINCT superseded_by) FROM trade_flows_history WHERE superseded_by > ?",
                            [stored.vintage]).fetchall()[0][0]
        vintages.as_of(con, stored.vintage)
        again = engine.run_detection(con, stored.params, store=False)
    finally:
        con.close()
    before, after = _shown(stored), _shown(again)
    both = [route for route in before if route in after]
    return Reproduction(
        run_id=run_id, vintage=int(stored.vintage), flags=stored.flagged.height, recomputed=again.flagged.height,
        explored=stored.exploration.height,
        missing=[route for route in before if route not in after], added=[route for route in after if route not in before],
        moved=sum(before[route][0] != after[route][0] for route in both),
        max_score_change=max((abs(before[route][1] - after[route][1]) for route in both), default=0.0),
        same_hash=again.run_hash == stored.run_hash, model_then=stored.model_version, model_now=again.model_version,
        revisions_since=int(later), seconds=time.perf_counter() - started,
    )


def _shown(run) -> dict[str, tuple[int, float]]:
    """route id -> (rank, score) of every route a run showed: its flags, then its exploration routes
    (ranked after them), so a reproduction that chose other exploration routes differs."""
    routes = {}
    for frame in (run.flagged, run.exploration):
        routes.update(zip(frame["route_id"].to_list(), zip(frame["rank"].to_list(), frame["score"].to_list())))
    return routes
