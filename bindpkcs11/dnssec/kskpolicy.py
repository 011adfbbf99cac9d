"""The ceremony rules for the KSKs of an offline-KSK zone (one KSK, or two during a rollover).

Like policy.py: one function per rule, each raising an exception named after it, run before the
token signs anything. The rules follow RFC 7583's double-KSK rollover as `ksk presign` rounds it
to its periods (kskplan.py reads the key files):

    KSK-COUNT                 one or two KSKs, distinct
    KSK-SIGNS-EVERY-PERIOD    every period's DNSKEY RRset is signed by a KSK (no gap)
    SIGNING-KSK-PUBLISHED     a KSK signs only a DNSKEY RRset it is in
    CDS-AFTER-DNSKEY-CACHED   CDS/CDNSKEY name a KSK only once its DNSKEY has been served for
                              DNSKEY TTL + propagation delay (RFC 7583 3.3.2: the parent may switch
                              its DS as soon as it sees the CDS), and only while it signs
    DS-MATCHES-SIGNING-KSK    whatever DS set a resolver may hold during a period (the parent's,
                              as it was up to parent DS TTL + parent propagation delay earlier)
                              names a KSK that signs that period: a KSK is never withdrawn while
                              its DS is the only one a resolver may have
"""

from __future__ import annotations

from typing import Sequence

from bindpkcs11.dnssec.kskplan import KskTimes
from bindpkcs11.dnssec.policy import PolicyViolation
from bindpkcs11.dnssec.presign import PeriodPlan, Schedule
from bindpkcs11.timespec import to_bind_timestamp


class KskCount(PolicyViolation):
    rule = "KSK-COUNT"


class NoSigningKsk(PolicyViolation):
    rule = "KSK-SIGNS-EVERY-PERIOD"


class SigningKskNotPublished(PolicyViolation):
    rule = "SIGNING-KSK-PUBLISHED"


class CdsTooEarly(PolicyViolation):
    rule = "CDS-AFTER-DNSKEY-CACHED"


class KskWithdrawnWhileItsDsIsServed(PolicyViolation):
    rule = "DS-MATCHES-SIGNING-KSK"


def check_ksk_count(ksks: Sequence[KskTimes]) -> str:
    """KSK-COUNT: a double-KSK rollover has two KSKs at most; the same key twice is a mistake."""
    tags = [k.tag for k in ksks]
    if not 1 <= len(tags) <= 2 or len(set(tags)) != len(tags):
        raise KskCount(f"give one --ksk, or two (old and new) during a KSK rollover, not "
                       f"{', '.join(map(str, tags)) or 'none'}")
    return f"KSK {' and '.join(map(str, tags))}"


def check_ksk_signs_every_period(plans: Sequence[PeriodPlan]) -> str:
    """KSK-SIGNS-EVERY-PERIOD: a DNSKEY RRset without a KSK signature breaks the chain of trust."""
    for plan in plans:
        if not plan.ksks:
            raise NoSigningKsk(
                f"no KSK is active at the start of period {plan.index} "
                f"({to_bind_timestamp(plan.start)}): the schedule has a gap; give the KSK that "
                "signs then, or fix the KSKs' Activate/Inactive/Delete")
    return "every period's DNSKEY RRset is signed by a KSK"


def check_signing_ksk_published(plans: Sequence[PeriodPlan]) -> str:
    """SIGNING-KSK-PUBLISHED: a KSK signs only a DNSKEY RRset that holds it."""
    for plan in plans:
        missing = sorted(set(plan.ksks) - set(plan.ksk_published))
        if missing:
            raise SigningKskNotPublished(
                f"KSK {missing[0]} signs in period {plan.index} but is not published then: its "
                "Publish must not be later than its Activate, nor Delete earlier than Inactive")
    return "every signing KSK is published"


def check_cds_after_dnskey_cached(plans: Sequence[PeriodPlan], schedule: Schedule,
                                  ksks: Sequence[KskTimes]) -> str:
    """CDS-AFTER-DNSKEY-CACHED: a parent may switch to the DS a CDS names at once, so a new KSK is
    named only once every cache can hold its DNSKEY (RFC 7583 3.3.2: DS change >= Publish +
    DNSKEY TTL + propagation delay), and only while it signs. A CDS naming a KSK whose DS is
    already at the parent changes nothing and is not checked further."""
    publish = {k.tag: k.pair.timing.publish or k.pair.timing.activate for k in ksks}
    for index, plan in enumerate(plans):
        for tag in plan.cds:
            if tag not in plan.ksks:
                raise CdsTooEarly(f"period {index} names KSK {tag} in CDS/CDNSKEY but that KSK "
                                  "does not sign then: fix its SyncPublish/SyncDelete")
            if tag in plan.ds:
                continue
            since = _served_since(plans, index, tag, publish.get(tag))
            if plan.start - since < schedule.prepublish:
                raise CdsTooEarly(
                    f"period {index} ({to_bind_timestamp(plan.start)}) names KSK {tag} in "
                    f"CDS/CDNSKEY but its DNSKEY is served only {plan.start - since} s before; "
                    f"caches need DNSKEY TTL {schedule.dnskey_ttl} s + propagation delay "
                    f"{schedule.propagation_delay} s: set its SyncPublish to "
                    f"{to_bind_timestamp(since + schedule.prepublish)} or later")
    return f"a new KSK's CDS appears >= {schedule.prepublish} s after its DNSKEY"


