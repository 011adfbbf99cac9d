"""The append-only audit log every ceremony writes (ksk presign, backup, key import).

One timestamped line per event, fsynced as written: every file read and written with its SHA-256,
the operator's typed confirmation, and an ABORT line naming the failure if the ceremony stops.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

from bindpkcs11.errors import KeyFileError, UsageError
from bindpkcs11.fileio import read_limited

MAX_KEY_FILE_BYTES = 64 << 10


class CeremonyLog:
    """Append-only ceremony log: one timestamped line per event, flushed to disk as written."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        not_a_file = UsageError(f"the ceremony log {self.path} is not a regular file: give --log "
                                "the path of a file")
        if self.path.exists() and not self.path.is_file():
            raise not_a_file
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NONBLOCK: a FIFO that appeared since the check fails instead of blocking.
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
                               | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise UsageError(f"cannot write the ceremony log {self.path}: {error.strerror}") from None
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            raise not_a_file

    def __enter__(self) -> "CeremonyLog":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if value is not None:
            self.event("ABORT", f"{type(value).__name__}: {value}")
        os.close(self._fd)

    def event(self, kind: str, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.write(self._fd, f"{stamp} {kind} {text}\n".encode())
        os.fsync(self._fd)

    def read(self, path: Path, limit: int = MAX_KEY_FILE_BYTES, what: str = "key file",
             error: type[Exception] = KeyFileError) -> bytes:
        """Read an input file (size-limited, regular files only) and log its SHA-256."""
        data = read_limited(Path(path), limit, what, error)[0]
        self.event("READ", f"{Path(path).resolve()} bytes={len(data)} "
                           f"sha256={hashlib.sha256(data).hexdigest()}")
        return data

    def wrote(self, path: Path, data: bytes) -> None:
        self.event("WROTE", f"{Path(path).resolve()} bytes={len(data)} "
                            f"sha256={hashlib.sha256(data).hexdigest()}")
