"""Token administration: init, list, show, delete, erase, rng.

This is where token objects meet BIND key files: `show` names the DNSSEC key behind each key pair
and `delete` refuses to destroy a private key that an active key file still points at.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path

from bindpkcs11 import pins
from bindpkcs11.access import TokenAccess
from bindpkcs11.dnssec.dnskey import public_key_bytes
from bindpkcs11.dnssec.keyfile import KeyPairFiles, key_pairs_in
from bindpkcs11.errors import ObjectNotFound, RefusedDeletion, UsageError
from bindpkcs11.token import keys, library
from bindpkcs11.token.profiles import TokenPins, traits_of
from bindpkcs11.token.records import ObjectInfo, TokenInfo
from bindpkcs11.token.uri import parse_uri

_RNDADDENTROPY = 0x40085203


@dataclass(frozen=True)
class DnssecKeyInfo:
    """The BIND key file a token key pair belongs to, as `token show` reports it."""

    tag: int
    algorithm: int
    role: str
    zone: str
    key_file: str
    matches_token: bool


@dataclass(frozen=True)
class ObjectReport:
    object: ObjectInfo
    dnssec: DnssecKeyInfo | None


@dataclass(frozen=True)
class TokenReport:
    token: TokenInfo
    objects: list[ObjectReport]


@dataclass(frozen=True)
class InitResult:
    label: str
    profile: str
    generated_pin_files: list[str]


def init_token(access: TokenAccess, generate_pins: bool = False) -> InitResult:
    """Create the token; PINs from the usual sources, or random ones stored 0600 in the state dir."""
    generated = []
    if generate_pins:
        for kind, explicit in ((pins.USER, access.pin_file), (pins.SO, access.so_pin_file)):
            if explicit is None and not os.environ.get(kind.env):
                generated.append(str(pins.generate_and_store(access.state, access.label, kind)))
    token_pins = TokenPins(
        user=_pin_for_init(access, pins.USER, access.pin_file),
        so=_pin_for_init(access, pins.SO, access.so_pin_file),
    )
    try:
        access.profile.init_token(access.label, token_pins)
    except BaseException:
        for path in generated:
            Path(path).unlink(missing_ok=True)
        raise
    return InitResult(access.label, access.profile.name, generated)


def _pin_for_init(access: TokenAccess, kind: pins.PinKind, pin_file: Path | None) -> str:
    pin = pins.available_pin(access.state, access.label, kind, pin_file)
    if pin is None:
        pin = pins.prompt_pin(f"new {kind.name} for token '{access.label}': ", kind, confirm=True)
    traits_of(access.profile).pin_rules.check(kind.name, pin)
    return pin


def list_tokens(access: TokenAccess) -> list[TokenInfo]:
    return library.list_tokens(access.module_path)


def show_token(access: TokenAccess, key_dir: Path) -> TokenReport:
    """Token, flags and every object; key pairs are matched to BIND key files by their Label URI."""
    info = library.token_info(access.module_path, access.label)
    with access.session(login=True) as session:
        objects = keys.list_objects(session)
    publics = {(o.label, o.id): o.public_key for o in objects if o.object_class == "public"}
    key_files = _key_files_by_object(key_dir, access.label)
    reports = []
    for obj in objects:
        public = obj.public_key or publics.get((obj.label, obj.id))
        dnssec = None
        if obj.object_class in ("private", "public") and obj.label in key_files:
            pair = key_files[obj.label]
            dnssec = DnssecKeyInfo(
                tag=pair.tag,
                algorithm=int(pair.dnskey.algorithm),
                role=pair.role,
                zone=pair.zone.to_text(),
                key_file=str(pair.key_path),
                matches_token=public is not None and public_key_bytes(public) == pair.dnskey.key,
            )
        if public is not None and obj.public_key is None:
            obj = _with_public(obj, public)
        reports.append(ObjectReport(obj, dnssec))
    return TokenReport(info, reports)


def _with_public(obj: ObjectInfo, public) -> ObjectInfo:
    return replace(obj, size=public.bits, curve=public.curve, public_key=public)


def _key_files_by_object(key_dir: Path, token_label: str) -> dict[str, KeyPairFiles]:
    found = {}
    for pair in key_pairs_in(key_dir):
        if not pair.label_uri:
            continue
        uri = parse_uri(pair.label_uri)
        if uri.token == token_label and uri.object:
            found[uri.object] = pair
    return found


def delete_object(access: TokenAccess, object_label: str, object_class: str | None,
                  force: int, key_dir: Path, now: int) -> str:
    """Destroy exactly one object; an active key file's private key needs `--force --force`."""
    if force < 1:
        raise RefusedDeletion(
            f"refusing to destroy '{object_label}' without --force (a destroyed key cannot be recovered)"
        )
    with access.session(login=True, rw=True) as session:
        matches = keys.find_objects(session, object_label, object_class)
        if not matches:
            raise ObjectNotFound(f"no object labelled '{object_label}' on token '{access.label}'")
        if len(matches) > 1:
            classes = ", ".join(sorted(keys.class_name(obj) for obj in matches))
            raise UsageError(
                f"{len(matches)} objects are labelled '{object_label}' ({classes}): "
                "add --type private|public|secret-key|cert|data"
            )
        target = matches[0]
        kind = keys.class_name(target)
        if kind == "private" and force < 2:
            pair = _key_files_by_object(key_dir, access.label).get(object_label)
            if pair is not None and not pair.timing.is_retired(now):
                raise RefusedDeletion(
                    f"'{object_label}' is the private key of active key {pair.key_path.name} "
                    "(no Inactive/Delete in the past); retire it first, or give --force twice"
                )
        keys.destroy(target)
    return kind


def erase_token(access: TokenAccess, key_dir: Path) -> int:
    """Re-initialise the token (all objects gone); returns how many key files now dangle."""
    token_pins = TokenPins(
        user=_pin_for_init(access, pins.USER, access.pin_file),
        so=_existing_so_pin(access),
    )
    access.profile.erase_token(access.label, token_pins)
    return len(_key_files_by_object(key_dir, access.label))


def _existing_so_pin(access: TokenAccess) -> str:
    pin = pins.available_pin(access.state, access.label, pins.SO, access.so_pin_file)
    if pin is None:
        pin = pins.prompt_pin(f"SO PIN for token '{access.label}': ", pins.SO)
    return pin


def random_bytes(access: TokenAccess, count: int) -> bytes:
    """`count` bytes from the token's C_GenerateRandom (no login: most tokens allow it)."""
    if count < 1 or count > 1 << 20:
        raise UsageError("--bytes must be between 1 and 1048576")
    with access.session(login=False) as session:
        return keys.generate_random(session, count)


def feed_kernel(data: bytes) -> bool:
    """Mix `data` into the kernel pool; credited as entropy when root (RNDADDENTROPY), else mixed only."""
    with open("/dev/random", "wb", buffering=0) as pool:
        if os.geteuid() == 0:
            request = struct.pack("ii", len(data) * 8, len(data)) + data
            fcntl.ioctl(pool, _RNDADDENTROPY, request)
            return True
        pool.write(data)
        return False
