"""Token administration: init, list, show, delete, erase, rng.

This is where token objects meet BIND key files (through keyuse.py, over every key directory
bindpkcs11 manages): `show` names the DNSSEC key behind each key pair, `delete` refuses to destroy
a private key that an active key file still uses, and `erase` refuses while any active key file
points at the token.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path

from bindpkcs11 import keyuse, locks, pins
from bindpkcs11.access import TokenAccess
from bindpkcs11.backup import custody
from bindpkcs11.dnssec.dnskey import public_key_bytes
from bindpkcs11.errors import ObjectNotFound, RefusedDeletion, TokenExists, UsageError
from bindpkcs11.token import keys, library
from bindpkcs11.token.labels import check_token_label
from bindpkcs11.token.profiles import TokenPins, traits_of
from bindpkcs11.token.records import ObjectInfo, TokenInfo

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
    used_by: str = ""
    active: bool = True
    custody: str = ""


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


def init_token(access: TokenAccess, generate_pins: bool = False,
               exist_ok: bool = False) -> InitResult | None:
    """Create the token; PINs from the usual sources, or random ones stored 0600 in the state dir.

    Check and creation happen under the state dir's token-creation lock, so two runs for one
    label cannot both see "no such token" and both create it (or write each other's PIN files).
    Nothing is written before every check has passed. A token that already exists is refused
    (TokenExists), or with `exist_ok` left alone and None returned: a caller that only needs the
    token (setup-inline's default token) then uses the one a concurrent run just made.
    """
    check_token_label(access.label)
    _check_given_pins(access)
    where = f"token creation in {access.state.root}"
    with locks.held(locks.lock_path(access.state, "tokens"), where):
        library.refresh(access.module_path)  # see tokens another process made while we waited
        if _token_in_use(access):
            if exist_ok:
                return None
            raise TokenExists(f"token '{access.label}' already exists; refusing to re-initialise it "
                              "(use 'bindpkcs11 token erase' to wipe it)")
        kinds = [kind for kind, explicit in ((pins.USER, access.pin_file), (pins.SO, access.so_pin_file))
                 if generate_pins and explicit is None and not os.environ.get(kind.env)]
        pins.refuse_existing_pin_files(access.state, access.pin_label, kinds)
        generated: list[str] = []
        try:
            rules = traits_of(access.profile).pin_rules
            for kind in kinds:
                generated.append(str(pins.generate_and_store(
                    access.state, access.pin_label, kind, length=min(16, rules.max_length))))
            token_pins = TokenPins(
                user=_pin_for_init(access, pins.USER, access.pin_file),
                so=_pin_for_init(access, pins.SO, access.so_pin_file),
            )
            access.profile.init_token(access.label, token_pins)
        except BaseException:
            for path in generated:
                Path(path).unlink(missing_ok=True)
            raise
    return InitResult(access.label, access.profile.name, generated)


def _check_given_pins(access: TokenAccess) -> None:
    """PINs given as files or in the environment meet the device's rules before anything (the
    token store, the lock, the PIN files) is touched."""
    rules = traits_of(access.profile).pin_rules
    for kind, pin_file in ((pins.USER, access.pin_file), (pins.SO, access.so_pin_file)):
        if pin_file is not None:
            rules.check(kind.name, pins.read_pin_file(pin_file, kind))
        elif os.environ.get(kind.env):
            rules.check(kind.name, os.environ[kind.env])


def _token_in_use(access: TokenAccess) -> bool:
    """The token exists already; a profile whose tokens always exist (a card's) says instead
    whether it is in use (holds keys)."""
    in_use = getattr(access.profile, "token_in_use", None)
    if in_use is not None:
        return in_use(access.label)
    return any(info.label == access.label for info in library.list_tokens(access.module_path))


def _pin_for_init(access: TokenAccess, kind: pins.PinKind, pin_file: Path | None) -> str:
    pin = pins.available_pin(access.state, access.pin_label, kind, pin_file)
    if pin is None:
        pin = pins.prompt_pin(f"new {kind.name} for token '{access.label}': ", kind, confirm=True)
    traits_of(access.profile).pin_rules.check(kind.name, pin)
    return pin


def list_tokens(access: TokenAccess) -> list[TokenInfo]:
    return library.list_tokens(access.module_path)


def show_token(access: TokenAccess, extra_key_dir: Path | None, now: int) -> TokenReport:
    """Token, flags and every object, each key matched to the key file (in any managed key dir)
    that uses it: by label, CKA_ID or public key (see keyuse.py)."""
    info = library.token_info(access.module_path, access.label)
    uses = keyuse.key_files_on_token(access.state, access.label, extra_key_dir)
    with access.session(login=True) as session:
        objects = keys.list_objects(session)
    by_id = keyuse.public_keys_by_id(objects)
    reports = []
    for obj in objects:
        public = keyuse.public_of(obj, by_id)
        dnssec = None
        if obj.object_class in ("private", "public"):
            dnssec = _dnssec_info(keyuse.users_of(obj, public, uses), public, now)
            if dnssec is not None and public is not None:
                dnssec = replace(dnssec, custody=_custody_text(access, public, dnssec.algorithm))
        if public is not None and obj.public_key is None:
            obj = _with_public(obj, public)
        reports.append(ObjectReport(obj, dnssec))
    return TokenReport(info, reports)


def _dnssec_info(users: list[keyuse.KeyUse], public, now: int) -> DnssecKeyInfo | None:
    """The key file to show for an object: one holding its public key first, active ones first."""
    if not users:
        return None

    def matches(use: keyuse.KeyUse) -> bool:
        return public is not None and public_key_bytes(public) == use.pair.dnskey.key

    use = min(users, key=lambda u: (not matches(u), not u.is_active(now)))
    return DnssecKeyInfo(
        tag=use.pair.tag,
        algorithm=int(use.pair.dnskey.algorithm),
        role=use.pair.role,
        zone=use.pair.zone.to_text(),
        key_file=str(use.pair.key_path),
        matches_token=matches(use),
        used_by=use.key_dir.user,
        active=use.is_active(now),
    )


def _custody_text(access: TokenAccess, public, algorithm: int) -> str:
    """Known copies of the key (backup/custody.py); a key never recorded is this token's only one
    as far as bindpkcs11 knows."""
    return custody.describe(access.state, algorithm, public_key_bytes(public), access.label)


def _with_public(obj: ObjectInfo, public) -> ObjectInfo:
    return replace(obj, size=public.bits, curve=public.curve, public_key=public)


def delete_object(access: TokenAccess, object_label: str, object_class: str | None,
                  force: int, extra_key_dir: Path | None, now: int) -> str:
    """Destroy exactly one object; a private key that an active key file uses, in any key dir
    bindpkcs11 manages, needs `--force --force`."""
    if force < 1:
        raise RefusedDeletion(
            f"refusing to destroy '{object_label}' without --force (a destroyed key cannot be recovered)"
        )
    with locks.token_objects(access.state, access.label):
        return _delete_object(access, object_label, object_class, force, extra_key_dir, now)


def _delete_object(access: TokenAccess, object_label: str, object_class: str | None,
                   force: int, extra_key_dir: Path | None, now: int) -> str:
    uses = active_keys_on_token(access, extra_key_dir, now)
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
            if uses:
                _refuse_active_private_key(session, object_label, uses)
            keyuse.refuse_if_unreadable(access.state, extra_key_dir, "give --force twice")
        public = _public_of_private(session, object_label) if kind == "private" else None
        keys.destroy(target)
    if public is not None:
        custody.forget_copy(access.state, public_key_bytes(public), access.label)
    return kind


def refuse_destroying_private(access: TokenAccess, object_label: str,
                              extra_key_dir: Path | None, now: int) -> None:
    """The refusals `delete_object` applies to a private key with one --force, checked without
    destroying anything: a caller that destroys several objects checks them all first."""
    uses = active_keys_on_token(access, extra_key_dir, now)
    if uses:
        with access.session(login=True) as session:
            if keys.find_objects(session, object_label, "private"):
                _refuse_active_private_key(session, object_label, uses)
    keyuse.refuse_if_unreadable(access.state, extra_key_dir, "give --force twice")


def _public_of_private(session, object_label: str):
    """The public key of the private key `object_label` (from its pair or its own attributes),
    or None when the token shows neither."""
    objects = keys.list_objects(session)
    by_id = keyuse.public_keys_by_id(objects)
    target = next(o for o in objects if o.label == object_label and o.object_class == "private")
    return keyuse.public_of(target, by_id)


def _refuse_active_private_key(session, object_label: str, uses: list[keyuse.KeyUse]) -> None:
    objects = keys.list_objects(session)
    by_id = keyuse.public_keys_by_id(objects)
    target = next(o for o in objects if o.label == object_label and o.object_class == "private")
    users = keyuse.users_of(target, keyuse.public_of(target, by_id), uses)
    if users:
        raise RefusedDeletion(
            f"'{object_label}' is the private key of active key {keyuse.describe_all(users)} "
            "(no Inactive/Delete in the past); retire it first, or give --force twice"
        )


def active_keys_on_token(access: TokenAccess, extra_key_dir: Path | None,
                         now: int) -> list[keyuse.KeyUse]:
    """Key files, in every managed key dir, that point at the token and are not retired."""
    return [use for use in keyuse.key_files_on_token(access.state, access.label, extra_key_dir)
            if use.is_active(now)]


def key_files_on_device(access: TokenAccess, extra_key_dir: Path | None) -> list[keyuse.KeyUse]:
    """Key files pointing at any token of the device: erasing one of a card's tokens resets the
    card, so the keys on its other tokens go too."""
    return [use for label in traits_of(access.profile).device_tokens(access.label)
            for use in keyuse.key_files_on_token(access.state, label, extra_key_dir)]


def refuse_erasing_active_keys(access: TokenAccess, extra_key_dir: Path | None, now: int) -> None:
    """RefusedDeletion naming the active keys (and their zones/instances) an erase would destroy,
    on this token and on the other tokens of its device (a card's)."""
    active = [use for use in key_files_on_device(access, extra_key_dir) if use.is_active(now)]
    keyuse.refuse_if_unreadable(access.state, extra_key_dir, "add --destroy-active-keys")
    if active:
        raise RefusedDeletion(
            f"refusing to erase token '{access.label}': {len(active)} active key file(s) use it: "
            f"{keyuse.describe_all(active)}; retire or move those keys first, or add "
            "--destroy-active-keys"
        )


def erase_token(access: TokenAccess, extra_key_dir: Path | None, now: int,
                destroy_active_keys: bool = False) -> int:
    """Re-initialise the token (all objects gone); returns how many key files now dangle.

    Refused while an active key file in any managed key dir points at the token, unless
    `destroy_active_keys`.
    """
    with locks.token_objects(access.state, access.label):
        if not destroy_active_keys:
            refuse_erasing_active_keys(access, extra_key_dir, now)
        token_pins = TokenPins(
            user=_pin_for_init(access, pins.USER, access.pin_file),
            so=_existing_so_pin(access),
        )
        access.profile.erase_token(access.label, token_pins)
        for label in traits_of(access.profile).device_tokens(access.label):  # a card: all of them
            custody.forget_token(access.state, label)
    return len(key_files_on_device(access, extra_key_dir))


def _existing_so_pin(access: TokenAccess) -> str:
    pin = pins.available_pin(access.state, access.pin_label, pins.SO, access.so_pin_file)
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
