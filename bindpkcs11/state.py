"""Where bindpkcs11 keeps its state: the embedded token, PIN files, key files, the BIND build."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bindpkcs11.fileio import ensure_private_dir


SYSTEM_STATE_DIR = Path("/var/lib/bindpkcs11")


def default_state_dir() -> Path:
    """`$BINDPKCS11_STATE_DIR`, else `${XDG_DATA_HOME:-~/.local/share}/bindpkcs11`.

    Root without XDG_DATA_HOME gets /var/lib/bindpkcs11 instead: named then runs as `bind`, which
    cannot traverse /root to reach the token and the instance files.
    """
    explicit = os.environ.get("BINDPKCS11_STATE_DIR")
    if explicit:
        return Path(explicit)
    data_home = os.environ.get("XDG_DATA_HOME")
    if not data_home and os.geteuid() == 0:
        return SYSTEM_STATE_DIR
    return Path(data_home or Path.home() / ".local" / "share") / "bindpkcs11"


@dataclass(frozen=True)
class StateDir:
    """The layout of one state directory; every path bindpkcs11 writes by default comes from here."""

    root: Path

    @classmethod
    def open(cls, root: Path | None = None) -> "StateDir":
        """Resolve and create (0700) the state directory."""
        resolved = Path(root) if root else default_state_dir()
        ensure_private_dir(resolved)
        return cls(resolved.resolve())

    @property
    def softhsm_dir(self) -> Path:
        return self.root / "softhsm"

    @property
    def pin_dir(self) -> Path:
        return self.root / "pins"

    @property
    def key_dir(self) -> Path:
        return self.root / "keys"

    @property
    def bind_dir(self) -> Path:
        """The patched BIND install; `$BINDPKCS11_BIND_DIR` shares one build between state dirs."""
        shared = os.environ.get("BINDPKCS11_BIND_DIR")
        return Path(shared).resolve() if shared else self.root / "bind"
