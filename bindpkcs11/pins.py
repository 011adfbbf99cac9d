"""Where PINs come from: a file, the environment, the state dir's PIN file, or a prompt; never argv.

Each source is a callable returning the PIN, resolved only when a login really happens, so a
command that fails earlier (token missing) never prompts.
"""

from __future__ import annotations

import getpass
import os
import secrets
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bindpkcs11.errors import BindPkcs11Error, PinMissing, UsageError
from bindpkcs11.fileio import ensure_private_dir, read_secret_file, write_atomic
from bindpkcs11.state import StateDir
from bindpkcs11.token.labels import MAX_TOKEN_LABEL_BYTES

USER_PIN_ENV = "PKCS11_LIBRARY_PIN"
SO_PIN_ENV = "PKCS11_SO_PIN"
_PIN_ALPHABET = string.ascii_letters + string.digits
_FILE_NAME_SAFE = frozenset((string.ascii_letters + string.digits + "._-").encode())


class PinFileExists(BindPkcs11Error):
    """A PIN file for this token label already exists; refusing to overwrite it."""

    exit_code = 4


@dataclass(frozen=True)
class PinKind:
    """User or SO: the flag, variable and stored-file suffix that supply it."""

    name: str
    option: str
    env: str
    suffix: str


USER = PinKind("user PIN", "--pin-file", USER_PIN_ENV, ".pin")
SO = PinKind("SO PIN", "--so-pin-file", SO_PIN_ENV, ".so-pin")


def label_file_stem(token_label: str) -> str:
    """The token label as one file-name component, injectively.

    Each UTF-8 byte outside [A-Za-z0-9._-] becomes `%XX` (so `%` itself always does), hence two
    labels never share a file and no name holds a `/` or a NUL; labels that were already safe
    keep the name earlier versions gave them. The caller appends a suffix, so `.`, `..` and the
    empty label still make ordinary names. A label longer than a token can hold is refused, which
    bounds the name (32 bytes -> at most 96 characters).
    """
    raw = token_label.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_TOKEN_LABEL_BYTES:
        raise UsageError(f"token label '{token_label}' is {len(raw)} bytes long: PKCS#11 token "
                         f"labels hold at most {MAX_TOKEN_LABEL_BYTES} bytes")
    return "".join(chr(byte) if byte in _FILE_NAME_SAFE else f"%{byte:02X}" for byte in raw)


def stored_pin_path(state: StateDir, token_label: str, kind: PinKind) -> Path:
    """`<state>/pins/<encoded label>.pin`: the PIN file bindpkcs11 writes for tokens it created."""
    return state.pin_dir / f"{label_file_stem(token_label)}{kind.suffix}"


def legacy_pin_path(state: StateDir, token_label: str, kind: PinKind) -> Path | None:
    """The name versions before the injective encoding gave this label's PIN file, if unambiguous.

    They kept `isalnum()` characters and `-_.` and turned everything else into `_`, so a name
    containing `_` may belong to another label (`a b` and `a_b` shared one). Only a label made of
    kept characters other than `_` (e.g. non-ASCII letters) maps to a name nothing else can claim.
    """
    if "_" in token_label or not all(c.isalnum() or c in "-." for c in token_label):
        return None
    path = state.pin_dir / f"{token_label}{kind.suffix}"
    return None if path == stored_pin_path(state, token_label, kind) else path


def existing_pin_file(state: StateDir, token_label: str, kind: PinKind) -> Path | None:
    """The stored PIN file of `token_label` that exists (current name first), else None."""
    for path in (stored_pin_path(state, token_label, kind), legacy_pin_path(state, token_label, kind)):
        if path is not None and path.exists():
            return path
    return None


def read_pin_file(path: Path, kind: PinKind) -> str:
    return read_secret_file(path, kind.name, PinMissing)


def available_pin(
    state: StateDir, token_label: str, kind: PinKind, pin_file: Path | None
) -> str | None:
    """The PIN from the first non-interactive source that has one, else None."""
    if pin_file:
        return read_pin_file(pin_file, kind)
    if os.environ.get(kind.env):
        return os.environ[kind.env]
    stored = existing_pin_file(state, token_label, kind)
    if stored is not None:
        return read_pin_file(stored, kind)
    return None


def pin_source(
    state: StateDir, token_label: str, kind: PinKind, pin_file: Path | None
) -> Callable[[], str]:
    """A callable that yields the PIN when the login happens (prompting only as a last resort)."""

    def resolve() -> str:
        pin = available_pin(state, token_label, kind, pin_file)
        if pin is not None:
            return pin
        return prompt_pin(f"{kind.name} for token '{token_label}': ", kind)

    return resolve


def prompt_pin(question: str, kind: PinKind, confirm: bool = False) -> str:
    """Ask on the terminal; refuse (one clear line) when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        raise PinMissing(
            f"no {kind.name}: use {kind.option} FILE or set {kind.env} (no terminal to prompt on)"
        )
    pin = getpass.getpass(question)
    if confirm and getpass.getpass("again: ") != pin:
        raise UsageError(f"the two {kind.name} entries differ")
    if len(pin) < 4:
        raise UsageError(f"the {kind.name} must have at least 4 characters")
    return pin


def refuse_existing_pin_files(state: StateDir, token_label: str, kinds: list[PinKind]) -> None:
    """PinFileExists when any PIN file of `kinds` for `token_label` is already there.

    Such a file may hold the only copy of another token's PIN (a token made earlier, or with a
    label an earlier version mapped to the same name); overwriting it would strand that token's keys.
    """
    for kind in kinds:
        found = existing_pin_file(state, token_label, kind)
        if found is not None:
            raise PinFileExists(
                f"refusing to initialise token '{token_label}': its {kind.name} file {found} already "
                "exists and may be the only copy of another token's PIN; move it away if no token "
                f"uses it, or give {kind.option} FILE"
            )


def generate_and_store(state: StateDir, token_label: str, kind: PinKind, length: int = 16) -> Path:
    """A random PIN written 0600 under `<state>/pins`; returns its path (the PIN is not printed).

    Callers hold the state dir's token-creation lock and have called refuse_existing_pin_files;
    the check is repeated here so a PIN file is never replaced whatever the caller did.
    """
    ensure_private_dir(state.pin_dir)
    refuse_existing_pin_files(state, token_label, [kind])
    path = stored_pin_path(state, token_label, kind)
    pin = "".join(secrets.choice(_PIN_ALPHABET) for _ in range(length))
    write_atomic(path, pin + "\n", mode=0o600)
    return path
