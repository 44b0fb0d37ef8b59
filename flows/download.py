"""Downloads into the cache: allowed hosts only, resumable and checksummed, skipped when unchanged, retried with backoff."""

from __future__ import annotations

import email.utils
import errno
import json
import os
import random
import time
from collections.abc import Callable, Iterable
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
    """A download that failed for good; `transient` when trying again later may help."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


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
) -> Fetched:
    """Download `url` to `dest` (a cache path). A previous complete copy is revalidated with
    If-None-Match / If-Modified-Since (304 -> status 'unchanged'); an interrupted `dest.part` is resumed
    with a Range request. 429, 5xx, timeouts, dropped connections and bodies cut short are retried per
    `policy`, honouring Retry-After. `expect(head_bytes)` may return a reason the body is not data; an
    HTML page instead of data is refused. `headers` may carry secrets: they are never logged and are
    redacted (with `secrets`) from every error. Raises DownloadError naming the URL (never a secret)."""
    policy = policy or policy_from_env()
    secrets = [*secrets, *(headers or {}).values()] if headers else list(secrets)
    dest = Path(dest)
    check_host(url, allowed_hosts)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{redact(url, secrets)}: cannot create the download cache folder {dest.parent}: "
                            f"{exc.strerror or type(exc).__name__}") from None
    own_client = client is None
    if own_client:
        client = httpx.Client(timeout=policy.timeout_s, follow_redirects=False)
    shown = redact(url, secrets)
    try:
        last_problem = "no attempt made"
        for attempt in range(policy.attempts):
            try:
                outcome = _attempt(client, url, dest, headers or {}, conditional, policy, expect, progress,
                                   allowed_hosts, shown)
            except _Retry as retry:
                last_problem = redact(retry.reason, secrets)
                if attempt + 1 >= policy.attempts:
                    break
                sleep(policy.delay(attempt, retry.retry_after))
                continue
            except httpx.TimeoutException:
                last_problem = f"timed out after {policy.timeout_s:g} s"
            except httpx.TransportError as exc:
                last_problem = redact(f"connection failed ({type(exc).__name__})", secrets)
            except DownloadError as exc:
                raise DownloadError(redact(str(exc), secrets), transient=exc.transient) from None
            except OSError as exc:
                where = exc.filename or dest
                hint = "; free space there and run again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
                raise DownloadError(f"{shown}: cannot write the download cache at {where}: "
                                    f"{exc.strerror or type(exc).__name__}{hint}") from None
            else:
                return outcome
            if attempt + 1 >= policy.attempts:
                break
            sleep(policy.delay(attempt))
        raise DownloadError(f"{shown}: gave up after {policy.attempts} attempt(s): {last_problem}", transient=True)
    finally:
        if own_client:
            client.close()


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _attempt(client, url, dest: Path, headers, conditional, policy, expect, progress, allowed_hosts, shown) -> Fetched:
    part = dest.with_name(dest.name + ".part")
    meta = read_meta(dest)
    request_headers = {"User-Agent": USER_AGENT, **headers}
    # A cached copy counts only while it still has the size recorded when it was checksummed.
    have_copy = (dest.exists() and bool(meta.get("sha256")) and meta.get("url") == url
                 and dest.stat().st_size == meta.get("bytes"))
    resume_from = part.stat().st_size if part.exists() else 0
    if resume_from and meta.get("partial_url") == url:
        request_headers["Range"] = f"bytes={resume_from}-"
        if meta.get("partial_etag"):
            request_headers["If-Range"] = meta["partial_etag"]
    else:
        resume_from = 0
        part.unlink(missing_ok=True)
    if conditional and have_copy and not resume_from:
        if meta.get("etag"):
            request_headers["If-None-Match"] = meta["etag"]
        if meta.get("last_modified"):
            request_headers["If-Modified-Since"] = meta["last_modified"]
    redirects = 0
    target = url
    while True:
        with client.stream("GET", target, headers=request_headers) as response:
            if response.has_redirect_location:
                location = response.headers.get("location", "")
                redirects += 1
                if redirects > 5:
                    raise DownloadError(f"{shown}: more than 5 redirects")
                target = str(response.url.join(location))
                try:
                    check_host(target, allowed_hosts)
                except DownloadError as exc:
                    raise DownloadError(f"{shown}: redirected to {exc}") from None
                if urlsplit(target).hostname != urlsplit(url).hostname:
                    # Credentials (the Comtrade key) are for the host they were given for, not for where it redirects.
                    request_headers = {k: v for k, v in request_headers.items() if k not in headers}
                continue
            status = response.status_code
            if status == 304 and have_copy:
                return Fetched(dest, url, meta["sha256"], int(meta.get("bytes", dest.stat().st_size)), False,
                               "unchanged", meta)
            if status in RETRY_STATUSES:
                raise _Retry(f"HTTP {status}", parse_retry_after(response.headers.get("retry-after")))
            if status == 416 and resume_from:
                part.unlink(missing_ok=True)
                _write_meta(dest, {**meta, "partial_url": None})
                raise _Retry("HTTP 416 on resume; starting over", 0.0)
            if status not in (200, 206):
                body = response.read()[:300]
                detail = _error_detail(body)
                raise DownloadError(f"{shown}: HTTP {status}{': ' + detail if detail else ''}")
            appending = status == 206 and resume_from > 0
            if status == 206 and not appending:
                raise DownloadError(f"{shown}: server sent a partial response to a full request")
            if not appending:
                resume_from = 0
            etag = response.headers.get("etag")
            last_modified = response.headers.get("last-modified")
            length = response.headers.get("content-length")
            expected_total = resume_from + int(length) if length and length.isdigit() else None
            _write_meta(dest, {**meta, "partial_url": url, "partial_etag": etag})
            received = resume_from
            head = b""
            checked = appending
            content_type = response.headers.get("content-type", "")
            try:
                with open(part, "ab" if appending else "wb") as handle:
                    for chunk in response.iter_bytes():
                        if not checked:
                            head += chunk[: 1024 - len(head)]
                            if len(head) >= 1024:
                                _refuse_non_data(head, content_type, expect, shown, part, handle)
                                checked = True
                        handle.write(chunk)
                        received += len(chunk)
                        if progress:
                            progress(received, expected_total)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                raise _Retry(f"body cut short: connection dropped after {received:,} bytes ({type(exc).__name__})") from None
            except OSError:
                # A full disk (or any write failure): drop the partial copy so it is never taken for data and
                # the space comes back; the next run starts this file over.
                part.unlink(missing_ok=True)
                try:
                    _write_meta(dest, {**meta, "partial_url": None})
                except OSError:
                    pass
                raise
            if expected_total is not None and received < expected_total:
                raise _Retry(f"body cut short: got {received:,} of {expected_total:,} bytes")
            if received == 0:
                part.unlink(missing_ok=True)
                raise DownloadError(f"{shown}: empty response body")
            if not checked or appending:
                with open(part, "rb") as handle:
                    head = handle.read(1024)
                _refuse_non_data(head, content_type, expect, shown, part)
            digest = archive.sha256(part)
            unchanged = have_copy and meta.get("sha256") == digest
            os.replace(part, dest)
            new_meta = {
                "url": url, "sha256": digest, "bytes": received, "etag": etag, "last_modified": last_modified,
                "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "partial_url": None,
            }
            _write_meta(dest, new_meta)
            state = "unchanged" if unchanged else ("resumed" if appending else "downloaded")
            return Fetched(dest, url, digest, received, not unchanged, state, new_meta)


def _refuse_non_data(head: bytes, content_type: str, expect, shown: str, part: Path, handle=None) -> None:
    reason = None
    if looks_like_html(head) or content_type.lower().startswith("text/html"):
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
