"""Times and durations in dnssec-settime's forms, checked against values BIND computes."""

import subprocess

import pytest

from bindpkcs11.errors import InvalidTime
from bindpkcs11.timespec import (
    KEY_TIME_MAX,
    KEY_TIME_WINDOW,
    TTL_MAX,
    check_key_time,
    parse_duration,
    parse_time,
    parse_ttl,
    to_bind_timestamp,
)

NOW = 1_800_000_000  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize("text, seconds", [
    ("7d", 7 * 86400), ("2w", 14 * 86400), ("90d", 90 * 86400), ("1y", 365 * 86400),
    ("1mo", 30 * 86400), ("5mi", 300), ("12h", 43200), ("30s", 30), ("3600", 3600), ("1w2d", 9 * 86400),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5m", "1x", "d", "1d-"])
def test_bad_durations(text):
    with pytest.raises(InvalidTime):
        parse_duration(text)


@pytest.mark.parametrize("text, expected", [
    ("now", NOW), ("now+1d", NOW + 86400), ("+2w", NOW + 14 * 86400), ("-1h", NOW - 3600),
    ("20270115", 1_799_971_200), ("20270115080000", NOW), ("20270115080000+1mi", NOW + 60),
    ("1800000000", NOW), ("Fri Jan 15 08:00:00 2027", NOW), ("none", None), ("never", None),
])
def test_times(text, expected):
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["tomorrow", "2027-01-15", "now+5m", "20271315", "+"])
def test_bad_times_say_how(text):
    with pytest.raises(InvalidTime, match="YYYYMMDD"):
        parse_time(text, now=NOW)


def test_bind_agrees_on_an_absolute_time(tmp_path):
    """dnssec-settime reads what we write: a stamp round-trips through BIND's own parser."""
    subprocess.run(["dnssec-keygen", "-q", "-K", str(tmp_path), "-a", "ECDSAP256SHA256",
                    "-A", "20270115080000", "example.test"], check=True, capture_output=True)
    key = next(tmp_path.glob("*.key"))
    printed = subprocess.run(["dnssec-settime", "-u", "-p", "A", str(key)], check=True,
                             capture_output=True, text=True).stdout
    assert printed.split()[-1] == str(NOW)
    assert to_bind_timestamp(NOW) == "20270115080000"


@pytest.mark.parametrize("value", [0, NOW, NOW + KEY_TIME_WINDOW, NOW - 1_700_000_000])
def test_key_times_bind_can_keep(value):
    assert check_key_time("--activate x", value, NOW) == value


@pytest.mark.parametrize("value", [-1, NOW + KEY_TIME_WINDOW + 1, KEY_TIME_MAX + 1, 10**15, -10**15])
def test_key_times_bind_cannot_keep_say_the_range(value):
    with pytest.raises(InvalidTime, match=r"--activate x .*between 19700101000000 and 20950202111407"):
        check_key_time("--activate x", value, NOW)


def test_ttl_range_is_rfc_2181():
    assert parse_ttl("2147483647") == TTL_MAX
    assert parse_ttl("1d") == 86400
    with pytest.raises(InvalidTime, match="at most 2147483647"):
        parse_ttl("2147483648")


@pytest.mark.parametrize("value", [-1, 10**12, 10**20])
def test_stamps_outside_years_1970_to_9999_are_refused_not_crashed_on(value):
    with pytest.raises(InvalidTime):
        to_bind_timestamp(value)
