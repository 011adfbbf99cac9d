"""Which key files point at a token, and which of the token's objects each one uses.

The token guard (`token delete`/`erase`) and `token show` share this one view. A key file uses
an object when its Label names the object's CKA_LABEL, or its CKA_ID, or when the object's public
key is the key file's DNSKEY: a private key whose object was relabelled is still the only copy of
that zone's signing key, so it is matched by its material, not only by its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bindpkcs11 import keydirs
from bindpkcs11.dnssec import keystate
from bindpkcs11.dnssec.dnskey import public_key_bytes, zone_label_text
from bindpkcs11.dnssec.keyfile import KeyPairFiles, key_pairs_in, read_key_pair
from bindpkcs11.errors import InvalidUri, KeyFileError, RefusedDeletion
from bindpkcs11.state import StateDir
from bindpkcs11.token.records import ObjectInfo, PublicKey
from bindpkcs11.token.uri import parse_uri


@dataclass(frozen=True)
class KeyUse:
    """A key file whose Label points at the token, and the directory (and user) it lives in."""

    pair: KeyPairFiles
    key_dir: keydirs.KeyDir
    object_label: str | None
    object_id: bytes | None

    def describe(self) -> str:
        """`Kexample.test.+013+12345 (ZSK of example.test, instance example.test: /path/keys)`."""
        return (f"{self.pair.key_path.stem} ({self.pair.role.upper()} of "
                f"{zone_label_text(self.pair.zone)}, {self.key_dir.user}: {self.key_dir.path})")

    def is_active(self, now: int) -> bool:
        """Not retired by the key file's timing, and never while named keeps a .state file for
        the key: under a dnssec-policy named holds every key it knows in its key ring until
        purge-keys deletes the key's files (it signed with a KSK past the key's Inactive time
        while no successor could take over, and a key gone before purge-keys stopped its key
        manager: rollcleanup.py), so the guard asks for --force twice until then."""
        if keystate.state_path(self.pair).exists():
            return True
        return not self.pair.timing.is_retired(now)

    def uses(self, obj: ObjectInfo, public: PublicKey | None) -> bool:
        """True when this key file names `obj` (label or CKA_ID) or holds its public key."""
        if self.object_label is not None and self.object_label == obj.label:
            return True
        if self.object_id and self.object_id == obj.id:
            return True
        return public is not None and public_key_bytes(public) == self.pair.dnskey.key


def key_files_on_token(state: StateDir, token_label: str, extra: Path | None = None) -> list[KeyUse]:
    """Every readable key file, in every managed key directory, whose Label points at the token.

    A Label without a token attribute may mean any token, so it counts too.
    """
    found = []
    for key_dir in keydirs.managed(state, extra):
        for pair in _key_pairs(key_dir.path):
            try:
                uri = parse_uri(pair.label_uri or "")
            except InvalidUri:
                continue
            if uri.token in (None, token_label):
                found.append(KeyUse(pair, key_dir, uri.object, uri.id))
    return found


def users_of(obj: ObjectInfo, public: PublicKey | None, uses: list[KeyUse]) -> list[KeyUse]:
    return [use for use in uses if use.uses(obj, public)]


def public_keys_by_id(objects: list[ObjectInfo]) -> dict[bytes, PublicKey]:
    """CKA_ID -> public key of the token's public-key objects (private EC keys carry none)."""
    return {o.id: o.public_key for o in objects
            if o.object_class == "public" and o.public_key is not None and o.id}


def public_of(obj: ObjectInfo, by_id: dict[bytes, PublicKey]) -> PublicKey | None:
    return obj.public_key or by_id.get(obj.id)


def describe_all(uses: list[KeyUse], limit: int = 3) -> str:
    text = "; ".join(use.describe() for use in uses[:limit])
    return text + (f"; and {len(uses) - limit} more" if len(uses) > limit else "")


def unreadable_key_files(state: StateDir, extra: Path | None = None) -> list[tuple[Path, str]]:
    """Key files in a managed key dir that cannot be read (damaged, a refused Label): each may be
    the only record of a token key, so the guard counts them as possibly using any token."""
    found = []
    for key_dir in keydirs.managed(state, extra):
        for key_path in sorted(key_dir.path.glob("K*.key")):
            if not key_path.with_suffix(".private").exists():
                continue
            try:
                read_key_pair(key_path)
            except KeyFileError as error:
                found.append((key_path, str(error)))
    return found


def refuse_if_unreadable(state: StateDir, extra: Path | None, override: str) -> None:
    """RefusedDeletion naming the first unreadable key file, unless the caller's override."""
    unreadable = unreadable_key_files(state, extra)
    if unreadable:
        path, reason = unreadable[0]
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise RefusedDeletion(f"key file {path} cannot be read ({reason}){more}: it may name this "
                              f"key, so nothing is destroyed; repair or move it, or {override}")


def _key_pairs(key_dir: Path) -> list[KeyPairFiles]:
    """Key pairs in `key_dir` whose .private has a Label. A damaged file cannot be loaded by named
    either; key_pairs_in leaves it out with a warning naming it."""
    return [pair for pair in key_pairs_in(key_dir) if pair.label_uri]
