"""`tradewatch ui`: a local web page over the warehouse for reviewing flagged routes together (Starlette, Jinja2)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_WAIT_S = 5.0
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
TOKEN_COOKIE = "tw_token"
SESSION_COOKIE = "tw_session"
REVIEWER_COOKIE = "tw_reviewer"  # the name this browser last signed a decision with, to fill the form
TOKEN_HEADER = "x-tradewatch-token"
MAX_FORM_BYTES = 64 * 1024
BUSY_TITLE = "warehouse busy, try again"

# No script at all, styles only from this server, forms only back to it, nothing fetched from elsewhere.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'none'; object-src 'none'; style-src 'self'; "
                           "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
FILTERS = ("transit", "origin", "product", "tier", "status", "min_score", "sort")


@dataclass
class Settings:
    """What one server instance serves: the warehouse (`--db`, None for the default), the token every request
    must carry (None: none, loopback only), how long a request waits for the pipeline's writer (seconds)."""

    db: Path | str | None = None
    token: str | None = None
    wait_s: float = DEFAULT_WAIT_S
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))


def is_loopback(host: str) -> bool:
    return host.strip().lower().strip("[]") in LOOPBACK_HOSTS


# --- templates ----------------------------------------------------------------------------------------------

@functools.cache
def _templates() -> jinja2.Environment:
    """The UI's templates (data/templates/ui/) beside the report's (charts.svg.j2, report.css.j2), autoescaped."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("tradewatch.data", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )


def _page(request: Request, template: str, context: dict, status_code: int = 200) -> HTMLResponse:
    base = {"demo": None, "message": None, "error": None, "csrf": _csrf_token(request), "title": "tradewatch"}
    html = _templates().get_template(f"ui/{template}").render({**base, **context})
    return HTMLResponse(html, status_code=status_code)


def _stylesheet(request: Request) -> Response:
    css = (_templates().get_template("report.css.j2").render()
           + _templates().get_template("ui/ui.css.j2").render())
    return Response(css, media_type="text/css")


# --- security: token, session, CSRF, headers ------------------------------------------------------------

def _digest(settings: Settings, purpose: str, value: str) -> str:
    return hmac.new(settings.secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def _csrf_token(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return _digest(settings, "csrf", request.state.session)


def _token_ok(request: Request, settings: Settings) -> bool:
    """A request carries the token in the header, or the cookie set from the first visit's ?token=…"""
    cookie = request.cookies.get(TOKEN_COOKIE, "")
    header = request.headers.get(TOKEN_HEADER, "")
    expected = _digest(settings, "token", settings.token)
    return (bool(header) and hmac.compare_digest(header.encode(), settings.token.encode())) or \
        (bool(cookie) and hmac.compare_digest(cookie, expected))


def _host_ok(request: Request, settings: Settings) -> bool:
    """Without a token only loopback host names are served, so a web page elsewhere cannot reach this server
    through a DNS name pointed at 127.0.0.1 (DNS rebinding)."""
    if settings.token:
        return True
    host = request.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return name.lower() in LOOPBACK_NAMES


def _plain(status: int, text: str) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain; charset=utf-8")


async def _guard(request: Request, call_next):
    """Every request: loopback host names (without a token), the token (with one), a session for CSRF tokens,
    the security headers on every response."""
    settings: Settings = request.app.state.settings
    session = request.cookies.get(SESSION_COOKIE, "")
    fresh = not (len(session) == 43 and session.replace("-", "").replace("_", "").isalnum())
    request.state.session = secrets.token_urlsafe(32) if fresh else session
    response = await _checked(request, settings, call_next)
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if fresh:
        response.set_cookie(SESSION_COOKIE, request.state.session, httponly=True, samesite="strict")
    return response


async def _checked(request: Request, settings: Settings, call_next) -> Response:
    if not _host_ok(request, settings):
        return _plain(400, "unknown host name; open the page at 127.0.0.1 or localhost")
    if settings.token:
        offered = request.query_params.get("token")
        if offered is not None and hmac.compare_digest(offered.encode(), settings.token.encode()):
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(TOKEN_COOKIE, _digest(settings, "token", settings.token), httponly=True,
                                samesite="strict")
            return response
        if not _token_ok(request, settings):
            return _plain(401, "token required: open the link with ?token=… that `tradewatch ui` printed, "
                               f"or send the {TOKEN_HEADER} header")
    return await call_next(request)


def _csrf_ok(request: Request, form: dict[str, str]) -> bool:
    offered = form.get("csrf", "")
    return bool(offered) and hmac.compare_digest(offered, _csrf_token(request))


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the browser's default), first value per field; at most MAX_FORM_BYTES."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


# --- the warehouse: short read-only connections, a short writable one for a decision -------------------

