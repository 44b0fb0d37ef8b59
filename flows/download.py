"""Downloads into the cache: allowed hosts only, resumable and checksummed, skipped when unchanged, retried with backoff."""

from __future__ import annotations

import email.utils
import errno
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tradewatch.flows import archive
from tradewatch.flows.core.errors import TradewatchError

# The public sources tradewatch downloads from. A URL given explicitly by the user (--base-url) adds its
# host; loopback is always allowed so a local mirror or a test server works without configuration.
ALLOWED_HOSTS = frozenset({"ec.europa.eu", "comtradeapi.un.org", "data-api.ecb.europa.eu"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "tradewatch/0.1 (+https://github.com/; trade statistics research)"


class DownloadError(TradewatchError):
    """A download that failed for good; `transient` when trying again later may help; `status` is the HTTP
    status of the answer that decided it (404 for a file not published, 503 when retries ran out on
    it), None when no answer did (a refused host, a timeout, a dropped connection, a bad body)."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None):
        super().__init__(message)
        self.transient = transient
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: delay = min(max_delay_s, base_delay_s * 2**attempt) * jitter,
    jitter uniform in [0.5, 1.0]; a server's Retry-After (seconds or HTTP date) wins, capped at max_retry_after_s."""

    attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_retry_after_s: float = 300.0
    timeout_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after_s))
        return min(self.max_delay_s, self.base_delay_s * 2 ** attempt) * random.uniform(0.5, 1.0)


def policy_from_env() -> RetryPolicy:
    """RetryPolicy with TRADEWATCH_RETRY_ATTEMPTS / _BASE_DELAY_S / _MAX_DELAY_S / TRADEWATCH_HTTP_TIMEOUT_S applied."""
    def number(name: str, default: float) -> float:
        text = os.environ.get(name)
        if not text:
            return default
        try:
            return float(text)
        except ValueError:
            raise TradewatchError(f"{name}={text!r}: expected a number") from None

    base = RetryPolicy()
    return RetryPolicy(
        attempts=max(1, int(number("TRADEWATCH_RETRY_ATTEMPTS", base.attempts))),
        base_delay_s=number("TRADEWATCH_RETRY_BASE_DELAY_S", base.base_delay_s),
        max_delay_s=number("TRADEWATCH_RETRY_MAX_DELAY_S", base.max_delay_s),
        max_retry_after_s=number("TRADEWATCH_RETRY_MAX_AFTER_S", base.max_retry_after_s),
        timeout_s=number("TRADEWATCH_HTTP_TIMEOUT_S", base.timeout_s),
    )


@dataclass
class Fetched:
    """A file in the cache: where, its SHA-256, size in bytes, and whether this call changed it."""

    path: Path
    url: str
    sha256: str
    bytes: int
    changed: bool
    status: str  # 'downloaded', 'unchanged' (server said 304 / same content) or 'resumed'
    meta: dict = field(default_factory=dict)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def check_host(url: str, allowed: Iterable[str] = ()) -> None:
    """Raise DownloadError unless `url` is http(s) to an allowed host (https unless loopback)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    hosts = set(ALLOWED_HOSTS) | {h.lower() for h in allowed}
    if parts.scheme not in ("http", "https") or not host:
        raise DownloadError(f"{redact(url)}: not an http(s) URL")
    if host in LOOPBACK_HOSTS:
        return
    if host not in hosts:
        raise DownloadError(f"{redact(url)}: host {host} is not one of the allowed hosts ({', '.join(sorted(hosts))})")
    if parts.scheme != "https":
        raise DownloadError(f"{redact(url)}: plain http to {host}; expected https")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every secret (and the COMTRADE_API_KEY value) replaced by '***'."""
    out = str(text)
    for secret in [*secrets, os.environ.get("COMTRADE_API_KEY")]:
        if secret and len(secret) >= 4:
            out = out.replace(secret, "***")
    return out


def _meta_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".meta.json")


