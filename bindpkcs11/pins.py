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

from bindpkcs11.errors import PinMissing, UsageError
from bindpkcs11.fileio import ensure_private_dir, read_secret_file, write_atomic
from bindpkcs11.state import StateDir

USER_PIN_ENV = "PKCS11_LIBRARY_PIN"
SO_PIN_ENV = "PKCS11_SO_PIN"
_PIN_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class PinKind:
    """User or SO: the flag, variable and stored-file suffix that supply it."""

    name: str
    option: str
    env: str
    suffix: str


USER = PinKind("user PIN", "--pin-file", USER_PIN_ENV, ".pin")
SO = PinKind("SO PIN", "--so-pin-file", SO_PIN_ENV, ".so-pin")


def stored_pin_path(state: StateDir, token_label: str, kind: PinKind) -> Path:
    """`<state>/pins/<label>.pin`: the PIN file bindpkcs11 writes for tokens it created."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in token_label)
    return state.pin_dir / f"{safe}{kind.suffix}"


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
    stored = stored_pin_path(state, token_label, kind)
    if stored.exists():
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


def generate_and_store(state: StateDir, token_label: str, kind: PinKind, length: int = 16) -> Path:
    """A random PIN written 0600 under `<state>/pins`; returns its path (the PIN is not printed)."""
    ensure_private_dir(state.pin_dir)
    path = stored_pin_path(state, token_label, kind)
    pin = "".join(secrets.choice(_PIN_ALPHABET) for _ in range(length))
    write_atomic(path, pin + "\n", mode=0o600)
    return path
