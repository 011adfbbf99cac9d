"""TPM 2.0 through tpm2-pkcs11: the token store lives in the state dir, the TPM is reached by a TCTI.

Which TPM: `TPM2_PKCS11_TCTI` from the environment (`--tcti` sets it), else the simulator that
`bindpkcs11 tpm2 simulator start` runs under the state dir (swtpm behind a private-bus
tpm2-abrmd), else the kernel's resource manager `/dev/tpmrm0`. tpm2-abrmd (or the kernel's
tpmrm) is required, not optional: without a resource manager the TPM runs out of object slots
at the third loaded key (TPM_RC 0x902).

Tokens are made with the module's own C_InitToken/C_InitPIN (token/inittoken.py), because
`tpm2_ptool addtoken` takes both PINs on its command line and passes a PIN-derived auth value on
tpm2_create's. `tpm2_ptool rmtoken` (no PIN involved, it only edits the store) erases, after the
SO PIN was proven with one C_Login.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from bindpkcs11.errors import BindPkcs11Error, ModuleMissing, TokenExists, ToolFailed
from bindpkcs11.fileio import ensure_private_dir, read_text_limited
from bindpkcs11.run import run_tool
from bindpkcs11.state import StateDir
from bindpkcs11.token import inittoken, library
from bindpkcs11.token.profiles import DeviceTraits, PinRules, TokenPins
from bindpkcs11.token.records import KeySpec

DEFAULT_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"
KERNEL_RM = Path("/dev/tpmrm0")
TCTI_VARIABLE = "TPM2_PKCS11_TCTI"
BUS_VARIABLE = "DBUS_SESSION_BUS_ADDRESS"
SIMULATOR_TCTI = "tabrmd:bus_type=session"
_RECORD_LIMIT = 64 * 1024
# The module logs every refused PIN and every TCTI it tried to stderr; bindpkcs11 reports those
# as one line itself. An operator who sets these variables gets the module's own logs back.
_QUIET = {"TPM2_PKCS11_LOG_LEVEL": "0", "TSS2_LOG": "all+NONE"}

TPM2_TRAITS = DeviceTraits(
    key_specs=(KeySpec("ec", curve="secp256r1"), KeySpec("ec", curve="secp384r1"),
               KeySpec("rsa", bits=2048)),
    rsa_bits=(2048, 3072),
    pin_rules=PinRules(min_length=4, max_length=128, note=" (tpm2-pkcs11's ulMaxPinLen)"),
    omit_false_flags=True,
    signatures_per_second=330,  # swtpm through tpm2-abrmd, P-256 (docs/devices.md)
    wraps_keys=False,  # tpm2-pkcs11 has no C_WrapKey (facts.md)
    pin_locked_hint=(
        "the TPM is in dictionary-attack lockout after failed PINs (any application's); wait "
        "for it to recover (TPM2_PT_LOCKOUT_RECOVERY seconds per failure) or clear it with "
        "'tpm2_dictionarylockout --clear-lockout'"
    ),
)


class SimulatorNotRunning(BindPkcs11Error):
    """The TPM simulator is not running: start it with 'bindpkcs11 tpm2 simulator start'."""

    exit_code = 3


class NoTpm(BindPkcs11Error):
    """No TPM found."""

    exit_code = 3


@dataclass(frozen=True)
class SimulatorRecord:
    """What `tpm2 simulator start` left running, as recorded in `<state>/tpm2/simulator.json`."""

    swtpm_pid: int
    dbus_pid: int
    abrmd_pid: int
    port: int
    ctrl_port: int
    bus: str

    def processes(self) -> dict[str, int]:
        return {"swtpm": self.swtpm_pid, "dbus-daemon": self.dbus_pid,
                "tpm2-abrmd": self.abrmd_pid}

    def dead(self) -> list[str]:
        """Names of the recorded processes that are gone (or whose pid now runs something else)."""
        return [name for name, pid in self.processes().items() if not process_runs(pid, name)]


def process_runs(pid: int, program: str) -> bool:
    """`pid` is alive and is `program` (pids are reused after a reboot or a crash)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return Path(argv0.decode(errors="replace")).name == program


def tpm2_dir(state: StateDir) -> Path:
    return state.root / "tpm2"


def record_path(state: StateDir) -> Path:
    return tpm2_dir(state) / "simulator.json"


def read_record(state: StateDir) -> SimulatorRecord | None:
    """The simulator record, or None when no simulator was started (or it was stopped)."""
    path = record_path(state)
    if not path.exists():
        return None
    try:
        return SimulatorRecord(**json.loads(read_text_limited(path, _RECORD_LIMIT, "simulator record")))
    except (ValueError, TypeError) as error:
        raise SimulatorNotRunning(f"{path} is damaged ({error}): run 'bindpkcs11 tpm2 simulator "
                                  "stop' and start it again") from None


def record_text(record: SimulatorRecord) -> str:
    return json.dumps(asdict(record), indent=2) + "\n"