def read_meta(dest: Path) -> dict:
    """The sidecar metadata of a cached file (url, sha256, etag, last_modified, bytes, fetched_at), or {}."""
    try:
        return json.loads(_meta_path(dest).read_text())
    except (OSError, ValueError):
        return {}


def forget(dest: Path) -> None:
    """Remove a cached file, its partial download and its metadata, so the next fetch downloads it afresh
    (for a copy whose content proved unreadable)."""
    dest = Path(dest)
    for path in (dest, dest.with_name(dest.name + ".part"), _meta_path(dest)):
        path.unlink(missing_ok=True)


def looks_like_html(head: bytes) -> bool:
    stripped = head.lstrip(b"\xef\xbb\xbf").lstrip()[:200].lower()
    return stripped.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml"))


def fetch(
    url: str,
    dest: Path,
    *,
    client: httpx.Client | None = None,
    headers: dict[str, str] | None = None,
    secrets: Iterable[str | None] = (),
    allowed_hosts: Iterable[str] = (),
    policy: RetryPolicy | None = None,
    expect: Callable[[bytes], str | None] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    conditional: bool = True,
    xml_ok: bool = False,
) -> Fetched:
    """Download `url` to `dest` (a cache path). A previous complete copy is revalidated with
    If-None-Match / If-Modified-Since (304 -> status 'unchanged'); an interrupted `dest.part` is resumed
    with a Range request. 429, 5xx, timeouts, dropped connections and bodies cut short are retried per
    `policy`, honouring Retry-After (`xml_ok`: an XML body is an answer, not an error page — the
    Eurostat API's asynchronous notices): this is the only layer of tradewatch that retries a download (the
    plain run, the Prefect ingest flow and the pipeline call it once per file). `expect(head_bytes)` may
    return a reason the body is not data; an HTML page instead of data is refused. `headers` may carry
    secrets: they are never logged and are redacted (with `secrets`) from every error. Raises
    DownloadError naming the URL (never a secret), with the HTTP status of the deciding answer in `status`."""
    policy = policy or policy_from_env()
    secrets = [*secrets, *(headers or {}).values()] if headers else list(secrets)
    dest = Path(dest)
    check_host(url, allowed_hosts)
    job = _Job(url=url, dest=dest, headers=dict(headers or {}), conditional=conditional, policy=policy,
               expect=expect, progress=progress, allowed_hosts=tuple(allowed_hosts), secrets=secrets,
               shown=redact(url, secrets), xml_ok=xml_ok)
    _make_cache_folder(job)
    own_client = client is None
    if own_client:
        client = httpx.Client(timeout=policy.timeout_s, follow_redirects=False)
    try:
        return _with_retries(client, job, sleep)
    finally:
        if own_client:
            client.close()


@dataclass(frozen=True)
class _Job:
    """One fetch call's fixed inputs, shared by its attempts."""

    url: str
    dest: Path
    headers: dict[str, str]  # the caller's (may hold secrets; dropped on a redirect to another host)
    conditional: bool
    policy: RetryPolicy
    expect: Callable[[bytes], str | None] | None
    progress: Callable[[int, int | None], None] | None
    allowed_hosts: tuple[str, ...]
    secrets: list
    shown: str  # the URL as it may appear in messages
    xml_ok: bool = False  # an XML body is data (an API's XML answer), not an error page

    @property
    def part(self) -> Path:
        return self.dest.with_name(self.dest.name + ".part")


@dataclass
class _Plan:
    """What one attempt asks for: request headers, the cached copy's metadata, where a resume starts."""

    meta: dict
    headers: dict[str, str]
    have_copy: bool
    resume_from: int


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status


MAX_REDIRECTS = 5
HEAD_BYTES = 1024  # how much of a body is looked at to tell data from an error page


def _make_cache_folder(job: _Job) -> None:
    try:
        job.dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{job.shown}: cannot create the download cache folder {job.dest.parent}: "
                            f"{exc.strerror or type(exc).__name__}") from None


