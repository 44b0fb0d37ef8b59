"""Faults: a full disk while caching a download, extracting or writing the warehouse; a connection dropped
mid-download; a warehouse locked by another writer. Each ends in one clear line, nothing partial is taken
for complete, the warehouse keeps its last committed state, and the next run completes."""

from __future__ import annotations

import builtins
import errno
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from corpus import GOOD_ROWS, HEADER, dat, seven_zip
from reliability_helpers import (assert_one_line_error, cli, home, seeded_db, seeded_status,  # noqa: F401
                                 seeded_template, status_json)
from tradewatch.flows import download
from tradewatch.flows.download import DownloadError, RetryPolicy

sys.path.insert(0, str(Path(__file__).parents[1] / "flows"))
from fakeserver import FakeServer, Reply  # noqa: E402

FAST = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02, timeout_s=3.0)
DATA = os.urandom(300_000)
MONTH_7Z = seven_zip({"full_202203.dat": dat(GOOD_ROWS)})


@pytest.fixture
def server():
    with FakeServer() as fake:
        yield fake


class FullDisk:
    """Stands in for open() inside flows.download: files opened for writing share `room` bytes, then every
    write fails with ENOSPC, as on a full disk. Reading is untouched."""

    def __init__(self, room: int):
        self.room = room
        self.failures = 0

    def __call__(self, file, mode="r", *args, **kwargs):
        handle = builtins.open(file, mode, *args, **kwargs)
        return _Metered(handle, self) if ("w" in mode or "a" in mode) else handle


class _Metered:
    def __init__(self, handle, disk: FullDisk):
        self.handle, self.disk = handle, disk

    def write(self, data) -> int:
        if len(data) > self.disk.room:
            fits = max(self.disk.room, 0)
            self.handle.write(data[:fits])
            self.disk.room = 0
            self.disk.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.handle.name))
        self.disk.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def comext_args(server, db) -> list:
    return ["ingest", "comext", "--from", "2022-03", "--to", "2022-03", "--base-url", f"{server.url}/{{file}}",
            "--task-runner", "none", "--db", db]


def months(status: dict) -> dict:
    return {r["period"]: r["rows"] for r in status["trade_flows"]}


# ------------------------------------------------------------------------------------------- full disk

def test_full_disk_while_caching_a_download_then_next_run_completes(home, server, monkeypatch):
    server.route("/f", Reply(200, DATA, {"ETag": '"v1"'}))
    dest = home / "cache" / "f.bin"
    disk = FullDisk(room=100_000)
    monkeypatch.setattr(download, "open", disk, raising=False)
    with pytest.raises(DownloadError) as info:
        download.fetch(f"{server.url}/f", dest, policy=FAST)
    message = str(info.value)
    assert "\n" not in message and f"{server.url}/f" in message and "No space left on device" in message
    assert "free space" in message and disk.failures == 1 and not info.value.transient
    assert not dest.exists(), "no partial file is taken for the download"
    assert not dest.with_name("f.bin.part").exists(), "the partial copy is dropped, giving the space back"
    assert not download.read_meta(dest).get("sha256")
    monkeypatch.delattr(download, "open")
    got = download.fetch(f"{server.url}/f", dest, policy=FAST)
    assert got.status == "downloaded" and dest.read_bytes() == DATA


