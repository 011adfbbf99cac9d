"""Times and durations in the forms BIND's dnssec-settime accepts, so operators type what they know.

Times: `YYYYMMDD`, `YYYYMMDDHHMMSS`, a 10-digit UNIX time, `now`, a ctime string as printed by
`dnssec-settime -p` (`Fri Nov 27 08:00:00 2026`), each optionally followed by `+offset` or `-offset`;
or a bare `+offset`/`-offset` from now. `none`/`never`/`unset` mean "no time".
Durations: a number with an optional unit y, mo, w, d, h, mi, s (seconds without a unit); several
may be joined (`1w2d`). Month = 30 days and year = 365 days, exactly as BIND counts them.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import datetime, timezone

from bindpkcs11.errors import InvalidTime

_UNIT_SECONDS = {
    "y": 365 * 86400,
    "mo": 30 * 86400,
    "w": 7 * 86400,
    "d": 86400,
    "h": 3600,
    "mi": 60,
    "s": 1,
    "": 1,
}
_DURATION_PART = re.compile(r"(\d+)(y|mo|w|d|h|mi|s)?", re.IGNORECASE)
_CTIME_LENGTH = 24
_NONE_WORDS = {"none", "never", "unset"}

# BIND 9.18 keeps key timing as a 32-bit unsigned isc_stdtime_t (dst_parse.c casts the parsed
# YYYYMMDDHHMMSS to uint32_t) and writes it back with serial arithmetic around the current time
# (dns_time64_from32): only times in [0, 2^32) within 2^31 s of now survive a rewrite by
# dnssec-settime or named. TTLs above 2^31 - 1 are treated as 0 (RFC 2181 8, BIND's MAXTTL).
KEY_TIME_MAX = 2**32 - 1
KEY_TIME_WINDOW = 2**31 - 1
TTL_MAX = 2**31 - 1


def parse_duration(text: str) -> int:
    """Seconds in `text` (`7d`, `2w`, `90d`, `1h30mi`, `3600`). Raises InvalidTime."""
    stripped = text.strip()
    if not stripped:
        raise InvalidTime("empty duration: use a number with a unit such as 7d, 2w or 12h")
    if stripped.lower().endswith("m") and not stripped.lower().endswith(("mo", "mi")):
        raise InvalidTime(f"duration '{text}' is ambiguous: use 'mi' for minutes or 'mo' for months")
    position, total = 0, 0
    for match in _DURATION_PART.finditer(stripped):
        if match.start() != position:
            break
        total += int(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "").lower()]
        position = match.end()
    if position != len(stripped):
        raise InvalidTime(
            f"invalid duration '{text}': use a number with a unit y, mo, w, d, h, mi or s (e.g. 30d)"
        )
    return total


def parse_time(text: str, now: int | None = None) -> int | None:
    """UNIX time for a dnssec-settime style `text`; None for none/never/unset. Raises InvalidTime."""
    now = int(time.time()) if now is None else now
    stripped = text.strip()
    if stripped.lower() in _NONE_WORDS:
        return None
    base, rest = _split_base(stripped, now, text)
    if not rest:
        return base
    sign = 1 if rest[0] == "+" else -1
    if rest[0] not in "+-":
        raise InvalidTime(_time_help(text))
    try:
        return base + sign * parse_duration(rest[1:])
    except InvalidTime:
        raise InvalidTime(_time_help(text)) from None


def _split_base(text: str, now: int, original: str) -> tuple[int, str]:
    """Split `text` into its absolute base time and the `+/-offset` remainder."""
    digits = len(text) - len(text.lstrip("0123456789"))
    if digits in (8, 14):
        stamp = text[:digits] + ("000000" if digits == 8 else "")
        return from_bind_timestamp(stamp, original), text[digits:]
    if digits == 10:
        return int(text[:10]), text[10:]
    if text.lower().startswith("now"):
        return now, text[3:]
    if text[:1].isalpha() and len(text) >= _CTIME_LENGTH:
        try:
            parsed = datetime.strptime(text[:_CTIME_LENGTH], "%a %b %d %H:%M:%S %Y")
        except ValueError:
            raise InvalidTime(_time_help(original)) from None
        return calendar.timegm(parsed.timetuple()), text[_CTIME_LENGTH:]
    if text[:1] in "+-" and len(text) > 1:
        return now, text
    raise InvalidTime(_time_help(original))


def check_key_time(option: str, value: int, now: int) -> int:
    """`value` if BIND can keep it as key timing; InvalidTime naming `option` otherwise."""
    latest = min(KEY_TIME_MAX, now + KEY_TIME_WINDOW)
    earliest = max(0, now - KEY_TIME_WINDOW)
    if earliest <= value <= latest:
        return value
    return _out_of_range(option, value, earliest, latest)


def _out_of_range(option: str, value: int, earliest: int, latest: int) -> int:
    raise InvalidTime(
        f"{option} is {_describe(value)}, which BIND cannot keep as key timing (32-bit seconds): "
        f"use a time between {to_bind_timestamp(earliest)} and {to_bind_timestamp(latest)}"
    )


def _describe(value: int) -> str:
    try:
        return to_bind_timestamp(value)
    except InvalidTime:
        return f"UNIX time {value}"


def parse_ttl(text: str, option: str = "--ttl") -> int:
    """A DNS TTL (`3600`, `1h`, `2d`) in RFC 2181's range 0..2^31-1. Raises InvalidTime."""
    seconds = parse_duration(text)
    if seconds > TTL_MAX:
        raise InvalidTime(f"{option} {text} is {seconds} seconds: a TTL is at most {TTL_MAX} "
                          "(RFC 2181; BIND treats larger ones as 0)")
    return seconds


def from_bind_timestamp(stamp: str, original: str | None = None) -> int:
    """UNIX time of a 14-digit `YYYYMMDDHHMMSS` (UTC) as written in BIND key files."""
    try:
        parsed = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        raise InvalidTime(_time_help(original or stamp)) from None
    return int(parsed.timestamp())


def to_bind_timestamp(unix_time: int) -> str:
    """`YYYYMMDDHHMMSS` in UTC, the form BIND writes in key files (years 1970-9999)."""
    try:
        when = time.gmtime(unix_time)
    except (OverflowError, OSError, ValueError):
        when = None
    if when is None or not 1970 <= when.tm_year <= 9999:
        raise InvalidTime(f"UNIX time {unix_time} has no YYYYMMDDHHMMSS form: use a year from 1970 to 9999")
    return time.strftime("%Y%m%d%H%M%S", when)


def to_ctime(unix_time: int) -> str:
    """`Fri Nov 27 08:00:00 2026` (UTC), the comment form in BIND's .key files."""
    return time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(unix_time))


def _time_help(text: str) -> str:
    return (
        f"invalid time '{text}': use YYYYMMDD[HHMMSS], now, now+1d, +2w or none "
        "(units y, mo, w, d, h, mi, s)"
    )
