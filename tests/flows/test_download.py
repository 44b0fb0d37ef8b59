"""Downloads against a local server: retries, Retry-After, timeouts, bodies cut short, HTML pages, resume, 304."""

from __future__ import annotations

import hashlib
import time

import pytest

from ingest_helpers import Reply, home, server  # noqa: F401  (fixtures)
from tradewatch.flows import download
from tradewatch.flows.download import DownloadError, RetryPolicy

DATA = bytes(range(256)) * 400  # 100 kB of binary "data"
FAST = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.02, timeout_s=1.0)


def test_plain_download_records_checksum(home, server):
    server.route("/f", Reply(200, DATA, {"ETag": '"v1"'}))
    got = download.fetch(f"{server.url}/f", home / "cache" / "f.bin", policy=FAST)
    assert got.status == "downloaded" and got.changed
    assert got.sha256 == hashlib.sha256(DATA).hexdigest()
    assert (home / "cache" / "f.bin").read_bytes() == DATA
    assert download.read_meta(home / "cache" / "f.bin")["sha256"] == got.sha256


def test_second_download_is_skipped_by_etag(home, server):
    server.route("/f", Reply(200, DATA, {"ETag": '"v1"'}))
    dest = home / "f.bin"
    download.fetch(f"{server.url}/f", dest, policy=FAST)
    again = download.fetch(f"{server.url}/f", dest, policy=FAST)
    assert again.status == "unchanged" and not again.changed
    assert server.requests[-1].headers.get("If-None-Match") == '"v1"'


def test_same_content_without_validators_is_unchanged(home, server):
    server.route("/f", Reply(200, DATA))
    dest = home / "f.bin"
    download.fetch(f"{server.url}/f", dest, policy=FAST)
    again = download.fetch(f"{server.url}/f", dest, policy=FAST)
    assert again.status == "unchanged" and not again.changed


def test_429_then_success_honours_retry_after(home, server):
    server.route("/f", Reply(429, b"slow down", {"Retry-After": "1"}), Reply(200, DATA))
    slept = []
    got = download.fetch(f"{server.url}/f", home / "f.bin", policy=FAST, sleep=slept.append)
    assert got.status == "downloaded"
    assert slept == [1.0]  # the server's Retry-After, not the tiny backoff


def test_retry_after_as_http_date():
    future = time.time() + 30
    from email.utils import formatdate

    assert 25 <= download.parse_retry_after(formatdate(future, usegmt=True)) <= 31
    assert download.parse_retry_after("garbage") is None


def test_500s_back_off_with_jitter_then_succeed(home, server):
    server.route("/f", Reply(500), Reply(503), Reply(200, DATA))
    slept = []
    got = download.fetch(f"{server.url}/f", home / "f.bin", policy=FAST, sleep=slept.append)
    assert got.changed and len(slept) == 2
    assert 0.005 <= slept[0] <= 0.01 and 0.01 <= slept[1] <= 0.02  # base * 2**attempt * [0.5, 1]


def test_each_retry_says_why_and_when_to_the_listeners(home, server):
    server.route("/f", Reply(503, b"busy", {"Retry-After": "4"}), Reply(503, b"busy", {"Retry-After": "4"}),
                 Reply(200, DATA))
    told, slept = [], []
    with download.retry_notices(told.append):
        got = download.fetch(f"{server.url}/f?token=secret", home / "f.bin", policy=FAST, sleep=slept.append)
    assert got.changed and slept == [4.0, 4.0]
    assert told == ["HTTP 503 from 127.0.0.1; retry 1/3 in 4 s", "HTTP 503 from 127.0.0.1; retry 2/3 in 4 s"]
    download.fetch(f"{server.url}/f", home / "g.bin", policy=FAST, sleep=slept.append)
    assert len(told) == 2  # outside retry_notices nobody is told
    assert download.retry_line("timed out after 60 s", "https://ec.europa.eu/x", 1, 5, 0.25) == (
        "timed out after 60 s reaching ec.europa.eu; retry 1/5 in 0.2 s")


def test_persistent_500_gives_up_naming_the_url(home, server):
    server.route("/f", Reply(500, b"boom"))
    with pytest.raises(DownloadError) as caught:
        download.fetch(f"{server.url}/f", home / "f.bin", policy=FAST, sleep=lambda s: None)
    assert f"{server.url}/f" in str(caught.value) and "HTTP 500" in str(caught.value) and "4 attempt" in str(caught.value)
    assert caught.value.transient
    assert len(server.requests) == 4


