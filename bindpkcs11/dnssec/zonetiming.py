"""The timing rule that keeps secondaries from serving expired signatures.

named re-signs an RRset when its signature has `refresh` left before it expires (the second
value of sig-validity-interval), so every signature a secondary transferred has at least
`refresh` left. A secondary cut off from the primary keeps serving the zone until SOA EXPIRE
has passed, and resolvers keep what they fetched for up to the zone's largest TTL. Hence:

    SOA EXPIRE + max zone TTL < refresh margin (validity - re-sign interval)

The operator's zone file is never edited to make it hold: the refusal names the numbers and
what to change.
"""

from __future__ import annotations

from bindpkcs11.errors import UsageError


class ZoneTimingUnsafe(UsageError):
    """The zone's SOA EXPIRE lets a secondary serve expired signatures."""


def require_expire_within_refresh(expire: int, max_ttl: int, validity: int, refresh: int,
                                  shown_as: str, config_text: str) -> None:
    """ZoneTimingUnsafe unless EXPIRE + max TTL < the refresh margin (all in seconds)."""
    if expire + max_ttl < refresh:
        return
    highest = refresh - max_ttl - 1
    raise ZoneTimingUnsafe(
        f"{shown_as}: SOA EXPIRE {expire} s ({_days(expire)}) + max TTL {max_ttl} s is not below "
        f"the {refresh} s ({_days(refresh)}) a signature has left when named re-signs it "
        f"({config_text}, validity {_days(validity)}): a secondary cut off from this primary "
        f"would serve expired signatures; lower the SOA EXPIRE in the zone file to at most "
        f"{highest} s (or lower the largest TTL), then run setup-inline again (bindpkcs11 never edits "
        "your zone file)")


def _days(seconds: int) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 86400 else f"{seconds} s"
