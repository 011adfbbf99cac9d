"""Smart cards driven by OpenSC (opensc-pkcs11.so through pcscd), one profile per card family.

OpenSC has no C_InitToken for these cards, and each family is initialised by its own tool:
- `openpgp` (OpenPGP cards, Nitrokey Pro/Start, YubiKey's OpenPGP applet, Gnuk): `openpgp-tool
  --erase` resets the card to its factory PINs (123456 / 12345678) with no PIN asked, then
  `pkcs15-tool --change-pin` sets the admin PIN (auth ID 3) and the user PIN (auth ID 2; the
  signature PIN is the same PW1). The card names its keys itself: one signing key per PKCS#11
  token, "Authentication key" (ID 03) under "OpenPGP card (User PIN)" and "Signature key" (ID 01)
  under "OpenPGP card (User PIN (sig))"; key generation needs the admin PIN (SO login).
- `sc-hsm` (SmartCard-HSM, Nitrokey HSM): `sc-hsm-tool --initialize --dkek-shares N` with the SO
  PIN (16 hex digits) and the user PIN given at its prompts.
- `myeid`, `feitian`: `pkcs15-init --erase-card`, then `pkcs15-init --create-pkcs15
  --profile pkcs15+onepin --label L`, PINs at its prompts.
Every tool is driven with pexpect at its prompts: no PIN ever goes on a command line.

Which pcscd: the card simulator's (`bindpkcs11 card simulator start`, its socket under the state
dir, found through PCSCLITE_CSOCK_NAME) when one runs for this state dir, else the system's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pexpect

from bindpkcs11.errors import BindPkcs11Error, ModuleMissing, PinIncorrect, ToolFailed, UsageError
from bindpkcs11.run import child_env
from bindpkcs11.state import StateDir
from bindpkcs11.token import library
from bindpkcs11.token.profiles import DeviceTraits, PinRules, TokenPins
from bindpkcs11.token.records import KeySpec

DEFAULT_MODULE = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
SOCKET_VARIABLE = "PCSCLITE_CSOCK_NAME"
_PROMPT_TIMEOUT = 300  # key-pair areas and erases on a real card take a while
DEFAULT_DKEK_SHARES = 1
_LOCKED_HINT = ("a card locks its PIN after 3 wrong tries: unblock it with the admin/SO PIN "
                "(pkcs15-tool --unblock-pin), or reset the card with 'bindpkcs11 token erase'")

RSA_2048_ONLY = (KeySpec("rsa", bits=2048),)
OPENPGP_TRAITS = DeviceTraits(
    key_specs=RSA_2048_ONLY,
    rsa_bits=(2048,),
    pin_rules=PinRules(min_length=6, max_length=127, note=" (OpenPGP card PINs)", so_min_length=8),
    pin_locked_hint=_LOCKED_HINT,
    signatures_per_second=18,  # jcecard through vpcd/pcscd/OpenSC, RSA-2048 (docs/devices.md)
    keygen_as_so=True,
    wraps_keys=False,  # no C_WrapKey: a second copy is `key import` into another card
    fixed_key_objects=(("OpenPGP card (User PIN)", b"\x03", "Authentication key"),
                       ("OpenPGP card (User PIN (sig))", b"\x01", "Signature key")),
)
SC_HSM_TRAITS = DeviceTraits(
    key_specs=(KeySpec("ec", curve="secp256r1"), KeySpec("ec", curve="secp384r1"),
               KeySpec("rsa", bits=2048)),
    rsa_bits=(2048, 3072, 4096),
    pin_rules=PinRules(min_length=6, max_length=16, note=" (SmartCard-HSM user PIN)"),
    pin_locked_hint=_LOCKED_HINT,
    signatures_per_second=10,  # vendor figure for RSA-2048; not measured here
)
MYEID_TRAITS = DeviceTraits(
    key_specs=(KeySpec("ec", curve="secp256r1"), KeySpec("ec", curve="secp384r1"),
               KeySpec("rsa", bits=2048)),
    rsa_bits=(2048,),
    pin_rules=PinRules(min_length=4, max_length=8, note=" (MyEID PIN)"),
    pin_locked_hint=_LOCKED_HINT,
    signatures_per_second=10,
)
FEITIAN_TRAITS = DeviceTraits(
    key_specs=(KeySpec("rsa", bits=2048),),
    rsa_bits=(2048,),
    pin_rules=PinRules(min_length=4, max_length=16, note=" (Feitian PIN)"),
    pin_locked_hint=_LOCKED_HINT,
    signatures_per_second=10,
)


class CardMissing(BindPkcs11Error):
    """No card in the reader."""

    exit_code = 3


class CardInUse(BindPkcs11Error):
    """The card holds keys already."""


@dataclass(frozen=True)
class Dialog:
    """One tool run: its arguments and which prompt gets which PIN ("so", "user" or "yes").

    `refusals`: (pattern, message) for output after which the tool would only ask again (sc-hsm-tool
    loops on a short or mistyped share password): the tool is stopped and ToolFailed(message) raised.
    """

    args: tuple[str, ...]
    answers: tuple[tuple[str, str], ...]
    refusals: tuple[tuple[str, str], ...] = ()


def simulator_socket(state: StateDir) -> Path:
    """Where the card simulator's pcscd puts its socket (cardsim.py bind-mounts this dir)."""
    return state.root / "card" / "run" / "pcscd.comm"


