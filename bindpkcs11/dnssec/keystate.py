"""named 9.20's key state files (`K<zone>+<alg>+<tag>.state`): what its key manager decided.

Under a dnssec-policy named keeps, next to each key's .key/.private, a .state file with the
key's RFC 7583 times (Published, Active, Retired, Removed, PublishCDS, DeleteCDS), its
successor or predecessor, and the state of each record it owns (DNSKEY, zone/key RRSIG, DS:
hidden, rumoured, omnipresent, unretentive) with the goal it moves them to. On the stock route
those files, not timing bindpkcs11 computed, say what named will do next.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from pathlib import Path

from bindpkcs11.dnssec.keyfile import KeyPairFiles
from bindpkcs11.fileio import read_text_limited

STATE_FILE_LIMIT = 64 * 1024
# .state fields that are times, under the names `status` uses for the same events.
STATE_TIMES = {"Published": "publish", "Active": "activate", "Retired": "inactive",
               "Removed": "delete", "PublishCDS": "sync_publish", "DeleteCDS": "sync_delete",
               "DSPublish": "ds_published", "DSRemoved": "ds_removed"}
STATE_NAMES = {"GoalState": "goal", "DNSKEYState": "dnskey", "ZRRSIGState": "zone_rrsig",
               "KRRSIGState": "key_rrsig", "DSState": "ds"}
RECORDS = ("dnskey", "zone_rrsig", "key_rrsig", "ds")
SIGNATURES = {"zsk": "zone_rrsig", "ksk": "key_rrsig"}  # the RRSIGs each role makes
# Record states in which named serves the record (keymgr.c: hidden and unretentive are not).
IN_ZONE = ("rumoured", "omnipresent")


@dataclass(frozen=True)
class KeyState:
    """One key's .state file, parsed."""

    states: dict[str, str]
    times: dict[str, int]
    successor: int | None
    predecessor: int | None

    def leaving(self) -> bool:
        """named is retiring the key and some record of it is still out: its DNSKEY, its
        signatures or its DS. Not its Removed time: that is named's provisional schedule, and an
        old KSK stays past it until named is told the parent withdrew its DS (`rndc dnssec
        -checkds`; measured on 9.20.23: Removed passed 50 s into a test-timings roll while named
        still waited)."""
        return self.retiring and any(self.states.get(record, "hidden") != "hidden"
                                     for record in RECORDS)

    @property
    def retiring(self) -> bool:
        """named published the key and wants it gone (goal hidden). A key it never published
        (a successor waiting in the key directory) has goal hidden too, but is not retiring."""
        return self.published and self.states.get("goal") == "hidden"

    @property
    def published(self) -> bool:
        """named has published the key at some time (a waiting successor has no Published)."""
        return "publish" in self.times

    def signing(self, role: str) -> bool:
        """named signs with the key now: the RRSIGs of its role are out or going out."""
        return self.states.get(SIGNATURES[role]) in IN_ZONE

    def retired(self, role: str) -> bool:
        """named has published the key, wants it gone and no longer signs with it."""
        return self.retiring and not self.signing(role)

    @property
    def cds(self) -> bool:
        """named publishes CDS/CDNSKEY for the key: under a policy it decides by the DS state
        alone (dnssec.c syncpublish), not by the SyncPublish/SyncDelete times."""
        return self.states.get("ds") in IN_ZONE


def state_path(pair: KeyPairFiles) -> Path:
    """Where named keeps the key's .state file, beside its .key."""
    return pair.key_path.with_suffix(".state")


def read_state(pair: KeyPairFiles) -> KeyState | None:
    """The key's .state file, or None when named has not written one (not under a policy)."""
    path = state_path(pair)
    if not path.exists():
        return None
    fields = {}
    for line in read_text_limited(path, STATE_FILE_LIMIT, f"key state file {path}").splitlines():
        if not line.startswith(";") and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    times = {name: _bind_time(fields[key]) for key, name in STATE_TIMES.items() if key in fields}
    states = {name: fields[key].lower() for key, name in STATE_NAMES.items() if key in fields}
    return KeyState(states,
                    {k: v for k, v in times.items() if v is not None},
                    _int(fields.get("Successor")), _int(fields.get("Predecessor")))


def _bind_time(value: str) -> int | None:
    """`20261130113159 (Mon Nov 30 11:31:59 2026)` (UTC) -> UNIX time."""
    stamp = value.split()[0] if value else ""
    if len(stamp) != 14 or not stamp.isdigit():
        return None
    try:
        return calendar.timegm(time.strptime(stamp, "%Y%m%d%H%M%S"))
    except ValueError:  # 20261399999999: digits, not a time
        return None


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None