def test_timeout_is_retried(home, server):
    server.route("/f", Reply(200, DATA, delay_s=1.0), Reply(200, DATA))
    policy = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.01, timeout_s=0.3)
    got = download.fetch(f"{server.url}/f", home / "f.bin", policy=policy)
    assert got.changed and len(server.requests) == 2


def test_body_cut_short_is_resumed_with_range(home, server):
    server.route("/f", Reply(200, DATA, {"ETag": '"v1"'}, cut_after=30_000), Reply(200, DATA, {"ETag": '"v1"'}))
    got = download.fetch(f"{server.url}/f", home / "f.bin", policy=FAST)
    assert got.status == "resumed"
    assert (home / "f.bin").read_bytes() == DATA
    assert server.requests[1].headers.get("Range") == "bytes=30000-"
    assert got.sha256 == hashlib.sha256(DATA).hexdigest()


def test_body_cut_short_every_time_fails_clearly(home, server):
    server.route("/f", Reply(200, DATA, cut_after=10, ranges=False))
    with pytest.raises(DownloadError, match="cut short"):
        download.fetch(f"{server.url}/f", home / "f.bin", policy=FAST)
    assert not (home / "f.bin").exists()


def test_html_error_page_is_refused(home, server):
    page = b"<!DOCTYPE html><html><body>Service unavailable, maintenance</body></html>" * 20
    server.route("/f", Reply(200, page, {"Content-Type": "text/html"}))
    with pytest.raises(DownloadError, match="HTML page instead of data"):
        download.fetch(f"{server.url}/f", home / "f.bin", policy=FAST)
    assert not (home / "f.bin").exists() and not (home / "f.bin.part").exists()


def test_404_is_not_retried(home, server):
    server.route("/f", Reply(404, b"no such file"))
    with pytest.raises(DownloadError, match="HTTP 404") as caught:
        download.fetch(f"{server.url}/f", home / "f.bin", policy=FAST)
    assert not caught.value.transient and len(server.requests) == 1


def test_the_http_status_travels_with_the_error(home, server):
    server.route("/gone", Reply(404, b"no such file"))
    server.route("/busy", Reply(503, b"busy"))
    with pytest.raises(DownloadError) as gone:
        download.fetch(f"{server.url}/gone", home / "g.bin", policy=FAST, sleep=lambda s: None)
    assert gone.value.status == 404 and not gone.value.transient
    with pytest.raises(DownloadError) as busy:
        download.fetch(f"{server.url}/busy", home / "b.bin", policy=FAST, sleep=lambda s: None)
    assert busy.value.status == 503 and busy.value.transient  # the last answer before giving up
    with pytest.raises(DownloadError) as refused:
        download.fetch("https://example.org/data.7z", home / "x", policy=FAST)
    assert refused.value.status is None  # no answer decided it


def test_hosts_outside_the_allowed_list_are_refused(home):
    with pytest.raises(DownloadError, match="not one of the allowed hosts"):
        download.fetch("https://example.org/data.7z", home / "x", policy=FAST)
    with pytest.raises(DownloadError, match="expected https"):
        download.fetch("http://ec.europa.eu/x.7z", home / "x", policy=FAST)


def test_secret_header_never_appears_in_errors(home, server, monkeypatch):
    secret = "s3cr3t-key-value"
    server.route("/f", Reply(400, f"bad key {secret}".encode()))
    with pytest.raises(DownloadError) as caught:
        download.fetch(f"{server.url}/f", home / "f.bin", headers={"Ocp-Apim-Subscription-Key": secret}, policy=FAST)
    assert secret not in str(caught.value) and "***" in str(caught.value)
    assert server.requests[0].headers.get("Ocp-Apim-Subscription-Key") == secret


def test_unreadable_download_is_forgotten_so_the_next_run_fetches_it_again(home, server):
    from tradewatch.flows import ingest
    from tradewatch.flows.core.errors import InputError

    broken = b"7z\xbc\xaf\x27\x1c" + b"\x00" * 200  # a 7z signature and nothing readable behind it
    server.route("/full_v2_202203.7z", Reply(200, broken, {"ETag": '"v1"'}))
    dest = home / "cache" / "comext" / "full_v2_202203.7z"
    got = download.fetch(f"{server.url}/full_v2_202203.7z", dest, policy=FAST)
    fetched = {"path": str(got.path), "status": got.status, "sha256": got.sha256}
    with pytest.raises(InputError):
        ingest.parse_downloaded(fetched, display_name="full_v2_202203.7z")
    assert not dest.exists() and download.read_meta(dest) == {}
    again = download.fetch(f"{server.url}/full_v2_202203.7z", dest, policy=FAST)
    assert again.status == "downloaded"
    assert "If-None-Match" not in server.requests[-1].headers
