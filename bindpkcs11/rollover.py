"""`bindpkcs11 rollover zsk DOMAIN`: a pre-publication ZSK rollover of a setup-inline zone.

One command does what an operator used to compute by hand: the successor is made where its
predecessor lives (same token, or software seeded by the token), its key files carry Publish and
Activate, the predecessor's get Inactive and Delete (dnssec/rollplan.py gives the RFC 7583
times), and `rndc loadkeys` hands the schedule to named, whose key timer then does each step on
time. The command reports success only once named serves the successor's DNSKEY (when Publish is
now) in a zone that still validates; on any failure the successor's files are set aside, the
predecessor's timing restored and named told again, so the zone is as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dns.exception
import dns.name
import dns.zone

from bindpkcs11 import inline, instancekeys, locks, monitor, readiness
from bindpkcs11.access import TokenAccess
from bindpkcs11.bind import config, named, privileges, rndc
from bindpkcs11.bind.instance import Instance, InstanceSettings
from bindpkcs11.dnssec import keygen, keytiming, rollplan
from bindpkcs11.dnssec.algorithms import by_number
from bindpkcs11.dnssec.keyfile import KeyPairFiles, Timing, read_key_pair
from bindpkcs11.errors import BindPkcs11Error, UsageError
from bindpkcs11.state import StateDir
from bindpkcs11.timespec import check_key_time, to_bind_timestamp
from bindpkcs11.token.uri import parse_uri

Progress = Callable[[str], None]
SERVED_TIMEOUT = 30.0
# BIND's own default for dnssec-policy's zone-propagation-delay (PT5M).
DEFAULT_PROPAGATION_DELAY = 300
# --test-timings: every duration shrunk so a whole rollover takes under a minute. Loopback demos
# and tests only: real resolvers would cache the DNSKEY RRset longer than this assumes.
TEST_TIMINGS = rollplan.ZoneTimings(dnskey_ttl=15, max_zone_ttl=15, propagation_delay=5,
                                    resign_interval=15, test=True)


class RolloverUnderWay(UsageError):
    """A rollover of this key role is already under way."""


class RolloverRefused(UsageError):
    """The zone is not in a state a rollover can start from."""


class NotServedInTime(BindPkcs11Error):
    """named did not serve the rollover's change in time; the change was undone."""


@dataclass(frozen=True)
class ZskRollover:
    """What `rollover zsk` did: the two keys, the schedule named follows, the timings used."""

    zone: str
    predecessor: int
    successor: int
    location: str
    uri: str | None
    schedule: rollplan.ZskSchedule
    timings: rollplan.ZoneTimings
    published_now: bool
    key_file: str


@dataclass(frozen=True)
class RolloverRequest:
    zone: dns.name.Name
    at: int | None = None
    activate: int | None = None
    delete: int | None = None
    propagation_delay: int | None = None
    test_timings: bool = False


def rollover_zsk(state: StateDir, request: RolloverRequest, progress: Progress) -> ZskRollover:
    """The whole rollover under the instance lock (setup-inline, named start/reload hold it too)."""
    instance = Instance.for_zone(state, request.zone)
    settings = instance.load_settings()
    with locks.held(inline.instance_lock(state, request.zone), f"the instance of {request.zone}"):
        return _rollover_zsk(state, instance, settings, request, progress)


def _rollover_zsk(state: StateDir, instance: Instance, settings: InstanceSettings,
                  request: RolloverRequest, progress: Progress) -> ZskRollover:
    zone, now = request.zone, int(time.time())
    require_rollable(instance, settings)
    predecessor = current_zsk(instancekeys.existing_keys(instance, zone), settings.algorithm, now)
    report = validating_report(zone, settings)
    timings = TEST_TIMINGS if request.test_timings else zone_timings(instance, zone, report,
                                                                      request.propagation_delay)
    start = start_time(request.at, now)
    schedule = rollplan.zsk_schedule(start, timings, request.activate, request.delete)
    for name, value in vars(schedule).items():
        check_key_time(name.capitalize(), value, now)
    access = TokenAccess.build(state, settings.profile, token_of(predecessor, settings),
                               pin_file=instance.pin_file)
    successor = make_successor(instance, zone, settings, predecessor,
                               Timing(created=now, publish=schedule.publish,
                                      activate=schedule.activate), access, progress)
    before = predecessor.timing
    try:
        keytiming.set_times(predecessor, inactive=schedule.inactive, delete=schedule.delete)
        inline.hand_over(instance, access, privileges.run_as_user())
        rndc.rndc(instance, state.bind_dir, "loadkeys", settings.zone)
        published = schedule.publish <= int(time.time())
        if published:
            progress(f"waiting for named to serve the DNSKEY of ZSK {successor.tag} ...")
            _wait_served(zone, settings, predecessor.tag, successor.tag,
                         signing_ksk_tags(instance, zone))
    except BaseException:
        keytiming.set_times(predecessor, inactive=before.inactive, delete=before.delete)
        instancekeys.set_aside(instance, [successor])
        tell_named(instance, state.bind_dir, settings.zone)
        raise
    if request.test_timings:
        _resign_at_activate(instance, state.bind_dir, settings.zone, schedule.activate,
                            successor.tag, progress)
    return ZskRollover(zone.to_text(), predecessor.tag, successor.tag,
                       "token" if successor.label_uri else "software", successor.label_uri,
                       schedule, timings, published, str(successor.key_path))