def test_full_disk_during_cli_ingest_is_one_line_and_next_run_loads(home, server, seeded_db, seeded_status,
                                                                     monkeypatch):
    server.route("/full_v2_202203.7z", Reply(200, MONTH_7Z + b"", {"ETag": '"m3"'}))
    monkeypatch.setattr(download, "open", FullDisk(room=len(MONTH_7Z) // 2), raising=False)
    result = cli(*comext_args(server, seeded_db))
    assert_one_line_error(result, "full_v2_202203.7z", "No space left on device")
    assert status_json(seeded_db) == seeded_status, "the warehouse is unchanged"
    assert not (home / "cache" / "comext" / "full_v2_202203.7z").exists()
    monkeypatch.delattr(download, "open")
    again = cli(*comext_args(server, seeded_db))
    assert again.exit_code == 0, again.stderr
    assert months(status_json(seeded_db)) == {"2022-02": 3, "2022-03": 3}


# ----------------------------------------------------------------------------- connection dropped mid-body

def test_connection_dropped_mid_download_resumes_with_range(home, server, seeded_db):
    half = len(MONTH_7Z) // 2
    server.route("/full_v2_202203.7z", Reply(200, MONTH_7Z, {"ETag": '"m3"'}, cut_after=half),
                 Reply(200, MONTH_7Z, {"ETag": '"m3"'}))
    result = cli(*comext_args(server, seeded_db), "--json")
    assert result.exit_code == 0, result.stderr
    assert [r.headers.get("Range") for r in server.requests] == [None, f"bytes={half}-"]
    assert '"resumed": 1' in result.stdout
    assert months(status_json(seeded_db))["2022-03"] == 3


def test_dropped_connection_resumes_in_the_next_run(home, server, seeded_db, seeded_status, monkeypatch):
    """With no retry left the run fails in one line, keeps only a .part; the next run asks for the rest."""
    monkeypatch.setenv("TRADEWATCH_RETRY_ATTEMPTS", "1")
    half = len(MONTH_7Z) // 3
    server.route("/full_v2_202203.7z", Reply(200, MONTH_7Z, {"ETag": '"m3"'}, cut_after=half),
                 Reply(200, MONTH_7Z, {"ETag": '"m3"'}))
    cached = home / "cache" / "comext" / "full_v2_202203.7z"
    assert_one_line_error(cli(*comext_args(server, seeded_db)), "cut short")
    assert not cached.exists() and cached.with_name(cached.name + ".part").stat().st_size == half
    assert status_json(seeded_db) == seeded_status
    again = cli(*comext_args(server, seeded_db))
    assert again.exit_code == 0, again.stderr
    assert server.requests[-1].headers.get("Range") == f"bytes={half}-"
    assert cached.read_bytes() == MONTH_7Z and months(status_json(seeded_db))["2022-03"] == 3


class _ClosingServer:
    """HTTP on 127.0.0.1 with no Content-Length: the first answer stops half-way and closes the socket (which
    looks like a complete body); later answers are whole, and say 304 to a matching If-None-Match."""

    def __init__(self, body: bytes):
        self.body, self.requests = body, []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                self.requests.append(request.decode("latin-1"))
                if len(self.requests) == 1:
                    conn.sendall(b'HTTP/1.1 200 OK\r\nETag: "v1"\r\nConnection: close\r\n\r\n' + self.body[: len(self.body) // 2])
                elif 'if-none-match: "v1"' in request.decode("latin-1").lower():
                    conn.sendall(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
                else:
                    conn.sendall(b'HTTP/1.1 200 OK\r\nETag: "v1"\r\nContent-Length: ' + str(len(self.body)).encode()
                                 + b"\r\nConnection: close\r\n\r\n" + self.body)

    def close(self):
        self.sock.close()


def test_body_cut_without_length_is_not_kept_as_the_month(home, seeded_db, seeded_status):
    """A server that closes mid-body without a Content-Length leaves what looks like a whole file. The broken
    archive is refused at load and forgotten, so the next run downloads it again instead of trusting a 304."""
    fake = _ClosingServer(MONTH_7Z)
    try:
        first = cli(*comext_args(fake, seeded_db))
        assert_one_line_error(first, "full_v2_202203.7z", "truncated")
        assert status_json(seeded_db) == seeded_status
        assert not (home / "cache" / "comext" / "full_v2_202203.7z").exists()
        again = cli(*comext_args(fake, seeded_db))
        assert again.exit_code == 0, again.stderr
        assert "if-none-match" not in fake.requests[-1].lower()
        assert months(status_json(seeded_db))["2022-03"] == 3
    finally:
        fake.close()


# --------------------------------------------------------------------------------------- locked warehouse

HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


@contextmanager
def held(db: Path, seconds: float):
    """Another process holding a DuckDB write connection to `db` for up to `seconds`."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def test_locked_warehouse_waits_bounded_then_fails_in_one_line(home, seeded_db, seeded_status, tmp_path, monkeypatch):
    monkeypatch.setenv("TRADEWATCH_LOCK_WAIT_S", "0.6")
    data = tmp_path / "full_202203.dat"
    data.write_bytes(dat(GOOD_ROWS))
    with held(seeded_db, 60):
        for args in (["ingest", "files", data], ["status", "--json"], ["ingest", "ecb", "--file", data]):
            started = time.monotonic()
            result = cli(*args, "--db", seeded_db)
            waited = time.monotonic() - started
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.exit_code == 2, (args, result.stderr)
            assert "Traceback" not in result.stderr
            assert len(lines) == 2, (args, lines)
            assert "is being written by another process; waiting up to 1 s" in lines[0]
            assert lines[1].startswith("error: ") and "another tradewatch process is writing the warehouse" in lines[1]
            assert 0.55 <= waited < 10, (args, waited)
    assert status_json(seeded_db) == seeded_status
    done = cli("ingest", "files", data, "--db", seeded_db)
    assert done.exit_code == 0 and months(status_json(seeded_db)) == {"2022-02": 3, "2022-03": 3}


def test_writer_gone_during_the_wait_lets_the_load_through(home, seeded_db, tmp_path, monkeypatch):
    monkeypatch.setenv("TRADEWATCH_LOCK_WAIT_S", "20")
    data = tmp_path / "full_202203.dat"
    data.write_bytes(dat(GOOD_ROWS))
    with held(seeded_db, 1.0):
        result = cli("ingest", "files", data, "--db", seeded_db)
    assert result.exit_code == 0, result.stderr
    assert "waiting up to 20 s" in result.stderr and not result.error_lines()
    assert months(status_json(seeded_db))["2022-03"] == 3


def test_lock_wait_setting_is_checked(home, seeded_db, monkeypatch):
    monkeypatch.setenv("TRADEWATCH_LOCK_WAIT_S", "soon")
    assert_one_line_error(cli("status", "--db", seeded_db), "TRADEWATCH_LOCK_WAIT_S")


# ------------------------------------------------------------------------ a real full disk (tmpfs, root)

@contextmanager
def tiny_disk(folder: Path, size: str):
    """A tmpfs of `size` mounted at `folder` (needs root and mount); skipped where that is not possible."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def grow(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True, capture_output=True)


def _stored_month(rows: int, seed: int = 1) -> bytes:
    """A Comext month stored uncompressed in its 7z, so the archive is as large as the data."""
    import io

    import py7zr

    body = dat([f"DE,RU,E,{80000000 + i:08d},,,,,,,2,,,202203,{(i * 7919 + seed) % 1_000_003},,," for i in range(rows)])
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", filters=[{"id": py7zr.FILTER_COPY}]) as archive:
        archive.writestr(body, "full_202203.dat")
    return buffer.getvalue()


def test_real_full_disk_download_cache(home, server, seeded_db, seeded_status, tmp_path, monkeypatch):
    archive = _stored_month(12_000)  # ~600 kB
    server.route("/full_v2_202203.7z", Reply(200, archive, {"ETag": '"big"'}))
    with tiny_disk(tmp_path / "small", "256k") as small:
        monkeypatch.setenv("TRADEWATCH_HOME", str(small))
        result = cli(*comext_args(server, seeded_db))
        assert_one_line_error(result, "No space left on device", "free space")
        assert not list(small.rglob("*.7z")) and not list(small.rglob("*.part")), "nothing partial is kept"
        assert status_json(seeded_db) == seeded_status
        grow(small, "8m")
        again = cli(*comext_args(server, seeded_db))
        assert again.exit_code == 0, again.stderr
        assert months(status_json(seeded_db))["2022-03"] == 12_000


def test_real_full_disk_while_extracting(home, seeded_db, seeded_status, tmp_path, monkeypatch):
    """The archive is small but its month is not: extraction fills the scratch disk."""
    path = tmp_path / "full_v2_202203.7z"
    path.write_bytes(seven_zip({"full_202203.dat": dat([f"DE,RU,E,{80000000 + i:08d},,,,,,,2,,,202203,5,,,"
                                                        for i in range(30_000)])}))
    with tiny_disk(tmp_path / "small", "512k") as small:
        monkeypatch.setenv("TRADEWATCH_HOME", str(small))
        result = cli("ingest", "files", path, "--db", seeded_db)
        assert_one_line_error(result, str(path), "cannot extract", "No space left on device")
        assert not [p for p in small.rglob("*") if p.is_file()], "the partial extraction is removed"
        assert status_json(seeded_db) == seeded_status
        grow(small, "16m")
        again = cli("ingest", "files", path, "--db", seeded_db)
        assert again.exit_code == 0, again.stderr
        assert months(status_json(seeded_db))["2022-03"] == 30_000


@pytest.mark.slow
def test_real_full_disk_under_the_warehouse(home, seeded_template, tmp_path):
    """The warehouse itself on a full disk: the load is rolled back, the old partitions stay, one line."""
    big = tmp_path / "full_202203.dat"
    big.write_text("\n".join([HEADER] + [f"DE,RU,E,{80000000 + i:08d},,,,,,,2,,,202203,{(i * 7919) % 1_000_003},,,"
                                         for i in range(1_000_000)]) + "\n")
    room = seeded_template.stat().st_size + 600 * 1024
    with tiny_disk(tmp_path / "small", f"{room // 1024}k") as small:
        db = small / "w.duckdb"
        db.write_bytes(seeded_template.read_bytes())
        before = status_json(db)
        result = cli("ingest", "files", big, "--db", db)
        assert_one_line_error(result, str(big), "nothing from this file was stored", "No space left on device")
        assert status_json(db) == before
        grow(small, "256m")
        again = cli("ingest", "files", big, "--db", db)
        assert again.exit_code == 0, again.stderr
        assert months(status_json(db)) == {"2022-02": 3, "2022-03": 1_000_000}


# ------------------------------------------------------------------- config and model files that cannot be read

def _failing_open(monkeypatch, victim: Path, error: int):
    """Opening `victim` fails with `error` (as for a file without read permission, or a disk read error);
    every other file opens as usual. Root reads any file whatever its mode, so the fault is injected."""
    import pathlib

    real_open = pathlib.Path.open

    def fake_open(self, *args, **kwargs):
        if Path(self) == victim:
            raise OSError(error, os.strerror(error), str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", fake_open)


@pytest.mark.parametrize("error", [errno.EACCES, errno.EIO])
@pytest.mark.parametrize("command", [["detect"], ["pipeline", "run"]])
def test_unreadable_config_is_one_line_and_changes_nothing(home, seeded_db, tmp_path, monkeypatch, command, error):
    config = tmp_path / "tradewatch.toml"
    config.write_text('[detect]\nevent = "2022-03"\n' if command != ["detect"] else 'event = "2022-03"\n')
    before = seeded_db.read_bytes()
    _failing_open(monkeypatch, config, error)
    assert_one_line_error(cli(*command, "--config", config, "--db", seeded_db), f"{config}: cannot read: "
                          f"{os.strerror(error)}")
    assert seeded_db.read_bytes() == before


@pytest.mark.parametrize("name, error", [("ranker.skops", errno.EIO), ("ranker.json", errno.EIO),
                                         ("ranker.skops", errno.EACCES), ("ranker.json", errno.EACCES)])
def test_unreadable_model_files_are_one_line(home, tmp_path, monkeypatch, name, error):
    import shutil

    from tradewatch.detect import ranker

    folder = tmp_path / "model"
    shutil.copytree(ranker.shipped_dir(), folder)
    _failing_open(monkeypatch, folder / name, error)
    if name == "ranker.json":  # read_text opens through io.open, not Path.open
        real_read_text = Path.read_text
        monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (_ for _ in ()).throw(
            OSError(error, os.strerror(error), str(self))) if self == folder / name else real_read_text(self, *a, **k))
    assert_one_line_error(cli("model", "status", "--model", folder), f"{folder / name}: cannot read: "
                          f"{os.strerror(error)}")


def test_locked_warehouse_during_sdmx_load_and_review_is_one_line(home, seeded_db, seeded_status, tmp_path,
                                                                  monkeypatch):
    """An SDMX-CSV load and a review decision on a warehouse another process writes: each waits, gives up in
    one line and changes nothing; once the writer is gone, both complete."""
    from corpus import SDMX_GOOD, sdmx

    monkeypatch.setenv("TRADEWATCH_LOCK_WAIT_S", "0.5")
    data = tmp_path / "ds-045409_2022-03.csv"
    data.write_bytes(sdmx(SDMX_GOOD))
    with held(seeded_db, 60):
        for args in (["ingest", "files", data], ["flags", "review", "r-x", "--status", "watch", "--note", "n"]):
            result = cli(*args, "--db", seeded_db)
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.exit_code == 2 and len(lines) == 2, (args, result.stderr)
            assert "another tradewatch process is writing the warehouse" in lines[1]
    assert status_json(seeded_db) == seeded_status
    done = cli("ingest", "files", data, "--db", seeded_db)
    assert done.exit_code == 0, done.stderr
    assert sum(r["rows"] for r in status_json(seeded_db)["trade_totals"]) == 3