# Who hears of each retry (retry_notices): the CLI prints the line on the terminal, above its progress bars.
_retry_listeners: list[Callable[[str], None]] = []


@contextmanager
def retry_notices(listener: Callable[[str], None]):
    """While inside, every download retry in this process calls `listener` with one line saying why and when
    (retry_line), before sleeping. Prefect's logs are not involved: the command that runs the work prints it."""
    _retry_listeners.append(listener)
    try:
        yield
    finally:
        _retry_listeners.remove(listener)


def retry_line(problem: str, url: str, retry: int, retries: int, delay_s: float) -> str:
    """'HTTP 503 from ec.europa.eu; retry 2/5 in 4 s': what went wrong, the host only (a URL may carry
    secrets), which retry of how many, and the wait in seconds."""
    host = urlsplit(url).hostname or "the server"
    where = f"from {host}" if problem.startswith("HTTP ") else f"reaching {host}"
    wait = f"{delay_s:.0f} s" if delay_s >= 1 else f"{delay_s:.1f} s"
    return f"{problem} {where}; retry {retry}/{retries} in {wait}"


def _with_retries(client: httpx.Client, job: _Job, sleep: Callable[[float], None]) -> Fetched:
    """Up to policy.attempts attempts, sleeping policy.delay between them (a Retry-After wins); each retry
    is told to the retry_notices listeners first."""
    problem, status = "no attempt made", None
    for attempt in range(job.policy.attempts):
        try:
            return _attempt_once(client, job)
        except _Retry as retry:
            problem, status, retry_after = retry.reason, retry.status, retry.retry_after
        if attempt + 1 < job.policy.attempts:
            delay = job.policy.delay(attempt, retry_after)
            line = retry_line(problem, job.url, attempt + 1, job.policy.attempts - 1, delay)
            for listener in list(_retry_listeners):
                listener(line)
            sleep(delay)
    raise DownloadError(f"{job.shown}: gave up after {job.policy.attempts} attempt(s): {problem}",
                        transient=True, status=status)


def _attempt_once(client: httpx.Client, job: _Job) -> Fetched:
    """One attempt. What may pass on another attempt becomes _Retry; the rest a DownloadError naming the
    URL (secrets redacted)."""
    try:
        return _attempt(client, job)
    except _Retry as retry:
        raise _Retry(redact(retry.reason, job.secrets), retry.retry_after, retry.status) from None
    except httpx.TimeoutException:
        raise _Retry(f"timed out after {job.policy.timeout_s:g} s") from None
    except httpx.TransportError as exc:
        raise _Retry(redact(f"connection failed ({type(exc).__name__})", job.secrets)) from None
    except DownloadError as exc:
        raise DownloadError(redact(str(exc), job.secrets), transient=exc.transient, status=exc.status) from None
    except OSError as exc:
        where = exc.filename or job.dest
        hint = "; free space there and run again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise DownloadError(f"{job.shown}: cannot write the download cache at {where}: "
                            f"{exc.strerror or type(exc).__name__}{hint}") from None


def _attempt(client: httpx.Client, job: _Job) -> Fetched:
    plan = _plan_request(job)
    with _final_response(client, job, plan.headers) as response:
        cached = _answer_without_body(response, job, plan)
        if cached is not None:
            return cached
        return _receive(response, job, plan)


def _plan_request(job: _Job) -> _Plan:
    """Request headers for one attempt: resume a partial copy of this URL (Range, If-Range), else ask
    whether a complete cached copy changed (If-None-Match, If-Modified-Since) when `conditional`."""
    part, meta = job.part, read_meta(job.dest)
    headers = {"User-Agent": USER_AGENT, **job.headers}
    # A cached copy counts only while it still has the size recorded when it was checksummed.
    have_copy = (job.dest.exists() and bool(meta.get("sha256")) and meta.get("url") == job.url
                 and job.dest.stat().st_size == meta.get("bytes"))
    resume_from = part.stat().st_size if part.exists() else 0
    if resume_from and meta.get("partial_url") == job.url:
        headers["Range"] = f"bytes={resume_from}-"
        if meta.get("partial_etag"):
            headers["If-Range"] = meta["partial_etag"]
    else:
        resume_from = 0
        part.unlink(missing_ok=True)
    if job.conditional and have_copy and not resume_from:
        if meta.get("etag"):
            headers["If-None-Match"] = meta["etag"]
        if meta.get("last_modified"):
            headers["If-Modified-Since"] = meta["last_modified"]
    return _Plan(meta=meta, headers=headers, have_copy=have_copy, resume_from=resume_from)