def require_rollable(instance: Instance, settings: InstanceSettings) -> None:
    """A default-mode instance whose named runs (a rollover is confirmed through what it serves)."""
    require_key_files_mode(settings)
    if named.running_pid(instance) is None:
        raise RolloverRefused(f"named for {settings.zone} is not running: start it with "
                              f"'bindpkcs11 named start {settings.zone}' (a rollover is confirmed "
                              "through what named serves)")


def require_key_files_mode(settings: InstanceSettings) -> None:
    """Rollovers by key timing metadata need a named that follows the key files (9.18's
    auto-dnssec). A 9.18 --test-timings instance signs under a dnssec-policy whose key manager
    retires keys it did not plan, so it is refused before anything changes. (BIND 9.20 instances,
    stock or patched, never come here: named's key manager times their rollovers, stockroll.py.)"""
    if settings.test_timings:
        raise RolloverRefused(
            f"the instance of {settings.zone} was set up with --test-timings (a dnssec-policy, "
            "whose key manager rolls keys itself): run setup-inline without --test-timings, "
            "then 'rollover zsk --test-timings' for a rollover in minutes")


def current_zsk(pairs: list[KeyPairFiles], algorithm: int, now: int) -> KeyPairFiles:
    """The one ZSK that signs now, with no rollover scheduled; RolloverUnderWay otherwise."""
    zsks = [p for p in pairs if p.role == "zsk" and p.dnskey.algorithm == algorithm
            and keytiming.state_at(p.timing, now) != "removed"]
    active = [p for p in zsks if keytiming.state_at(p.timing, now) == "active"]
    if not active:
        raise RolloverRefused("no active ZSK in the instance's key directory: run "
                              "'bindpkcs11 setup-inline' again")
    waiting = [p for p in zsks if p not in active or keytiming.next_event(p.timing, now)]
    if len(active) > 1 or waiting:
        # name the successor (a key not yet active) if there is one, whatever the tags' order
        key = sorted(waiting or active, key=lambda p: p in active)[0]
        event = keytiming.next_event(key.timing, now)
        when = (f"; next: {event.event} at {monitor.iso_time(event.time)}" if event else "")
        raise RolloverUnderWay(
            f"a ZSK rollover is under way (ZSK {key.tag} is "
            f"{keytiming.state_at(key.timing, now)}{when}): wait until it completes "
            "('bindpkcs11 status' shows the schedule)")
    return active[0]


def zone_timings(instance: Instance, zone: dns.name.Name, report: monitor.ZoneReport,
                 propagation_delay: int | None) -> rollplan.ZoneTimings:
    """The served DNSKEY TTL (what resolvers cache), the unsigned zone's largest TTL, the
    re-sign interval named.conf gives (signatures are refreshed `refresh` days before they
    expire, so one lives validity - refresh days before named replaces it)."""
    dnskey_ttl = next(r.ttl for r in report.rrsets if r.rdtype == "DNSKEY")
    days = config.NORMAL_TIMINGS["sig_validity_days"] - config.NORMAL_TIMINGS["sig_refresh_days"]
    return rollplan.ZoneTimings(
        dnskey_ttl=dnskey_ttl,
        max_zone_ttl=max(_max_ttl(instance.zone_file(zone), zone), dnskey_ttl),
        propagation_delay=DEFAULT_PROPAGATION_DELAY if propagation_delay is None
        else propagation_delay,
        resign_interval=days * 86400)


def _max_ttl(path: Path, zone: dns.name.Name) -> int:
    try:
        parsed = dns.zone.from_file(str(path), origin=zone, relativize=False, check_origin=False)
    except (OSError, dns.exception.DNSException) as error:
        raise RolloverRefused(f"cannot read the served unsigned zone {path}: {error}") from None
    return max((rdataset.ttl for _, rdataset in parsed.iterate_rdatasets()), default=0)


def validating_report(zone: dns.name.Name, settings: InstanceSettings) -> monitor.ZoneReport:
    """What named serves now; a zone that does not validate is not rolled (fix that first)."""
    report = monitor.check_zone(zone, settings.listen, settings.port)
    if report.status == "critical":
        raise RolloverRefused(f"{zone} does not validate as served now ({'; '.join(report.problems)}):"
                              " fix that before starting a rollover")
    return report


