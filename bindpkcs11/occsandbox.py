"""`bindpkcs11 opencryptoki sandbox`: a private pkcsslotd and soft token under the state dir.

opencryptoki 3.8 keeps its configuration, token store, locks, socket and shared memory at fixed
system paths and allows one pkcsslotd per machine. The sandbox gives a state dir its own: one
process started by `unshare -m -i --propagation private` bind-mounts `<state>/opencryptoki/etc` on
/etc/opencryptoki and `<state>/opencryptoki/lib` on /var/lib/opencryptoki, shows an /etc/group
in which named's user is in group pkcs11, puts fresh tmpfs on /run and /dev/shm (socket, pid
file, lock dirs, the token's shared memory), starts pkcsslotd (it daemonises itself: 3.23 forks
even with -f) and becomes `sleep infinity`, the holder that keeps the namespace and through whose
/proc/PID/root pkcsslotd's pid file is read. Nothing outside that namespace sees any of it: the host's opencryptoki (and its
pkcsslotd, if any) is untouched. The opencryptoki profile joins the namespace for every command of
this state dir (token/profiles/opencryptoki.py). Needs root (a mount namespace).

For trying the profile without touching the machine's opencryptoki, and for tests; a real system
uses the system's pkcsslotd. The token store (`<state>/opencryptoki/lib`) survives a stop.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bindpkcs11 import processes
from bindpkcs11 import locks
from bindpkcs11.bind.privileges import DEFAULT_USER
from bindpkcs11.errors import BindPkcs11Error, ModuleMissing, ToolFailed
from bindpkcs11.fileio import ensure_private_dir, write_atomic
from bindpkcs11.run import child_env, tail
from bindpkcs11.state import StateDir
from bindpkcs11.token.profiles.opencryptoki import (
    SandboxRecord,
    occ_dir,
    read_record,
    record_path,
    record_text,
)

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_POLL = 0.05
PKCSSLOTD = "/usr/sbin/pkcsslotd"
SYSTEM_DIRS = (Path("/etc/opencryptoki"), Path("/var/lib/opencryptoki"))
SOFT_TOKEN_DIR = "swtok"
_CONF = """# written by bindpkcs11: the sandbox's one slot, opencryptoki's soft token
version opencryptoki-3.1

