"""Pre-signed key bundles: one file per period, passphrase-encrypted (scrypt + AES-256-GCM).

A bundle carries what the online signer needs for one period and nothing more: the DNSKEY RRset,
its KSK RRSIG(s), and the private keys of the ZSKs that sign in that period (the 2012 demo's
passphrase-protected "keybundles"). The file is

    MAGIC | header length (4 bytes, big endian) | header (JSON) | AES-GCM ciphertext + tag

The header is readable without the passphrase, so the signer can pick the bundle for "now" by
its window and decrypt only that one, but everything before the ciphertext is the GCM associated
data: a changed zone, period index or window makes decryption fail. The scrypt parameters and salt
travel in the header, and a passphrase check value (an HMAC under a second scrypt-derived key) tells
a wrong passphrase apart from a tampered file; it gives an attacker nothing the GCM tag does not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from bindpkcs11.errors import BindPkcs11Error
from bindpkcs11.fileio import read_limited, write_atomic

MAGIC = b"BP11-BUNDLE\n"
VERSION = 2
READABLE_VERSIONS = (1, 2)
MAX_KSKS = 2
SUFFIX = ".bundle"
MAX_BUNDLE_BYTES = 1 << 20
MAX_HEADER_BYTES = 16 << 10
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1
MAX_SCRYPT_N = 1 << 20
_CHECK_LABEL = b"bindpkcs11 bundle passphrase check v1"
_LENGTH = struct.Struct(">I")
_RECOPY = ": copy it again from the ceremony output"


class BundleError(BindPkcs11Error):
    """The bundle cannot be used."""

    exit_code = 11


class NotABundle(BundleError):
    """Not a bindpkcs11 bundle."""


class BundleTruncated(BundleError):
    """The bundle is truncated."""


class UnsupportedBundleVersion(BundleError):
    """Unsupported bundle format version."""


class WrongPassphrase(BundleError):
    """Wrong bundle passphrase."""


class BundleTampered(BundleError):
    """The bundle was modified or is corrupted."""


@dataclass(frozen=True)
class KdfParams:
    """scrypt parameters, stored in every header so they can be raised later without a new format."""

    salt: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P


@dataclass(frozen=True)
class BundleHeader:
    """The authenticated, unencrypted part: which zone and period the bundle is for."""

    zone: str
    index: int
    period_start: int
    period_end: int
    inception: int
    expiration: int
    ksk_tags: tuple[int, ...]
    """Every KSK whose RRSIG over the DNSKEY RRset the bundle carries (two during a KSK roll)."""
    ds_tags: tuple[int, ...]
    """Those of `ksk_tags` whose DS the operator said the parent serves at the period start."""
    ceremony: str
    kdf: KdfParams
    check: bytes
    nonce: bytes
    payload_length: int
    version: int = VERSION

    def covers(self, start: int, end: int) -> bool:
        """True if the KSK signature is valid over all of [start, end]."""
        return self.inception <= start and end <= self.expiration


@dataclass(frozen=True)
class ZskMaterial:
    """A software ZSK as BIND key files; the `.private` text is the secret."""

    tag: int
    key_text: str
    private_text: str = field(repr=False)


@dataclass(frozen=True)
class BundleContent:
    """The encrypted part: DNSKEY RRset and RRSIGs as zone file lines, the signing ZSKs."""

    dnskey_rrset: str
    rrsigs: str
    signing_tags: tuple[int, ...]
    zsks: tuple[ZskMaterial, ...] = field(repr=False)
    ksk_keys: tuple[str, ...] = ()
    """The KSKs' public `.key` files, so the signer can check the keys' owner name (empty in
    bundles made before they were carried)."""
    sync_rrsets: str = ""
    """CDS and CDNSKEY RRsets (RFC 7344) as zone file lines; empty when the period has none."""
    sync_rrsigs: str = ""
    """The KSK RRSIGs over `sync_rrsets` (made in the ceremony, like the DNSKEY one)."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    header: BundleHeader
    content: BundleContent


@dataclass(frozen=True)
class BundleKey:
    """Keys derived from the passphrase for one set of scrypt parameters."""

    kdf: KdfParams
    aes_key: bytes = field(repr=False)
    check: bytes = field(repr=False)


class Unlocker:
    """Holds the passphrase and caches derived keys: scrypt runs once per salt, not per bundle."""

    def __init__(self, passphrase: str) -> None:
        self._passphrase = passphrase.encode()
        self._keys: dict[KdfParams, BundleKey] = {}

    def __repr__(self) -> str:
        return "Unlocker(<passphrase>)"

    def key_for(self, kdf: KdfParams) -> BundleKey:
        if kdf not in self._keys:
            self._keys[kdf] = derive_key(self._passphrase, kdf)
        return self._keys[kdf]

    def new_key(self) -> BundleKey:
        """A key under a fresh random salt, for a ceremony's set of bundles."""
        return self.key_for(KdfParams(salt=os.urandom(16)))


