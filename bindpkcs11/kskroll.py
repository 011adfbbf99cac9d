"""`bindpkcs11 rollover ksk DOMAIN [--ds-published]`: a double-KSK rollover with the parent step.

Step 1 (`rollover ksk`): a new KSK on the old one's token, published and signing the DNSKEY
RRset at once beside the old one; at Publish + DNSKEY TTL + propagation delay the CDS/CDNSKEY
switch from the old KSK to the new (SyncDelete / SyncPublish, which named follows by itself).
The command prints the new DS for the parent and stops: the zone is "waiting for DS".

Step 2 (`rollover ksk --ds-published`): the operator says the parent serves the new DS (checked
against the parent when --parent-server is given). Refused before the CDS switch (the new DNSKEY
may not be in every cache yet) and, with --parent-server, while the parent does not serve the
new DS. Then the old KSK stops signing and leaves the DNSKEY RRset once no cache can still hold
the old DS: confirmation + parent DS TTL + parent propagation delay (dnssec/rollplan.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dns.dnssec
import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rdatatype

from bindpkcs11 import inline, instancekeys, locks, monitor, readiness, rollover
from bindpkcs11.access import TokenAccess
from bindpkcs11.bind import privileges, rndc
from bindpkcs11.bind.instance import Instance, InstanceSettings
from bindpkcs11.dnssec import keytiming, rollplan
from bindpkcs11.dnssec.dnskey import ds_text
from bindpkcs11.dnssec.keyfile import KeyPairFiles, Timing
from bindpkcs11.errors import UsageError
from bindpkcs11.state import StateDir

# A parent's DS TTL is commonly a day (the root's is 86400); its own propagation an hour.
DEFAULT_PARENT = rollplan.ParentTimings(ds_ttl=86400, propagation_delay=3600)
TEST_PARENT = rollplan.ParentTimings(ds_ttl=15, propagation_delay=5)
PARENT_QUERY_TIMEOUT = 3.0


class NoKskRollover(UsageError):
    """No KSK rollover is waiting for its DS."""


class DsNotAtParent(UsageError):
    """The parent does not serve the new KSK's DS yet."""


@dataclass(frozen=True)
class KskRollover:
    """Step 1 or 2 of a KSK rollover: the keys, the times named follows, the DS to hand over."""

    zone: str
    step: str  # "waiting for DS" or "retiring old KSK"
    predecessor: int
    successor: int
    uri: str | None
    publish: int
    sync: int
    retire: int | None
    new_ds: str
    timings: rollplan.ZoneTimings | None  # step 1 only
    parent: rollplan.ParentTimings


@dataclass(frozen=True)
class KskRequest:
    zone: dns.name.Name
    at: int | None = None
    test_timings: bool = False
    ds_published: bool = False
    parent_server: tuple[str, int] | None = None
    propagation_delay: int | None = None
    parent_ds_ttl: int | None = None


def rollover_ksk(state: StateDir, request: KskRequest, progress) -> KskRollover:
    instance = Instance.for_zone(state, request.zone)
    settings = instance.load_settings()
    with locks.held(inline.instance_lock(state, request.zone), f"the instance of {request.zone}"):
        rollover.require_rollable(instance, settings)
        pairs = [p for p in instancekeys.existing_keys(instance, request.zone)
                 if p.role == "ksk" and p.dnskey.algorithm == settings.algorithm]
        if request.ds_published:
            return _retire_old(state, instance, settings, request, pairs, progress)
        return _introduce_new(state, instance, settings, request, pairs, progress)


def _introduce_new(state: StateDir, instance: Instance, settings: InstanceSettings,
                   request: KskRequest, pairs: list[KeyPairFiles], progress) -> KskRollover:
    zone, now = request.zone, int(time.time())
    old = sole_ksk(pairs, now)
    report = rollover.validating_report(zone, settings)
    timings = rollover.TEST_TIMINGS if request.test_timings else rollover.zone_timings(
        instance, zone, report, request.propagation_delay)
    schedule = rollplan.ksk_schedule(rollover.start_time(request.at, now), timings)
    access = TokenAccess.build(state, settings.profile, rollover.token_of(old, settings),
                               pin_file=instance.pin_file)
    new = rollover.make_successor(instance, zone, settings, old,
                                  Timing(created=now, publish=schedule.publish,
                                         activate=schedule.activate), access, progress)
    old_sync_delete = keytiming.private_time(old, "sync_delete")
    try:
        keytiming.set_times(new, sync_publish=schedule.sync)
        keytiming.set_times(old, sync_delete=schedule.sync)
        _load_and_confirm(state, instance, settings, access, {old.tag, new.tag}, schedule.publish,
                          progress)
    except BaseException:
        keytiming.set_times(old, sync_delete=old_sync_delete)
        instancekeys.set_aside(instance, [new])
        rollover.tell_named(instance, state.bind_dir, settings.zone)
        raise
    return KskRollover(zone.to_text(), "waiting for DS", old.tag, new.tag, new.label_uri,
                       schedule.publish, schedule.sync, None, ds_text(zone, new.dnskey), timings,
                       _parent(request))


