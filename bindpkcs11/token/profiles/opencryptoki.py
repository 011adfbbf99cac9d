"""opencryptoki through its slot daemon pkcsslotd: the soft token, and whatever else it offers.

opencryptoki 3.8 has hard-coded paths (/etc/opencryptoki, /var/lib/opencryptoki,
/run/pkcsslotd.socket, /run/lock/opencryptoki) and System V shared memory between the library and
pkcsslotd, so there is one pkcsslotd, and one set of tokens, per mount + IPC namespace. Two ways
to reach it:
- the system's pkcsslotd (`systemctl start pkcsslotd`): the normal case on a real machine;
- the sandbox `bindpkcs11 opencryptoki sandbox start` runs for a state dir (occsandbox.py): a
  pkcsslotd in a private mount + IPC namespace whose opencryptoki directories live under
  `<state>/opencryptoki`. Every bindpkcs11 command of that state dir joins the namespace in
  `activate()`, before the module is loaded, so everything it starts (named, dnssec-signzone, the
  shim, bench workers) runs in there too and sees the same token.

Tokens are made with the module's own C_InitToken (token/inittoken.py): pkcsconf would want the PINs
at its prompts or on argv, and the library call keeps them in this process. A fresh opencryptoki
token's SO PIN is the published factory default (87654321); `token init` uses it once for
C_InitToken and replaces it by the operator's SO PIN at once (C_SetPIN). `token erase` never calls
C_InitToken again (see erase_token).
"""

from __future__ import annotations

import ctypes
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from bindpkcs11.errors import BindPkcs11Error, TokenExists, UsageError
from bindpkcs11.fileio import read_text_limited
from bindpkcs11.state import StateDir
from bindpkcs11.token import inittoken, keys, library
from bindpkcs11.token.profiles import DeviceTraits, PinRules, TokenPins
from bindpkcs11.token.records import KeySpec, TokenInfo

DEFAULT_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so"
# pkcsslotd's (socket, pid file): 3.8 (Debian 12) uses /var/run/pkcsslotd.*, later releases
# (Debian 13's 3.2x) /run/opencryptoki/pkcsslotd.*.
SLOTD_FILES = (
    (Path("/run/pkcsslotd.socket"), Path("/run/pkcsslotd.pid")),
    (Path("/run/opencryptoki/pkcsslotd.socket"), Path("/run/opencryptoki/pkcsslotd.pid")),
)
FACTORY_SO_PIN = "87654321"  # every opencryptoki token's SO PIN before its first C_InitToken
SOFT_TOKEN_MODELS = ("IBM SoftTok", "Soft")  # 3.8, 3.2x
_RECORD_LIMIT = 64 * 1024
_CLONE_NEWNS = 0x00020000
_CLONE_NEWIPC = 0x08000000

OPENCRYPTOKI_TRAITS = DeviceTraits(
    # The 3.8 soft token lists no EC mechanism at all (pkcsconf -m): RSA 512-4096 only, and
    # DNSSEC wants at least 2048 bits.
    key_specs=(KeySpec("rsa", bits=2048),),
    rsa_bits=(2048, 3072, 4096),
    pin_rules=PinRules(min_length=4, max_length=8, note=" (opencryptoki's soft token: 4-8)"),
    signatures_per_second=3500,  # soft token, RSA-2048, one session (docs/devices.md)
    pin_locked_hint=(
        "set a new user PIN as SO with 'pkcsconf -u -c SLOT' (it prompts for both; in the "
        "sandbox run it through nsenter, see docs/devices.md) and update the PIN file, or wipe "
        "the token with 'bindpkcs11 token erase'"
    ),
)


class SlotDaemonNotRunning(BindPkcs11Error):
    """pkcsslotd is not running: start it (systemctl start pkcsslotd)."""

    exit_code = 3