def derive_key(passphrase: bytes, kdf: KdfParams) -> BundleKey:
    """scrypt to 64 bytes: the AES-256 key, then the key of the passphrase check HMAC."""
    material = Scrypt(salt=kdf.salt, length=64, n=kdf.n, r=kdf.r, p=kdf.p).derive(passphrase)
    check = hmac.new(material[32:], _CHECK_LABEL, hashlib.sha256).digest()
    return BundleKey(kdf=kdf, aes_key=material[:32], check=check)


def bundle_file_name(zone_text: str, period_start_stamp: str) -> str:
    """`<zone>.<YYYYMMDDHHMMSS>.bundle`, named after the period start so ceremonies never collide."""
    return f"{zone_text}.{period_start_stamp}{SUFFIX}"


def seal(header: BundleHeader, content: BundleContent, key: BundleKey) -> bytes:
    """The bundle file bytes; `header`'s kdf/check/nonce/payload_length are filled in here."""
    plaintext = _encode_content(content)
    nonce = os.urandom(12)
    sealed_header = replace(header, kdf=key.kdf, check=key.check, nonce=nonce,
                            payload_length=len(plaintext) + 16)
    prefix = _prefix(sealed_header)
    return prefix + AESGCM(key.aes_key).encrypt(nonce, plaintext, prefix)


def write_bundle(path: Path, data: bytes) -> None:
    write_atomic(path, data, mode=0o600)


def read_header(path: Path) -> tuple[BundleHeader, bytes]:
    """The header of the bundle at `path` (not yet authenticated) and the whole file's bytes."""
    data = _read_limited(path)
    return _parse(path, data)[0], data


def open_bundle(path: Path, unlocker: Unlocker) -> Bundle:
    """Decrypt and authenticate the bundle at `path`; one clear BundleError for each failure."""
    data = _read_limited(path)
    header, prefix, ciphertext = _parse(path, data)
    key = unlocker.key_for(header.kdf)
    if not hmac.compare_digest(key.check, header.check):
        raise WrongPassphrase(f"wrong passphrase for bundle {path.name}: check --passphrase-file "
                              "or $BINDPKCS11_PASSPHRASE")
    try:
        plaintext = AESGCM(key.aes_key).decrypt(header.nonce, ciphertext, prefix)
    except InvalidTag:
        raise BundleTampered(f"bundle {path.name} was modified or is corrupted (authentication "
                             f"failed){_RECOPY}") from None
    return Bundle(path, header, _decode_content(path, plaintext))


def _read_limited(path: Path) -> bytes:
    """The bundle's bytes; a FIFO, a device or an oversized file is refused without blocking."""
    return read_limited(Path(path), MAX_BUNDLE_BYTES, "bundle", NotABundle)[0]


def _parse(path: Path, data: bytes) -> tuple[BundleHeader, bytes, bytes]:
    """Split the file into header, associated data and ciphertext, checking every length."""
    fixed = len(MAGIC) + _LENGTH.size
    if not data or data[:len(MAGIC)] != MAGIC[:len(data)]:
        raise NotABundle(f"{path.name} is not a bindpkcs11 bundle")
    if len(data) < fixed:
        raise BundleTruncated(f"bundle {path.name} is truncated ({len(data)} bytes){_RECOPY}")
    (header_length,) = _LENGTH.unpack_from(data, len(MAGIC))
    if header_length > MAX_HEADER_BYTES:
        raise BundleTampered(f"bundle {path.name} has a corrupted header length")
    if len(data) < fixed + header_length:
        raise BundleTruncated(f"bundle {path.name} is truncated inside its header{_RECOPY}")
    header = _decode_header(path, data[fixed:fixed + header_length])
    prefix, ciphertext = data[:fixed + header_length], data[fixed + header_length:]
    if len(ciphertext) < header.payload_length:
        raise BundleTruncated(f"bundle {path.name} is truncated: {len(ciphertext)} of "
                              f"{header.payload_length} payload bytes present{_RECOPY}")
    if len(ciphertext) > header.payload_length:
        raise BundleTampered(f"bundle {path.name} has {len(ciphertext) - header.payload_length} "
                             f"bytes of trailing data{_RECOPY}")
    return header, prefix, ciphertext