def _read(settings: Settings, work):
    """`work(con)` on a read-only connection opened for this request and closed after it."""
    from tradewatch.flows import warehouse

    con = warehouse.connect(settings.db, read_only=True, wait_s=settings.wait_s, on_wait=_quiet, demo=True)
    try:
        return work(con)
    finally:
        con.close()


def _quiet(message: str) -> None:
    """The server waits silently; the page says it when the wait runs out."""


async def _with_errors(request: Request, work, context: dict | None = None, template: str = "message.html.j2"):
    """Run `work` in a thread; a busy warehouse is a 503 page, a bad id or filter a 400 page."""
    from tradewatch.flows.core.errors import InputError, TradewatchError, WarehouseBusy

    try:
        return await run_in_threadpool(work)
    except WarehouseBusy:
        settings: Settings = request.app.state.settings
        busy = {"title": BUSY_TITLE, "error": (f"The warehouse is busy: the pipeline is writing it. Waited "
                                               f"{settings.wait_s:g} s; try again in a moment.")}
        return _page(request, template, {**busy, **(context or {})}, status_code=503)
    except InputError as exc:
        return _page(request, template, {"title": "not found or not valid", "error": str(exc), **(context or {})},
                     status_code=400)
    except TradewatchError as exc:
        return _page(request, "message.html.j2", {"title": "cannot read the warehouse", "error": str(exc)},
                     status_code=500)


def _demo_label(con) -> str | None:
    from tradewatch.flows import warehouse

    if not warehouse.is_demo(con):
        return None
    return (f"{warehouse.DEMO_LABEL.capitalize()}: the embedded demo world, with planted routes and real country "
            "names; not real statistics")


# --- pages ------------------------------------------------------------------------------------------------

async def runs_page(request: Request) -> Response:
    from tradewatch.detect import runs

    def work():
        def read(con):
            return _demo_label(con), runs.list_runs(con).to_dicts()

        demo, rows = _read(request.app.state.settings, read)
        return _page(request, "runs.html.j2", {"demo": demo, "runs": rows, "title": "tradewatch runs"})

    return await _with_errors(request, work)


def _filters(params) -> dict[str, str]:
    """The filter fields of a query string, as typed (blank ones left out), in FILTERS order."""
    return {name: params.get(name, "").strip() for name in FILTERS if params.get(name, "").strip()}


def flag_query(run: str, filters: dict[str, str]):
    """A review.FlagQuery from the page's filter fields, each checked as `flags list` checks its option."""
    from tradewatch.detect import review
    from tradewatch.flows.core import countries
    from tradewatch.flows.core.errors import InputError

    min_score = None
    if "min_score" in filters:
        try:
            min_score = float(filters["min_score"])
        except ValueError:
            raise InputError(f"min score {review.shown(filters['min_score'])}", "expected a number from 0 to 1") from None
    return review.FlagQuery(
        run=run,
        transit=countries.resolve(filters["transit"], "transit") if "transit" in filters else None,
        origin=countries.resolve(filters["origin"], "origin") if "origin" in filters else None,
        product=review.check_product(filters["product"], "product") if "product" in filters else None,
        tier=review.check_tier(filters["tier"], "tier") if "tier" in filters else None,
        status=_choice(filters.get("status"), review.STATUSES, "status"),
        sort=_choice(filters.get("sort"), tuple(review.SORTS), "sort") or "score",
        min_score=min_score,
    )


def _choice(value: str | None, allowed: tuple[str, ...], name: str) -> str | None:
    from tradewatch.detect import review
    from tradewatch.flows.core.errors import InputError

    if value is None:
        return None
    if value.lower() not in allowed:
        raise InputError(f"{name} {review.shown(value)}", f"expected one of {', '.join(allowed)}")
    return value.lower()


def flags_rows(frame) -> list[dict]:
    """The rows of a `list_flags` frame as the flags page shows them (numbers formatted, route currency)."""
    from tradewatch.detect.report import growth_text
    from tradewatch.flows.core.numbers import money, score_text

    return [{
        "id": row["id"], "rank": row["rank"], "score": score_text(row["score"]), "status": row["status"],
        "origin": row["origin_iso3"], "transit": row["transit_iso3"], "target": row["target_iso3"],
        "product_code": row["product_code"], "product_name": row["product_name"] or "", "tier": row["tier"] or "",
        "baseline": money(row["baseline_value"], row["currency"]), "recent": money(row["recent_value"], row["currency"]),
        "growth": growth_text(row), "excess": money(row["excess_value"], row["currency"]),
        "reasons": row["reasons"] or "", "reviewed_by": row["reviewed_by"] or "",
        "exploration": bool(row["exploration"]),
    } for row in frame.iter_rows(named=True)]


