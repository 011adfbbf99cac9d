"""Does the served (signed) zone follow the unsigned zone? `monitor`'s serial-lag check.

The unsigned side is either a zone file the operator names (`--unsigned FILE`: its SOA serial)
or a setup-inline instance (the serial named loaded, and whether named has signed it:
bind/signing.py). The zone lags when the served serial is below the unsigned serial (serial
arithmetic) or, for an instance, when named reports unsigned changes it has not signed: with
inline signing a stale signed serial can be *ahead* of a newer unsigned one, so the serial
comparison alone would miss that case (it is the only test available for an external `--unsigned`
file).

Since when? monitor keeps no state between runs, so the lag is dated from a file time:
  --unsigned FILE   FILE's mtime: when the change the server has not caught up with was written;
  an instance       the raw journal's mtime (named writes it when it loads a change, i.e. at
                    `named reload`), else the served unsigned copy's mtime.
An edit made while an older change is still unsigned resets the clock to the newer edit, so a
zone edited more often than the grace period while signing is stuck shows the lag late; `named
status` reports pending changes and named's errors at once, whatever their age.
A lag younger than the warning period is normal (named signs within seconds; a secondary
transfers after NOTIFY) and leaves the status ok.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.serial
import dns.zone

from bindpkcs11.errors import InputFileError
from bindpkcs11.dnssec.zonesource import read_zone_source

DEFAULT_WARNING = 300
DEFAULT_CRITICAL = 1800


@dataclass(frozen=True)
class SerialLag:
    """One comparison; `age` is how long the zone has lagged (0 when it does not)."""

    served_serial: int | None
    unsigned_serial: int | None
    unsigned_source: str
    pending: bool
    lagging: bool
    since: int | None
    age: int
    status: str
    problem: str | None


def unsigned_file_serial(path: Path, zone: dns.name.Name) -> tuple[int, int]:
    """(SOA serial, mtime) of an unsigned zone file; InputFileError with one line when unusable."""
    text = read_zone_source(Path(path), zone)  # limits, regular files, $INCLUDE as named sees it
    mtime = int(Path(path).stat().st_mtime)
    try:
        parsed = dns.zone.from_text(text, origin=zone, relativize=False, check_origin=False)
        soa = parsed.get_soa()
    except (UnicodeDecodeError, dns.exception.DNSException, KeyError) as error:
        raise InputFileError(f"unsigned zone file {path} has no usable SOA for {zone}: "
                           f"{error}") from None
    return soa.serial, mtime


def evaluate(served: int | None, unsigned: int | None, source: str, pending: bool,
             since: float | None, now: int, warning: int = DEFAULT_WARNING,
             critical: int = DEFAULT_CRITICAL) -> SerialLag:
    """Compare; the status escalates with the lag's age (warning, then critical)."""
    behind = unsigned is not None and (served is None
                                       or dns.serial.Serial(served) < dns.serial.Serial(unsigned))
    lagging = pending or behind
    start = int(since) if lagging and since is not None else None
    age = max(0, now - start) if start is not None else 0
    status = "critical" if lagging and age >= critical else \
        "warning" if lagging and age >= warning else "ok"
    problem = None
    if status != "ok":
        what = (f"unsigned serial {unsigned} not signed yet" if pending
                else f"served serial {served} behind unsigned serial {unsigned}")
        problem = (f"serial lag: {what} ({source}) for {_duration(age)} "
                   f"({status} after {_duration(warning if status == 'warning' else critical)})")
    return SerialLag(served, unsigned, source, pending, lagging, start, age, status, problem)


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"
