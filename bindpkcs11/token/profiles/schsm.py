"""A SmartCard-HSM's own key backup scheme, driven through OpenSC's `sc-hsm-tool`.

The card holds a device key-encryption key (DKEK) assembled on the card from N shares, N fixed
when the card is initialised (`--initialize --dkek-shares N`); all N are needed (no threshold).
Each share is a 64-byte file encrypted under its own password (`--create-dkek-share FILE`), and
imported with `--import-dkek-share FILE`; the DKEK never exists outside the card. A key made on
the card leaves it only as the card's own wrapped blob (`--wrap-key FILE --key-reference N`) and
enters another card with the same DKEK through `--unwrap-key FILE --key-reference N`.

Every password and PIN is typed at the tool's prompt (pexpect), never put on its command line;
each of the tool's failure messages (OpenSC's src/tools/sc-hsm-tool.c) becomes one line saying
what to do. Without a card this is tested against a scripted stand-in of the tool's dialog.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bindpkcs11.errors import BindPkcs11Error, PinIncorrect, ToolFailed, UsageError
from bindpkcs11.fileio import read_limited
from bindpkcs11.token.profiles.opensc import Dialog, run_dialog

TOOL = "sc-hsm-tool"
MECHANISM = "SC-HSM-DKEK"  # what a wrap file made by the card records as its mechanism
MIN_PASSWORD = 6  # sc-hsm-tool asks again for a shorter share password, forever
MAX_BLOB_BYTES = 16 << 10


class DkekProblem(BindPkcs11Error):
    """The SmartCard-HSM's DKEK is missing, incomplete or not the one needed."""


class DkekShareRefused(BindPkcs11Error):
    """The SmartCard-HSM refused the DKEK share."""


@dataclass(frozen=True)
class Secrets:
    """What the tool's prompts get: a share password or the user PIN; never in a repr."""

    password: str = field(default="", repr=False)
    user: str = field(default="", repr=False)


@dataclass(frozen=True)
class DkekStatus:
    """What the card says about its DKEK: shares it was made for, shares missing, KCV when whole."""

    shares: int
    missing: int
    kcv: str


# sc-hsm-tool's failure lines, and what each means for the operator ({file}, {ref} filled in).
_FAILURES = (
    (r"Error decrypting DKEK share", DkekShareRefused,
     "wrong password for DKEK share {file} (the card was not touched): type it again"),
    (r"is not a DKEK share", DkekShareRefused,
     "{file} is not a SmartCard-HSM DKEK share: bring the share file made by 'backup make-shares'"),
    (r"not initialized for key share usage", DkekProblem,
     "this SmartCard-HSM was initialised without DKEK shares: re-initialise it (this erases it) "
     "with BINDPKCS11_DKEK_SHARES=N 'bindpkcs11 token erase', N the number of shares"),
    (r"PIN verification failed", PinIncorrect,
     "wrong user PIN for the SmartCard-HSM (tried once, not again: the card locks after a few)"),
    (r"Card not initialized for key wrap", DkekProblem,
     "the SmartCard-HSM has no complete DKEK: import every DKEK share first "
     "('bindpkcs11 backup import-share')"),
    (r"Wrapped key does not match DKEK", DkekProblem,
     "the wrapped key was made under another DKEK than this card's: import that DKEK's shares "
     "into a freshly initialised card"),
    (r"Found existing (private key description|certificate)", UsageError,
     "key reference {ref} is in use on this card: choose a free --key-reference"),
    (r"Invalid key reference", UsageError, "--key-reference must be 1..255"),
    (r"Invalid wrapped key format", DkekProblem,
     "the card's wrapped key in this wrap file is damaged: use another copy"),
)


def create_share(path: Path, password: str) -> None:
    """A new DKEK share in `path` (the card's random numbers), encrypted under `password`."""
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"a SmartCard-HSM DKEK share password needs at least {MIN_PASSWORD} "
                         "characters")
    dialog = Dialog((TOOL, "--create-dkek-share", str(path)),
                    ((r"Enter password to encrypt DKEK share", "password"),
                     (r"Please retype password to confirm", "password")),
                    ((r"Passwords do not match", "sc-hsm-tool read two different share "
                      "passwords: nothing was written"),
                     (r"Password way to short", f"sc-hsm-tool wants a share password of at least "
                      f"{MIN_PASSWORD} characters")))
    _run(dialog, Secrets(password=password), file=path)
    if not path.exists():
        raise ToolFailed(f"{TOOL} reported no error but wrote no share to {path}")


def status() -> DkekStatus:
    """The card's DKEK state (no PIN needed); DkekProblem when it was made without shares."""
    output = _run(Dialog((TOOL,), ()), Secrets())
    shares = re.search(r"DKEK shares\s*:\s*(\d+)", output)
    if shares is None:
        raise DkekProblem(_FAILURES[2][2])
    return _status(output)


def import_share(path: Path, password: str) -> DkekStatus:
    """Import one share; the card combines them and reports its DKEK's KCV when all are in."""
    dialog = Dialog((TOOL, "--import-dkek-share", str(path)),
                    ((r"Enter password to decrypt DKEK share", "password"),))
    return _status(_run(dialog, Secrets(password=password), file=path))


def wrap_key(reference: int, user_pin: str) -> bytes:
    """The card's wrapped blob of key `reference` (written by the tool to a private temp dir)."""
    _check_reference(reference)
    with tempfile.TemporaryDirectory(prefix="bp11-schsm-") as directory:
        out = Path(directory) / "wrapped.bin"
        _run(Dialog((TOOL, "--wrap-key", str(out), "--key-reference", str(reference)),
                    ((r"Enter User PIN", "user"),)), Secrets(user=user_pin), ref=reference)
        if not out.exists():
            raise ToolFailed(f"{TOOL} reported no error but wrote no wrapped key")
        return read_limited(out, MAX_BLOB_BYTES, "wrapped key", ToolFailed)[0]


def unwrap_key(reference: int, blob: bytes, user_pin: str) -> None:
    """Put the card's wrapped blob into key `reference` of this card (same DKEK needed)."""
    _check_reference(reference)
    with tempfile.TemporaryDirectory(prefix="bp11-schsm-") as directory:
        source = Path(directory) / "wrapped.bin"
        source.write_bytes(blob)
        output = _run(Dialog((TOOL, "--unwrap-key", str(source), "--key-reference", str(reference)),
                             ((r"Enter User PIN", "user"),)), Secrets(user=user_pin), ref=reference)
    if "Key successfully imported" not in output:
        raise ToolFailed(f"{TOOL} --unwrap-key did not report the key imported")


def _check_reference(reference: int) -> None:
    if not 1 <= reference <= 255:
        raise UsageError("--key-reference must be 1..255 (the key's number on the SmartCard-HSM)")


def _status(output: str) -> DkekStatus:
    shares = re.search(r"DKEK shares\s*:\s*(\d+)", output)
    missing = re.search(r"(\d+) share\(s\) still missing", output)
    kcv = re.search(r"DKEK key check value\s*:\s*([0-9A-Fa-f]{16})", output)
    return DkekStatus(int(shares.group(1)) if shares else 0,
                      int(missing.group(1)) if missing else 0,
                      kcv.group(1).lower() if kcv else "")


def _run(dialog: Dialog, secrets: Secrets, file: Path | None = None, ref: int = 0) -> str:
    try:
        return run_dialog(dialog, secrets)  # type: ignore[arg-type]
    except ToolFailed as error:
        for pattern, kind, message in _FAILURES:
            if re.search(pattern, str(error)):
                raise kind(message.format(file=file, ref=ref)) from None
        raise
