"""KEK shares: a 256-bit key split by Shamir's scheme, each share sealed under its own password.

Shamir comes from pycryptodome (`Crypto.Protocol.SecretSharing.Shamir`, GF(2^128)), which takes
16-byte secrets: the KEK's two halves are split with the same indices, so one share file carries
both pieces of one participant. Each share file is scrypt + AES-256-GCM with the KDF and check value
of bundles.py (one KDF and AEAD in the project): the JSON header is the authenticated data, so a
share cannot be moved to another set or index. The KCV (first 3 bytes of AES-ECB(KEK, 0^128), the
usual key check value) identifies the KEK without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bindpkcs11.dnssec.bundles import KdfParams, derive_key
from bindpkcs11.errors import BindPkcs11Error, UsageError

FORMAT = "bindpkcs11-kek-share-v1"
KEK_BYTES = 32
MAX_SHARES = 16
MAX_SHARE_FILE_BYTES = 4096
MIN_PASSWORD = 8


class ShareError(BindPkcs11Error):
    """The share file cannot be used."""

    exit_code = 9


class WrongSharePassword(ShareError):
    """Wrong password for this share."""


@dataclass(frozen=True)
class ShareHeader:
    """The authenticated, unencrypted part of a share file."""

    set_id: str
    kcv: str
    index: int
    shares: int
    threshold: int
    kdf: KdfParams
    check: bytes
    nonce: bytes


@dataclass(frozen=True)
class Share:
    """One participant's share in the clear: `value` is the two 16-byte Shamir pieces."""

    header: ShareHeader
    value: bytes = field(repr=False)


def new_kek() -> bytes:
    return os.urandom(KEK_BYTES)


def kcv(kek: bytes) -> str:
    """Key check value: AES-ECB of a zero block, first 3 bytes (what SoftHSM's CKA_CHECK_VALUE gives)."""
    encryptor = Cipher(algorithms.AES(kek), modes.ECB()).encryptor()
    return (encryptor.update(bytes(16)) + encryptor.finalize())[:3].hex()


def check_counts(shares: int, threshold: int) -> None:
    if not 2 <= shares <= MAX_SHARES:
        raise UsageError(f"--shares must be between 2 and {MAX_SHARES}")
    if not 2 <= threshold <= shares:
        raise UsageError(f"--threshold must be between 2 and --shares ({shares})")


def split(kek: bytes, shares: int, threshold: int) -> list[tuple[int, bytes]]:
    """(index, 32-byte share) per participant; any `threshold` of them rebuild `kek`."""
    low = Shamir.split(threshold, shares, kek[:16])
    high = Shamir.split(threshold, shares, kek[16:])
    return [(index, a + b) for (index, a), (_, b) in zip(low, high)]


def combine(parts: list[tuple[int, bytes]]) -> bytes:
    low = Shamir.combine([(index, value[:16]) for index, value in parts])
    high = Shamir.combine([(index, value[16:]) for index, value in parts])
    return low + high


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"a share password must have at least {MIN_PASSWORD} characters")


def seal(set_id: str, kek_kcv: str, index: int, shares: int, threshold: int, value: bytes,
         password: str) -> bytes:
    """The share file's bytes: a JSON header line, then the AES-GCM ciphertext in hex."""
    key = derive_key(password.encode(), KdfParams(salt=os.urandom(16)))
    header = ShareHeader(set_id, kek_kcv, index, shares, threshold, key.kdf, key.check, os.urandom(12))
    prefix = _header_line(header)
    ciphertext = AESGCM(key.aes_key).encrypt(header.nonce, value, prefix)
    return prefix + ciphertext.hex().encode() + b"\n"


def fingerprint(data: bytes) -> str:
    """What an operator writes down beside each share: SHA-256 of the file, first 16 hex digits."""
    return hashlib.sha256(data).hexdigest()[:16]


def read_header(path: Path, data: bytes) -> tuple[ShareHeader, bytes, bytes]:
    """Header, header line and ciphertext; ShareError in one line for anything malformed."""
    first, _, rest = data.partition(b"\n")
    try:
        fields = json.loads(first)
        if fields.get("format") != FORMAT:
            raise ShareError(f"{path} is not a bindpkcs11 KEK share (format {fields.get('format')!r})")
        kdf = fields["kdf"]
        header = ShareHeader(
            set_id=str(fields["set"]), kcv=str(fields["kcv"]), index=int(fields["index"]),
            shares=int(fields["shares"]), threshold=int(fields["threshold"]),
            kdf=KdfParams(bytes.fromhex(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"])),
            check=bytes.fromhex(fields["check"]), nonce=bytes.fromhex(fields["nonce"]))
        ciphertext = bytes.fromhex(rest.decode().strip())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
        raise ShareError(f"{path} is not a readable KEK share file (damaged or truncated): "
                         "use another copy of this share") from None
    if not (1 <= header.index <= MAX_SHARES and 2 <= header.threshold <= header.shares <= MAX_SHARES
            and header.kdf.n <= 1 << 20 and header.kdf.r <= 32 and header.kdf.p <= 16):
        raise ShareError(f"{path} has impossible share parameters: it is damaged")
    return header, first + b"\n", ciphertext


def open_share(path: Path, data: bytes, password: str) -> Share:
    """Decrypt a share file; WrongSharePassword or ShareError (damaged) in one line each."""
    header, prefix, ciphertext = read_header(path, data)
    key = derive_key(password.encode(), header.kdf)
    if not hmac.compare_digest(key.check, header.check):
        raise WrongSharePassword(f"wrong password for share {path} (share {header.index} of KEK "
                                 f"{header.kcv}): nothing was imported")
    try:
        value = AESGCM(key.aes_key).decrypt(header.nonce, ciphertext, prefix)
    except InvalidTag:
        raise ShareError(f"share {path} was modified or is damaged (authentication failed): use "
                         "another copy of this share") from None
    if len(value) != KEK_BYTES:
        raise ShareError(f"share {path} holds {len(value)} bytes, not {KEK_BYTES}: it is damaged")
    return Share(header, value)


def _header_line(header: ShareHeader) -> bytes:
    fields = {"format": FORMAT, "set": header.set_id, "kcv": header.kcv, "index": header.index,
              "shares": header.shares, "threshold": header.threshold,
              "kdf": {"name": "scrypt", "salt": header.kdf.salt.hex(), "n": header.kdf.n,
                      "r": header.kdf.r, "p": header.kdf.p},
              "cipher": "AES-256-GCM", "check": header.check.hex(), "nonce": header.nonce.hex()}
    return json.dumps(fields, sort_keys=True).encode() + b"\n"
