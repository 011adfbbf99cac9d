"""Every key directory bindpkcs11 manages, so that no guard overlooks a key file.

A key file whose Label names a token object is the only thing that says the object is in use.
Key files live in the default `<state>/keys`, in each setup-inline instance's
`<state>/instances/<zone>/keys`, and wherever `keygen --key-dir` put them; the last ones are
remembered in `<state>/key-dirs.json` when the key is made, so that `token delete`/`erase`/`show`
can find them later without being told.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from bindpkcs11 import locks
from bindpkcs11.errors import BindPkcs11Error
from bindpkcs11.fileio import read_text_limited, write_atomic
from bindpkcs11.state import StateDir

REGISTRY_NAME = "key-dirs.json"
_REGISTRY_LIMIT = 1 << 20


class KeyDirRegistryDamaged(BindPkcs11Error):
    """The record of key directories cannot be read, so keys in them cannot be protected."""

    exit_code = 9


class KeyDirUnreadable(BindPkcs11Error):
    """A key directory bindpkcs11 manages cannot be read, so its keys cannot be protected."""

    exit_code = 9


@dataclass(frozen=True)
class KeyDir:
    """A key directory and, in words, who uses it (`instance example.test`, `keygen --key-dir`)."""

    path: Path
    user: str


def registry_path(state: StateDir) -> Path:
    return state.root / REGISTRY_NAME


def record(state: StateDir, key_dir: Path) -> None:
    """Remember `key_dir` (absolute) before a key is written there; a no-op when already known.

    Read-modify-write under a lock, written atomically: two keygen runs never drop each other's
    entry, and a crash leaves the old registry or the new one.
    """
    wanted = str(Path(key_dir).resolve())
    with locks.held(locks.lock_path(state, "key-dirs"), "the key directory registry"):
        known = recorded(state)
        if wanted in map(str, known):
            return
        data = {"key_dirs": [str(path) for path in known] + [wanted]}
        write_atomic(registry_path(state), json.dumps(data, indent=1) + "\n", mode=0o600)


def recorded(state: StateDir) -> list[Path]:
    """The key directories `keygen --key-dir` has used with this state dir."""
    path = registry_path(state)
    if not path.exists():
        return []
    text = read_text_limited(path, _REGISTRY_LIMIT, "key directory registry", KeyDirRegistryDamaged)
    try:
        entries = json.loads(text)["key_dirs"]
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise KeyDirRegistryDamaged(
            f"{path} is damaged: restore it (a JSON object {{\"key_dirs\": [paths]}}) so the keys "
            "in those directories stay protected"
        ) from None
    return [Path(entry) for entry in entries]


def managed(state: StateDir, extra: Path | None = None) -> list[KeyDir]:
    """Every key directory to consult, each once: default, instances, recorded, then `extra`.

    A directory that exists but cannot be listed raises KeyDirUnreadable: a guard that cannot
    see the key files must not conclude that there are none.
    """
    candidates = [KeyDir(state.key_dir, "default key dir")]
    instances = state.root / "instances"
    if instances.is_dir():
        candidates += [KeyDir(root / "keys", f"instance {root.name}")
                       for root in sorted(instances.iterdir()) if (root / "keys").is_dir()]
    candidates += [KeyDir(path, "keygen --key-dir") for path in recorded(state)]
    if extra is not None:
        candidates.append(KeyDir(Path(extra), "--key-dir"))
    seen: set[Path] = set()
    found = []
    for candidate in candidates:
        resolved = candidate.path.resolve()
        if resolved in seen or not resolved.is_dir():
            continue
        if not os.access(resolved, os.R_OK | os.X_OK):
            raise KeyDirUnreadable(
                f"cannot read key directory {resolved} ({candidate.user}): its key files may use "
                "this token; fix its permissions and retry"
            )
        seen.add(resolved)
        found.append(KeyDir(resolved, candidate.user))
    return found
