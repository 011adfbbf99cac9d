"""Which bundle the online signer uses now, and how long the bundles on hand last (the runway).

Selection reads only the headers, so one scrypt + decryption per round suffices; the chosen
header is authenticated when that bundle is opened. The bundle for the current period is
preferred. When it is missing (a gap), the most recent bundle whose signature still covers
now + margin is used during its overlap, so a late copy is not an outage; the runway warning
names the gap long before that runs out. A bundle is never used before its period starts (its
RRSIG is back-dated for clock skew): that would sign with a ZSK before it was pre-published.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bindpkcs11.dnssec.bundles import BundleHeader, bundles_in, read_header
from bindpkcs11.dnssec.refusals import NoCoveringBundle
from bindpkcs11.timespec import to_bind_timestamp


@dataclass(frozen=True)
class Candidate:
    path: Path
    header: BundleHeader


@dataclass(frozen=True)
class Choice:
    """The bundle to use; `runway_end` is when the bundles on hand stop covering now + margin."""

    path: Path
    header: BundleHeader
    current_period: bool
    runway_end: int
    gap_after: int | None


def choose(directory: Path, zone: str, now: int, margin: int) -> Choice:
    """The bundle to sign with at `now`; NoCoveringBundle with the reason when there is none."""
    found = scan(directory, zone)
    usable = [c for c in found
              if c.header.period_start <= now and c.header.covers(now, now + margin)]
    if not usable:
        raise NoCoveringBundle(_why_none(directory, zone, found, now, margin))
    current = [c for c in usable if now < c.header.period_end]
    if current:
        chosen = max(current, key=lambda c: c.header.ceremony)
    else:
        chosen = max(usable, key=lambda c: (c.header.period_start, c.header.ceremony))
    runway_end, gap_after = runway(found, chosen, margin)
    return Choice(chosen.path, chosen.header, bool(current), runway_end, gap_after)


def scan(directory: Path, zone: str) -> list[Candidate]:
    """The bundles for `zone`. A damaged bundle file stops the round: nobody can tell which period
    it was for, and a bad copy of one file usually means the whole copy is suspect."""
    found = []
    for path in bundles_in(directory):
        header, _ = read_header(path)
        if header.zone == zone:
            found.append(Candidate(path, header))
    return found


def runway(found: Sequence[Candidate], chosen: Candidate, margin: int) -> tuple[int, int | None]:
    """End of the unbroken chain of periods from `chosen`, and where a gap breaks it (if later
    bundles exist)."""
    by_start = {c.header.period_start: c for c in found}
    current = chosen
    while True:
        following = by_start.get(current.header.period_end)
        if following is None or following.header.inception > current.header.expiration - margin:
            break
        current = following
    later = any(c.header.period_start > current.header.period_end for c in found)
    return current.header.expiration - margin, current.header.period_end if later else None


def _why_none(directory: Path, zone: str, found: Sequence[Candidate], now: int, margin: int) -> str:
    stamp = to_bind_timestamp
    if not found:
        return f"no bundles for {zone} in {directory}: copy the ceremony output there"
    before = [c.header for c in found if c.header.period_start <= now]
    after = [c.header for c in found if c.header.period_start > now]
    if not after:
        last = max(before, key=lambda h: h.expiration)
        return (f"the bundles ran out: the last one (period {last.index}) is valid only until "
                f"{stamp(last.expiration)}, less than the {margin} s margin from now "
                f"({stamp(now)}): hold a new ceremony")
    if not before:
        first = min(after, key=lambda h: h.period_start)
        return (f"no bundle has started yet: the first period starts at {stamp(first.period_start)}, "
                f"now is {stamp(now)}")
    previous = max(before, key=lambda h: h.expiration)
    following = min(after, key=lambda h: h.inception) if after else None
    next_text = f", the next is valid from {stamp(following.inception)}" if following else ""
    return (f"gap in the bundles: none covers {stamp(now)} + {margin} s (the previous one expires at "
            f"{stamp(previous.expiration)}{next_text}): copy the missing bundle")
