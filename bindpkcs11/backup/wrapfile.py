"""The wrap file: one DNSSEC private key wrapped under a KEK, with what is needed to check it.

JSON with the key type, label, id, DNSKEY (public key, algorithm, flags), key tag, KEK check value,
mechanism, key timing, the wrapped bytes and a SHA-256 over all of it. `verify` needs no token: it
checks the digest, that the DNSKEY parses and that its tag is the one recorded. The wrapped bytes
themselves are authenticated by AES key wrap on unwrap (a wrong KEK or a changed byte fails there).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY

from bindpkcs11.dnssec.dnskey import key_tag
from bindpkcs11.errors import BindPkcs11Error

FORMAT = "bindpkcs11-wrap-v1"
MAX_WRAP_FILE_BYTES = 64 << 10


class WrapFileDamaged(BindPkcs11Error):
    """The wrap file is damaged."""

    exit_code = 9


@dataclass(frozen=True)
class WrapRecord:
    """Everything a wrap file says; `wrapped` is the C_WrapKey output."""

    zone: str
    algorithm: int
    flags: int
    public_key: bytes
    tag: int
    key_kind: str
    label: str
    object_id: bytes
    kek_kcv: str
    mechanism: str
    source_token: str
    timing: dict[str, int]
    wrapped: bytes = field(repr=False)

    def dnskey(self) -> "dns.rdtypes.ANY.DNSKEY.DNSKEY":
        return dns.rdtypes.ANY.DNSKEY.DNSKEY(dns.rdataclass.IN, dns.rdatatype.DNSKEY, self.flags, 3,
                                             self.algorithm, self.public_key)

    @property
    def role(self) -> str:
        return "ksk" if self.flags & 1 else "zsk"


def encode(record: WrapRecord) -> bytes:
    body = _body(record)
    digest = hashlib.sha256(_canonical(body)).hexdigest()
    return json.dumps({**body, "sha256": digest}, indent=1, sort_keys=True).encode() + b"\n"


def decode(path: Path, data: bytes) -> WrapRecord:
    """The record of a wrap file, checked: WrapFileDamaged in one line for anything wrong."""
    damaged = WrapFileDamaged(f"wrap file {path} is damaged or truncated (not a complete "
                              f"{FORMAT} file): use another copy")
    try:
        fields = json.loads(data)
        if not isinstance(fields, dict):
            raise damaged
        if fields.get("format") != FORMAT:
            raise WrapFileDamaged(f"{path} is not a bindpkcs11 wrap file")
        digest = fields.pop("sha256")
        if hashlib.sha256(_canonical(fields)).hexdigest() != digest:
            raise WrapFileDamaged(f"wrap file {path} was modified or is corrupted (SHA-256 "
                                  "mismatch): use another copy")
        record = WrapRecord(
            zone=str(fields["zone"]), algorithm=int(fields["algorithm"]), flags=int(fields["flags"]),
            public_key=base64.b64decode(fields["public_key"], validate=True), tag=int(fields["tag"]),
            key_kind=str(fields["key_kind"]), label=str(fields["label"]),
            object_id=bytes.fromhex(fields["id"]), kek_kcv=str(fields["kek_kcv"]),
            mechanism=str(fields["mechanism"]), source_token=str(fields["source_token"]),
            timing={str(k): int(v) for k, v in fields["timing"].items()},
            wrapped=base64.b64decode(fields["wrapped"], validate=True))
        dns.name.from_text(record.zone)
        computed = key_tag(record.dnskey())
    except WrapFileDamaged:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError,
            dns.exception.DNSException):
        raise damaged from None
    if computed != record.tag or record.key_kind not in ("rsa", "ec", "ed25519"):
        raise WrapFileDamaged(f"wrap file {path}: its DNSKEY has tag {computed}, not {record.tag}")
    return record


def _body(record: WrapRecord) -> dict:
    fields = asdict(record)
    fields["public_key"] = base64.b64encode(record.public_key).decode()
    fields["wrapped"] = base64.b64encode(record.wrapped).decode()
    fields["id"] = fields.pop("object_id").hex()
    return {"format": FORMAT, **fields}


def _canonical(fields: dict) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
