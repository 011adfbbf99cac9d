"""The periods of an offline-KSK ceremony, the DNSKEY RRset of each, and its KSK signature.

Periods are fixed slices of time starting at `--start`. A key's timing metadata is evaluated at
each period's start: a ZSK is in the period's DNSKEY RRset if it is published then, and signs the
zone during the period if it is active then. Put key events on period boundaries (keygen's
--publish/--activate/--inactive/--delete, or `rollover zsk --zsk-dir` with --at on a boundary)
and the RRsets follow them exactly; an event between boundaries takes effect at the next one,
and policy.py checks the times that result (ZSK-PREPUBLISHED, ZSK-POSTPUBLISHED).

Each period's RRSIG is valid from its start (back-dated by the same one-hour clock skew BIND's
dnssec-ksr uses) until `validity` after its start, so consecutive bundles overlap by
validity - period: long enough for caches holding the old DNSKEY RRSIG when the signer switches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import dns.dnssec
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from bindpkcs11.dnssec.keyfile import KeyPairFiles, Timing
from bindpkcs11.errors import BindPkcs11Error, UsageError

if TYPE_CHECKING:
    from bindpkcs11.dnssec.kskplan import KskPeriod

CLOCK_SKEW = 3600
MAX_PERIODS = 1000


@dataclass(frozen=True)
class Schedule:
    """When the periods are and how long their signatures last (all seconds / UNIX times)."""

    start: int
    periods: int
    period: int
    validity: int
    dnskey_ttl: int
    skew: int = CLOCK_SKEW
    propagation_delay: int = 0
    max_zone_ttl: int = 0
    parent_ds_ttl: int = 0
    parent_propagation_delay: int = 0

    @property
    def ds_cache(self) -> int:
        """How long after the parent stops serving a DS a resolver may still hold it."""
        return self.parent_ds_ttl + self.parent_propagation_delay

    @property
    def prepublish(self) -> int:
        """How long a ZSK's DNSKEY must be served before it signs (RFC 7583 Ipub)."""
        return self.dnskey_ttl + self.propagation_delay

    @property
    def postpublish(self) -> int:
        """How long a retired ZSK's DNSKEY must stay once its signatures are replaced (Iret:
        the signer replaces them all in its first round of the period)."""
        return self.max_zone_ttl + self.propagation_delay

    @property
    def overlap(self) -> int:
        """How long a period's signature outlives the period."""
        return self.validity - self.period


@dataclass(frozen=True)
class PeriodPlan:
    """One bundle to make: its period, RRSIG window, and which ZSKs are published / signing."""

    index: int
    start: int
    end: int
    inception: int
    expiration: int
    published: tuple[int, ...]
    signing: tuple[int, ...]
    ksk_published: tuple[int, ...] = ()
    ksks: tuple[int, ...] = ()
    """The KSKs that sign this period's DNSKEY (and CDS/CDNSKEY) RRsets (kskplan.py)."""
    ds: tuple[int, ...] = ()
    cds: tuple[int, ...] = ()


def make_schedule(start: int, periods: int, period: int, validity: int | None,
                  overlap: int | None, dnskey_ttl: int, propagation_delay: int = 0,
                  max_zone_ttl: int = 0, parent_ds_ttl: int = 0,
                  parent_propagation_delay: int = 0) -> Schedule:
    """Resolve period / validity / overlap (validity = period + overlap; give any two)."""
    if not 1 <= periods <= MAX_PERIODS:
        raise UsageError(f"--periods must be between 1 and {MAX_PERIODS}")
    if period <= 0:
        raise UsageError("--period must be longer than zero")
    if validity is None:
        validity = period + (overlap if overlap is not None else period)
    elif overlap is not None and validity != period + overlap:
        raise UsageError("--validity must equal --period + --overlap: give only two of the three")
    return Schedule(start, periods, period, validity, dnskey_ttl,
                    propagation_delay=propagation_delay, max_zone_ttl=max_zone_ttl,
                    parent_ds_ttl=parent_ds_ttl, parent_propagation_delay=parent_propagation_delay)


