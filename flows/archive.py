"""Safe extraction of archive members — the single data member of a Comext 7z, chosen members of a zip (BACI
releases), a gzip file's content (Comtrade bulk files) — with path, count and size guards; and file checksums."""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tradewatch.flows.core.errors import InputError, TradewatchError

# A real monthly Comext file expands to about 400 MB; 8 GB leaves room for growth and stops bombs.
# $TRADEWATCH_MAX_EXPANDED_BYTES overrides it.
MAX_EXPANDED_BYTES = 8 * 1024**3


def max_expanded_bytes() -> int:
    """The decompression limit in bytes: $TRADEWATCH_MAX_EXPANDED_BYTES (a whole number > 0), else MAX_EXPANDED_BYTES."""
    text = os.environ.get("TRADEWATCH_MAX_EXPANDED_BYTES", "").strip()
    if not text:
        return MAX_EXPANDED_BYTES
    if not text.isdigit() or int(text) <= 0:
        raise TradewatchError(f"TRADEWATCH_MAX_EXPANDED_BYTES={text!r}: expected a whole number of bytes > 0")
    return int(text)


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def extract_single_member(archive: Path, dest_dir: Path, *, max_bytes: int | None = None) -> Path:
    """Extract the one file inside the 7z `archive` into `dest_dir` and return its path.
    Refuses archives that are not 7z, are encrypted or truncated, hold several files, hold a member
    path that is absolute or climbs out with '..', or would expand past `max_bytes` (default
    max_expanded_bytes()). A full disk while extracting is a TradewatchError, not the archive's fault."""
    import py7zr
    from py7zr.exceptions import Bad7zFile, PasswordRequired

    max_bytes = max_expanded_bytes() if max_bytes is None else max_bytes
    where = str(archive)
    target: Path | None = None
    try:
        with open(archive, "rb") as handle:
            magic = handle.read(6)
    except OSError as exc:
        raise InputError(where, f"cannot read: {exc.strerror}") from None
    if magic != b"7z\xbc\xaf\x27\x1c":
        raise InputError(where, "not a 7z archive (expected the 7z signature at the start of the file)")
    try:
        with py7zr.SevenZipFile(archive, mode="r") as zf:
            if zf.needs_password():
                raise InputError(where, "archive is encrypted; expected an unencrypted Comext bulk file")
            infos = [i for i in zf.list() if not i.is_directory]
            if len(infos) != 1:
                names = ", ".join(i.filename for i in infos[:5])
                raise InputError(where, f"archive holds {len(infos)} files ({names}); expected exactly one .dat file")
            info = infos[0]
            member = PurePosixPath(info.filename.replace("\\", "/"))
            if member.is_absolute() or ".." in member.parts or info.filename.startswith(("/", "\\")):
                raise InputError(where, f"member path {info.filename!r} leaves the extraction folder; refused")
            if info.uncompressed is not None and info.uncompressed > max_bytes:
                raise InputError(
                    where, f"member expands to {info.uncompressed:,} bytes, over the {max_bytes:,}-byte limit"
                )
            dest_dir.mkdir(parents=True, exist_ok=True)
            target = dest_dir / member.name
            zf.reset()
            written = _extract_bounded(zf, info.filename, target, max_bytes, where)
            if info.uncompressed is not None and written != info.uncompressed:
                target.unlink(missing_ok=True)
                raise InputError(where, f"archive is truncated: got {written:,} of {info.uncompressed:,} bytes")
            return target
    except InputError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise InputError(where, f"archive is damaged or truncated (OSError: {str(exc)[:80]})") from None
        if target is not None:
            target.unlink(missing_ok=True)
        hint = "; free space there and run again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise TradewatchError(f"{where}: cannot extract into {dest_dir}: {exc.strerror}{hint}") from None
    except PasswordRequired:
        raise InputError(where, "archive is encrypted; expected an unencrypted Comext bulk file") from None
    except (Bad7zFile, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        raise InputError(where, f"archive is damaged or truncated ({type(exc).__name__}: {str(exc)[:80]})") from None
    except Exception as exc:  # py7zr raises assorted errors on corrupt streams
        raise InputError(where, f"archive cannot be read ({type(exc).__name__}: {str(exc)[:80]})") from None


def _extract_bounded(zf, name: str, target: Path, max_bytes: int, where: str) -> int:
    """Stream one member to `target`, stopping once more than max_bytes have come out."""
    import py7zr.io

    class _Limited(py7zr.io.Py7zIO):
        def __init__(self, path: Path):
            self.handle = open(path, "wb")
            self.count = 0

        def write(self, data) -> int:
            self.count += len(data)
            if self.count > max_bytes:
                raise InputError(where, f"member expands past the {max_bytes:,}-byte limit; refused")
            return self.handle.write(data)

        def read(self, size=None) -> bytes:
            return b""

        def seek(self, offset, whence=0) -> int:
            return self.handle.seek(offset, whence)

        def flush(self) -> None:
            self.handle.flush()

        def size(self) -> int:
            return self.count

        def seekable(self) -> bool:
            return True

        def close(self) -> None:
            self.handle.close()

    class _Factory(py7zr.io.WriterFactory):
        def __init__(self):
            self.writer: _Limited | None = None

        def create(self, filename: str) -> py7zr.io.Py7zIO:
            self.writer = _Limited(target)
            return self.writer

    factory = _Factory()
    try:
        zf.extract(targets=[name], factory=factory)
    except InputError:
        if factory.writer:
            factory.writer.handle.close()
        target.unlink(missing_ok=True)
        raise
    finally:
        if factory.writer and not factory.writer.handle.closed:
            factory.writer.handle.close()
    if factory.writer is None:
        raise InputError(where, "archive member could not be extracted")
    return target.stat().st_size


ZIP_MAGIC = b"PK\x03\x04"


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(magic)) == magic
    except OSError:
        return False


