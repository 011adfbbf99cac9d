"""Zone text in BIND's `full` style (one record per line, absolute owner, TTL and class on every
line), as named-compilezone and dnssec-signzone write it with `-s full` / `-O full`.

The online signer edits zones here as text rather than through a parsed zone: dnspython needs
about 7 s to parse a 100k-record zone, while a line pass over the canonical form costs a fraction
of a second and keeps the signer within a few percent of a plain dnssec-signzone run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bindpkcs11.dnssec.refusals import ValidationFailed, ZoneInvalid

DNSSEC_TYPES = frozenset({"DNSKEY", "RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "CDS", "CDNSKEY"})
# The apex RRsets the ceremony's KSKs sign (the bundle carries their RRSIGs).
KSK_SIGNED = (b"DNSKEY", b"CDS", b"CDNSKEY")
_KSK_RRSIG_MARKS = tuple(f"RRSIG{sep}{kind.decode()} ".encode()
                         for kind in KSK_SIGNED for sep in ("\t", " "))


@dataclass(frozen=True)
class PreparedZone:
    """The zone handed to dnssec-signzone: new serial, old DNSSEC records gone, bundle DNSKEYs in."""

    text: str
    unsigned_serial: int
    serial: int
    stripped: int


def prepare_unsigned(full_text: str, origin: str, choose_serial: Callable[[int], int],
                     dnskey_rrset_text: str) -> PreparedZone:
    """Set the SOA serial to `choose_serial(unsigned serial)`, drop DNSSEC records the input may
    carry (a previously signed zone, its own DNSKEYs), and append the bundle's DNSKEY RRset (and
    its CDS/CDNSKEY RRsets, given in the same text)."""
    lines, stripped = [], 0
    unsigned_serial = serial = None
    for line in full_text.splitlines():
        if not line.strip() or line[0] in ";$":
            continue
        parts = line.split(None, 4)
        if len(parts) < 5:
            raise ZoneInvalid(f"unexpected line in the compiled zone: {line[:80]!r}")
        rtype = parts[3].upper()
        if rtype in DNSSEC_TYPES:
            stripped += 1
            continue
        if rtype == "SOA" and serial is None and parts[0].lower() == origin.lower():
            fields = parts[4].split()
            unsigned_serial = int(fields[2])
            serial = choose_serial(unsigned_serial)
            fields[2] = str(serial)
            line = " ".join(parts[:4] + fields)
        lines.append(line)
    if serial is None or unsigned_serial is None:
        raise ZoneInvalid(f"the unsigned zone has no SOA record at {origin}")
    lines.extend(dnskey_rrset_text.splitlines())
    return PreparedZone("\n".join(lines) + "\n", unsigned_serial, serial, stripped)


@dataclass(frozen=True)
class SplicedZone:
    """The zone to publish and the DNSKEY lines found in it (to compare with the bundle's)."""

    data: bytes
    dnskey_lines: tuple[str, ...]
    removed_rrsigs: int


def splice_dnskey_rrsigs(signed: bytes, origin: str, rrsig_text: str) -> SplicedZone:
    """Replace the apex DNSKEY (and CDS/CDNSKEY) RRSIGs dnssec-signzone made with the bundle's
    pre-signed KSK ones (`rrsig_text` holds them all).

    Only the apex block at the top of the file is touched; the rest is copied as bytes, and such
    an RRSIG anywhere in it means the file is not what this code expects: refuse.
    """
    apex = origin.lower().encode()
    head, dnskeys, removed, position = [], [], 0, 0
    while position < len(signed):
        end = signed.find(b"\n", position)
        end = len(signed) if end < 0 else end
        line = signed[position:end]
        parts = line.split(None, 5)
        if parts and not parts[0].startswith(b";") and parts[0].lower() != apex:
            break
        position = end + 1
        if len(parts) >= 5 and parts[3] == b"RRSIG" and parts[4] in KSK_SIGNED:
            removed += 1
            continue
        if len(parts) >= 4 and parts[3] == b"DNSKEY":
            dnskeys.append(line.decode())
        if parts:
            head.append(line)
    tail = signed[position:]
    if not dnskeys:
        raise ValidationFailed("the signed zone has no DNSKEY RRset at the apex")
    if any(mark in tail for mark in _KSK_RRSIG_MARKS):
        raise ValidationFailed("the signed zone has DNSKEY/CDS/CDNSKEY signatures outside its apex "
                               "block")
    last = max(i for i, line in enumerate(head) if line.split(None, 4)[3:4] == [b"DNSKEY"])
    insert = [line.encode() for line in rrsig_text.splitlines() if line.strip()]
    head[last + 1:last + 1] = insert
    return SplicedZone(b"\n".join(head) + b"\n" + tail, tuple(dnskeys), removed)


def soa_serial(head: str, origin: str) -> int | None:
    """The apex SOA serial in the first lines of a full-style zone (None if not found)."""
    for line in head.splitlines():
        parts = line.split(None, 4)
        if len(parts) == 5 and parts[3].upper() == "SOA" and parts[0].lower() == origin.lower():
            fields = parts[4].split()
            if len(fields) >= 3 and fields[2].isdigit():
                return int(fields[2])
    return None


def check_rrsig_signers(signed: bytes, origin: str, ksk_tags: tuple[int, ...],
                        zsk_tags: tuple[int, ...]) -> int:
    """Every RRSIG in the zone to publish is by this zone, the DNSKEY (and CDS/CDNSKEY) ones by
    the KSKs `ksk_tags`, every other one by a ZSK in `zsk_tags`: the whole zone chains to the
    bundle's KSKs. A line pass (no parsing into objects), so it costs little next to the
    signing; returns the count."""
    apex = origin.lower().encode()
    allowed = {str(tag).encode() for tag in zsk_tags}
    ksk = {str(tag).encode() for tag in ksk_tags}
    count = 0
    for line in signed.split(b"\n"):
        parts = line.split(None, 4)
        if len(parts) < 5 or parts[3] != b"RRSIG" or parts[0].startswith(b";"):
            continue
        fields = parts[4].split(None, 8)
        if len(fields) < 9:
            raise ValidationFailed(f"malformed RRSIG in the signed zone: {line[:80]!r}")
        covered, tag, signer = fields[0], fields[6], fields[7].lower()
        expected = ksk if covered in KSK_SIGNED else allowed
        if signer != apex or tag not in expected:
            raise ValidationFailed(
                f"the RRSIG over {parts[0].decode(errors='replace')} {covered.decode(errors='replace')} "
                f"is by key {tag.decode(errors='replace')} of {signer.decode(errors='replace')}, not "
                f"by the bundle's {'KSK' if covered in KSK_SIGNED else 'ZSKs'}: nothing published")
        count += 1
    if not count:
        raise ValidationFailed("the signed zone has no RRSIG records: nothing published")
    return count
