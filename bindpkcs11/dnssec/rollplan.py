"""RFC 7583 timing for a ZSK pre-publication rollover, and the rules a schedule must keep.

    Publish(new)   = T (now, or --at)
    Activate(new)  = Publish(new) + DNSKEY TTL + propagation delay          (RFC 7583 3.2.1: Ipub)
    Inactive(old)  = Activate(new)
    Delete(old)    = Inactive(old) + propagation delay + re-sign interval + max zone TTL
                                                                           (3.2.1: Iret)

Why each term: a resolver may hold the old DNSKEY RRset for its TTL after the new one reached
every server (propagation delay), so the new key may sign only once every cache can have it; a
resolver may hold an RRset signed by the old key for the zone's largest TTL after named last
served it, and named replaces the old key's signatures only within one re-sign interval (the
time a signature lives before named refreshes it), so the old DNSKEY stays that long.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bindpkcs11.errors import UsageError


class TimingRuleBroken(UsageError):
    """The rollover schedule breaks an RFC 7583 timing rule."""


@dataclass(frozen=True)
class ZoneTimings:
    """The durations (seconds) a ZSK rollover schedule is made from."""

    dnskey_ttl: int
    max_zone_ttl: int
    propagation_delay: int
    resign_interval: int
    test: bool = False


@dataclass(frozen=True)
class ZskSchedule:
    """When the successor is published and activated and the predecessor retired and removed."""

    publish: int
    activate: int
    inactive: int
    delete: int


def zsk_schedule(start: int, timings: ZoneTimings, activate: int | None = None,
                 delete: int | None = None) -> ZskSchedule:
    """The schedule from `start`, with the operator's own Activate/Delete if given (checked)."""
    earliest_activate = start + timings.dnskey_ttl + timings.propagation_delay
    chosen_activate = earliest_activate if activate is None else activate
    earliest_delete = chosen_activate + retire_interval(timings)
    schedule = ZskSchedule(start, chosen_activate, chosen_activate,
                           earliest_delete if delete is None else delete)
    check_zsk_schedule(schedule, timings)
    return schedule


def zsk_schedule_in_periods(start: int, timings: ZoneTimings, period: int,
                            activate: int | None = None, delete: int | None = None) -> ZskSchedule:
    """An offline-KSK zone's schedule: `ksk presign` applies a key event at the first period
    start at or after it, so the intervals are whole periods (each at least its RFC 7583 minimum)
    counted from Publish. Inactive and Delete then fall on different period starts, whatever
    period Publish lands in: ceil(Publish) + n periods = ceil(Publish + n periods)."""
    earliest_activate = start + whole_periods(timings.dnskey_ttl + timings.propagation_delay,
                                               period)
    chosen_activate = earliest_activate if activate is None else activate
    earliest_delete = chosen_activate + whole_periods(retire_interval(timings), period)
    return zsk_schedule(start, timings, chosen_activate,
                        earliest_delete if delete is None else delete)


def whole_periods(seconds: int, period: int) -> int:
    return max(1, -(-seconds // period)) * period


def retire_interval(timings: ZoneTimings) -> int:
    """Inactive to Delete: propagation delay + re-sign interval + max zone TTL."""
    return timings.propagation_delay + timings.resign_interval + timings.max_zone_ttl


def check_zsk_schedule(schedule: ZskSchedule, timings: ZoneTimings) -> None:
    """Each rule, named in the refusal: TimingRuleBroken when one does not hold."""
    require_prepublished(schedule, timings)
    require_retired_after_caches(schedule, timings)


def require_prepublished(schedule: ZskSchedule, timings: ZoneTimings) -> None:
    """Activate >= Publish + DNSKEY TTL + propagation delay (pre-publication)."""
    needed = schedule.publish + timings.dnskey_ttl + timings.propagation_delay
    if schedule.activate < needed:
        raise TimingRuleBroken(
            f"Activate is {needed - schedule.activate} s too early: RFC 7583 pre-publication "
            f"rule Activate >= Publish + DNSKEY TTL ({timings.dnskey_ttl} s) + propagation delay "
            f"({timings.propagation_delay} s); give a later --activate")


def require_retired_after_caches(schedule: ZskSchedule, timings: ZoneTimings) -> None:
    """Delete >= Inactive + propagation delay + re-sign interval + max zone TTL (retire rule)."""
    needed = schedule.inactive + retire_interval(timings)
    if schedule.delete < needed:
        raise TimingRuleBroken(
            f"Delete is {needed - schedule.delete} s too early: RFC 7583 retire rule Delete >= "
            f"Inactive + propagation delay ({timings.propagation_delay} s) + re-sign interval "
            f"({timings.resign_interval} s) + max zone TTL ({timings.max_zone_ttl} s); give a "
            "later --delete")


# KSK: double-KSK rollover (RFC 7583 section 3.3.2) with the DS change at the parent.
#
#     Publish(new) = Activate(new) = T        both KSKs sign the DNSKEY RRset from now on
#     SyncPublish(new) = SyncDelete(old) = T + DNSKEY TTL + propagation delay
#                                            CDS/CDNSKEY switch to the new KSK: every cache
#                                            can hold the new DNSKEY, the parent may switch DS
#     (operator: the parent serves the new DS; `rollover ksk --ds-published` at time C)
#     Inactive(old) = Delete(old) = C + parent DS TTL + parent propagation delay
#                                            no cache holds the old DS any more


@dataclass(frozen=True)
class ParentTimings:
    """The parent's side of a KSK rollover (seconds)."""

    ds_ttl: int
    propagation_delay: int


@dataclass(frozen=True)
class KskSchedule:
    publish: int
    activate: int
    sync: int  # the new KSK's SyncPublish, the old KSK's SyncDelete


def ksk_schedule(start: int, timings: ZoneTimings) -> KskSchedule:
    return KskSchedule(start, start, start + timings.dnskey_ttl + timings.propagation_delay)


def require_ds_switch_allowed(when: int, sync: int) -> None:
    """The parent may serve only the new DS once every cache can hold the new DNSKEY. `when`
    is the DS change being confirmed (now, or the operator's --at)."""
    if when < sync:
        at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(sync))
        raise TimingRuleBroken(
            f"the new KSK's DNSKEY may not be in every cache until {at}, {sync - when} s after "
            "the DS change given: RFC "
            "7583 double-KSK rule DS change >= Publish + DNSKEY TTL + propagation delay; the "
            "parent must keep the old DS until then, so --ds-published is refused (run it again "
            "after the CDS shows the new KSK)")


def old_ksk_retirement(confirmed: int, parent: ParentTimings) -> int:
    """Inactive = Delete of the old KSK: when no cache can hold the old DS any more."""
    return confirmed + parent.ds_ttl + parent.propagation_delay