def _served_since(plans: Sequence[PeriodPlan], index: int, tag: int, publish: int | None) -> int:
    """When KSK `tag` entered the DNSKEY RRset it is in, unbroken, up to period `index`."""
    first = index
    while first > 0 and tag in plans[first - 1].ksk_published:
        first -= 1
    if first == 0 and publish is not None:
        return min(publish, plans[0].start)
    return plans[first].start


def check_ds_matches_signing_ksk(plans: Sequence[PeriodPlan], schedule: Schedule,
                                 ksks: Sequence[KskTimes]) -> str:
    """DS-MATCHES-SIGNING-KSK: during each period, every DS set a resolver may hold (what the
    parent served at any time from parent DS TTL + propagation delay before the period start to
    its end) names a KSK that signs the period's DNSKEY RRset, and at the period start one of
    the signing KSKs has its DS at the parent. An empty DS set held by a resolver (the parent had
    no DS yet) leaves the zone insecure, not bogus, and passes."""
    changes = sorted({t for k in ksks for t in k.ds_changes()})
    for plan in plans:
        at_start = {k.tag for k in ksks if k.ds_at_parent(plan.start)}
        if not plan.ds and at_start:
            raise KskWithdrawnWhileItsDsIsServed(_withdrawn_message(
                plan, schedule, ksks, plan.start, at_start))
        if not plan.ds:
            raise KskWithdrawnWhileItsDsIsServed(
                f"period {plan.index} ({to_bind_timestamp(plan.start)}) is signed by KSK "
                f"{', '.join(map(str, plan.ksks)) or 'none'}, none of which has its DS at the "
                "parent then (DSPublish): the signer serves only DNSKEY RRsets signed by a KSK "
                "whose DS the parent serves; schedule the rollover with 'bindpkcs11 rollover ksk "
                "DOMAIN --ksk-dir DIR', which records the old KSK's DS")
        earliest = plan.start - schedule.ds_cache
        moments = [earliest] + [t for t in changes if earliest < t < plan.end]
        for moment in moments:
            held = {k.tag for k in ksks if k.ds_at_parent(moment)}
            if held and not held & set(plan.ksks):
                raise KskWithdrawnWhileItsDsIsServed(_withdrawn_message(
                    plan, schedule, ksks, moment, held))
    return (f"every DS a resolver may hold (parent DS TTL + propagation {schedule.ds_cache} s) "
            "names a signing KSK")


def _withdrawn_message(plan: PeriodPlan, schedule: Schedule, ksks: Sequence[KskTimes],
                       moment: int, held: set[int]) -> str:
    tags = ", ".join(map(str, sorted(held)))
    removed = [k.ds_removed for k in ksks if k.tag in held and k.ds_removed is not None]
    if removed:
        until = max(removed) + schedule.ds_cache
        advice = (f"its DS left the parent at {to_bind_timestamp(max(removed))}, so resolvers may "
                  f"hold it until {to_bind_timestamp(until)} (+ parent DS TTL "
                  f"{schedule.parent_ds_ttl} s + propagation {schedule.parent_propagation_delay} "
                  "s): keep that KSK signing until then")
    else:
        advice = ("the parent serves no other KSK's DS: confirm the new DS with 'bindpkcs11 "
                  "rollover ksk DOMAIN --ksk-dir DIR --ds-published' before a ceremony withdraws "
                  "the old KSK")
    return (f"period {plan.index} ({to_bind_timestamp(plan.start)}) is signed by KSK "
            f"{', '.join(map(str, plan.ksks)) or 'none'} but a resolver may hold only the DS of "
            f"KSK {tags} (the parent's at {to_bind_timestamp(moment)}); {advice}")


def ksk_rules(plans: Sequence[PeriodPlan], schedule: Schedule,
              ksks: Sequence[KskTimes]) -> list[tuple[str, str]]:
    """Every KSK rule, in order; (rule, note) pairs for the ceremony log."""
    checks = [
        (KskCount.rule, lambda: check_ksk_count(ksks)),
        (NoSigningKsk.rule, lambda: check_ksk_signs_every_period(plans)),
        (SigningKskNotPublished.rule, lambda: check_signing_ksk_published(plans)),
        (CdsTooEarly.rule, lambda: check_cds_after_dnskey_cached(plans, schedule, ksks)),
        (KskWithdrawnWhileItsDsIsServed.rule,
         lambda: check_ds_matches_signing_ksk(plans, schedule, ksks)),
    ]
    return [(rule, check()) for rule, check in checks]