class Tpm2Profile:
    """tpm2-pkcs11 with its store in `<state>/tpm2/store`."""

    name = "tpm2"
    traits = TPM2_TRAITS

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.module_path = DEFAULT_MODULE
        self.token_dir = tpm2_dir(state) / "store"  # handed to named's user, like SoftHSM's

    def activate(self) -> None:
        self._ensure_store()
        for variable, value in _QUIET.items():
            os.environ.setdefault(variable, value)
        env = self.module_env()
        self.probe(env)
        for variable, value in env.items():
            if variable != "PKCS11_LIBRARY_PATH":
                library.module_env_ready(variable, value)

    def probe(self, connection: dict[str, str]) -> None:
        """NoTpm, saying what to do, when the TCTI's endpoint cannot be reached: tpm2-pkcs11 would
        only answer CKR_GENERAL_ERROR from C_Initialize."""
        tcti = connection[TCTI_VARIABLE]
        kind, _, conf = tcti.partition(":")
        if kind == "device":
            path = Path(conf or KERNEL_RM)
            if not path.exists():
                raise NoTpm(f"TPM device {path} (TCTI '{tcti}') does not exist: check --tcti")
            if not os.access(path, os.R_OK | os.W_OK):
                raise NoTpm(f"no read/write access to {path}: add this user to the 'tss' group "
                            "(see docs/devices.md), or run as root")
        elif kind == "tabrmd":
            bus = _bus_socket(conf, connection.get(BUS_VARIABLE))
            if bus is not None and not _connects(bus):
                raise NoTpm(f"nothing listens on the D-Bus socket {bus} that TCTI '{tcti}' needs: "
                            "start tpm2-abrmd (or 'bindpkcs11 tpm2 simulator start')")

    def module_env(self) -> dict[str, str]:
        """What named (and the shim in it) needs: the store, the TCTI, the bus abrmd is on."""
        return self.connection() | {
            "TPM2_PKCS11_STORE": str(self.token_dir),
            "TPM2_PKCS11_BACKEND": "esysdb",
            "PKCS11_LIBRARY_PATH": self.module_path,
        }

    def connection(self) -> dict[str, str]:
        """The TCTI (and the D-Bus address a tabrmd TCTI needs) for the TPM this state dir uses."""
        explicit = os.environ.get(TCTI_VARIABLE)
        if explicit:
            bus = os.environ.get(BUS_VARIABLE)
            return {TCTI_VARIABLE: explicit} | ({BUS_VARIABLE: bus} if bus else {})
        record = read_record(self.state)
        if record is not None:
            dead = record.dead()
            if dead:
                raise SimulatorNotRunning(
                    f"the TPM simulator of {self.state.root} is not running ({', '.join(dead)} "
                    "gone): start it with 'bindpkcs11 tpm2 simulator start'"
                )
            return {TCTI_VARIABLE: SIMULATOR_TCTI, BUS_VARIABLE: f"unix:path={record.bus}"}
        if KERNEL_RM.exists():
            return {TCTI_VARIABLE: f"device:{KERNEL_RM}"}
        raise NoTpm(
            f"no TPM: {KERNEL_RM} does not exist and no simulator runs for {self.state.root}; "
            "start one with 'bindpkcs11 tpm2 simulator start', or give --tcti / TPM2_PKCS11_TCTI"
        )

    def init_token(self, label: str, pins: TokenPins) -> None:
        self.activate()
        tokens = library.list_tokens(self.module_path)
        if any(info.label == label for info in tokens):
            raise TokenExists(
                f"token '{label}' already exists in {self.token_dir}; refusing to re-initialise it "
                "(use 'bindpkcs11 token erase' to wipe it)"
            )
        inittoken.init_token(self.module_path, _empty_slot(tokens), label, pins.so, pins.user)
        library.refresh(self.module_path)

    def erase_token(self, label: str, pins: TokenPins) -> None:
        """SO PIN proven once, the token removed from the store, a new one with the same label."""
        self.activate()
        info = library.token_info(self.module_path, label)
        inittoken.verify_so_pin(self.module_path, info.slot_id, label, pins.so)
        tool = shutil.which("tpm2_ptool")
        if not tool:
            raise ModuleMissing("tpm2_ptool not found: install the libtpm2-pkcs11-tools package")
        run_tool([tool, "rmtoken", "--label", label, "--path", str(self.token_dir)],
                 what=f"tpm2_ptool rmtoken of token '{label}'", timeout=120)
        library.refresh(self.module_path)
        tokens = library.list_tokens(self.module_path)
        inittoken.init_token(self.module_path, _empty_slot(tokens), label, pins.so, pins.user)
        library.refresh(self.module_path)

    def _ensure_store(self) -> None:
        ensure_private_dir(tpm2_dir(self.state))
        ensure_private_dir(self.token_dir)


def _bus_socket(conf: str, address: str | None) -> Path | None:
    """The unix socket of the bus a tabrmd TCTI uses, when it is a plain path we can check."""
    options = dict(item.partition("=")[::2] for item in conf.split(",") if item)
    if options.get("bus_type", "system") == "system":
        return Path("/run/dbus/system_bus_socket")
    if not address:
        raise NoTpm("TCTI tabrmd:bus_type=session needs DBUS_SESSION_BUS_ADDRESS: set it to the "
                    "bus tpm2-abrmd runs on")
    if address.startswith("unix:path="):
        return Path(address[len("unix:path="):].split(",")[0])
    return None


def _connects(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2)
            probe.connect(str(path))
        return True
    except OSError:
        return False


def _empty_slot(tokens) -> int:
    """tpm2-pkcs11 always offers one uninitialised slot for the next token."""
    for info in tokens:
        if not info.flags.initialized:
            return info.slot_id
    raise ToolFailed("tpm2-pkcs11 offers no empty slot for a new token (its store is full)")
