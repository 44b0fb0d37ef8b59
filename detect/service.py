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
            if not seed_demo:
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