class OpenScProfile:
    """A card family through OpenSC; `kind` picks how it is initialised and what it can do."""

    kind = "openpgp"
    traits = OPENPGP_TRAITS

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.name = f"opensc-{self.kind}"
        self.module_path = DEFAULT_MODULE

    @property
    def token_dir(self) -> Path | None:
        """What setup-inline hands to named's user (bind): the card simulator's pcscd socket
        dir, when there is one; a real card is reached through the system pcscd instead."""
        run_dir = simulator_socket(self.state).parent
        return run_dir if run_dir.exists() else None

    def activate(self) -> None:
        self._require_simulated_card()
        for variable, value in self._socket_env().items():
            library.module_env_ready(variable, value)

    def _require_simulated_card(self) -> None:
        """CardMissing when this state dir's card simulator runs without its card: OpenSC would
        only report no token, and 'token init' would be the wrong advice."""
        from bindpkcs11 import cardsim

        if os.environ.get(SOCKET_VARIABLE):
            return
        current = cardsim.status(self.state)
        gone = [name for name, entry in current.processes.items() if not entry["running"]]
        if "card" in gone or "pcscd" in gone:
            raise CardMissing(f"the emulated card of {self.state.root} is not in its reader "
                              f"({' and '.join(gone)} stopped): restart it with "
                              "'bindpkcs11 card simulator start'")

    def module_env(self) -> dict[str, str]:
        return self._socket_env() | {"PKCS11_LIBRARY_PATH": self.module_path}

    def _socket_env(self) -> dict[str, str]:
        if os.environ.get(SOCKET_VARIABLE):
            return {SOCKET_VARIABLE: os.environ[SOCKET_VARIABLE]}
        socket = simulator_socket(self.state)
        return {SOCKET_VARIABLE: str(socket)} if socket.exists() else {}

    def token_in_use(self, label: str) -> bool:
        """A card's token always exists; it is in use when it, or another token of the same card
        (which `token init` resets too), holds a key, so that `token init` never wipes one.
        Checked without a PIN: the public halves are readable."""
        self.activate()
        present = {info.label for info in library.list_tokens(self.module_path)}
        if label not in present:
            return False
        from pkcs11 import Attribute, ObjectClass

        for name in self.traits.device_tokens(label):
            if name not in present:
                continue
            with library.find_token(self.module_path, name).open() as session:
                if any(True for kind in (ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY,
                                         ObjectClass.CERTIFICATE)
                       for _ in session.get_objects({Attribute.CLASS: kind})):
                    return True
        return False

    def init_token(self, label: str, pins: TokenPins) -> None:
        self.activate()
        self._run_all(self.init_dialogs(label), pins)
        library.refresh(self.module_path)
        self.require_label(label)

    def erase_token(self, label: str, pins: TokenPins) -> None:
        """The SO PIN proven with one login first: an erase is never a way around the PIN."""
        self.activate()
        self.verify_so_pin(label, pins.so)
        self._run_all(self.init_dialogs(label), pins)
        library.refresh(self.module_path)

    def verify_so_pin(self, label: str, so_pin: str) -> None:
        import pkcs11.exceptions as p11x

        token = library.find_token(self.module_path, label)
        try:
            session = token.open(rw=True, so_pin=so_pin)
        except (p11x.PinIncorrect, p11x.PinLenRange, p11x.PinInvalid):
            raise PinIncorrect(f"wrong SO PIN for token '{label}' (tried once; cards lock after 3)"
                               ) from None
        except p11x.PinLocked:
            raise PinIncorrect(f"the SO PIN of token '{label}' is locked") from None
        # OpenSC's openpgp driver can fail C_Logout after an admin login; the PIN was proven
        with contextlib.suppress(p11x.PKCS11Error):
            session.close()

    def init_dialogs(self, label: str) -> list[Dialog]:
        """openpgp: factory reset, then the admin PIN, then the user PIN."""
        factory_so, factory_user = "12345678", "123456"
        return [
            Dialog(("openpgp-tool", "--erase"), ()),
            Dialog(("pkcs15-tool", "--change-pin", "--auth-id", "3"),
                   ((r"(?i)enter old PIN", f"={factory_so}"), (r"(?i)enter new PIN", "so"))),
            Dialog(("pkcs15-tool", "--change-pin", "--auth-id", "2"),
                   ((r"(?i)enter old PIN", f"={factory_user}"), (r"(?i)enter new PIN", "user"))),
        ]

    def require_label(self, label: str) -> None:
        """The card names its own tokens: say which labels it has when `label` is not one."""
        labels = [info.label for info in library.list_tokens(self.module_path)]
        if label not in labels:
            raise UsageError(f"this {self.name} card has no token '{label}'; its tokens are: "
                             f"{', '.join(labels) or 'none (no card?)'}: use one of those with --label")

    def _run_all(self, dialogs: list[Dialog], pins: TokenPins) -> None:
        for dialog in dialogs:
            run_dialog(dialog, pins)


