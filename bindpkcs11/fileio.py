"""Writing files so that nothing is ever half-written or readable by the wrong user."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

from bindpkcs11.errors import InputFileError


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temporary file in the same directory and rename it.

    The temporary file is created with `mode` already applied (so a secret is never briefly
    world-readable), fsynced, then renamed over the target: readers see the old or the new file,
    never a mix, and a crash leaves at most a stray `.tmp` file.
    """
    if isinstance(data, str):
        data = data.encode()
    path = Path(path)
    try:
        _write_replace(path, data, mode)
    except OSError as error:  # name the file the caller asked for, not the temporary one
        raise type(error)(error.errno, error.strerror, str(path)) from None


def _write_replace(path: Path, data: bytes, mode: int) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


MAX_SECRET_FILE_BYTES = 4096
_READ_CHUNK = 1 << 20
_FILE_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def read_limited(path: Path, limit: int, what: str,
                 error: type[Exception] = InputFileError) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file `path` (at most `limit`) and its stat.

    Inputs an operator names (zone files, PIN files, key files, bundles) may be anything: a FIFO
    would block forever and /dev/zero or a /proc file would exhaust memory. So the file is opened
    without blocking, refused unless it is a regular file, and read up to `limit` + 1 bytes
    without trusting `st_size` (which is 0 for /proc files). Failures raise `error` with one line
    naming `what` and the path the operator gave.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as failure:
        raise error(f"cannot read {what} {path}: {failure.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise error(f"{what} {path} is {kind}: give a regular file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(_READ_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise error(f"{what} {path} is larger than {limit} bytes: is it the right file?")
        return b"".join(chunks), info
    except OSError as failure:
        raise error(f"cannot read {what} {path}: {failure.strerror}") from None
    finally:
        os.close(fd)


def read_text_limited(path: Path, limit: int, what: str,
                      error: type[Exception] = InputFileError) -> str:
    """`read_limited` decoded as UTF-8; non-UTF-8 input is refused with one line."""
    data, _ = read_limited(path, limit, what, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as failure:
        raise error(f"{what} {path} is not UTF-8 text (byte {failure.start}): "
                    "convert it to UTF-8") from None


def read_secret_file(path: Path, what: str, error: type[Exception]) -> str:
    """A PIN or passphrase from a file: exactly one line, its newline dropped, never empty.

    Size-limited so that pointing the option at the wrong file (a key, a log) fails clearly
    instead of taking megabytes as a secret. A second line or whitespace around the secret is
    refused rather than sent to the token: a PIN with a stray space would burn one of the few
    login attempts a smart card allows. A file readable by group or others gets a warning.
    """
    data, info = read_limited(Path(path), MAX_SECRET_FILE_BYTES, f"{what} file", error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} file {path} is not UTF-8 text") from None
    secret = text[:-1] if text.endswith("\n") else text
    secret = secret[:-1] if secret.endswith("\r") else secret
    if not secret:
        raise error(f"{what} file {path} is empty")
    if "\n" in secret or "\r" in secret:
        raise error(f"{what} file {path} has more than one line: put only the {what} in it")
    if secret != secret.strip():
        raise error(f"{what} file {path} has whitespace before or after the {what}: remove it "
                    "(nothing was sent to the token)")
    if info.st_mode & 0o077:
        logging.getLogger(__name__).warning(
            "warning: %s file %s is readable by group or others (mode %04o): chmod 600 it",
            what, path, info.st_mode & 0o777)
    return secret


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) as 0700: it may hold PINs and token files.

    An existing directory only loses access for "other": group traverse rights that setup-inline
    granted to named's group (0710) must survive later commands, or a running named loses its token.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputFileError(f"{path} exists but is not a directory: remove it or choose another path")
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    else:
        mode = path.stat().st_mode & 0o777
        if mode & 0o007:
            os.chmod(path, mode & 0o770)
    return path
