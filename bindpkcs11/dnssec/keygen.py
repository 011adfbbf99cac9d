"""DNSSEC key generation, on a token or in software, written out as BIND key files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import dns.name

from bindpkcs11.access import TokenAccess
from bindpkcs11.dnssec import software
from bindpkcs11.dnssec.algorithms import Algorithm
from bindpkcs11.dnssec.dnskey import ds_text, key_tag, make_dnskey, zone_label_text
from bindpkcs11.dnssec.keyfile import (
    Timing,
    base_name,
    check_writable,
    token_private_fields,
    write_key_pair,
)
from bindpkcs11 import locks
from bindpkcs11.errors import DuplicateLabel, InvalidTime, KeyFileError, UsageError
from bindpkcs11.timespec import TTL_MAX, check_key_time
from bindpkcs11.token import keys, library, wrapping
from bindpkcs11.token.wrapping import check_wrappable, require_backup_ready
from bindpkcs11.token.profiles import require_key_spec, traits_of
from bindpkcs11.token.uri import key_uri

_TAG_COLLISION_RETRIES = 5
TOKEN_RNG_BYTES = 64


@dataclass(frozen=True)
class KeygenRequest:
    """What `bindpkcs11 keygen` was asked for."""

    zone: dns.name.Name
    role: str
    algorithm: Algorithm
    key_dir: Path
    timing: Timing
    software: bool = False
    extractable: bool = False
    object_label: str | None = None
    ttl: int | None = None
    backup: bool = False
    key_format: str = "9.18"  # keyfile.KEY_FORMATS: the BIND series that will read the files


@dataclass(frozen=True)
class GeneratedKey:
    """The result the CLI reports: files, tag, DS, and where the private key lives."""

    zone: str
    role: str
    algorithm: int
    tag: int
    key_file: Path
    private_file: Path
    ds: str
    token: str | None = None
    object_label: str | None = None
    uri: str | None = None
    extra: dict = field(default_factory=dict)


def generate_software(request: KeygenRequest) -> GeneratedKey:
    """A software key pair; regenerated if its tag collides with a key already in the key dir."""
    check_bind_can_read(request)
    check_writable(request.key_dir)
    for _ in range(_TAG_COLLISION_RETRIES):
        public, fields = software.generate(request.algorithm)
        dnskey = make_dnskey(public, request.algorithm, request.role)
        if not _tag_taken(request, key_tag(dnskey)):
            key_path, private_path = write_key_pair(
                request.key_dir, request.zone, dnskey, fields, request.timing, request.ttl
            )
            return _result(request, dnskey, key_path, private_path)
    raise KeyFileError("key tag collisions kept happening: clean up the key directory")


def generate_software_with_token_rng(request: KeygenRequest, access: TokenAccess) -> GeneratedKey:
    """A software key whose randomness mixes the token's C_GenerateRandom into the OS's (the 2012
    demo's hgenzsk): a ZSK that signs at software speed, seeded by the hardware too."""
    if not software.supports_extra_entropy(request.algorithm):
        raise UsageError(f"token randomness cannot be mixed into a {request.algorithm.mnemonic} key: "
                         "RSA key generation takes no outside randomness; use an ECDSA or Ed25519 "
                         "ZSK")
    with access.session(login=False) as session:
        token_random = keys.generate_random(session, TOKEN_RNG_BYTES)
    with software.extra_entropy(token_random):
        result = generate_software(request)
    return replace(result, extra={**result.extra, "rng": f"os+token:{access.label}"})


def generate_on_token(request: KeygenRequest, access: TokenAccess) -> GeneratedKey:
    """C_GenerateKeyPair on the token, then key files whose Label names the new private key.

    The object is generated under a provisional label and renamed to `<zone>-<role>-<tag>` once
    the key tag is known (unless the operator chose a label), so the label an operator sees on the
    token matches the key file name. A tag that collides with an existing key file means the new
    pair is destroyed and another one generated: nothing is left half-done.
    """
    check_bind_can_read(request)
    check_writable(request.key_dir)
    require_key_spec(access.profile, request.algorithm.spec)
    traits = traits_of(access.profile)
    if request.backup:
        require_wrap_support(access)
    with access.session(login=False) as probe:
        keys.require_support(probe, request.algorithm.spec)
    fixed = traits.fixed_key_object(access.label)
    with locks.token_objects(access.state, access.label, locks.KEY_CREATION_WAIT):
        if fixed is not None:
            return _generate_in_fixed_slot(request, access, fixed, traits.keygen_as_so)
        return _generate_pair(request, access, traits)


def _generate_pair(request: KeygenRequest, access: TokenAccess, traits) -> GeneratedKey:
    """generate_on_token for tokens that name their objects freely (the token-objects lock held)."""
    omit_false_flags = traits.omit_false_flags
    with access.session(rw=True, so=traits.keygen_as_so) as session:
        if request.backup:  # wrappable only under the token's KEK (see backup/kek.py)
            kek, mechanism = require_backup_ready(session)
        for _ in range(_TAG_COLLISION_RETRIES):
            object_id = os.urandom(8)
            provisional = request.object_label or f"{zone_label_text(request.zone)}-{request.role}-new-{object_id.hex()}"
            public = keys.generate_keypair(
                session, request.algorithm.spec, provisional, object_id,
                request.extractable or request.backup, omit_false_flags,
            )
            if request.backup:
                try:
                    check_wrappable(session, kek, mechanism, provisional, request.algorithm.mnemonic)
                except BaseException:
                    _destroy_pair(session, provisional)
                    raise
            dnskey = make_dnskey(public, request.algorithm, request.role)
            tag = key_tag(dnskey)
            final_label = request.object_label or f"{zone_label_text(request.zone)}-{request.role}-{tag}"
            if _tag_taken(request, tag) or (
                final_label != provisional and keys.find_objects(session, final_label)
            ):
                _destroy_pair(session, provisional)
                if request.object_label:
                    raise DuplicateLabel(f"key tag {tag} is already used in {request.key_dir}")
                continue
            if final_label != provisional:
                keys.relabel(session, provisional, final_label)
            uri = key_uri(access.label, final_label)
            fields = token_private_fields(dnskey, uri, public.modulus, public.exponent,
                                          request.key_format)
            try:
                key_path, private_path = write_key_pair(
                    request.key_dir, request.zone, dnskey, fields, request.timing, request.ttl
                )
            except BaseException:
                _destroy_pair(session, final_label)
                raise
            return _result(request, dnskey, key_path, private_path, access.label, final_label, uri)
    raise KeyFileError("key tag collisions kept happening: clean up the key directory")


def _generate_in_fixed_slot(request: KeygenRequest, access: TokenAccess,
                            fixed: tuple[bytes, str], as_so: bool) -> GeneratedKey:
    """A device with one key slot per token that names its key itself (an OpenPGP card).

    The slot must be empty (generating would replace the key in it: generate_keypair refuses an
    existing label). The public key is read back after the module was re-initialised: OpenSC
    hands back the new object's modulus and exponent padded to their size in bits. A key tag that
    collides with a key file cannot be retried in place; the card's key is left for
    `token erase`, no file is written.
    """
    object_id, label = fixed
    if request.object_label and request.object_label != label:
        raise UsageError(f"token '{access.label}' names its key '{label}' itself: omit --label")
    with access.session(rw=True, so=as_so) as session:
        keys.generate_keypair(session, request.algorithm.spec, label, object_id,
                              request.extractable)
    library.refresh(access.module_path)
    with access.session(login=False) as session:
        public = keys.read_public_key(keys.find_objects(session, label, "public")[0])
    dnskey = make_dnskey(public, request.algorithm, request.role)
    if _tag_taken(request, key_tag(dnskey)):
        raise DuplicateLabel(f"key tag {key_tag(dnskey)} is already used in {request.key_dir}; "
                             f"erase token '{access.label}' and generate again")
    uri = key_uri(access.label, label)
    fields = token_private_fields(dnskey, uri, public.modulus, public.exponent, request.key_format)
    key_path, private_path = write_key_pair(
        request.key_dir, request.zone, dnskey, fields, request.timing, request.ttl
    )
    return _result(request, dnskey, key_path, private_path, access.label, label, uri)


def check_bind_can_read(request: KeygenRequest) -> None:
    """InvalidTime unless BIND can read back the timing and TTL about to be written.

    Checked before any key is generated, so a key file BIND would refuse is never made.
    """
    for name, value in request.timing.items():
        check_key_time(name, value, request.timing.created)
    if request.ttl is not None and not 0 <= request.ttl <= TTL_MAX:
        raise InvalidTime(f"TTL {request.ttl} is outside 0..{TTL_MAX} (RFC 2181)")


def _tag_taken(request: KeygenRequest, tag: int) -> bool:
    """BIND refuses two keys of one zone with the same tag (also counting the revoked tag)."""
    stem = base_name(request.zone, request.algorithm.number, tag)
    revoked = base_name(request.zone, request.algorithm.number, (tag + 128) & 0xFFFF)
    return any((request.key_dir / f"{s}.key").exists() for s in (stem, revoked))


def _destroy_pair(session, label: str) -> None:
    for obj in keys.find_objects(session, label):
        keys.destroy(obj)


def _result(request: KeygenRequest, dnskey, key_path: Path, private_path: Path,
            token: str | None = None, object_label: str | None = None,
            uri: str | None = None) -> GeneratedKey:
    return GeneratedKey(
        zone=request.zone.to_text(),
        role=request.role,
        algorithm=request.algorithm.number,
        tag=key_tag(dnskey),
        key_file=key_path,
        private_file=private_path,
        ds=ds_text(request.zone, dnskey),
        token=token,
        object_label=object_label,
        uri=uri,
    )


def require_wrap_support(access: TokenAccess, mechanism: str | None = None) -> str:
    """The wrap mechanism to use (`mechanism`, a wrap file's, when the token can unwrap with it),
    or WrapUnsupported before any PIN is asked: from the profile's traits without touching the
    device, else from the token's mechanism list (no login needed)."""
    if not traits_of(access.profile).wraps_keys:
        raise wrapping.WrapUnsupported(
            f"a {access.profile.name} device cannot wrap keys (no C_WrapKey): keep a second copy "
            "with 'bindpkcs11 key import KEYFILE --token L --token L2' into two devices instead")
    with access.session(login=False) as probe:
        return wrapping.require_wrap_support(probe, mechanism)
