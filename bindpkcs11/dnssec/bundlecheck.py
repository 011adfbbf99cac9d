"""What the online signer checks in a decrypted bundle before it signs anything with it.

The bundle's header names the zone and the KSK (`ksk_tag`) the ceremony signed with, and it is
authenticated (GCM associated data), so it is the signer's trust anchor: a bundle is used only if
it is for this zone, its DNSKEY RRset holds that KSK (SEP flag, this zone's owner name), the
RRset's signature verifies with that KSK alone, and every ZSK it carries is this zone's, is in
the RRset as a zone key and is one of the period's signing keys. One function per rule, each
raising an exception named after it; the message names the bundle.
"""

from __future__ import annotations

import dns.dnssec
import dns.exception
import dns.name
import dns.rdata
import dns.rdatatype
import dns.rrset

from bindpkcs11.dnssec.bundles import Bundle
from bindpkcs11.dnssec.dnskey import KSK_FLAGS, ZSK_FLAGS, key_tag
from bindpkcs11.dnssec.keyfile import parse_dnskey_line
from bindpkcs11.errors import KeyFileError
from bindpkcs11.dnssec.refusals import ValidationFailed
from bindpkcs11.timespec import to_bind_timestamp


class BundleNotForZone(ValidationFailed):
    """The bundle was made for another zone."""


class KskNotInDnskeySet(ValidationFailed):
    """The bundle's KSK is not in its DNSKEY RRset as a key-signing key of the zone."""


class DnskeyNotSignedByKsk(ValidationFailed):
    """The bundle's DNSKEY RRset is not signed by the bundle's KSK."""


class ZskNotOfZone(ValidationFailed):
    """A ZSK in the bundle is not a zone key of this zone in its DNSKEY RRset."""


def check_bundle(bundle: Bundle, zone: dns.name.Name) -> dns.rrset.RRset:
    """Every rule below; returns the DNSKEY RRset holding only the KSK (the trust anchor)."""
    dnskeys = parse_rrset(bundle, bundle.content.dnskey_rrset)
    check_bundle_for_zone(bundle, zone, dnskeys)
    anchor = check_ksk_in_dnskey_set(bundle, zone, dnskeys)
    check_dnskey_signed_by_ksk(bundle, dnskeys, anchor, bundle.header.period_start)
    check_zsks_of_zone(bundle, zone, dnskeys)
    return anchor


def check_bundle_for_zone(bundle: Bundle, zone: dns.name.Name, dnskeys: dns.rrset.RRset) -> None:
    """BUNDLE-FOR-ZONE: header and DNSKEY RRset name this zone (a bundle for X never signs Y)."""
    name = bundle.path.name
    if _name(bundle, bundle.header.zone) != zone:
        raise BundleNotForZone(f"bundle {name} is for zone {bundle.header.zone}, not {zone}: "
                               "give the signer this zone's bundles")
    if dnskeys.name != zone or dnskeys.rdtype != dns.rdatatype.DNSKEY:
        raise BundleNotForZone(f"bundle {name} holds a DNSKEY RRset for {dnskeys.name}, not {zone}")


def check_ksk_in_dnskey_set(bundle: Bundle, zone: dns.name.Name,
                            dnskeys: dns.rrset.RRset) -> dns.rrset.RRset:
    """KSK-IN-DNSKEY-SET: the header's KSK is in the RRset with the SEP flag, and (when the
    bundle carries the KSK's key file) that file's owner is this zone and its key is that one."""
    name, tag = bundle.path.name, bundle.header.ksk_tag
    ksks = [key for key in dnskeys if key_tag(key) == tag and key.flags == KSK_FLAGS]
    if not ksks:
        raise KskNotInDnskeySet(f"bundle {name}'s DNSKEY RRset has no KSK with tag {tag} (SEP "
                                "flag set): it does not chain to the ceremony's KSK")
    if bundle.content.ksk_key_text:
        owner, dnskey = _key_file_dnskey(bundle, bundle.content.ksk_key_text, "KSK")
        if owner != zone or dnskey not in ksks:
            raise KskNotInDnskeySet(f"bundle {name} was signed with KSK {key_tag(dnskey)} of "
                                    f"{owner}, not a KSK of {zone}: hold the ceremony again with "
                                    "this zone's KSK")
    anchor = dns.rrset.RRset(zone, dnskeys.rdclass, dns.rdatatype.DNSKEY)
    anchor.update_ttl(dnskeys.ttl)
    for key in ksks:
        anchor.add(key)
    return anchor