slot 0
{
stdll = libpkcs11_sw.so
tokname = swtok
}
"""
# Runs inside the new namespace as root; $1 is <state>/opencryptoki. Each mount must succeed.
_INNER = """set -e
mount --bind "$1/etc" /etc/opencryptoki
mount --bind "$1/lib" /var/lib/opencryptoki
mount --bind "$1/group" /etc/group
mount -t tmpfs -o mode=0755 bindpkcs11-occ /run
mount -t tmpfs -o mode=1777 bindpkcs11-occ /dev/shm
mkdir -p /run/lock/opencryptoki/swtok /run/opencryptoki
chgrp -R pkcs11 /run/lock/opencryptoki /run/opencryptoki
chmod -R 0770 /run/lock/opencryptoki /run/opencryptoki
if id pkcsslotd >/dev/null 2>&1; then chown pkcsslotd /run/opencryptoki; fi
"$2"
exec sleep infinity
"""


class SandboxInUse(BindPkcs11Error):
    """Processes still use the opencryptoki sandbox: stop them first."""


@dataclass(frozen=True)
class SandboxStatus:
    """What `status` reports."""

    running: bool
    pid: int | None
    holder: int | None
    store: str


def start(state: StateDir) -> tuple[SandboxStatus, bool]:
    """Start the sandbox (or find it running); returns its status and whether it was started."""
    with locks.held(locks.lock_path(state, "opencryptoki-sandbox"), "the opencryptoki sandbox"):
        record = read_record(state)
        if record is not None and record.slot_daemon() is not None:
            return status(state), False
        if record is not None:
            _stop_record(record)  # a holder whose pkcsslotd died: nothing else to keep
        record_path(state).unlink(missing_ok=True)
        _require_tools()
        write_atomic(record_path(state), record_text(_launch(state)), mode=0o600)
        return status(state), True


def stop(state: StateDir) -> bool:
    """Stop the sandbox's pkcsslotd and holder (the namespace goes with them); True if
    pkcsslotd was running."""
    with locks.held(locks.lock_path(state, "opencryptoki-sandbox"), "the opencryptoki sandbox"):
        record = read_record(state)
        if record is None:
            return False
        running = record.slot_daemon() is not None
        if record.holds():
            refuse_while_used(record)
        _stop_record(record)
        record_path(state).unlink(missing_ok=True)
        return running


def _stop_record(record: SandboxRecord) -> None:
    """pkcsslotd first (it removes its socket and shared memory), then the holder."""
    slotd = record.slot_daemon()
    if slotd is not None:
        processes.terminate(slotd, STOP_TIMEOUT)
    if record.holds():
        processes.terminate(record.holder, STOP_TIMEOUT)


def refuse_while_used(record: SandboxRecord) -> None:
    """SandboxInUse, naming them, while processes other than pkcsslotd run in the sandbox: a
    named in there would keep serving but could no longer sign (its token gone)."""
    ours = {record.holder, record.slot_daemon()}
    users = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        try:
            if os.readlink(entry / "ns" / "mnt") == record.mount_ns:
                users.append(f"{(entry / 'comm').read_text().strip()} (pid {entry.name})")
        except OSError:
            continue
    if users:
        raise SandboxInUse(f"{', '.join(sorted(users))} still run(s) in the opencryptoki sandbox "
                           "and would lose the token: stop them first (bindpkcs11 named stop ZONE)")


def status(state: StateDir) -> SandboxStatus:
    record = read_record(state)
    store = str(occ_dir(state) / "lib")
    if record is None:
        return SandboxStatus(False, None, None, store)
    slotd = record.slot_daemon()
    return SandboxStatus(slotd is not None, slotd, record.holder, store)


def _require_tools() -> None:
    if os.geteuid() != 0:
        raise BindPkcs11Error("the opencryptoki sandbox needs root (it is a private mount "
                              "namespace); without root use the system's pkcsslotd")
    missing = [str(path) for path in (Path(PKCSSLOTD), *SYSTEM_DIRS) if not path.exists()]
    if missing or not shutil.which("unshare"):
        raise ModuleMissing(f"{', '.join(missing) or 'unshare'} not found: install the "
                            "opencryptoki package (scripts/setup.sh)")
    try:
        grp.getgrnam("pkcs11")
    except KeyError:
        raise ModuleMissing("group 'pkcs11' does not exist: install the opencryptoki "
                            "package") from None


def _launch(state: StateDir) -> SandboxRecord:
    """The private directories, then unshare -> mounts -> pkcsslotd -> holder, waited for."""
    root = ensure_private_dir(occ_dir(state))
    group = grp.getgrnam("pkcs11").gr_gid
    etc = root / "etc"
    token = root / "lib" / SOFT_TOKEN_DIR
    for directory in (etc, root / "lib", token, token / "TOK_OBJ"):
        directory.mkdir(exist_ok=True)
        os.chown(directory, 0, group)
        directory.chmod(0o770)
    _copy_system_config(etc)
    write_atomic(etc / "opencryptoki.conf", _CONF, mode=0o640)
    os.chown(etc / "opencryptoki.conf", 0, group)
    write_atomic(root / "group", group_file_with_named(Path("/etc/group").read_text()), mode=0o644)
    log_path = root / "pkcsslotd.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            ["unshare", "-m", "-i", "--propagation", "private", "--", "/bin/sh", "-c", _INNER,
             "sh", str(root), PKCSSLOTD],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=child_env(), cwd=root,
            start_new_session=True)
    try:
        return _wait_ready(process, log_path)
    except BaseException:
        slotd = _slot_daemon_of(process.pid)
        if slotd is not None:
            processes.terminate(slotd, STOP_TIMEOUT)
        processes.terminate(process.pid, STOP_TIMEOUT)
        raise


def _copy_system_config(etc: Path) -> None:
    """The package's other configuration files, same modes and owners: later opencryptoki
    releases (Debian 13's 3.23) refuse to start without strength.conf and policy files."""
    for source in SYSTEM_DIRS[0].iterdir():
        if source.is_file() and source.name != "opencryptoki.conf":
            info = source.stat()
            target = etc / source.name
            shutil.copy2(source, target)
            os.chown(target, info.st_uid, info.st_gid)


def group_file_with_named(text: str) -> str:
    """/etc/group as the sandbox shows it: named's user (`bind`) in group pkcs11.

    libopencryptoki's C_Initialize refuses (CKR_FUNCTION_FAILED) a process that is neither root
    nor in group pkcs11, and named drops to `bind`. On a real system that is `adduser bind
    pkcs11`; the sandbox makes the same change in its own view only, leaving the host's alone.
    """
    lines = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) == 4 and fields[0] == "pkcs11":
            members = [name for name in fields[3].split(",") if name]
            if DEFAULT_USER not in members:
                members.append(DEFAULT_USER)
            fields[3] = ",".join(members)
        lines.append(":".join(fields))
    return "\n".join(lines) + "\n"


def _wait_ready(process: subprocess.Popen, log_path: Path) -> SandboxRecord:
    """Until the holder (the same pid, after the mounts) is `sleep` and pkcsslotd has written its
    pid file and socket in there."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ToolFailed(f"the opencryptoki sandbox exited at start-up (exit "
                             f"{process.returncode}): {_log_tail(log_path)}")
        try:
            record = SandboxRecord(holder=process.pid,
                                   mount_ns=os.readlink(f"/proc/{process.pid}/ns/mnt"))
        except OSError:
            record = None
        if record is not None and record.slot_daemon() is not None:
            return record
        time.sleep(_POLL)
    raise ToolFailed(f"pkcsslotd did not come up within {START_TIMEOUT:.0f} s: "
                     f"{_log_tail(log_path)}")


def _slot_daemon_of(holder: int) -> int | None:
    """pkcsslotd's pid inside `holder`'s namespace, when a start-up is abandoned half way."""
    try:
        record = SandboxRecord(holder=holder, mount_ns=os.readlink(f"/proc/{holder}/ns/mnt"))
    except OSError:
        return None
    return record.slot_daemon()


def _log_tail(path: Path) -> str:
    try:
        return tail(path.read_text(errors="replace"), 3) or "no output"
    except OSError:
        return "no log"
