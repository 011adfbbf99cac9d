"""Where a bundle passphrase comes from: a file, the environment, or a prompt; never argv or a log.

Mirrors pins.py: the sources are tried in a fixed order so scripts never block on a prompt, and a
prompt without a terminal is refused with one line instead of hanging.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from bindpkcs11.errors import UsageError
from bindpkcs11.fileio import read_secret_file

PASSPHRASE_ENV = "BINDPKCS11_PASSPHRASE"
MIN_LENGTH = 8


class PassphraseMissing(UsageError):
    """No bundle passphrase available."""


def read_passphrase(path: Path | None, new: bool = False) -> str:
    """The passphrase from `path`, else $BINDPKCS11_PASSPHRASE, else a prompt.

    `new` (a ceremony creating bundles) asks twice on a prompt and enforces a minimum length on
    every source: a short passphrase is the weak point of scrypt-protected bundles.
    """
    if path is not None:
        passphrase = _from_file(Path(path))
    elif os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV]
    else:
        passphrase = _prompt(new)
    if new and len(passphrase) < MIN_LENGTH:
        raise UsageError(f"the bundle passphrase must have at least {MIN_LENGTH} characters")
    return passphrase


def _from_file(path: Path) -> str:
    return read_secret_file(path, "passphrase", PassphraseMissing)


def _prompt(new: bool) -> str:
    if not sys.stdin.isatty():
        raise PassphraseMissing(
            f"no bundle passphrase: use --passphrase-file FILE or set {PASSPHRASE_ENV} "
            "(no terminal to prompt on)"
        )
    passphrase = getpass.getpass("bundle passphrase: ")
    if new and getpass.getpass("again: ") != passphrase:
        raise UsageError("the two passphrase entries differ")
    if not passphrase:
        raise PassphraseMissing("empty bundle passphrase")
    return passphrase