def _retire_old(state: StateDir, instance: Instance, settings: InstanceSettings,
                request: KskRequest, pairs: list[KeyPairFiles], progress) -> KskRollover:
    zone, now = request.zone, int(time.time())
    old, new = waiting_pair(pairs, now)
    sync = keytiming.private_time(new, "sync_publish")
    rollplan.require_ds_switch_allowed(now, sync)
    if request.parent_server is not None:
        require_ds_at_parent(zone, new, *request.parent_server)
    parent = _parent(request)
    retire = rollplan.old_ksk_retirement(now, parent)
    access = TokenAccess.build(state, settings.profile, rollover.token_of(old, settings),
                               pin_file=instance.pin_file)
    try:
        keytiming.set_times(old, inactive=retire, delete=retire)
        _load_and_confirm(state, instance, settings, access, {new.tag}, now, progress)
    except BaseException:
        keytiming.set_times(old, inactive=old.timing.inactive, delete=old.timing.delete)
        rollover.tell_named(instance, state.bind_dir, settings.zone)
        raise
    return KskRollover(zone.to_text(), "retiring old KSK", old.tag, new.tag, new.label_uri,
                       new.timing.publish or 0, sync, retire, ds_text(zone, new.dnskey), None,
                       parent)


def _parent(request: KskRequest) -> rollplan.ParentTimings:
    if request.test_timings:
        return TEST_PARENT
    if request.parent_ds_ttl is None:
        return DEFAULT_PARENT
    return rollplan.ParentTimings(request.parent_ds_ttl, DEFAULT_PARENT.propagation_delay)


def sole_ksk(pairs: list[KeyPairFiles], now: int) -> KeyPairFiles:
    """The one active KSK with nothing scheduled; a rollover under way is named otherwise."""
    live = [p for p in pairs if keytiming.state_at(p.timing, now) != "removed"]
    active = [p for p in live if keytiming.state_at(p.timing, now) == "active"]
    if len(live) == 1 and active and keytiming.next_event(active[0].timing, now) is None \
            and keytiming.private_time(active[0], "sync_delete") is None:
        return active[0]
    if not active:
        raise rollover.RolloverRefused("no active KSK in the instance's key directory: run "
                                       "'bindpkcs11 setup-inline' again")
    raise rollover.RolloverUnderWay(
        f"a KSK rollover is under way (KSKs {', '.join(str(p.tag) for p in live)}): when the "
        "parent serves the new DS, run 'rollover ksk --ds-published'; 'bindpkcs11 status' shows "
        "the schedule")


def waiting_pair(pairs: list[KeyPairFiles], now: int) -> tuple[KeyPairFiles, KeyPairFiles]:
    """(old, new) of a rollover waiting for its DS: the old KSK has SyncDelete and no Inactive,
    the new one SyncPublish."""
    live = [p for p in pairs if keytiming.state_at(p.timing, now) != "removed"]
    old = [p for p in live if keytiming.private_time(p, "sync_delete") is not None
           and p.timing.inactive is None]
    new = [p for p in live if p not in old and p.timing.inactive is None
           and keytiming.private_time(p, "sync_publish") is not None]
    if len(old) != 1 or len(new) != 1:
        raise NoKskRollover("no KSK rollover is waiting for its DS: start one with 'bindpkcs11 "
                            "rollover ksk DOMAIN' ('bindpkcs11 status' shows the keys)")
    return old[0], new[0]


def require_ds_at_parent(zone: dns.name.Name, new: KeyPairFiles, server: str, port: int) -> None:
    """The parent's server answers the zone's DS RRset with the new KSK's DS in it."""
    query = dns.message.make_query(zone, dns.rdatatype.DS)
    try:
        response = dns.query.udp_with_fallback(query, server, timeout=PARENT_QUERY_TIMEOUT,
                                               port=port)[0]
    except (OSError, dns.exception.DNSException) as error:
        raise DsNotAtParent(f"cannot ask the parent at {server}#{port} for the DS of {zone}: "
                            f"{error}; the old KSK stays (nothing was changed)") from None
    wanted = dns.dnssec.make_ds(zone, new.dnskey, "SHA256")
    served = [rd for rrset in response.answer if rrset.rdtype == dns.rdatatype.DS for rd in rrset]
    if wanted not in served:
        tags = ", ".join(str(rd.key_tag) for rd in served) or "none"
        raise DsNotAtParent(
            f"the parent at {server}#{port} serves DS {tags} for {zone}, not the new KSK's DS "
            f"{new.tag}: a KSK is withdrawn only once its successor's DS is at the parent (RFC "
            "7583); hand the parent the DS from 'bindpkcs11 status' and try again")


def _load_and_confirm(state: StateDir, instance: Instance, settings: InstanceSettings,
                      access: TokenAccess, ksk_tags: set[int], publish: int, progress) -> None:
    """rndc loadkeys; when the change is due now, wait until the DNSKEY RRset is served signed by
    every KSK in `ksk_tags` and the zone validates."""
    inline.hand_over(instance, access, privileges.run_as_user())
    rndc.rndc(instance, state.bind_dir, "loadkeys", settings.zone)
    if publish > int(time.time()):
        return
    zone = dns.name.from_text(settings.zone)
    progress(f"waiting for named to serve the DNSKEY RRset signed by KSK "
             f"{', '.join(map(str, sorted(ksk_tags)))} ...")
    deadline = time.monotonic() + rollover.SERVED_TIMEOUT
    report = None
    while time.monotonic() < deadline:
        report = monitor.check_zone(zone, settings.listen, settings.port,
                                    timeout=readiness.READY_QUERY_TIMEOUT)
        if report.status != "critical" and ksk_tags <= readiness.signed_tags(
                report, settings.zone, "DNSKEY"):
            return
        time.sleep(0.1)
    raise rollover.NotServedInTime(
        f"named did not serve the DNSKEY RRset signed by KSK {sorted(ksk_tags)} within "
        f"{rollover.SERVED_TIMEOUT:.0f} s ({'; '.join(report.problems) if report else 'no answer'});"
        " the change was undone")