def is_published(timing: Timing, when: int) -> bool:
    """The key is in the DNSKEY RRset at `when` (Publish reached, Delete not yet)."""
    return timing.publish is not None and timing.publish <= when and (
        timing.delete is None or when < timing.delete)


def is_signing(timing: Timing, when: int) -> bool:
    """The key signs the zone at `when` (Activate reached, Inactive not yet)."""
    return timing.activate is not None and timing.activate <= when and (
        timing.inactive is None or when < timing.inactive)


def build_plan(schedule: Schedule, zsks: Sequence[KeyPairFiles],
               ksks: Callable[[int], "KskPeriod"] | None = None) -> list[PeriodPlan]:
    """Every period's window and ZSK sets, from the keys' timing at the period start; the KSK
    sets from `ksks(start)` (kskplan.ksk_period) when given."""
    plans = []
    for index in range(schedule.periods):
        start = schedule.start + index * schedule.period
        ksk = ksks(start) if ksks is not None else None
        plans.append(PeriodPlan(
            index=index,
            start=start,
            end=start + schedule.period,
            inception=start - schedule.skew,
            expiration=start + schedule.validity,
            published=tuple(sorted(z.tag for z in zsks if is_published(z.timing, start))),
            signing=tuple(sorted(z.tag for z in zsks if is_signing(z.timing, start))),
            **({"ksk_published": ksk.published, "ksks": ksk.signing, "ds": ksk.ds,
                "cds": ksk.cds} if ksk is not None else {}),
        ))
    return plans


def dnskey_rrset(zone: dns.name.Name, ttl: int, ksks: Sequence[KeyPairFiles],
                 zsks: Sequence[KeyPairFiles], plan: PeriodPlan) -> dns.rrset.RRset:
    """The period's DNSKEY RRset: the KSKs and every ZSK published at the period start."""
    rrset = dns.rrset.RRset(zone, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    rrset.update_ttl(ttl)
    for ksk in ksks:
        if ksk.tag in plan.ksk_published:
            rrset.add(ksk.dnskey)
    for zsk in zsks:
        if zsk.tag in plan.published:
            rrset.add(zsk.dnskey)
    return rrset


def sign_rrset(rrset: dns.rrset.RRset, plan: PeriodPlan,
               signers: Sequence[tuple[object, KeyPairFiles]]) -> dns.rrset.RRset:
    """One RRSIG over `rrset` by each (private key, KSK) in `signers`, each checked in software.

    The check uses the public key only, so it costs no token signature: the number of on-token
    signatures stays exactly one per KSK and signed RRset.
    """
    rrsigs = dns.rrset.RRset(rrset.name, dns.rdataclass.IN, dns.rdatatype.RRSIG, rrset.rdtype)
    rrsigs.update_ttl(rrset.ttl)
    for private_key, ksk in signers:
        rrsig = dns.dnssec.sign(rrset, private_key, rrset.name, ksk.dnskey,
                                inception=plan.inception, expiration=plan.expiration)
        single = dns.rrset.RRset(rrset.name, dns.rdataclass.IN, dns.rdatatype.RRSIG, rrset.rdtype)
        single.add(rrsig)
        anchor = dns.rrset.RRset(rrset.name, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
        anchor.add(ksk.dnskey)
        try:
            dns.dnssec.validate(rrset, single, {rrset.name: anchor}, now=plan.start)
        except dns.dnssec.ValidationFailure as error:
            raise BindPkcs11Error(
                f"the token's signature by KSK {ksk.tag} for period {plan.index} does not verify "
                f"with the KSK's public key ({error}): the token key is not the key in the KSK "
                "file") from None
        rrsigs.add(rrsig)
    return rrsigs
