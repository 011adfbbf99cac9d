"""Which copies of each DNSSEC key bindpkcs11 knows of: tokens and wrap files.

A small JSON registry in the state dir (0600), updated by keygen, key import, wrap and unwrap, read
by `token show`. A key is identified by its algorithm and DNSKEY public key, so copies under other
labels on other tokens count as the same key. It is what this state dir saw, not a global census:
a copy made elsewhere is not known.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from bindpkcs11 import locks
from bindpkcs11.fileio import read_text_limited, write_atomic
from bindpkcs11.errors import BindPkcs11Error
from bindpkcs11.dnssec.keyfile import read_key_pair
from bindpkcs11.state import StateDir

_MAX_BYTES = 4 << 20


class CustodyRegistryDamaged(BindPkcs11Error):
    """The custody registry is damaged."""


@dataclass(frozen=True)
class Custody:
    """Known copies of one key."""

    tokens: tuple[str, ...] = ()
    wrap_files: tuple[str, ...] = ()
    backup_capable: bool = False

    @property
    def copies(self) -> int:
        return len(self.tokens) + len(self.wrap_files)

    @property
    def backed_up(self) -> bool:
        return self.copies > 1

    def describe(self) -> str:
        where = [f"token {t}" for t in self.tokens] + [f"wrap file {Path(w).name}" for w in self.wrap_files]
        state = "backed up" if self.backed_up else "ONLY COPY"
        return f"{self.copies} cop{'y' if self.copies == 1 else 'ies'} ({', '.join(where)}), {state}"


def key_id(algorithm: int, public_key: bytes) -> str:
    return hashlib.sha256(bytes([algorithm]) + public_key).hexdigest()[:24]


def registry_path(state: StateDir) -> Path:
    return state.root / "backup" / "custody.json"


def lookup(state: StateDir, algorithm: int, public_key: bytes) -> Custody | None:
    entry = _load(state).get(key_id(algorithm, public_key))
    if entry is None:
        return None
    return Custody(tuple(entry.get("tokens", ())), tuple(entry.get("wrap_files", ())),
                   bool(entry.get("backup_capable", False)))


def record(state: StateDir, algorithm: int, public_key: bytes, zone: str, tag: int,
           token: str | None = None, wrap_file: Path | None = None,
           backup_capable: bool | None = None) -> Custody:
    """Add a token or a wrap file as a known copy of the key; returns the new custody."""
    with _changing(state) as entries:
        entry = entries.setdefault(key_id(algorithm, public_key),
                                   {"zone": zone, "tag": tag, "algorithm": algorithm,
                                    "tokens": [], "wrap_files": []})
        if token and token not in entry["tokens"]:
            entry["tokens"].append(token)
        if wrap_file is not None and str(Path(wrap_file).resolve()) not in entry["wrap_files"]:
            entry["wrap_files"].append(str(Path(wrap_file).resolve()))
        if backup_capable is not None:
            entry["backup_capable"] = backup_capable
    return lookup(state, algorithm, public_key)  # type: ignore[return-value]


def forget_token(state: StateDir, token: str) -> None:
    """`token erase`: no key is on the token any more, so it is no key's copy. Otherwise a key
    whose other copy was on the erased token would still read "backed up"."""
    with _changing(state) as entries:
        for entry in entries.values():
            if token in entry.get("tokens", ()):
                entry["tokens"].remove(token)


def forget_copy(state: StateDir, public_key: bytes, token: str) -> None:
    """`token delete` of a private key: that token no longer holds a copy of it. The registry is
    keyed by DNSSEC algorithm as well, which the token object does not name: every algorithm is
    tried (an RSA key is the same key under algorithms 8 and 10)."""
    ids = {key_id(number, public_key) for number in range(256)}
    with _changing(state) as entries:
        for identifier in ids & entries.keys():
            tokens = entries[identifier].get("tokens", [])
            if token in tokens:
                tokens.remove(token)


@contextlib.contextmanager
def _changing(state: StateDir) -> Iterator[dict]:
    """The registry, read, changed by the block and written back under the state dir's custody
    lock: two processes recording copies at once must not lose one of them."""
    with locks.held(locks.lock_path(state, "custody"), "the custody registry"):
        entries = _load(state)
        yield entries
        path = registry_path(state)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, json.dumps(entries, indent=1, sort_keys=True) + "\n", mode=0o600)


def _load(state: StateDir) -> dict:
    path = registry_path(state)
    if not path.exists():
        return {}
    text = read_text_limited(path, _MAX_BYTES, "custody registry", CustodyRegistryDamaged)
    try:
        entries = json.loads(text)
        if not isinstance(entries, dict):
            raise ValueError
    except ValueError:
        raise CustodyRegistryDamaged(f"{path} is not a custody registry: move it away (it is "
                                     "rebuilt by the next keygen, import, wrap or unwrap)") from None
    return entries


def record_generated(state: StateDir, key_file: Path, token: str, backup_capable: bool) -> Custody:
    """A key just generated on `token` (its key file says which): its first known copy."""
    pair = read_key_pair(key_file)
    return record(state, int(pair.dnskey.algorithm), pair.dnskey.key, pair.zone.to_text(),
                  pair.tag, token=token, backup_capable=backup_capable)


def describe(state: StateDir, algorithm: int, public_key: bytes, token: str | None) -> str:
    """The custody line every listing prints (token show, keygen, named status): the known copies,
    or, for a key never recorded, the one on `token` (or a software key file when there is none)."""
    known = lookup(state, algorithm, public_key)
    if known is not None:
        return known.describe()
    if token is None:
        return "software key file (not on a token)"
    return Custody(tokens=(token,)).describe()