def _read_flags(settings: Settings, run: str, filters: dict[str, str]):
    from tradewatch.detect import review

    query = flag_query(run, filters)

    def read(con):
        run_id = review.resolve_run(con, run)
        query.run = run_id
        return _demo_label(con), review.run_info(con, run_id), review.list_flags(con, query)

    return _read(settings, read)


async def flags_page(request: Request) -> Response:
    from tradewatch.detect import review

    settings: Settings = request.app.state.settings
    run, filters = request.path_params["run"], _filters(request.query_params)
    context = {"run_id": run, "filters": filters, "rows": [], "run": {}, "statuses": review.STATUSES,
               "sorts": tuple(review.SORTS), "tiers": review.TIERS, "total": 0, "csv_query": ""}

    def work():
        demo, info, frame = _read_flags(settings, run, filters)
        event = (info.get("params") or {}).get("event")
        return _page(request, "flags.html.j2", {
            **context, "demo": demo, "run_id": info["run_id"], "rows": flags_rows(frame), "total": info.get("flagged"),
            "run": {"event": event or "–", "started": f"{info['started_at']:%Y-%m-%d %H:%M}",
                    "model": info.get("model_version") or "–"},
            "csv_query": urlencode(filters), "title": f"flags in run {info['run_id']}",
        })

    return await _with_errors(request, work, context, "flags.html.j2")


async def flags_csv(request: Request) -> Response:
    """The run's flags with the page's filters, as `flags list --format csv` writes them."""
    from tradewatch.detect import export

    settings: Settings = request.app.state.settings
    run, filters = request.path_params["run"], _filters(request.query_params)

    def work():
        import polars as pl

        demo, info, frame = _read_flags(settings, run, filters)
        if demo:
            frame = frame.with_columns(data=pl.lit(_demo_csv_label()))
        text = export.write(frame, "csv", None)
        return Response(text, media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="flags-{_safe_name(info["run_id"])}.csv"'})

    return await _with_errors(request, work)


def _demo_csv_label() -> str:
    from tradewatch.flows import warehouse

    return warehouse.DEMO_LABEL


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:80]


# --- one route --------------------------------------------------------------------------------------------

def feature_rows(evidence) -> list[dict]:
    """Every feature of the route with its value and meaning; unavailable ones say why."""
    rows = []
    for name, value in (evidence.features or {}).items():
        meaning = evidence.descriptions.get(name, "")
        if value is None:
            why = evidence.unavailable.get(name, "")
            note = "unavailable" + (f": {why}" if why else " for this route with this data")
            rows.append({"name": name, "value": "–", "meaning": f"{meaning} — {note}" if meaning else note})
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            rows.append({"name": name, "value": str(value), "meaning": meaning})
        elif not math.isfinite(value):
            rows.append({"name": name, "value": str(value), "meaning": f"{meaning} (not finite)"})
        else:
            rows.append({"name": name, "value": f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}",
                         "meaning": meaning})
    return rows


def route_context(evidence, revised: list[dict]) -> dict:
    """What the route page shows, as plain values: facts, chart and legend (the report's), features, loads,
    revisions since, decisions, similar routes' decisions."""
    from tradewatch.detect import report, review

    route, run = evidence.route, evidence.run
    section = report._route_section(1, evidence, "route")
    countries = " → ".join(f"{route[k]} {review.country_name(route[k])}"
                           for k in ("origin_iso3", "transit_iso3", "target_iso3"))
    similar = evidence.similar or {}
    return {
        "route_id": route["route_id"], "run_id": run["run_id"], "section": section, "countries": countries,
        "event": f"{evidence.event:%Y-%m}" if evidence.event else "–", "rank": route["rank"],
        "window_baseline": _span(route.get("baseline_start"), route.get("baseline_end")),
        "window_recent": _span(route.get("recent_start"), route.get("recent_end")),
        "features": feature_rows(evidence), "loads": review.load_lines(evidence.loads),
        "revised": [{**item, "revised_at": f"{item['revised_at']:%Y-%m-%d %H:%M}"} for item in revised],
        "as_run_read": run.get("vintage") is not None,
        "reviews": [{**item, "reviewed_at": f"{item['reviewed_at']:%Y-%m-%d %H:%M:%S}",
                     "score_at_review": _num(item["score_at_review"])} for item in evidence.reviews],
        "similar": {"transit": similar.get("transit"), "heading": similar.get("heading"),
                    "counts": sorted((similar.get("counts") or {}).items())},
        "decisions": review.DECISIONS, "title": f"route {route['route_id']}",
    }


def _span(start, end) -> str:
    return "–" if start is None or end is None else f"{start:%Y-%m} … {end:%Y-%m}"


