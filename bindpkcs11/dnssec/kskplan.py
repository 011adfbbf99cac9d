"""Which KSKs each period of an offline-KSK ceremony publishes, signs with, and names in CDS.

A double-KSK rollover (RFC 7583 section 3.3.2) is written into the KSK key files (`rollover ksk
--ksk-dir`), and `ksk presign` reads it here at each period start, as it reads the ZSKs' timing:

- a KSK is in the period's DNSKEY RRset if it is published then, and signs that RRset if it is
  active then (a rollover gives the successor Publish = Activate: both KSKs sign during the roll,
  so a validator holding either DS validates);
- its CDS/CDNSKEY are in the period's bundle if SyncPublish <= start < SyncDelete (RFC 7344: the
  child announces the DS it wants once every cache can hold the new DNSKEY);
- its DS is at the parent if DSPublish <= start and DSRemoved is not reached: the times the
  operator confirmed with `--ds-published`. With one `--ksk` and no DSPublish, that KSK's DS is
  taken to be at the parent, as it always was before rollovers (the zone validates today).

With one `--ksk` the key's Publish/Activate are not read (bundles made before KSK rollovers
existed did not read them either), but a Delete or Inactive still removes it, so that the rules
in kskpolicy.py refuse a ceremony that would publish a zone without a KSK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from bindpkcs11.dnssec.keyfile import KeyPairFiles
from bindpkcs11.dnssec.keytiming import private_time
from bindpkcs11.dnssec.presign import is_published, is_signing


@dataclass(frozen=True)
class KskTimes:
    """A KSK's key file with the timing fields a KSK rollover uses (None: unset)."""

    pair: KeyPairFiles
    only: bool
    """The only KSK of the ceremony: legacy reading (always published and signing until retired,
    DS at the parent unless DSPublish says otherwise)."""
    sync_publish: int | None = None
    sync_delete: int | None = None
    ds_publish: int | None = None
    ds_removed: int | None = None

    @property
    def tag(self) -> int:
        return self.pair.tag

    def published(self, when: int) -> bool:
        if self.only:
            return not self.pair.timing.is_retired(when) and not self._deleted(when)
        return is_published(self.pair.timing, when) or is_signing(self.pair.timing, when)

    def signing(self, when: int) -> bool:
        if self.only:
            return not self.pair.timing.is_retired(when) and not self._deleted(when)
        return is_signing(self.pair.timing, when)

    def cds(self, when: int) -> bool:
        """named's rule (dnssec.c): SyncPublish reached, SyncDelete not."""
        return self.sync_publish is not None and self.sync_publish <= when and not (
            self.sync_delete is not None and self.sync_delete <= when)

    def ds_at_parent(self, when: int) -> bool:
        if self.ds_removed is not None and self.ds_removed <= when:
            return False
        if self.ds_publish is None:
            return self.only
        return self.ds_publish <= when

    def ds_changes(self) -> tuple[int, ...]:
        return tuple(t for t in (self.ds_publish, self.ds_removed) if t is not None)

    def _deleted(self, when: int) -> bool:
        return self.pair.timing.delete is not None and self.pair.timing.delete <= when


@dataclass(frozen=True)
class KskPeriod:
    """The KSKs of one period: in the DNSKEY RRset, signing it, DS at the parent (of those
    signing, at the period start), and announced by CDS/CDNSKEY."""

    published: tuple[int, ...]
    signing: tuple[int, ...]
    ds: tuple[int, ...]
    cds: tuple[int, ...]


def ksk_times(pairs: Sequence[KeyPairFiles]) -> list[KskTimes]:
    """Each KSK file with its CDS and DS times (read from the .private, where BIND keeps them)."""
    only = len(pairs) == 1
    return [KskTimes(pair, only, private_time(pair, "sync_publish"),
                     private_time(pair, "sync_delete"), private_time(pair, "ds_publish"),
                     private_time(pair, "ds_removed")) for pair in pairs]


def ksk_period(ksks: Sequence[KskTimes], start: int) -> KskPeriod:
    """The KSK sets of the period starting at `start`."""
    def tags(test) -> tuple[int, ...]:
        return tuple(sorted(k.tag for k in ksks if test(k)))
    signing = tags(lambda k: k.signing(start))
    return KskPeriod(published=tags(lambda k: k.published(start)), signing=signing,
                     ds=tuple(t for t in tags(lambda k: k.ds_at_parent(start)) if t in signing),
                     cds=tags(lambda k: k.cds(start) and k.published(start)))


def sync_rrsets(zone: dns.name.Name, ttl: int, ksks: Sequence[KeyPairFiles],
                cds_tags: Sequence[int]) -> list[dns.rrset.RRset]:
    """The CDS (SHA-256, as named publishes) and CDNSKEY RRsets for the KSKs in `cds_tags`;
    none when the period announces no KSK."""
    chosen = [k for k in ksks if k.tag in cds_tags]
    if not chosen:
        return []
    cds = dns.rrset.RRset(zone, dns.rdataclass.IN, dns.rdatatype.CDS)
    cdnskey = dns.rrset.RRset(zone, dns.rdataclass.IN, dns.rdatatype.CDNSKEY)
    for rrset in (cds, cdnskey):
        rrset.update_ttl(ttl)
    for key in chosen:
        ds = dns.dnssec.make_ds(zone, key.dnskey, "SHA256")
        cds.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CDS, ds.to_text()))
        cdnskey.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CDNSKEY,
                                        key.dnskey.to_text()))
    return [cds, cdnskey]