class ScHsmProfile(OpenScProfile):
    """SmartCard-HSM / Nitrokey HSM: `sc-hsm-tool --initialize` with a DKEK share count."""

    kind = "sc-hsm"
    traits = SC_HSM_TRAITS

    def init_dialogs(self, label: str) -> list[Dialog]:
        shares = os.environ.get("BINDPKCS11_DKEK_SHARES", str(DEFAULT_DKEK_SHARES))
        if not shares.isdigit():
            raise UsageError(f"BINDPKCS11_DKEK_SHARES must be a number, not '{shares}'")
        return [Dialog(("sc-hsm-tool", "--initialize", "--dkek-shares", shares, "--label", label),
                       ((r"Enter SO-PIN", "so"), (r"Enter initial User-PIN", "user")))]

    def init_token(self, label: str, pins: TokenPins) -> None:
        if not re.fullmatch(r"[0-9A-Fa-f]{16}", pins.so):
            raise UsageError("a SmartCard-HSM SO PIN is exactly 16 hex digits")
        super().init_token(label, pins)

    def erase_token(self, label: str, pins: TokenPins) -> None:
        self.activate()
        # sc-hsm-tool --initialize on an initialised card asks for the current SO PIN itself
        self._run_all(self.init_dialogs(label), pins)
        library.refresh(self.module_path)


class PkcsInitProfile(OpenScProfile):
    """Cards OpenSC initialises with pkcs15-init (MyEID, Feitian): erase, then a PKCS#15 app."""

    def init_dialogs(self, label: str) -> list[Dialog]:
        # pkcs15-init's prompts (OpenSC's pkcs15-init.c get_pin): each new PIN is typed twice;
        # the user PIN's unblock code (PUK) is the SO PIN, the one secret that may unblock it
        prompts = ((r"Please enter Security Officer PIN", "so"),
                   (r"Please enter User unblocking PIN", "so"),
                   (r"Please enter User PIN", "user"),
                   (r"Please type again to verify", "again"))
        return [
            Dialog(("pkcs15-init", "--erase-card", "--use-default-transport-keys"), prompts),
            Dialog(("pkcs15-init", "--create-pkcs15", "--profile", "pkcs15+onepin",
                    "--use-default-transport-keys", "--label", label), prompts),
        ]


class MyEidProfile(PkcsInitProfile):
    kind = "myeid"
    traits = MYEID_TRAITS


class FeitianProfile(PkcsInitProfile):
    kind = "feitian"
    traits = FEITIAN_TRAITS


PROFILES = {"opensc": OpenScProfile, "opensc-openpgp": OpenScProfile, "opensc-sc-hsm": ScHsmProfile,
            "opensc-myeid": MyEidProfile, "opensc-feitian": FeitianProfile}


def run_dialog(dialog: Dialog, pins: TokenPins) -> str:
    """Run one tool, answering its prompts from `pins` (any object with the named attributes);
    its output (answers never echo: the tools read them without echo); ToolFailed on failure.

    `answers` map a prompt to "so"/"user" (that PIN), "=VALUE" (a fixed factory PIN) or "again"
    (the previous answer, for a tool that asks twice). The first pattern that matches wins, so
    more specific prompts come first.
    """
    program = shutil.which(dialog.args[0])
    if not program:
        raise ModuleMissing(f"{dialog.args[0]} not found: install the opensc package "
                            "(scripts/setup.sh)")
    patterns = [pattern for pattern, _ in dialog.answers]
    refusals = [pattern for pattern, _ in dialog.refusals]
    child = pexpect.spawn(program, list(dialog.args[1:]), env=child_env(), encoding="utf-8",
                          timeout=_PROMPT_TIMEOUT)
    child.delaybeforesend = None
    transcript: list[str] = []
    last = ""
    try:
        while True:
            index = child.expect(patterns + refusals + [pexpect.EOF])
            transcript.append(child.before or "")
            if index == len(patterns) + len(refusals):
                break
            if index >= len(patterns):
                child.close(force=True)
                raise ToolFailed(dialog.refusals[index - len(patterns)][1])
            transcript.append(patterns[index])
            answer = dialog.answers[index][1]
            if answer != "again":
                last = answer[1:] if answer.startswith("=") else getattr(pins, answer)
            child.sendline(last)
    except pexpect.TIMEOUT:
        child.close(force=True)
        raise ToolFailed(f"{dialog.args[0]} did not finish in {_PROMPT_TIMEOUT} s") from None
    child.close()
    if child.exitstatus != 0:
        output = " ".join(line.strip() for line in "".join(transcript).splitlines() if line.strip())
        if re.search(r"(?i)card not present|no smart ?card|no card", output):
            raise CardMissing(f"{dialog.args[0]}: no card in the reader (is it inserted, and pcscd "
                              "running?)")
        raise ToolFailed(f"{' '.join(dialog.args[:2])} failed (exit {child.exitstatus}): "
                         f"{output[-400:] or 'no output'}")
    return "".join(transcript)
