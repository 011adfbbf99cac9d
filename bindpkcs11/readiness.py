"""When may `named start`, `named reload` and setup-inline say "done"? When named *serves* it.

Two checks, both polled with a deadline by the caller:
  ServedSigned     what named answers validates (monitor's rules), the apex SOA is signed by an
                   expected ZSK, the DNSKEY RRset by an expected KSK, and each extra NAME/TYPE
                   (the records a reload added or changed) by an expected ZSK;
  SignedAndSynced  that, plus: named's signed zone holds the unsigned zone's current contents
                   (bind/signing.py: source serial == raw serial), the served SOA is named's
                   current signed serial, and named has logged no signing error since the
                   check began (then it raises SigningFailed with named's reason at once,
                   instead of waiting for the deadline).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import dns.name
import dns.rdatatype

from bindpkcs11 import monitor
from bindpkcs11.bind.instance import Instance
from bindpkcs11.bind.signing import SigningWatch, SyncState
from bindpkcs11.errors import ToolFailed

READY_QUERY_TIMEOUT = 0.5
CHECK_INTERVAL = 0.25


def signed_tags(report: monitor.ZoneReport, name: str, rdtype: str) -> set[int]:
    """Tags of the valid RRSIGs over the RRset NAME/TYPE in a monitor report."""
    return {sig.key_tag for rrset in report.rrsets if rrset.rdtype == rdtype and rrset.name == name
            for sig in rrset.signatures if sig.valid}


@dataclass
class ServedSigned:
    """Callable: True once the served zone validates, signed by the expected keys."""

    zone: dns.name.Name
    server: str
    port: int
    ksk_tags: frozenset[int]
    zsk_tags: frozenset[int]
    lookups: tuple[monitor.Lookup, ...] = ()
    last: monitor.ZoneReport | None = field(default=None, repr=False)

    def __call__(self) -> bool:
        report = monitor.check_zone(self.zone, self.server, self.port, names=self.lookups,
                                    timeout=READY_QUERY_TIMEOUT)
        self.last = report
        apex = self.zone.to_text()
        if report.status == "critical":
            return False
        if not self.zsk_tags & signed_tags(report, apex, "SOA"):
            return False
        if not self.ksk_tags & signed_tags(report, apex, "DNSKEY"):
            return False
        return all(self.zsk_tags & signed_tags(report, name.to_text(),
                                               dns.rdatatype.to_text(rdtype))
                   for name, rdtype in self.lookups if name != self.zone)

    def why_not(self) -> str:
        """What the last check saw, for a timeout message."""
        if self.last is None:
            return "no answer yet"
        if self.last.problems:
            return "; ".join(self.last.problems)
        return (f"served serial {self.last.serial} not signed by the expected keys "
                f"(ZSK {sorted(self.zsk_tags)}, KSK {sorted(self.ksk_tags)})")


@dataclass
class SignedAndSynced:
    """Callable: ServedSigned, and named's signed zone has caught up with the unsigned one."""

    served: ServedSigned
    watch: SigningWatch
    state: SyncState | None = field(default=None, repr=False)
    rndc_error: str | None = field(default=None, repr=False)
    _checked: float = field(default=float("-inf"), repr=False)

    def __call__(self) -> bool:
        if time.monotonic() - self._checked < CHECK_INTERVAL:
            return False  # each check costs DNS queries and an rndc call that named logs
        self._checked = time.monotonic()
        self.watch.raise_if_failed()
        try:
            self.state = self.watch.state()
        except ToolFailed as error:
            self.rndc_error = str(error)
            return False  # rndc not answering yet (named still starting)
        if not self.state.caught_up or not self.served():
            return False
        signed = self.state.signed_serial
        return signed is None or self.served.last.serial == signed

    def why_not(self) -> str:
        state = self.state
        if state is None:
            return self.rndc_error or "named's control channel did not answer"
        if not state.caught_up:
            return (f"unsigned serial {state.raw_serial} not signed yet (signed serial "
                    f"{state.signed_serial}, signed zone from unsigned serial "
                    f"{state.source_serial if state.source_serial is not None else '-'})")
        return self.served.why_not()


def with_signing(instance: Instance, prefix: Path, ready: Callable[[], bool]) -> Callable[[], bool]:
    """`ready` plus the sync check when it is a ServedSigned (setup-inline, named start)."""
    if not isinstance(ready, ServedSigned):
        return ready
    zone_file = instance.zone_file(ready.zone)
    watch = SigningWatch.start(instance, prefix, ready.zone.to_text(), zone_file)
    return SignedAndSynced(ready, watch)