def check_dnskey_signed_by_ksk(bundle: Bundle, dnskeys: dns.rrset.RRset, anchor: dns.rrset.RRset,
                               when: int) -> None:
    """DNSKEY-SIGNED-BY-KSK: the RRset's RRSIGs are the KSK's alone and verify with it at `when`."""
    name, tag = bundle.path.name, bundle.header.ksk_tag
    rrsigs = parse_rrset(bundle, bundle.content.rrsigs)
    if rrsigs.name != dnskeys.name or rrsigs.covers != dns.rdatatype.DNSKEY:
        raise DnskeyNotSignedByKsk(f"bundle {name}'s signatures do not cover its DNSKEY RRset")
    strangers = sorted({r.key_tag for r in rrsigs if r.key_tag != tag or r.signer != dnskeys.name})
    if strangers:
        raise DnskeyNotSignedByKsk(f"bundle {name}'s DNSKEY RRset is signed by key {strangers[0]}, "
                                   f"not by its KSK {tag}")
    try:
        dns.dnssec.validate(dnskeys, rrsigs, {anchor.name: anchor}, now=when)
    except dns.dnssec.ValidationFailure as error:
        raise DnskeyNotSignedByKsk(f"bundle {name}'s DNSKEY signature does not verify with KSK "
                                   f"{tag} at {to_bind_timestamp(when)} ({error})") from None


def check_zsks_of_zone(bundle: Bundle, zone: dns.name.Name, dnskeys: dns.rrset.RRset) -> None:
    """ZSK-OF-ZONE: each ZSK's key file is this zone's, its key is a zone key in the RRset, and
    the ZSKs carried are exactly the period's signing keys."""
    name = bundle.path.name
    for zsk in bundle.content.zsks:
        owner, dnskey = _key_file_dnskey(bundle, zsk.key_text, f"ZSK {zsk.tag}")
        if owner != zone:
            raise ZskNotOfZone(f"bundle {name} holds ZSK {zsk.tag} of {owner}, not of {zone}")
        if key_tag(dnskey) != zsk.tag or dnskey.flags != ZSK_FLAGS or dnskey not in dnskeys:
            raise ZskNotOfZone(f"bundle {name} holds ZSK {zsk.tag}, which is not a zone key in its "
                               "DNSKEY RRset")
    carried = tuple(sorted(z.tag for z in bundle.content.zsks))
    if carried != tuple(sorted(bundle.content.signing_tags)) or not carried:
        raise ZskNotOfZone(f"bundle {name} carries ZSKs {carried} but names signing keys "
                           f"{bundle.content.signing_tags}")


def parse_rrset(bundle: Bundle, text: str) -> dns.rrset.RRset:
    """One RRset from zone file lines in full style (owner TTL class type rdata)."""
    rrset = None
    try:
        for line in text.splitlines():
            if not line.strip():
                continue
            owner, ttl, rdclass, rdtype, rdata = line.split(None, 4)
            parsed = dns.rdata.from_text(rdclass, rdtype, rdata)
            if rrset is None:
                rrset = dns.rrset.RRset(dns.name.from_text(owner), parsed.rdclass, parsed.rdtype,
                                        parsed.covers())
                rrset.update_ttl(int(ttl))
            elif dns.name.from_text(owner) != rrset.name or parsed.rdtype != rrset.rdtype:
                raise ValueError("more than one RRset")
            rrset.add(parsed)
    except (ValueError, dns.exception.DNSException) as error:
        raise ValidationFailed(f"bundle {bundle.path.name} holds a malformed RRset ({error})") from None
    if rrset is None:
        raise ValidationFailed(f"bundle {bundle.path.name} holds an empty RRset")
    return rrset


def _key_file_dnskey(bundle: Bundle, key_text: str, what: str):
    """(owner, DNSKEY rdata) from a `.key` file's text, read as keyfile.py reads key files."""
    try:
        return parse_dnskey_line(f"bundle {bundle.path.name}: the {what} key file",
                                 key_text.splitlines())
    except KeyFileError:
        raise ValidationFailed(f"bundle {bundle.path.name}: the {what} key file has no valid "
                               "DNSKEY line") from None


def _name(bundle: Bundle, text: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException:
        raise BundleNotForZone(f"bundle {bundle.path.name} names an invalid zone") from None
