"""What the online signer checks in a decrypted bundle before it signs anything with it.

The bundle's header names the zone, the KSKs (`ksk_tags`: one, or two during a KSK rollover) the
ceremony signed with and which of them have their DS at the parent (`ds_tags`), and it is
authenticated (GCM associated data), so it is the signer's trust anchor: a bundle is used only if
it is for this zone, its DNSKEY RRset holds those KSKs (SEP flag, this zone's owner name), the
RRset carries one signature by each of them and each verifies with its KSK, one of them has its
DS at the parent (so the DNSKEY RRset served is always signed by a KSK whose DS the operator said
the parent serves), its CDS/CDNSKEY RRsets (if any) name KSKs of the RRset and are signed the
same way, and every ZSK it carries is this zone's, is in the RRset as a zone key and is one of
the period's signing keys. One function per rule, each raising an exception named after it; the
message names the bundle.
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


class NoKskWithDsAtParent(ValidationFailed):
    """None of the bundle's KSKs has its DS at the parent."""


class SyncRecordsInvalid(ValidationFailed):
    """The bundle's CDS/CDNSKEY records do not name its KSKs or are not signed by them."""


SYNC_TYPES = (dns.rdatatype.CDS, dns.rdatatype.CDNSKEY)


def check_bundle(bundle: Bundle, zone: dns.name.Name) -> dns.rrset.RRset:
    """Every rule below; returns the DNSKEY RRset holding only the KSKs (the trust anchor)."""
    dnskeys = parse_rrset(bundle, bundle.content.dnskey_rrset)
    check_bundle_for_zone(bundle, zone, dnskeys)
    anchor = check_ksk_in_dnskey_set(bundle, zone, dnskeys)
    check_ksk_with_ds_at_parent(bundle)
    check_dnskey_signed_by_ksk(bundle, dnskeys, anchor, bundle.header.period_start)
    check_sync_records(bundle, zone, anchor, bundle.header.period_start)
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
    """KSK-IN-DNSKEY-SET: each of the header's KSKs is in the RRset with the SEP flag, and (when
    the bundle carries the KSKs' key files) each file's owner is this zone and its key one of
    them."""
    name, tags = bundle.path.name, bundle.header.ksk_tags
    ksks = [key for key in dnskeys if key_tag(key) in tags and key.flags == KSK_FLAGS]
    for tag in tags:
        if not any(key_tag(key) == tag for key in ksks):
            raise KskNotInDnskeySet(f"bundle {name}'s DNSKEY RRset has no KSK with tag {tag} (SEP "
                                    "flag set): it does not chain to the ceremony's KSK")
    for text in bundle.content.ksk_keys:
        owner, dnskey = _key_file_dnskey(bundle, text, "KSK")
        if owner != zone or dnskey not in ksks:
            raise KskNotInDnskeySet(f"bundle {name} was signed with KSK {key_tag(dnskey)} of "
                                    f"{owner}, not a KSK of {zone}: hold the ceremony again with "
                                    "this zone's KSK")
    anchor = dns.rrset.RRset(zone, dnskeys.rdclass, dns.rdatatype.DNSKEY)
    anchor.update_ttl(dnskeys.ttl)
    for key in ksks:
        anchor.add(key)
    return anchor


def check_ksk_with_ds_at_parent(bundle: Bundle) -> None:
    """KSK-DS-AT-PARENT: one of the KSKs that sign has its DS at the parent (as the operator
    confirmed when the ceremony was held), and no other key is named as such."""
    header = bundle.header
    if not header.ds_tags or not set(header.ds_tags) <= set(header.ksk_tags):
        raise NoKskWithDsAtParent(
            f"bundle {bundle.path.name} names DS at the parent for KSK "
            f"{', '.join(map(str, header.ds_tags)) or 'none'} among its signing KSKs "
            f"{', '.join(map(str, header.ksk_tags))}: a resolver could not validate its DNSKEY "
            "RRset; hold the ceremony again after 'rollover ksk --ds-published'")


def check_dnskey_signed_by_ksk(bundle: Bundle, dnskeys: dns.rrset.RRset, anchor: dns.rrset.RRset,
                               when: int) -> None:
    """DNSKEY-SIGNED-BY-KSK: the RRset's RRSIGs are the KSKs' alone, one by each, and each
    verifies with its KSK at `when` (so a resolver holding either KSK's DS validates)."""
    rrsigs = parse_rrset(bundle, bundle.content.rrsigs)
    check_signed_by_ksks(bundle, dnskeys, rrsigs, anchor, when, DnskeyNotSignedByKsk)


