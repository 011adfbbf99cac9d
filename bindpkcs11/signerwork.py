"""Where the online signer keeps decrypted ZSK private keys during a round, and how they go away.

Not /tmp: a signer killed there (SIGKILL, or SIGTERM before this existed) left `.private` files
any later reader of /tmp could look for. Each round works in `<state>/signer-work/<pid>-<start>-<random>`
(0700 inside a 0700 directory): the pid and the process's start time (from /proc) name the owner,
so a later signer can tell a dead owner's directory from a live one's, even after pid reuse,
and removes it before its first round. The round's own directory is removed in a finally block;
the CLI turns SIGTERM into an exception so that block runs on `systemctl stop` too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from bindpkcs11.errors import UsageError
from bindpkcs11.fileio import ensure_private_dir

WORK_DIR_NAME = "signer-work"


def work_root(state_root: Path) -> Path:
    """`<state>/signer-work`, created 0700."""
    path = Path(state_root) / WORK_DIR_NAME
    try:
        return ensure_private_dir(path)
    except OSError as error:
        raise UsageError(f"cannot create the signer's work directory {path}: {error.strerror} "
                         "(pass a writable --state-dir)") from None


@contextlib.contextmanager
def round_dir(root: Path) -> Iterator[Path]:
    """A fresh 0700 directory for one round, removed with everything in it whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=f"{_owner_tag(os.getpid())}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_stale(root: Path) -> list[Path]:
    """Remove the work directories of signers that are gone; returns what was removed."""
    removed = []
    for entry in sorted(Path(root).iterdir()):
        if entry.is_dir() and not entry.is_symlink() and not _owner_alive(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _owner_tag(pid: int) -> str:
    return f"{pid}-{_start_time(pid) or 0}"


def _owner_alive(name: str) -> bool:
    """True if the process that made `name` (`<pid>-<start>-...`) still runs."""
    pid_text, _, rest = name.partition("-")
    start_text = rest.partition("-")[0]
    if not pid_text.isdigit() or not start_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = _start_time(pid)
    return started is None or start_text == "0" or int(start_text) == started


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), if known."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None
