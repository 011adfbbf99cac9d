"""`bindpkcs11 card simulator`: an emulated OpenPGP card in a private pcscd, all under the state dir.

For trying the opensc profile without a card, and for tests. Two processes:
- pcscd, in its own mount and network namespaces (`unshare -m -n`): /run is a fresh tmpfs there
  whose `pcscd` directory is `<state>/card/run` bind-mounted, so its socket appears on the host as
  `<state>/card/run/pcscd.comm` (clients find it through PCSCLITE_CSOCK_NAME, which the opensc
  profile sets, for named too); USB reader drivers and /dev/bus/usb are hidden by empty tmpfs
  mounts, so this pcscd never drives a real reader; its only reader is vsmartcard's vpcd
  (`<state>/card/sim/reader.conf.d`), listening on the namespace's own loopback.
- the card: bindpkcs11/cardbridge.py (jcecard's virtual OpenPGP card) entered into the same
  namespaces with nsenter; it connects to vpcd. Stopping it alone is pulling the card out.
Their pids go to `<state>/card/simulator.json`. The card's state (`sim/card`: keys, PINs, retry
counters) survives a stop.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import bindpkcs11
from bindpkcs11 import processes
from bindpkcs11 import locks
from bindpkcs11.errors import BindPkcs11Error, ModuleMissing, ToolFailed
from bindpkcs11.fileio import ensure_private_dir, read_text_limited, write_atomic
from bindpkcs11.run import child_env, tail
from bindpkcs11.state import StateDir
from bindpkcs11.token.profiles.opensc import simulator_socket

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_POLL = 0.05
_RECORD_LIMIT = 64 * 1024
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
PCSC_DRIVERS = Path("/usr/lib/pcsc/drivers")
BRIDGE_MODULE = "bindpkcs11.cardbridge"
READY_LINE = "card inserted"

# Runs as the namespace's first process, then becomes pcscd. $1 = run dir, $2 = reader.conf.d.
_NAMESPACE_SCRIPT = """set -e
ip link set lo up
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir /run/pcscd
mount --bind "$1" /run/pcscd
for bundle in {drivers}/*.bundle; do
  if [ -d "$bundle" ]; then mount -t tmpfs -o mode=0755 tmpfs "$bundle"; fi
done
if [ -d /dev/bus/usb ]; then mount -t tmpfs -o mode=0755 tmpfs /dev/bus/usb; fi
polkit=""
if pcscd --help 2>&1 | grep -q -e --disable-polkit; then polkit=--disable-polkit; fi
exec pcscd --foreground --config "$2" $polkit
"""
# pcsc-lite 2.x (Debian 13) asks polkit whether each client may connect and, with no polkit
# daemon to ask, rejects them all; this pcscd's socket sits in the state dir, reachable only by
# the users the state dir admits, so the script turns polkit off where pcscd has the option.


class SimulatorError(BindPkcs11Error):
    """The card simulator could not be started."""


@dataclass(frozen=True)
class CardSimRecord:
    """What `card simulator start` left running."""

    pcscd_pid: int
    bridge_pid: int
    socket: str


@dataclass(frozen=True)
class CardSimStatus:
    running: bool
    processes: dict[str, dict]
    socket: str | None
    card_state: str


def card_dir(state: StateDir) -> Path:
    return state.root / "card"


def record_path(state: StateDir) -> Path:
    return card_dir(state) / "simulator.json"


def read_record(state: StateDir) -> CardSimRecord | None:
    path = record_path(state)
    if not path.exists():
        return None
    try:
        return CardSimRecord(**json.loads(read_text_limited(path, _RECORD_LIMIT, "card simulator record")))
    except (ValueError, TypeError) as error:
        raise SimulatorError(f"{path} is damaged ({error}): run 'bindpkcs11 card simulator stop' "
                             "and start it again") from None


def start(state: StateDir) -> tuple[CardSimStatus, bool]:
    """Start pcscd and the card (or find them running); returns the status and whether started."""
    with locks.held(locks.lock_path(state, "card-simulator"), "the card simulator"):
        record = read_record(state)
        if record is not None and _running(record) == {"pcscd": True, "card": True}:
            return status(state), False
        if record is not None:
            _stop_record(record)
            record_path(state).unlink(missing_ok=True)
        _require_tools()
        record = _launch(state)
        write_atomic(record_path(state), json.dumps(asdict(record), indent=2) + "\n", mode=0o600)
        return status(state), True


def stop(state: StateDir) -> list[str]:
    """Stop the card, then pcscd; returns the names that were running."""
    with locks.held(locks.lock_path(state, "card-simulator"), "the card simulator"):
        record = read_record(state)
        if record is None:
            return []
        stopped = _stop_record(record)
        record_path(state).unlink(missing_ok=True)
        _clean_run_dir(state)
        return stopped


def status(state: StateDir) -> CardSimStatus:
    record = read_record(state)
    card_state = str(_sim_dir(state) / "card")
    if record is None:
        return CardSimStatus(False, {}, None, card_state)
    alive = _running(record)
    processes = {"pcscd": {"pid": record.pcscd_pid, "running": alive["pcscd"]},
                 "card": {"pid": record.bridge_pid, "running": alive["card"]}}
    return CardSimStatus(all(alive.values()), processes, record.socket, card_state)


def _launch(state: StateDir) -> CardSimRecord:
    ensure_private_dir(card_dir(state))
    sim = ensure_private_dir(_sim_dir(state))
    storage = ensure_private_dir(sim / "card")
    run_dir = simulator_socket(state).parent
    run_dir.mkdir(mode=0o711, exist_ok=True)
    _clean_run_dir(state)
    readers = ensure_private_dir(sim / "reader.conf.d")
    write_atomic(readers / "vpcd", _reader_conf(), mode=0o644)
    started: list[int] = []
    try:
        pcscd = _spawn(sim, "pcscd", _unshare() + [
            "sh", "-c", _NAMESPACE_SCRIPT.format(drivers=PCSC_DRIVERS), "card-namespace",
            str(run_dir), str(readers)])
        started.append(pcscd.pid)
        _wait(simulator_socket(state).exists, pcscd, "pcscd", sim)
        bridge = _spawn(sim, "card", _nsenter(pcscd.pid) + [
            sys.executable, "-m", BRIDGE_MODULE, "--storage", str(storage)],
            {"PYTHONPATH": str(Path(bindpkcs11.__file__).resolve().parent.parent)})
        started.append(bridge.pid)
        _wait(lambda: READY_LINE in _log(sim, "card"), bridge, "card", sim)
        _wait(lambda: _card_present(simulator_socket(state)), bridge, "card", sim)
    except BaseException:
        for pid in reversed(started):
            processes.terminate(pid, STOP_TIMEOUT)
        raise
    return CardSimRecord(pcscd_pid=pcscd.pid, bridge_pid=bridge.pid,
                         socket=str(simulator_socket(state)))


def _card_present(socket: Path) -> bool:
    """pcscd reports the card in a reader: the bridge's "inserted" comes a moment before pcscd
    polls the reader, and a command run in that moment would find no card."""
    result = subprocess.run(["opensc-tool", "--list-readers"], capture_output=True, text=True,
                            env=child_env() | {"PCSCLITE_CSOCK_NAME": str(socket)}, timeout=30)
    return any(line.split()[1:2] == ["Yes"] for line in result.stdout.splitlines()[2:])


def _unshare() -> list[str]:
    base = ["unshare", "--mount", "--net", "--propagation", "private"]
    return base if os.geteuid() == 0 else base + ["--map-root-user"]


def _nsenter(pid: int) -> list[str]:
    base = ["nsenter", f"--target={pid}", "--net", "--mount"]
    return base if os.geteuid() == 0 else base + ["--user", "--preserve-credentials"]


def _reader_conf() -> str:
    return ("# written by bindpkcs11: the card simulator's only reader (vsmartcard vpcd)\n"
            'FRIENDLYNAME "bindpkcs11 emulated card"\n'
            "DEVICENAME   /dev/null:0x8C7B\n"
            f"LIBPATH      {VPCD_DRIVER}\n"
            "CHANNELID    0x8C7B\n")


def _require_tools() -> None:
    for tool, package in (("pcscd", "pcscd"), ("unshare", "util-linux"), ("nsenter", "util-linux"),
                          ("ip", "iproute2"), ("opensc-tool", "opensc")):
        if not shutil.which(tool):
            raise ModuleMissing(f"{tool} not found: install the {package} package (scripts/setup.sh)")
    if not VPCD_DRIVER.exists():
        raise ModuleMissing(f"{VPCD_DRIVER} not found: install the vsmartcard-vpcd package "
                            "(scripts/setup.sh)")
    probe = subprocess.run([sys.executable, "-c", "import jcecard"], capture_output=True,
                           env=child_env(), timeout=60)
    if probe.returncode != 0:
        raise ModuleMissing("the virtual card (PyPI jcecard, a test extra) is not installed: "
                            "pip install jcecard (or scripts/setup.sh)")


def _sim_dir(state: StateDir) -> Path:
    return card_dir(state) / "sim"


def _clean_run_dir(state: StateDir) -> None:
    for name in ("pcscd.comm", "pcscd.pid"):
        (simulator_socket(state).parent / name).unlink(missing_ok=True)


def _spawn(sim: Path, name: str, args: list[str],
           extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = child_env() | (extra_env or {})
    # A fresh log per start: readiness is read from it, and the previous run's "ready" line must
    # not make a restart look ready before the new card is in the reader.
    with open(sim / f"{name}.log", "wb") as log:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                cwd=sim, start_new_session=True)


def _log(sim: Path, name: str) -> str:
    try:
        return (sim / f"{name}.log").read_text(errors="replace")
    except OSError:
        return ""


def _wait(ready, process: subprocess.Popen, name: str, sim: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ToolFailed(f"{name} exited at start-up (exit {process.returncode}): "
                             f"{tail(_log(sim, name), 3) or 'no log'}")
        if ready():
            return
        time.sleep(_POLL)
    raise ToolFailed(f"{name} did not come up within {START_TIMEOUT:.0f} s: "
                     f"{tail(_log(sim, name), 3) or 'no log'}")


def _running(record: CardSimRecord) -> dict[str, bool]:
    return {"pcscd": _is(record.pcscd_pid, "pcscd"), "card": _is(record.bridge_pid, BRIDGE_MODULE)}


def _is(pid: int, marker: str) -> bool:
    """`pid` runs and its command line names `marker` (pids are reused), and is not a zombie."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    words = [Path(word.decode(errors="replace")).name for word in cmdline] + \
        [word.decode(errors="replace") for word in cmdline]
    return state != "Z" and marker in words


def _stop_record(record: CardSimRecord) -> list[str]:
    stopped = []
    alive = _running(record)
    for name, pid in (("card", record.bridge_pid), ("pcscd", record.pcscd_pid)):
        if alive[name] and processes.terminate(pid, STOP_TIMEOUT):
            stopped.append(name)
    return stopped


