"""`bindpkcs11 tpm2 simulator`: swtpm behind a private-bus tpm2-abrmd, all under the state dir.

For trying the tpm2 profile without a TPM, and for tests. Three processes, each in its own
session so they outlive the command: swtpm on two free loopback ports, a dbus-daemon whose socket
is `<state>/tpm2/bus` (its own config: only this user, and `bind` when root, may connect), and
tpm2-abrmd on that bus (the resource manager tpm2-pkcs11 needs; without it the third loaded key
fails). Their pids go to `<state>/tpm2/simulator.json`, which the tpm2 profile reads to find the
TPM. The TPM's state (`sim/tpmstate`) survives a stop, so tokens and keys survive a restart.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
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
from bindpkcs11.token.profiles.tpm2 import (
    SIMULATOR_TCTI,
    SimulatorRecord,
    process_runs,
    read_record,
    record_path,
    record_text,
    tpm2_dir,
)

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_POLL = 0.05
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes
ABRMD_NAME = "com.intel.tss2.Tabrmd"
_TOOLS = {"swtpm": "swtpm", "dbus-daemon": "dbus", "dbus-send": "dbus", "tpm2-abrmd": "tpm2-abrmd"}


@dataclass(frozen=True)
class SimulatorStatus:
    """What `status` reports: each process and whether it runs, and how to reach the TPM."""

    running: bool
    processes: dict[str, dict]
    port: int | None
    bus: str | None
    tcti: str | None
    state: str


def start(state: StateDir) -> tuple[SimulatorStatus, bool]:
    """Start the simulator (or find it running); returns its status and whether it was started."""
    with locks.held(locks.lock_path(state, "tpm2-simulator"), "the TPM simulator"):
        record = read_record(state)
        if record is not None and not record.dead():
            return status(state), False
        if record is not None:
            _stop_record(record)
            record_path(state).unlink(missing_ok=True)
        tools = {name: _tool(name) for name in _TOOLS}
        write_atomic(record_path(state), record_text(_launch(state, tools)), mode=0o600)
        return status(state), True


def stop(state: StateDir) -> list[str]:
    """Stop every process the simulator record names; returns the names that were running."""
    with locks.held(locks.lock_path(state, "tpm2-simulator"), "the TPM simulator"):
        record = read_record(state)
        if record is None:
            return []
        stopped = _stop_record(record)
        record_path(state).unlink(missing_ok=True)
        Path(record.bus).unlink(missing_ok=True)
        return stopped


def status(state: StateDir) -> SimulatorStatus:
    record = read_record(state)
    sim = _sim_dir(state)
    if record is None:
        return SimulatorStatus(False, {}, None, None, None, str(sim / "tpmstate"))
    processes = {name: {"pid": pid, "running": process_runs(pid, name)}
                 for name, pid in record.processes().items()}
    running = all(entry["running"] for entry in processes.values())
    return SimulatorStatus(running, processes, record.port, f"unix:path={record.bus}",
                           SIMULATOR_TCTI, str(sim / "tpmstate"))


def _launch(state: StateDir, tools: dict[str, str]) -> SimulatorRecord:
    """swtpm, then the bus, then abrmd; each waited for. A failure stops what was started."""
    ensure_private_dir(tpm2_dir(state))
    sim = ensure_private_dir(_sim_dir(state))
    tpmstate = ensure_private_dir(sim / "tpmstate")
    bus = tpm2_dir(state) / "bus"
    if len(str(bus)) > _SOCKET_PATH_MAX:
        raise BindPkcs11Error(f"the state dir path is too long for the simulator's bus socket ({bus}): "
                              "use a shorter --state-dir")
    bus.unlink(missing_ok=True)
    port, ctrl_port = _free_port_pair()
    started: list[tuple[str, subprocess.Popen]] = []
    try:
        swtpm = _spawn(sim, "swtpm", [
            tools["swtpm"], "socket", "--tpm2", "--tpmstate", f"dir={tpmstate}",
            "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
            "--ctrl", f"type=tcp,port={ctrl_port},bindaddr=127.0.0.1",
            "--flags", "not-need-init,startup-clear"])
        started.append(("swtpm", swtpm))
        _wait(lambda: _accepts(port), swtpm, "swtpm", sim)
        config = sim / "dbus.conf"
        write_atomic(config, _bus_config(bus), mode=0o600)
        dbus = _spawn(sim, "dbus-daemon", [tools["dbus-daemon"], f"--config-file={config}",
                                           "--nofork", "--nopidfile"])
        started.append(("dbus-daemon", dbus))
        _wait(bus.exists, dbus, "dbus-daemon", sim)
        address = f"unix:path={bus}"
        abrmd_args = [tools["tpm2-abrmd"], "--session", "--flush-all",
                      f"--tcti=swtpm:host=127.0.0.1,port={port}"]
        if os.geteuid() == 0:
            abrmd_args.insert(2, "--allow-root")
        abrmd = _spawn(sim, "tpm2-abrmd", abrmd_args, {"DBUS_SESSION_BUS_ADDRESS": address})
        started.append(("tpm2-abrmd", abrmd))
        _wait(lambda: _has_owner(tools["dbus-send"], address), abrmd, "tpm2-abrmd", sim)
    except BaseException:
        for _, process in reversed(started):
            _terminate(process.pid, "")
        bus.unlink(missing_ok=True)
        raise
    return SimulatorRecord(swtpm_pid=swtpm.pid, dbus_pid=dbus.pid, abrmd_pid=abrmd.pid,
                           port=port, ctrl_port=ctrl_port, bus=str(bus))


def _sim_dir(state: StateDir) -> Path:
    return tpm2_dir(state) / "sim"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise ModuleMissing(f"{name} not found: install the {_TOOLS[name]} package (scripts/setup.sh)")
    return path


def _spawn(sim: Path, name: str, args: list[str],
           extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `args` in its own session, output to `<sim>/<name>.log`, no terminal, no PINs."""
    env = child_env() | (extra_env or {})
    with open(sim / f"{name}.log", "ab") as log:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                cwd=sim, start_new_session=True)