@contextmanager
def _final_response(client: httpx.Client, job: _Job, request_headers: dict[str, str]):
    """The streamed response after following up to MAX_REDIRECTS redirects, each to an allowed host; the
    caller's headers (credentials) are not sent on to another host."""
    target = job.url
    for redirects in range(MAX_REDIRECTS + 1):
        with client.stream("GET", target, headers=request_headers) as response:
            if not response.has_redirect_location:
                yield response
                return
            if redirects == MAX_REDIRECTS:
                raise DownloadError(f"{job.shown}: more than {MAX_REDIRECTS} redirects")
            target = _redirect_target(response, job)
        if urlsplit(target).hostname != urlsplit(job.url).hostname:
            # Credentials (the Comtrade key) are for the host they were given for, not for where it redirects.
            request_headers = {k: v for k, v in request_headers.items() if k not in job.headers}


def _redirect_target(response: httpx.Response, job: _Job) -> str:
    target = str(response.url.join(response.headers.get("location", "")))
    try:
        check_host(target, job.allowed_hosts)
    except DownloadError as exc:
        raise DownloadError(f"{job.shown}: redirected to {exc}") from None
    return target


def _answer_without_body(response: httpx.Response, job: _Job, plan: _Plan) -> Fetched | None:
    """Decide on the status alone: the cached copy (304), a retry (429, 5xx …, 416 on resume), a refusal
    carrying the status (404 …); None when the body is data to receive (200, or 206 to a resume)."""
    status = response.status_code
    if status == 304 and plan.have_copy:
        meta = plan.meta
        return Fetched(job.dest, job.url, meta["sha256"], int(meta.get("bytes", job.dest.stat().st_size)), False,
                       "unchanged", meta)
    if status in RETRY_STATUSES:
        raise _Retry(f"HTTP {status}", parse_retry_after(response.headers.get("retry-after")), status)
    if status == 416 and plan.resume_from:
        job.part.unlink(missing_ok=True)
        _write_meta(job.dest, {**plan.meta, "partial_url": None})
        raise _Retry("HTTP 416 on resume; starting over", 0.0, status)
    # 202 Accepted may carry an API's asynchronous notice (xml_ok); any other status is no data.
    if status not in (200, 206) and not (status == 202 and job.xml_ok):
        detail = _error_detail(response.read()[:4000])
        raise DownloadError(f"{job.shown}: HTTP {status}{': ' + detail if detail else ''}", status=status)
    if status == 206 and not plan.resume_from:
        raise DownloadError(f"{job.shown}: server sent a partial response to a full request", status=status)
    return None


def _receive(response: httpx.Response, job: _Job, plan: _Plan) -> Fetched:
    """Stream a data body into `dest.part` (appending on a resume), check it is whole and data, then
    move it over `dest` with fresh metadata."""
    appending = response.status_code == 206
    start = plan.resume_from if appending else 0
    length = response.headers.get("content-length")
    expected_total = start + int(length) if length and length.isdigit() else None
    _write_meta(job.dest, {**plan.meta, "partial_url": job.url, "partial_etag": response.headers.get("etag")})
    content_type = response.headers.get("content-type", "")
    received, checked = _write_body(response, job, plan, start, expected_total, content_type)
    if expected_total is not None and received < expected_total:
        raise _Retry(f"body cut short: got {received:,} of {expected_total:,} bytes")
    if received == 0:
        job.part.unlink(missing_ok=True)
        raise DownloadError(f"{job.shown}: empty response body")
    if not checked or appending:
        with open(job.part, "rb") as handle:
            head = handle.read(HEAD_BYTES)
        _refuse_non_data(head, content_type, job.expect, job.shown, job.part, xml_ok=job.xml_ok)
    return _commit(job, plan, received, appending, response.headers)