@dataclass(frozen=True)
class SandboxRecord:
    """What `opencryptoki sandbox start` left running (`<state>/opencryptoki/sandbox.json`): the
    process holding the private namespace (`holder`, a `sleep`), in which pkcsslotd runs."""

    holder: int
    mount_ns: str

    def holds(self) -> bool:
        """The holder still runs in the namespace the record names (pids are reused)."""
        try:
            argv0 = Path(f"/proc/{self.holder}/cmdline").read_bytes().split(b"\0")[0]
            namespace = os.readlink(f"/proc/{self.holder}/ns/mnt")
        except OSError:
            return False
        program = Path(argv0.decode(errors="replace")).name
        return program == "sleep" and namespace == self.mount_ns

    def slot_daemon(self) -> int | None:
        """The pid of the live pkcsslotd inside the namespace, read through the holder."""
        if not self.holds():
            return None
        root = Path(f"/proc/{self.holder}/root")
        for socket_path, pid_path in SLOTD_FILES:
            if (root / socket_path.relative_to("/")).is_socket():
                pid = slot_daemon_pid(root / pid_path.relative_to("/"))
                if pid:
                    return pid
        return None


def occ_dir(state: StateDir) -> Path:
    return state.root / "opencryptoki"


def record_path(state: StateDir) -> Path:
    return occ_dir(state) / "sandbox.json"


def read_record(state: StateDir) -> SandboxRecord | None:
    """The sandbox record, or None when no sandbox was started for this state dir."""
    path = record_path(state)
    if not path.exists():
        return None
    try:
        return SandboxRecord(**json.loads(read_text_limited(path, _RECORD_LIMIT, "sandbox record")))
    except (ValueError, TypeError) as error:
        raise SlotDaemonNotRunning(f"{path} is damaged ({error}): run 'bindpkcs11 opencryptoki "
                                   "sandbox stop' and start it again") from None


def record_text(record: SandboxRecord) -> str:
    return json.dumps(asdict(record), indent=2) + "\n"


class OpencryptokiProfile:
    """libopencryptoki behind the system's pkcsslotd, or the state dir's sandboxed one."""

    name = "opencryptoki"
    traits = OPENCRYPTOKI_TRAITS

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.module_path = DEFAULT_MODULE

    def activate(self) -> None:
        """Join the sandbox's namespaces when this state dir has one; then insist that pkcsslotd
        answers (without it C_Initialize only says CKR_GENERAL_ERROR)."""
        record = read_record(self.state)
        if record is not None:
            if record.slot_daemon() is None:
                raise SlotDaemonNotRunning(
                    f"the opencryptoki sandbox of {self.state.root} is not running (its pkcsslotd "
                    "is gone): start it with 'bindpkcs11 opencryptoki sandbox start'"
                )
            enter_namespaces(record.holder)
        require_slot_daemon(Path("/"), sandboxed=record is not None)

    def module_env(self) -> dict[str, str]:
        """Nothing but the module: the namespace (when sandboxed) is inherited from this process."""
        return {"PKCS11_LIBRARY_PATH": self.module_path}

    def init_token(self, label: str, pins: TokenPins) -> None:
        """C_InitToken with the factory SO PIN on an uninitialised slot, then the operator's
        PINs (C_InitPIN, C_SetPIN)."""
        if pins.so == FACTORY_SO_PIN:
            raise UsageError(f"the SO PIN must not be opencryptoki's published factory SO PIN "
                             f"({FACTORY_SO_PIN}): choose another one")
        self.activate()
        tokens = library.list_tokens(self.module_path)
        if any(info.label == label for info in tokens):
            raise TokenExists(
                f"token '{label}' already exists in opencryptoki; refusing to re-initialise it "
                "(use 'bindpkcs11 token erase' to wipe it)"
            )
        slot = _empty_slot(tokens)
        inittoken.init_token(self.module_path, slot, label, FACTORY_SO_PIN, pins.user)
        inittoken.set_so_pin(self.module_path, slot, label, FACTORY_SO_PIN, pins.so)
        library.refresh(self.module_path)

    def erase_token(self, label: str, pins: TokenPins) -> None:
        """Objects gone, same label, the given PINs, without C_InitToken.

        opencryptoki 3.8's C_InitToken keeps the token's SO master key under the factory SO PIN
        whatever SO PIN it is given, so after it no SO login works again (CKR_FUNCTION_FAILED
        for the right PIN): an erase by C_InitToken would lock the SO out for good. Instead the SO
        (one C_Login, proving the SO PIN) sets the user PIN with C_InitPIN, which also unlocks it,
        and the user destroys every object on the token.
        """
        self.activate()
        slot = library.token_info(self.module_path, label).slot_id
        inittoken.reset_user_pin(self.module_path, slot, label, pins.so, pins.user)
        library.refresh(self.module_path)
        with library.open_session(self.module_path, label, lambda: pins.user, rw=True) as session:
            for obj in list(session.get_objects()):
                keys.destroy(obj)


