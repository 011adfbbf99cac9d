"""Shares imported for a token before the threshold is reached: a 0600 file in the state dir.

These are decrypted share values, so the file is the one place partial KEK material rests; it is
overwritten and removed as soon as the KEK exists on the token.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from bindpkcs11.backup.shares import ShareError
from bindpkcs11.fileio import ensure_private_dir, read_text_limited, write_atomic
from bindpkcs11.state import StateDir
from bindpkcs11.token.labels import check_token_label


@dataclass(frozen=True)
class Pending:
    """Shares of one KEK set collected for one token."""

    set_id: str
    kcv: str
    threshold: int
    parts: dict[int, bytes] = field(repr=False)


def path_for(state: StateDir, token: str) -> Path:
    check_token_label(token)
    safe = token.encode().hex()
    return state.root / "backup" / f"pending-shares-{safe}.json"


def load(state: StateDir, token: str) -> Pending | None:
    path = path_for(state, token)
    if not path.exists():
        return None
    text = read_text_limited(path, 64 << 10, "pending share file", ShareError)
    try:
        fields = json.loads(text)
        return Pending(str(fields["set"]), str(fields["kcv"]), int(fields["threshold"]),
                       {int(k): bytes.fromhex(v) for k, v in fields["parts"].items()})
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ShareError(f"{path} is damaged: remove it and import the shares again") from None


def save(state: StateDir, token: str, pending: Pending) -> Path:
    path = path_for(state, token)
    ensure_private_dir(path.parent)
    text = json.dumps({"set": pending.set_id, "kcv": pending.kcv, "threshold": pending.threshold,
                       "parts": {str(k): v.hex() for k, v in sorted(pending.parts.items())}})
    write_atomic(path, text + "\n", mode=0o600)
    return path


def wipe(state: StateDir, token: str) -> None:
    """Overwrite the pending shares with zeros, then remove the file."""
    path = path_for(state, token)
    if not path.exists():
        return
    size = path.stat().st_size
    with open(path, "r+b", buffering=0) as handle:
        handle.write(bytes(size))
        os.fsync(handle.fileno())
    path.unlink()
