"""Writing files so that nothing is ever half-written or readable by the wrong user."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temporary file in the same directory and rename it.

    The temporary file is created with `mode` already applied (so a secret is never briefly
    world-readable), fsynced, then renamed over the target: readers see the old or the new file,
    never a mix, and a crash leaves at most a stray `.tmp` file.
    """
    if isinstance(data, str):
        data = data.encode()
    path = Path(path)
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


def read_secret_file(path: Path, what: str, error: type[Exception]) -> str:
    """A PIN or passphrase from a file: one line, trailing newline dropped, never empty.

    Size-limited so that pointing the option at the wrong file (a key, a log) fails clearly
    instead of taking megabytes as a secret. Failures raise `error` with one line.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_SECRET_FILE_BYTES:
            raise error(f"{what} file {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
        text = path.read_text()
    except OSError as failure:
        raise error(f"cannot read {what} file {path}: {failure.strerror}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise error(f"{what} file {path} is empty")
    return secret


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) as 0700: it may hold PINs and token files.

    An existing directory only loses access for "other": group traverse rights that setup-inline
    granted to named's group (0710) must survive later commands, or a running named loses its token.
    """
    path = Path(path)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    else:
        mode = path.stat().st_mode & 0o777
        if mode & 0o007:
            os.chmod(path, mode & 0o770)
    return path