def _write_body(response: httpx.Response, job: _Job, plan: _Plan, start: int, expected_total: int | None,
                content_type: str) -> tuple[int, bool]:
    """Write the body to `dest.part`; (bytes in the part file, whether its head was checked on the way).
    A dropped connection is a retry (the part is kept for a resume); a write failure drops the part."""
    received, head, checked = start, b"", start > 0
    try:
        with open(job.part, "ab" if start else "wb") as handle:
            for chunk in response.iter_bytes():
                if not checked:
                    head, checked = _sniff(head + chunk[: HEAD_BYTES - len(head)], content_type, job, handle)
                handle.write(chunk)
                received += len(chunk)
                if job.progress:
                    job.progress(received, expected_total)
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        raise _Retry(f"body cut short: connection dropped after {received:,} bytes ({type(exc).__name__})") from None
    except OSError:
        _drop_partial(job, plan)
        raise
    return received, checked


def _sniff(head: bytes, content_type: str, job: _Job, handle) -> tuple[bytes, bool]:
    """(head so far, whether it is long enough to judge); refuses a head that is not data."""
    if len(head) < HEAD_BYTES:
        return head, False
    _refuse_non_data(head, content_type, job.expect, job.shown, job.part, handle, xml_ok=job.xml_ok)
    return head, True


def _drop_partial(job: _Job, plan: _Plan) -> None:
    # A full disk (or any write failure): drop the partial copy so it is never taken for data and the
    # space comes back; the next run starts this file over.
    job.part.unlink(missing_ok=True)
    try:
        _write_meta(job.dest, {**plan.meta, "partial_url": None})
    except OSError:
        pass


def _commit(job: _Job, plan: _Plan, received: int, appending: bool, headers) -> Fetched:
    digest = archive.sha256(job.part)
    unchanged = plan.have_copy and plan.meta.get("sha256") == digest
    os.replace(job.part, job.dest)
    new_meta = {
        "url": job.url, "sha256": digest, "bytes": received, "etag": headers.get("etag"),
        "last_modified": headers.get("last-modified"),
        "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "partial_url": None,
    }
    _write_meta(job.dest, new_meta)
    state = "unchanged" if unchanged else ("resumed" if appending else "downloaded")
    return Fetched(job.dest, job.url, digest, received, not unchanged, state, new_meta)


def _refuse_non_data(head: bytes, content_type: str, expect, shown: str, part: Path, handle=None, *,
                     xml_ok: bool = False) -> None:
    reason = None
    xml = xml_ok and head.lstrip(b"\xef\xbb\xbf").lstrip()[:1] == b"<" and b"<html" not in head[:200].lower()
    if (looks_like_html(head) and not xml) or content_type.lower().startswith("text/html"):
        reason = "the server sent an HTML page instead of data (an error or maintenance page?)"
    elif expect is not None:
        reason = expect(head)
    if reason:
        if handle is not None:
            handle.close()
        part.unlink(missing_ok=True)
        raise DownloadError(f"{shown}: {reason}")


def _error_detail(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    # A SOAP fault (Eurostat's API: EXTRACTION_TOO_BIG, a bad key, no results) says what went wrong.
    fault = re.search(r"<(?:[\w.-]+:)?faultstring[^>]*>(.*?)</", text, re.S)
    if fault:
        return " ".join(fault.group(1).split())[:160]
    if looks_like_html(body):
        return "an HTML error page"
    return " ".join(text.split())[:160]


def _write_meta(dest: Path, meta: dict) -> None:
    path = _meta_path(dest)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, path)


def to_dict(fetched: Fetched) -> dict:
    data = asdict(fetched)
    data["path"] = str(fetched.path)
    return data
