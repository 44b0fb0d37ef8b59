"""`tradewatch ui`: serve the review web page (cli/ui.py) over a warehouse."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tradewatch.cli.common import DbOption, one_line_errors, say


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)


@one_line_errors
def ui(
    db: DbOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8765,
    token: Annotated[Optional[str], typer.Option(
        "--token", envvar="TRADEWATCH_UI_TOKEN", show_default=False,
        help="Secret every request must carry (first visit: ?token=…); required off loopback. "
             "Also read from $TRADEWATCH_UI_TOKEN.")] = None,
    wait: Annotated[float, typer.Option("--wait", min=0, help="Seconds a page or decision waits while the pipeline writes.")] = 5.0,
) -> None:
    """A local web page for reviewing flags together: runs, a run's flags, a route's evidence, decisions."""
    from tradewatch.cli import ui as ui_app
    from tradewatch.flows import warehouse
    from tradewatch.flows.core.errors import InputError

    if not ui_app.is_loopback(host) and not token:
        raise InputError(f"--host {host}", "serving beyond this machine needs --token SECRET (or $TRADEWATCH_UI_TOKEN)")
    if token is not None and len(token) < 16:
        raise InputError("--token", "expected at least 16 characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    warehouse.connect(db, read_only=True, on_wait=say, demo=True).close()  # a missing warehouse is one line now
    import uvicorn

    ui_app.warm_up()

    shown = f"[{host}]" if ":" in host else host
    say(f"tradewatch ui on http://{shown}:{port}/" + ("?token=…  (give colleagues the token, not this terminal)"
                                                     if token else "  (this machine only)") + "; Ctrl-C stops it")
    uvicorn.run(ui_app.create_app(db, token=token, wait_s=wait), host=host, port=port, log_level="warning",
                server_header=False)