def is_zip(path: Path) -> bool:
    """True when the file starts with the zip signature."""
    return _starts_with(path, ZIP_MAGIC)


def zip_member_names(archive: Path) -> list[str]:
    """Names of the files (not folders) in the zip `archive`; InputError when its directory cannot be read."""
    try:
        with zipfile.ZipFile(archive) as zf:
            return [info.filename for info in zf.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise InputError(str(archive), f"zip archive is damaged or truncated ({str(exc)[:80]})") from None


def extract_zip_member(archive: Path, name: str, dest_dir: Path, *, max_bytes: int | None = None) -> tuple[Path, str]:
    """Extract member `name` of the zip `archive` into `dest_dir` under its base name; returns (path, hex
    SHA-256 of its content). Refuses an encrypted member, a member path that is absolute or climbs out with
    '..', a member that expands past `max_bytes` (default max_expanded_bytes()), and a damaged archive (bad
    CRC, cut short). A full disk is a TradewatchError, not the archive's fault. Nothing is left behind on error."""
    max_bytes = max_expanded_bytes() if max_bytes is None else max_bytes
    where = f"{archive}:{name}"
    member = PurePosixPath(name.replace("\\", "/"))
    if member.is_absolute() or ".." in member.parts or name.startswith(("/", "\\")):
        raise InputError(where, "member path leaves the extraction folder; refused")
    target = dest_dir / member.name
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(archive) as zf:
            info = zf.getinfo(name)
            if info.flag_bits & 0x1:
                raise InputError(where, "member is encrypted; expected an unencrypted BACI release")
            if info.file_size > max_bytes:
                raise InputError(where, f"member expands to {info.file_size:,} bytes, over the {max_bytes:,}-byte limit")
            dest_dir.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as source, open(target, "wb") as out:
                _copy_capped(source, out, digest, max_bytes, where)
        return target, digest.hexdigest()
    except InputError:
        target.unlink(missing_ok=True)
        raise
    except OSError as exc:
        target.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            hint = "; free space there and run again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            raise TradewatchError(f"{where}: cannot extract into {dest_dir}: {exc.strerror}{hint}") from None
        raise InputError(where, f"archive is damaged or truncated ({str(exc)[:80]})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, NotImplementedError) as exc:
        target.unlink(missing_ok=True)
        raise InputError(where, f"archive is damaged or truncated ({type(exc).__name__}: {str(exc)[:80]})") from None


def _copy_capped(source, out, digest, max_bytes: int, where: str) -> None:
    """Copy `source` to `out` in 1 MB blocks, hashing them; InputError past `max_bytes` (a zip bomb whose
    header understates the size)."""
    written = 0
    while block := source.read(1 << 20):
        written += len(block)
        if written > max_bytes:
            raise InputError(where, f"member expands past the {max_bytes:,}-byte limit; refused")
        digest.update(block)
        out.write(block)


GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: Path) -> bool:
    """True when the file starts with the gzip signature (Comtrade's bulk files are .txt.gz)."""
    return _starts_with(path, GZIP_MAGIC)


def gunzip_head(path: Path, size: int = 1 << 16) -> bytes:
    """The first `size` bytes of a gzip file's content; InputError when it cannot be decompressed."""
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read(size)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(str(path), f"gzip file is damaged or truncated ({str(exc)[:80]})") from None


def gunzip_to(path: Path, dest_dir: Path, *, max_bytes: int | None = None) -> Path:
    """Decompress the gzip file `path` into `dest_dir` (named after it without .gz) and return the new path.
    Refuses content past `max_bytes` (default max_expanded_bytes()) and a damaged or truncated file; a full
    disk is a TradewatchError. Nothing is left behind on error."""
    max_bytes = max_expanded_bytes() if max_bytes is None else max_bytes
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name + ".out"
    target = dest_dir / name
    written = 0
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "rb") as source, open(target, "wb") as out:
            while block := source.read(1 << 20):
                written += len(block)
                if written > max_bytes:
                    raise InputError(str(path), f"expands past the {max_bytes:,}-byte limit; refused")
                out.write(block)
        return target
    except InputError:
        target.unlink(missing_ok=True)
        raise
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        target.unlink(missing_ok=True)
        raise InputError(str(path), f"gzip file is damaged or truncated ({str(exc)[:80]})") from None
    except OSError as exc:
        target.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            hint = "; free space there and run again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            raise TradewatchError(f"{path}: cannot decompress into {dest_dir}: {exc.strerror}{hint}") from None
        raise InputError(str(path), f"gzip file is damaged or truncated ({str(exc)[:80]})") from None


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