def _wait(ready, process: subprocess.Popen, name: str, sim: Path) -> None:
    """Poll `ready()` until it holds; fail with the log's tail if `process` exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ToolFailed(f"{name} exited at start-up (exit {process.returncode}): "
                             f"{_log_tail(sim, name)}")
        if ready():
            return
        time.sleep(_POLL)
    raise ToolFailed(f"{name} did not come up within {START_TIMEOUT:.0f} s: {_log_tail(sim, name)}")


def _log_tail(sim: Path, name: str) -> str:
    try:
        return tail((sim / f"{name}.log").read_text(errors="replace"), 3)
    except OSError:
        return "no log"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _has_owner(dbus_send: str, address: str) -> bool:
    """abrmd has taken its name on the bus (it is ready for clients)."""
    result = subprocess.run(
        [dbus_send, f"--bus={address}", "--print-reply", "--dest=org.freedesktop.DBus",
         "/org/freedesktop/DBus", "org.freedesktop.DBus.NameHasOwner", f"string:{ABRMD_NAME}"],
        capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL, env=child_env())
    return result.returncode == 0 and "boolean true" in result.stdout


def _free_port_pair() -> tuple[int, int]:
    """Two adjacent free loopback TCP ports P, P+1: the swtpm TCTI finds the control channel at
    the server port + 1. Both are probed with a real bind(); swtpm binds them right after."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port, port + 1
    raise BindPkcs11Error("found no two adjacent free loopback ports for swtpm")


def _bus_config(bus: Path) -> str:
    """A private session bus: our user may connect, and `bind` too when we are root (named runs
    as `bind` and reaches abrmd through this bus). dbus-daemon lets only its own user in unless a
    policy allows others."""
    users = [pwd.getpwuid(os.geteuid()).pw_name]
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(DEFAULT_USER)
            users.append(DEFAULT_USER)
        except KeyError:
            pass
    allow_users = "\n".join(f'    <allow user="{user}"/>' for user in users)
    return f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- written by bindpkcs11: the private bus of the TPM simulator's tpm2-abrmd -->
<busconfig>
  <type>session</type>
  <listen>unix:path={bus}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
{allow_users}
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def _stop_record(record: SimulatorRecord) -> list[str]:
    """abrmd first (it talks to both others), then the bus, then swtpm."""
    stopped = []
    for name in ("tpm2-abrmd", "dbus-daemon", "swtpm"):
        if _terminate(record.processes()[name], name):
            stopped.append(name)
    return stopped


def _terminate(pid: int, name: str) -> bool:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; only if `pid` still is `name` (pids get reused).
    An empty `name` means a process this very command started (known to be ours)."""
    if name and not process_runs(pid, name):
        return False
    return processes.terminate(pid, STOP_TIMEOUT)