def check_signed_by_ksks(bundle: Bundle, rrset: dns.rrset.RRset, rrsigs: dns.rrset.RRset,
                         anchor: dns.rrset.RRset, when: int, error: type[ValidationFailed]) -> None:
    """`rrsigs` cover `rrset`, are by the header's KSKs only, one each, and each verifies alone."""
    name, tags = bundle.path.name, bundle.header.ksk_tags
    what = dns.rdatatype.to_text(rrset.rdtype)
    if rrsigs.name != rrset.name or rrsigs.covers != rrset.rdtype:
        raise error(f"bundle {name}'s signatures do not cover its {what} RRset")
    strangers = sorted({r.key_tag for r in rrsigs if r.key_tag not in tags or r.signer != rrset.name})
    if strangers:
        raise error(f"bundle {name}'s {what} RRset is signed by key {strangers[0]}, not by its "
                    f"KSK {', '.join(map(str, tags))}")
    for tag in tags:
        own = [r for r in rrsigs if r.key_tag == tag]
        single = dns.rrset.RRset(rrsigs.name, rrsigs.rdclass, rrsigs.rdtype, rrsigs.covers)
        for rdata in own:
            single.add(rdata)
        try:
            if len(own) != 1:
                raise dns.dnssec.ValidationFailure(f"{len(own)} signatures by it")
            dns.dnssec.validate(rrset, single, {anchor.name: anchor}, now=when)
        except dns.dnssec.ValidationFailure as failure:
            raise error(f"bundle {name}'s {what} signature does not verify with KSK {tag} at "
                        f"{to_bind_timestamp(when)} ({failure})") from None


def check_sync_records(bundle: Bundle, zone: dns.name.Name, anchor: dns.rrset.RRset,
                       when: int) -> None:
    """SYNC-RECORDS-OF-KSK: CDS and CDNSKEY come together, at the apex, name only KSKs of the
    DNSKEY RRset, and each is signed by every KSK of the bundle (RFC 7344 4.1)."""
    name = bundle.path.name
    rrsets = parse_rrsets(bundle, bundle.content.sync_rrsets)
    rrsigs = parse_rrsets(bundle, bundle.content.sync_rrsigs)
    if not rrsets and not rrsigs:
        return
    types = sorted(r.rdtype for r in rrsets)
    if types != sorted(SYNC_TYPES) or any(r.name != zone for r in rrsets):
        raise SyncRecordsInvalid(f"bundle {name} carries {len(rrsets)} CDS/CDNSKEY RRsets; "
                                 "expected one of each at the apex")
    ds_of = {dns.dnssec.make_ds(zone, key, "SHA256") for key in anchor}
    for rrset in rrsets:
        for rdata in rrset:
            ours = (rdata.to_text() in {ds.to_text() for ds in ds_of}
                    if rrset.rdtype == dns.rdatatype.CDS
                    else rdata.to_text() in {key.to_text() for key in anchor})
            if not ours:
                raise SyncRecordsInvalid(f"bundle {name}'s {dns.rdatatype.to_text(rrset.rdtype)} "
                                         "names a key that is not one of its KSKs")
        covering = [sigs for sigs in rrsigs if sigs.covers == rrset.rdtype]
        if len(covering) != 1:
            raise SyncRecordsInvalid(f"bundle {name}'s {dns.rdatatype.to_text(rrset.rdtype)} "
                                     "RRset is not signed by its KSKs")
        check_signed_by_ksks(bundle, rrset, covering[0], anchor, when, SyncRecordsInvalid)


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
    rrsets = parse_rrsets(bundle, text)
    if not rrsets:
        raise ValidationFailed(f"bundle {bundle.path.name} holds an empty RRset")
    if len(rrsets) > 1:
        raise ValidationFailed(f"bundle {bundle.path.name} holds a malformed RRset (more than one "
                               "RRset)")
    return rrsets[0]


def parse_rrsets(bundle: Bundle, text: str) -> list[dns.rrset.RRset]:
    """The RRsets of zone file lines in full style (owner TTL class type rdata), in order; lines
    of one RRset are consecutive."""
    rrsets: list[dns.rrset.RRset] = []
    try:
        for line in text.splitlines():
            if not line.strip():
                continue
            owner, ttl, rdclass, rdtype, rdata = line.split(None, 4)
            parsed = dns.rdata.from_text(rdclass, rdtype, rdata)
            name = dns.name.from_text(owner)
            last = rrsets[-1] if rrsets else None
            if last is None or last.name != name or last.rdtype != parsed.rdtype or \
                    last.covers != parsed.covers():
                if any(r.name == name and r.rdtype == parsed.rdtype and
                       r.covers == parsed.covers() for r in rrsets):
                    raise ValueError("an RRset split in two")
                last = dns.rrset.RRset(name, parsed.rdclass, parsed.rdtype, parsed.covers())
                last.update_ttl(int(ttl))
                rrsets.append(last)
            last.add(parsed)
    except (ValueError, dns.exception.DNSException) as error:
        raise ValidationFailed(f"bundle {bundle.path.name} holds a malformed RRset ({error})") from None
    return rrsets


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