def _num(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def _read_route(settings: Settings, route: str, run: str | None):
    from tradewatch.detect import review

    def read(con):
        evidence, revised = review.evidence_as_scored(con, route, run)
        return _demo_label(con), route_context(evidence, revised)

    return _read(settings, read)


async def route_page(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    route, run = request.path_params["route"], request.query_params.get("run") or None
    saved = request.query_params.get("saved")

    def work():
        demo, context = _read_route(settings, route, run)
        message = f"Decision stored: {saved}." if saved in ("confirmed", "dismissed", "watch") else None
        return _page(request, "route.html.j2", {**context, "demo": demo, "message": message,
                                                "form": {"status": "", "note": "", "by": _last_reviewer(request)}})

    return await _with_errors(request, work)


def _store_decision(settings: Settings, route: str, form: dict[str, str]) -> dict:
    """One INSERT on a writable connection opened for it and closed straight after: stored whole, or not at all."""
    from tradewatch.detect import review
    from tradewatch.flows import warehouse
    from tradewatch.flows.core.errors import InputError

    if not form.get("note", "").strip():
        raise InputError("note", "expected a note saying what you checked and what you found")
    if not form.get("by", "").strip():
        raise InputError("your name", "expected the name of the analyst making the decision")
    con = warehouse.connect(settings.db, wait_s=settings.wait_s, on_wait=_quiet, demo=True)
    try:
        return review.review(con, route, form.get("status", ""), form["note"], by=form["by"].strip(),
                             run=form.get("run") or None)
    finally:
        con.close()


async def review_post(request: Request) -> Response:
    from tradewatch.flows.core.errors import InputError, TradewatchError, WarehouseBusy

    settings: Settings = request.app.state.settings
    route, form = request.path_params["route"], await _form(request)
    if not _csrf_ok(request, form):
        return _plain(403, "CSRF token missing or wrong: reload the route page and submit the decision again; "
                           "nothing was stored")
    try:
        record = await run_in_threadpool(_store_decision, settings, route, form)
    except (WarehouseBusy, InputError, TradewatchError) as exc:
        busy = isinstance(exc, WarehouseBusy)
        why = (f"the warehouse is busy (the pipeline is writing it; waited {settings.wait_s:g} s)" if busy else str(exc))
        return await _refused(request, route, form, f"Your decision was NOT stored: {why}. "
                              "Your note is kept below; submit again.", 503 if busy else 400)
    query = urlencode({"run": form.get("run") or record["run_id"], "saved": record["status"]})
    response = RedirectResponse(f"/routes/{record['route_id']}?{query}", status_code=303)
    response.set_cookie(REVIEWER_COOKIE, quote(record["reviewer"], safe=""), httponly=True, samesite="strict")
    return response


def _last_reviewer(request: Request) -> str:
    return unquote(request.cookies.get(REVIEWER_COOKIE, ""))[:100]


async def _refused(request: Request, route: str, form: dict[str, str], error: str, status: int) -> Response:
    """The route page again with the decision form as the analyst filled it, and why nothing was stored; when
    the warehouse cannot even be read, a page with the message and the form."""
    settings: Settings = request.app.state.settings
    kept = {"status": form.get("status", ""), "note": form.get("note", ""), "by": form.get("by", "")}
    run = form.get("run") or None

    def work():
        demo, context = _read_route(settings, route, run)
        return _page(request, "route.html.j2", {**context, "demo": demo, "error": error, "form": kept,
                                                "title": BUSY_TITLE if status == 503 else context["title"]},
                     status_code=status)

    fallback = {"error": error, "form": kept, "route_id": route, "run_id": run or "",
                "decisions": ("confirmed", "dismissed", "watch"), "title": BUSY_TITLE if status == 503 else "not stored"}
    response = await _with_errors(request, work, fallback, "refused.html.j2")
    response.status_code = status
    return response


def warm_up() -> None:
    """Import what the first route page needs (pyarrow behind DuckDB's polars results, the scoring modules behind
    route_rows), at start, so the first analyst to open a route does not wait seconds for it."""
    import pyarrow  # noqa: F401

    from tradewatch.detect import calibration, features, report, route_rows  # noqa: F401


def create_app(db: Path | str | None = None, *, token: str | None = None, wait_s: float = DEFAULT_WAIT_S) -> Starlette:
    """The ASGI app serving the warehouse `db` (None: the default, or the demo's while the real one is empty):
    runs, a run's flags (filters, sorting, CSV), a route's evidence and the decision form."""
    app = Starlette(
        routes=[
            Route("/", runs_page),
            Route("/ui.css", _stylesheet),
            Route("/runs/{run}", flags_page),
            Route("/runs/{run}/flags.csv", flags_csv),
            Route("/routes/{route}", route_page),
            Route("/routes/{route}/review", review_post, methods=["POST"]),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_guard)],
    )
    app.state.settings = Settings(db=db, token=token or None, wait_s=wait_s)
    return app
