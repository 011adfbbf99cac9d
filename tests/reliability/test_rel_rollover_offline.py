"""Issue 12, offline-KSK rollovers: a ZSK schedule the bundles cannot carry safely is refused by
`ksk presign` with the rule named, before the token signs anything; `rollover zsk --zsk-dir`
refuses bad input in one line and leaves the key files as they were.

The rules are about time, not just order: a ZSK published "one period" before it signs is not
pre-published when the period is shorter than the DNSKEY TTL + propagation delay, and a key event
between period starts takes effect only at the next one (which can leave no time at all).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bindpkcs11.dnssec.bundles import bundles_in
from conftest import one_line_error
import test_ksk_presign
from test_ksk_presign import PERIOD, ZONE, Ceremony

ceremony = test_ksk_presign.ceremony  # the fixture, reused


def refused(c: Ceremony, rule: str, *extra: str, periods: int = 3) -> str:
    error = one_line_error(c.presign(*extra, periods=periods, check=False))
    assert f"policy {rule} violated" in error
    assert not bundles_in(c.out)
    log = c.log_text()
    assert "ABORT" in log and "SIGNED" not in log
    return error


def test_one_period_is_not_prepublication_when_it_is_shorter_than_the_dnskey_ttl(ceremony):
    ceremony.rollover_zsks()  # ZSK 2 published in period 1, signs from period 2
    error = refused(ceremony, "ZSK-PREPUBLISHED", "--dnskey-ttl", "400", "--overlap", "400")
    assert f"served only {PERIOD} s before" in error and "DNSKEY TTL 400 s" in error


def test_a_retired_zsk_must_outlive_the_max_zone_ttl(ceremony):
    ceremony.rollover_zsks()  # ZSK 1 stops signing at period 2, leaves at period 3
    error = refused(ceremony, "ZSK-POSTPUBLISHED", "--max-zone-ttl", "400")
    assert f"{PERIOD} s later" in error and "max zone TTL 400 s" in error


def test_a_publish_between_period_starts_counts_from_the_next_start(ceremony):
    """Publish 100 s before Activate on the clock, but in the same period as it: the bundles
    would carry the DNSKEY and the signatures at once."""
    ceremony.zsk(publish=-3600, activate=-3600, inactive=2 * PERIOD, delete=3 * PERIOD)
    ceremony.zsk(publish=2 * PERIOD - 100, activate=2 * PERIOD)
    error = refused(ceremony, "ZSK-PREPUBLISHED")
    assert "served only 0 s before" in error


def test_a_rollover_planned_for_shorter_periods_is_refused_by_an_hourly_ceremony(ceremony):
    """`rollover --zsk-dir` counted in 5-minute periods; a ceremony of hourly periods puts Publish
    and Activate into the same period: refused, not signed."""
    ceremony.zsk(publish=-3600, activate=-3600)
    ceremony.cli("rollover", "zsk", ZONE, "--zsk-dir", str(ceremony.zsk_dir), "--at",
                 str(ceremony.start + PERIOD), "--test-timings")
    refused(ceremony, "ZSK-PREPUBLISHED", "--period", "1h", "--overlap", "1h", periods=2)


def test_a_gap_with_no_active_zsk_is_refused(ceremony):
    """The successor activated by hand a period after its predecessor went inactive."""
    ceremony.zsk(publish=-3600, activate=-3600, inactive=PERIOD, delete=3 * PERIOD)
    ceremony.zsk(publish=0, activate=2 * PERIOD)
    error = refused(ceremony, "ZSK-SIGNS-EVERY-PERIOD")
    assert "no ZSK is active at the start of period 1" in error


def snapshot(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("args, message", [
    (["--at", "now-1h"], "is in the past"),
    (["--period", "0"], "--period must be longer than zero"),
    (["--activate", "now+10"], "Activate is"),
    (["--delete", "now+5mi"], "Delete is"),
    (["--dnskey-ttl", "nonsense"], "nonsense"),
])
def test_rollover_zsk_dir_bad_input_changes_nothing(ceremony, args, message):
    ceremony.zsk(publish=-3600, activate=-3600)
    before = snapshot(ceremony.zsk_dir)
    error = one_line_error(ceremony.cli("rollover", "zsk", ZONE, "--zsk-dir",
                                        str(ceremony.zsk_dir), "--test-timings", *args,
                                        check=False))
    assert message in error
    assert snapshot(ceremony.zsk_dir) == before


def test_rollover_zsk_dir_needs_an_active_zsk_and_no_rollover_under_way(ceremony, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    error = one_line_error(ceremony.cli("rollover", "zsk", ZONE, "--zsk-dir", str(empty),
                                        check=False))
    assert "no ZSK of example.test." in error and "bindpkcs11 keygen" in error
    missing = one_line_error(ceremony.cli("rollover", "zsk", ZONE, "--zsk-dir",
                                          str(tmp_path / "nowhere"), check=False))
    assert "is not a directory" in missing
    ceremony.zsk(publish=-3600, activate=-3600)
    ceremony.cli("rollover", "zsk", ZONE, "--zsk-dir", str(ceremony.zsk_dir), "--test-timings")
    before = snapshot(ceremony.zsk_dir)
    error = one_line_error(ceremony.cli("rollover", "zsk", ZONE, "--zsk-dir",
                                        str(ceremony.zsk_dir), "--test-timings", check=False))
    assert "rollover is under way" in error
    assert snapshot(ceremony.zsk_dir) == before


def test_offline_options_without_zsk_dir_are_refused(ceremony):
    error = one_line_error(ceremony.cli("rollover", "zsk", ZONE, "--dnskey-ttl", "1h",
                                        check=False))
    assert "add --zsk-dir" in error
