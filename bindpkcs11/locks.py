"""Advisory locks, so that two bindpkcs11 processes never change the same thing at once.

Two `setup-inline` runs for one zone would start two named and print two DS records; two `token
init` runs could both create a token or write each other's PIN files. Each such change holds a
lock file under `<state>/locks/` (flock: released by the kernel when the process dies, so a
killed run never leaves a stale lock). A second process waits a little, then fails with one line
naming the holder's pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

from bindpkcs11.errors import BindPkcs11Error
from bindpkcs11.fileio import ensure_private_dir
from bindpkcs11.pins import label_file_stem
from bindpkcs11.state import StateDir

DEFAULT_WAIT = 10.0
_POLL = 0.1


class LockBusy(BindPkcs11Error):
    """Another bindpkcs11 process is changing the same thing."""

    exit_code = 75  # EX_TEMPFAIL: try again later


def lock_path(state: StateDir, name: str) -> Path:
    """`<state>/locks/<name>.lock`; `name` must already be file-name safe."""
    return ensure_private_dir(state.root / "locks") / f"{name}.lock"


@contextlib.contextmanager
def held(path: Path, what: str, wait: float = DEFAULT_WAIT) -> Iterator[None]:
    """Hold the exclusive lock `path` for the block; LockBusy after `wait` seconds.

    The holder writes its pid into the file so that the refusal can name it. The descriptor is
    close-on-exec: a named started inside the block must not keep the lock after we exit.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(f"{what} is busy: bindpkcs11 process {_holder(fd)} is changing it "
                                   f"(lock {path}); wait until it has finished, then retry") from None
                time.sleep(_POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return "(unknown pid)"
    return text if text.isdigit() else "(unknown pid)"


# Key generation on a smart card takes up to minutes: a second keygen for the same token waits.
KEY_CREATION_WAIT = 900.0


def token_objects(state: StateDir, token_label: str,
                  wait: float = DEFAULT_WAIT) -> contextlib.AbstractContextManager[None]:
    """Held while keys are made on one token and their key files written, and while `token
    delete` / `token erase` check which keys are in use and destroy.

    Without it the guard races key creation: an erase could check "no active key file uses this
    token", a keygen then create a key and its key file, and the erase wipe that new key, leaving
    a key file (perhaps an instance's only KSK) that points at nothing.
    """
    return held(lock_path(state, f"token-objects-{label_file_stem(token_label)}"),
                f"the keys of token '{token_label}'", wait)