def _prefix(header: BundleHeader) -> bytes:
    encoded = json.dumps(_header_json(header), sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + _LENGTH.pack(len(encoded)) + encoded


def _header_fields(header: BundleHeader) -> dict:
    return {name: getattr(header, name) for name in BundleHeader.__dataclass_fields__}


def _header_json(header: BundleHeader) -> dict:
    fields = _header_fields(header)
    fields["kdf"] = {"name": "scrypt", "salt": header.kdf.salt.hex(), "n": header.kdf.n,
                     "r": header.kdf.r, "p": header.kdf.p}
    fields["cipher"] = "AES-256-GCM"
    fields["check"], fields["nonce"] = header.check.hex(), header.nonce.hex()
    fields["format"] = "bindpkcs11-bundle"
    fields["ksk_tags"], fields["ds_tags"] = list(header.ksk_tags), list(header.ds_tags)
    return fields


def _decode_header(path: Path, raw: bytes) -> BundleHeader:
    try:
        fields = json.loads(raw)
        version = fields.get("version")
    except (ValueError, AttributeError):
        raise BundleTampered(f"bundle {path.name} has a corrupted header") from None
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise UnsupportedBundleVersion(
            f"bundle {path.name} has format version {version!r}; this bindpkcs11 reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: use the bindpkcs11 release that made it"
        )
    try:
        kdf = fields["kdf"]
        params = KdfParams(bytes.fromhex(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
        if kdf["name"] != "scrypt" or fields["cipher"] != "AES-256-GCM":
            raise ValueError("unknown algorithms")
        ksk_tags, ds_tags = _ksk_fields(fields, version)
        header = BundleHeader(
            zone=str(fields["zone"]), index=int(fields["index"]),
            period_start=int(fields["period_start"]), period_end=int(fields["period_end"]),
            inception=int(fields["inception"]), expiration=int(fields["expiration"]),
            ksk_tags=ksk_tags, ds_tags=ds_tags, ceremony=str(fields["ceremony"]), kdf=params,
            check=bytes.fromhex(fields["check"]), nonce=bytes.fromhex(fields["nonce"]),
            payload_length=int(fields["payload_length"]), version=version,
        )
    except (KeyError, TypeError, ValueError):
        raise BundleTampered(f"bundle {path.name} has a corrupted header") from None
    if not (1 <= params.n <= MAX_SCRYPT_N and params.r <= 32 and params.p <= 16):
        raise BundleTampered(f"bundle {path.name} asks for unreasonable scrypt parameters")
    return header


def _ksk_fields(fields: dict, version: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ksk_tags, ds_tags): version 1 had one `ksk_tag`, the KSK whose DS was at the parent."""
    if version == 1:
        tag = int(fields["ksk_tag"])
        return (tag,), (tag,)
    ksk_tags = tuple(int(tag) for tag in fields["ksk_tags"])
    ds_tags = tuple(int(tag) for tag in fields["ds_tags"])
    if not 1 <= len(ksk_tags) <= MAX_KSKS or len(set(ksk_tags)) != len(ksk_tags):
        raise ValueError("one or two distinct KSKs")
    return ksk_tags, ds_tags


def _encode_content(content: BundleContent) -> bytes:
    return json.dumps({
        "dnskey_rrset": content.dnskey_rrset,
        "rrsigs": content.rrsigs,
        "signing_tags": list(content.signing_tags),
        "zsks": [{"tag": z.tag, "key": z.key_text, "private": z.private_text} for z in content.zsks],
        "ksk_keys": list(content.ksk_keys),
        "sync_rrsets": content.sync_rrsets,
        "sync_rrsigs": content.sync_rrsigs,
    }, sort_keys=True).encode()


def _decode_content(path: Path, plaintext: bytes) -> BundleContent:
    try:
        fields = json.loads(plaintext)
        return BundleContent(
            dnskey_rrset=str(fields["dnskey_rrset"]),
            rrsigs=str(fields["rrsigs"]),
            signing_tags=tuple(int(tag) for tag in fields["signing_tags"]),
            zsks=tuple(ZskMaterial(int(z["tag"]), str(z["key"]), str(z["private"]))
                       for z in fields["zsks"]),
            ksk_keys=_ksk_keys(fields),
            sync_rrsets=str(fields.get("sync_rrsets", "")),
            sync_rrsigs=str(fields.get("sync_rrsigs", "")),
        )
    except (KeyError, TypeError, ValueError):
        raise BundleTampered(f"bundle {path.name} decrypted but its content is malformed") from None


def _ksk_keys(fields: dict) -> tuple[str, ...]:
    """Version 2's list of KSK key files, or version 1's one `ksk_key` (absent in early bundles)."""
    if "ksk_keys" in fields:
        if not isinstance(fields["ksk_keys"], list):
            raise ValueError("ksk_keys is not a list")
        return tuple(str(text) for text in fields["ksk_keys"])
    single = str(fields.get("ksk_key", ""))
    return (single,) if single else ()


def bundles_in(directory: Path) -> list[Path]:
    """Every `*.bundle` file in `directory`, sorted by name (= by period start)."""
    return sorted(Path(directory).glob(f"*{SUFFIX}"))
