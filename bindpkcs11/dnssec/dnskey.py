"""DNSKEY rdata from public key material, key tags and DS records (dnspython does the wire work)."""

from __future__ import annotations

import dns.dnssec
import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY

from bindpkcs11.dnssec.algorithms import Algorithm
from bindpkcs11.errors import InvalidDomain
from bindpkcs11.token.records import PublicKey

KSK_FLAGS = 257
ZSK_FLAGS = 256
ROLE_FLAGS = {"ksk": KSK_FLAGS, "zsk": ZSK_FLAGS}


def int_bytes(value: int) -> bytes:
    """Big-endian unsigned bytes without leading zeros (RFC 3110, BIND's .private fields)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def public_key_bytes(public: PublicKey) -> bytes:
    """The DNSKEY public key field: RFC 3110 for RSA, x||y (RFC 6605) for ECDSA, RFC 8080 for EdDSA."""
    if public.kind == "rsa":
        exponent = int_bytes(public.exponent)
        modulus = int_bytes(public.modulus)
        if len(exponent) < 256:
            prefix = bytes([len(exponent)])
        else:
            prefix = b"\x00" + len(exponent).to_bytes(2, "big")
        return prefix + exponent + modulus
    return public.point


def make_dnskey(public: PublicKey, algorithm: Algorithm, role: str) -> "dns.rdtypes.ANY.DNSKEY.DNSKEY":
    return dns.rdtypes.ANY.DNSKEY.DNSKEY(
        dns.rdataclass.IN,
        dns.rdatatype.DNSKEY,
        ROLE_FLAGS[role],
        3,
        algorithm.number,
        public_key_bytes(public),
    )


def key_tag(dnskey: "dns.rdtypes.ANY.DNSKEY.DNSKEY") -> int:
    return dns.dnssec.key_id(dnskey)


def ds_text(zone: dns.name.Name, dnskey: "dns.rdtypes.ANY.DNSKEY.DNSKEY", ttl: int | None = None) -> str:
    """The DS record (SHA-256) as a zone file line, as dnssec-dsfromkey prints it."""
    ds = dns.dnssec.make_ds(zone, dnskey, "SHA256")
    ttl_text = f" {ttl}" if ttl is not None else ""
    return (
        f"{zone.to_text()}{ttl_text} IN DS {ds.key_tag} {ds.algorithm} {ds.digest_type} "
        f"{ds.digest.hex().upper()}"
    )


def parse_zone_name(text: str) -> dns.name.Name:
    """A zone name an operator typed; InvalidDomain with a reason otherwise.

    Labels are restricted to letters, digits, '-' and '_': anything else is almost always a typo
    and would make awkward key file names. The name is lower-cased: DNS names compare without
    case, so `Example.TEST` must land in the same instance directory, lock and key files as
    `example.test` (two instances of one zone would be two named serving it).
    """
    candidate = text.strip().lower()
    try:
        name = dns.name.from_text(candidate)
    except dns.exception.DNSException as error:
        raise InvalidDomain(f"invalid domain name '{text}': {error}") from None
    if not candidate or candidate in (".",):
        if candidate == ".":
            return dns.name.root
        raise InvalidDomain("empty domain name")
    for label in name.labels[:-1]:
        if not all(chr(c).isascii() and (chr(c).isalnum() or chr(c) in "-_") for c in label):
            raise InvalidDomain(
                f"invalid domain name '{text}': label '{label.decode(errors='replace')}' may contain "
                "only letters, digits, '-' and '_'"
            )
        if label.startswith(b"-") or label.endswith(b"-"):
            raise InvalidDomain(
                f"invalid domain name '{text}': a label may not start or end with '-'"
            )
    return name


def zone_label_text(zone: dns.name.Name) -> str:
    """The zone as it appears in object labels and file names (no trailing dot; root is '.')."""
    return zone.to_text(omit_final_dot=True) if zone != dns.name.root else "."