def start_time(at: int | None, now: int) -> int:
    """Publish time: now, or --at. A Publish in the past would put the successor's DNSKEY in the
    zone only now, so Activate (computed from the past Publish) would come too early."""
    if at is None:
        return now
    if at < now:
        raise rollplan.TimingRuleBroken(
            f"--at {monitor.iso_time(at)} is in the past: the successor's DNSKEY can only appear "
            "from now on, so Activate = Publish + DNSKEY TTL + propagation delay (RFC 7583 "
            "pre-publication rule) would come too early; give a time from now on")
    return at


def token_of(predecessor: KeyPairFiles, settings: InstanceSettings) -> str:
    if predecessor.label_uri:
        return parse_uri(predecessor.label_uri).token or settings.token
    return settings.token


def make_successor(instance: Instance, zone: dns.name.Name, settings: InstanceSettings,
                   predecessor: KeyPairFiles, timing: Timing, access: TokenAccess,
                   progress: Progress, key_format: str = "9.18") -> KeyPairFiles:
    """The new key of the predecessor's role, where the predecessor lives, carrying `timing`, its
    files in `key_format` (keyfile.KEY_FORMATS: the BIND series that reads them)."""
    algorithm = by_number(settings.algorithm)
    if algorithm.is_rsa:
        algorithm = algorithm.with_bits(settings.bits)
    request = keygen.KeygenRequest(
        zone=zone, role=predecessor.role, algorithm=algorithm, key_dir=instance.key_dir,
        timing=timing, software=predecessor.label_uri is None, key_format=key_format)
    key = instancekeys.generate(request, access, progress)
    return read_key_pair(key.key_file)


def signing_ksk_tags(instance: Instance, zone: dns.name.Name) -> frozenset[int]:
    now = int(time.time())
    return frozenset(p.tag for p in instancekeys.existing_keys(instance, zone)
                     if p.role == "ksk" and p.timing.is_signing(now))


def _wait_served(zone: dns.name.Name, settings: InstanceSettings, old: int, new: int,
                 ksks: frozenset[int]) -> None:
    """Until named serves the successor's DNSKEY in a zone that validates, the SOA signed by one
    of the two ZSKs."""
    served = readiness.ServedSigned(zone, settings.listen, settings.port, ksks,
                                    frozenset({old, new}))  # new too: a slow wait may reach Activate
    deadline = time.monotonic() + SERVED_TIMEOUT
    while time.monotonic() < deadline:
        if served() and any(k.key_tag == new for k in served.last.dnskeys):
            return
        time.sleep(0.1)
    raise NotServedInTime(f"named did not serve the DNSKEY of ZSK {new} within "
                          f"{SERVED_TIMEOUT:.0f} s ({served.why_not()}); the rollover was undone")


def _resign_at_activate(instance: Instance, prefix: Path, zone: str, activate: int, new: int,
                        progress: Progress) -> None:
    """--test-timings only: have named sign every RRset with the new ZSK before the old one goes.

    named replaces the old ZSK's signatures only as each comes up for refresh (days); real
    timings leave that long before Delete (rollplan's re-sign interval). Test timings give
    seconds, so at Delete named would drop the old DNSKEY first and re-sign after, serving, in
    between, RRsets signed only by a key no longer in the DNSKEY set (a validating poller saw it
    under load). So wait for Activate, then `rndc sign` (a full pass with every active key), and
    return once named reports that pass done.
    """
    progress(f"test timings: waiting for Activate ({to_bind_timestamp(activate)}), then "
             f"re-signing the zone with ZSK {new} before the old ZSK is deleted ...")
    while time.time() < activate + 1:
        time.sleep(0.2)
    rndc.rndc(instance, prefix, "sign", zone)
    deadline = time.monotonic() + SERVED_TIMEOUT
    while time.monotonic() < deadline:
        if f"Done signing with key {new}/" in rndc.rndc(instance, prefix, "signing", "-list", zone):
            return
        time.sleep(0.2)
    raise NotServedInTime(f"named did not finish re-signing {zone} with ZSK {new} within "
                          f"{SERVED_TIMEOUT:.0f} s of Activate; the rollover goes on by its key "
                          "timing: check 'bindpkcs11 status' before the old ZSK's Delete")


def tell_named(instance: Instance, prefix: Path, zone: str) -> None:
    """`rndc loadkeys` after an undo; a named that cannot be told keeps the restored files for
    its next key check, so this never hides the original failure."""
    try:
        rndc.rndc(instance, prefix, "loadkeys", zone)
    except BindPkcs11Error:
        pass