def require_slot_daemon(root: Path, sandboxed: bool) -> None:
    """SlotDaemonNotRunning in one line unless pkcsslotd runs (its pid file names a live
    pkcsslotd) and its socket is there for us. Never a test connection: pkcsslotd 3.8 writes its
    slot table to every client at once and exits on the SIGPIPE of one that hung up."""
    where = "in the sandbox" if sandboxed else "on this machine"
    socket_path = slot_daemon_socket(root)
    if socket_path is None:
        raise SlotDaemonNotRunning(
            f"pkcsslotd is not running {where} (no live pkcsslotd pid file and socket in /run): "
            "start it with 'systemctl start pkcsslotd', or try a private soft token with "
            "'bindpkcs11 opencryptoki sandbox start'"
        )
    if not os.access(socket_path, os.R_OK | os.W_OK):
        raise SlotDaemonNotRunning(
            f"no access to {socket_path}: add this user to the 'pkcs11' group (adduser USER "
            "pkcs11) and log in again"
        )


def slot_daemon_socket(root: Path = Path("/")) -> Path | None:
    """pkcsslotd's socket under `root` when its pid file there names a live pkcsslotd."""
    for socket_path, pid_path in SLOTD_FILES:
        inside = root / socket_path.relative_to("/")
        if inside.is_socket() and slot_daemon_pid(root / pid_path.relative_to("/")):
            return inside
    return None


def slot_daemon_pid(pid_path: Path) -> int | None:
    """The pid in the pid file `pid_path`, if that process is a live pkcsslotd."""
    try:
        pid = int(pid_path.read_text().strip())
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    if Path(argv0.decode(errors="replace")).name != "pkcsslotd" or state == "Z":
        return None
    return pid


def enter_namespaces(pid: int) -> None:
    """Move this process into the IPC and mount namespaces of `pid` (the sandbox's holder).

    setns(CLONE_NEWNS) needs root and a single-threaded process, and resets the working
    directory to the namespace's root: the old one (same path in there) is restored.
    """
    if os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
        return
    if os.geteuid() != 0:
        raise SlotDaemonNotRunning("the opencryptoki sandbox can only be used as root (it is a "
                                   "private mount namespace); use the system's pkcsslotd")
    if len(os.listdir("/proc/self/task")) != 1:
        raise BindPkcs11Error("cannot join the opencryptoki sandbox from a multi-threaded process")
    libc = ctypes.CDLL(None, use_errno=True)
    cwd = os.getcwd()
    for kind, flag in (("ipc", _CLONE_NEWIPC), ("mnt", _CLONE_NEWNS)):
        fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, flag) != 0:
                error = ctypes.get_errno()
                raise BindPkcs11Error(f"cannot join the opencryptoki sandbox's {kind} namespace: "
                                      f"{os.strerror(error)}")
        finally:
            os.close(fd)
    os.chdir(cwd)


def _empty_slot(tokens: list[TokenInfo]) -> int:
    """The slot of an uninitialised token: the soft token's when there are several."""
    empty = [info for info in tokens if not info.flags.initialized]
    if not empty:
        raise BindPkcs11Error(
            "every opencryptoki token is already initialised: erase one with 'bindpkcs11 token "
            "erase --label LABEL' or add a slot to opencryptoki.conf"
        )
    soft = [info for info in empty if info.model in SOFT_TOKEN_MODELS]
    return (soft or empty)[0].slot_id
