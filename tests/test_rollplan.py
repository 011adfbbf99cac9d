"""The pure parts of rollovers: RFC 7583 formulas and rules, key states from timing, timing edits
that keep every other line of a key file, and the zone timing rule. No token, no named."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import dns.name
import dns.rdata
import pytest

from bindpkcs11.dnssec import keytiming, policy, presign, rollplan, zonetiming
from bindpkcs11.dnssec.keyfile import Timing, read_key_pair, write_key_pair

DAY = 86400
TIMINGS = rollplan.ZoneTimings(dnskey_ttl=300, max_zone_ttl=3600, propagation_delay=300,
                               resign_interval=20 * DAY)


def test_zsk_schedule_follows_the_formulas_of_the_worked_example():
    start = 1796119200  # 2026-12-01 10:00:00 UTC
    plan = rollplan.zsk_schedule(start, rollplan.ZoneTimings(300, 300, 300, 20 * DAY))
    assert plan.activate == start + 600 == plan.inactive
    assert plan.delete == plan.inactive + 300 + 20 * DAY + 300


def test_each_rule_holds_at_its_bound_and_fails_one_second_earlier():
    start = 1_800_000_000
    rollplan.zsk_schedule(start, TIMINGS, activate=start + 600)
    with pytest.raises(rollplan.TimingRuleBroken, match="pre-publication rule"):
        rollplan.zsk_schedule(start, TIMINGS, activate=start + 599)
    bound = start + 600 + 300 + 20 * DAY + 3600
    rollplan.zsk_schedule(start, TIMINGS, delete=bound)
    with pytest.raises(rollplan.TimingRuleBroken, match="1 s too early: RFC 7583 retire rule"):
        rollplan.zsk_schedule(start, TIMINGS, delete=bound - 1)
    with pytest.raises(rollplan.TimingRuleBroken, match="double-KSK rule") as refused:
        rollplan.require_ds_switch_allowed(start, start + 1)
    # counted from the DS change given (--at may be in the future), not from the clock
    assert "1 s after the DS change given" in str(refused.value)
    rollplan.require_ds_switch_allowed(start, start)


def test_states_and_next_event_follow_the_timing_as_named_reads_it():
    timing = Timing(created=0, publish=100, activate=200, inactive=300, delete=400)
    assert [keytiming.state_at(timing, t) for t in (50, 100, 200, 300, 400)] == [
        "generated", "published", "active", "inactive", "removed"]
    assert keytiming.next_event(timing, 150) == keytiming.NextEvent("activate", 200)
    assert keytiming.next_event(timing, 400) is None
    assert keytiming.state_at(Timing(created=0, activate=10), 20) == "active"  # named publishes it
    assert keytiming.state_at(Timing(created=0), 20) == "generated"


def test_set_times_changes_only_timing_lines(tmp_path: Path):
    zone = dns.name.from_text("example.test")
    dnskey = dns.rdata.from_text("IN", "DNSKEY", "256 3 13 " + "A" * 88)
    fields = [("PrivateKey", b"\x01" * 32)]
    key_path, private_path = write_key_pair(tmp_path, zone, dnskey, fields,
                                            Timing(created=1_800_000_000, publish=1_800_000_000))
    with private_path.open("a") as handle:
        handle.write("SyncPublish: 20270101000000\n")
    before = private_path.read_text().splitlines()
    pair = read_key_pair(key_path)
    keytiming.set_times(pair, inactive=1_800_000_600, delete=1_800_001_000)
    after = private_path.read_text().splitlines()
    assert set(after) - set(before) == {"Inactive: 20270115081000", "Delete: 20270115081640"}
    assert set(before) <= set(after)
    assert read_key_pair(key_path).timing.delete == 1_800_001_000
    assert "; Inactive: 20270115081000" in key_path.read_text()
    assert keytiming.private_time(pair, "sync_publish") == 1798761600
    keytiming.set_times(pair, inactive=None, delete=None)
    assert private_path.read_text().splitlines() == before


def test_zone_timing_rule_names_the_numbers_and_the_largest_expire_that_passes():
    zonetiming.require_expire_within_refresh(14 * DAY, 300, 35 * DAY, 15 * DAY, "z", "c")
    with pytest.raises(zonetiming.ZoneTimingUnsafe) as refused:
        zonetiming.require_expire_within_refresh(15 * DAY, 0, 35 * DAY, 15 * DAY, "zone file z",
                                                 "sig-validity-interval 35 15")
    assert "SOA EXPIRE 1296000 s (15 days) + max TTL 0 s" in str(refused.value)
    assert "at most 1295999 s" in str(refused.value)


WEEK = 7 * DAY
OFFLINE = rollplan.ZoneTimings(dnskey_ttl=3600, max_zone_ttl=DAY, propagation_delay=300,
                               resign_interval=300)


def test_offline_schedule_is_whole_periods_of_at_least_each_interval():
    start = 1803859200  # 2027-03-01 00:00:00 UTC, the worked example's Publish
    plan = rollplan.zsk_schedule_in_periods(start, OFFLINE, WEEK)
    assert (plan.activate, plan.inactive, plan.delete) == (start + WEEK, start + WEEK,
                                                           start + 2 * WEEK)
    hourly = rollplan.zsk_schedule_in_periods(start, OFFLINE, 3600)
    assert hourly.activate == start + 2 * 3600  # 3,900 s -> two hours
    assert hourly.delete == hourly.activate + 25 * 3600  # 87,000 s -> 25 hours


@pytest.mark.parametrize("offset", [0, 1, 3599, 3600 * 24 * 3, WEEK - 1])
def test_presign_accepts_the_offline_schedule_wherever_publish_falls_in_a_period(offset):
    """Rounded to period starts as `ksk presign` rounds them, the events keep their intervals."""
    origin = 1799020800  # 2027-01-04 00:00:00 UTC, a period start
    publish = origin + 8 * WEEK + offset
    plan = rollplan.zsk_schedule_in_periods(publish, OFFLINE, WEEK)
    old = SimpleNamespace(tag=1, timing=Timing(created=0, publish=origin, activate=origin,
                                               inactive=plan.inactive, delete=plan.delete))
    new = SimpleNamespace(tag=2, timing=Timing(created=0, publish=plan.publish,
                                               activate=plan.activate))
    schedule = presign.make_schedule(origin, 14, WEEK, None, WEEK, 3600, 300, DAY)
    plans = presign.build_plan(schedule, [old, new])
    policy.check_zsk_signs_every_period(plans)
    policy.check_signing_zsk_published(plans)
    policy.check_zsk_prepublished(plans, schedule, [old, new])
    policy.check_zsk_postpublished(plans, schedule, [old, new])
    both = [p.index for p in plans if p.published == (1, 2)]
    assert len(both) == 2 and [p.signing for p in plans if p.index in both] == [(1,), (2,)]


def test_presign_rules_hold_at_their_bounds_and_fail_below():
    origin, period = 1_800_000_000, 600
    old = SimpleNamespace(tag=1, timing=Timing(created=0, publish=origin, activate=origin,
                                               inactive=origin + 2 * period,
                                               delete=origin + 3 * period))
    new = SimpleNamespace(tag=2, timing=Timing(created=0, publish=origin + period,
                                               activate=origin + 2 * period))
    for ttl, ok in ((period - 60, True), (period - 59, False)):
        schedule = presign.make_schedule(origin, 4, period, None, period, ttl, 60, 0)
        plans = presign.build_plan(schedule, [old, new])
        if ok:
            policy.check_zsk_prepublished(plans, schedule, [old, new])
        else:
            with pytest.raises(policy.ZskNotPrepublished, match="served only 600 s before"):
                policy.check_zsk_prepublished(plans, schedule, [old, new])
    for max_ttl, ok in ((period - 60, True), (period - 59, False)):
        schedule = presign.make_schedule(origin, 4, period, None, period, 60, 60, max_ttl)
        plans = presign.build_plan(schedule, [old, new])
        if ok:
            policy.check_zsk_postpublished(plans, schedule, [old, new])
        else:
            with pytest.raises(policy.ZskRemovedTooEarly, match="600 s later"):
                policy.check_zsk_postpublished(plans, schedule, [old, new])
