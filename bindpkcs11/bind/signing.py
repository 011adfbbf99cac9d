"""Has named's signed zone caught up with the unsigned one, and if not, why (from named's log)?

How BIND 9.18 inline signing maps serials (lib/dns/zone.c, receive_secure_serial): a change to
the unsigned ("raw") zone is copied into the signed zone and signed in one step; the signed SOA
gets the raw serial, or the old signed serial + 1 when the raw one is not greater. So after a
successful sync the signed serial is >= the raw serial (serial arithmetic), but the converse does
not hold: every re-signing bumps the signed serial, so a stale signed zone is often *ahead* of a
newer raw serial (raw 11, signed 12 still holding raw 10's data). The comparison that answers
"are the unsigned changes signed?" is the raw serial against the *source serial*: the raw serial
the signed zone was last synced from. named keeps it in the journals' headers (set in the same
transaction as the signed changes) and starts the next sync from it:

  source = raw journal's source serial, else the raw journal's first serial;
           the signed journal's source serial when that is greater.

No raw journal means no raw change since the signed zone was built from the raw one: in sync.

When a sync fails, named logs why: the shim's own line (`dnssec: error: bindpkcs11: token ...
not found`), then BIND's (`receive_secure_serial: sign failure`, `zone_rekey failure: ...`,
`zone_resigninc:add_sigs -> ...`). Those lines are the reason reload/start/status report.
"""

from __future__ import annotations

import os
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import dns.serial

from bindpkcs11.bind import rndc
from bindpkcs11.bind.instance import Instance
from bindpkcs11.errors import BindPkcs11Error

JOURNAL_MAGIC = b";BIND LOG V9"
# format, begin serial + offset, end serial + offset, index size, source serial, flags
_HEADER = struct.Struct(">16sIIIIIIB")
_SOURCE_SET = 0x01
_LOG_TIME = re.compile(r"^(?P<time>\d{2}-[A-Za-z]{3}-\d{4} \d{2}:\d{2}:\d{2})(?P<fraction>\.\d+) ")
_ERROR = re.compile(r" (?:dnssec|general|update): error: (?P<text>.*)$")
_SIGNING_ERROR = re.compile(r"bindpkcs11: |\(signed\): .*(?:sign|rekey|resign|secure|journal)")
_MAX_LOG_READ = 4 << 20


class SigningFailed(BindPkcs11Error):
    """named could not sign the zone (it logged why)."""

    exit_code = 1


class NotServedSigned(BindPkcs11Error):
    """named did not serve the zone signed in time (and logged no reason)."""

    exit_code = 1


@dataclass(frozen=True)
class JournalHeader:
    """The parts of a BIND journal header (lib/dns/journal.c, 64 bytes, big-endian) used here."""

    begin: int
    end: int
    source: int | None


def read_journal_header(path: Path) -> JournalHeader | None:
    """The header of journal `path`; None when there is none (or it is not a BIND journal)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_HEADER.size)
    except OSError:
        return None
    if len(raw) < _HEADER.size or not raw.startswith(JOURNAL_MAGIC):
        return None
    _, begin, _, end, _, _, source, flags = _HEADER.unpack(raw)
    return JournalHeader(begin, end, source if flags & _SOURCE_SET else None)


def raw_journal(zone_file: Path) -> Path:
    return zone_file.with_name(zone_file.name + ".jnl")


def signed_journal(zone_file: Path) -> Path:
    return zone_file.with_name(zone_file.name + ".signed.jnl")


def source_serial(zone_file: Path) -> int | None:
    """The raw serial the signed zone was last synced from, as named computes it; None when no
    raw change was ever journaled (the signed zone was built from the raw zone as loaded)."""
    raw = read_journal_header(raw_journal(zone_file))
    if raw is None:
        return None
    start = raw.source if raw.source is not None else raw.begin
    signed = read_journal_header(signed_journal(zone_file))
    if signed is not None and signed.source is not None \
            and dns.serial.Serial(signed.source) > dns.serial.Serial(start):
        start = signed.source
    return start


def last_signed_time(zone_file: Path) -> float | None:
    """When named last wrote signed changes (the signed journal's mtime: named writes it only
    after a successful signing run); None without a signed journal."""
    try:
        return signed_journal(zone_file).stat().st_mtime
    except OSError:
        return None


@dataclass(frozen=True)
class SyncState:
    """Serials named holds for an inline-signed zone (`rndc zonestatus`) and the source serial."""

    raw_serial: int | None
    signed_serial: int | None
    source_serial: int | None
    pending_since: float | None

    @property
    def pending(self) -> bool:
        """Unsigned changes not yet in the signed zone (raw serial ahead of the source serial)."""
        return (self.raw_serial is not None and self.source_serial is not None
                and self.raw_serial != self.source_serial)

    @property
    def caught_up(self) -> bool:
        """Nothing pending, and the signed serial is not below the raw one: after a successful
        sync it never is (BIND maps the signed serial to max(raw, old signed + 1))."""
        if self.pending or self.raw_serial is None or self.signed_serial is None:
            return not self.pending
        return dns.serial.Serial(self.signed_serial) >= dns.serial.Serial(self.raw_serial)


def zonestatus_serials(text: str) -> tuple[int | None, int | None]:
    """(serial, signed serial) from `rndc zonestatus` output."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("serial", "signed serial") and value.strip().isdigit():
            found[key] = int(value)
    return found.get("serial"), found.get("signed serial")


def sync_state(instance: Instance, prefix: Path, zone: str, zone_file: Path) -> SyncState:
    """Ask named for its serials and read the journals; `pending_since` is when named took the
    newest raw change (the raw journal's mtime), for a pending state only."""
    raw, signed = zonestatus_serials(rndc.rndc(instance, prefix, "zonestatus", zone))
    source = source_serial(zone_file)
    state = SyncState(raw, signed, source, None)
    if state.pending:
        try:
            state = SyncState(raw, signed, source, raw_journal(zone_file).stat().st_mtime)
        except OSError:
            pass
    return state


@dataclass(frozen=True)
class LogMark:
    """A position in named's log: what named writes after it is new."""

    inode: int | None
    offset: int


def log_mark(instance: Instance) -> LogMark:
    try:
        info = instance.log_file.stat()
    except OSError:
        return LogMark(None, 0)
    return LogMark(info.st_ino, info.st_size)


def log_since(instance: Instance, mark: LogMark | None = None) -> list[str]:
    """Lines of named's log after `mark` (all of the current file when it was rotated since),
    at most the last few MB."""
    try:
        with open(instance.log_file, "rb") as handle:
            info = os.fstat(handle.fileno())
            start = 0
            if mark is not None and mark.inode == info.st_ino and mark.offset <= info.st_size:
                start = mark.offset
            start = max(start, info.st_size - _MAX_LOG_READ)
            handle.seek(start)
            text = handle.read(_MAX_LOG_READ).decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()


def signing_errors(lines: list[str], after: float | None = None) -> list[str]:
    """named's signing error lines (the shim's and BIND's), without the timestamp prefix, logged
    at or after UNIX time `after` when given."""
    errors: list[str] = []
    for line in lines:
        match = _ERROR.search(line)
        if not match or not _SIGNING_ERROR.search(match.group("text")):
            continue
        if after is not None and (logged := log_time(line)) is not None and logged < after:
            continue
        errors.append(match.group("text"))
    return errors


def errors_since_success(instance: Instance, zone_file: Path,
                         last_signed: float | None = None) -> list[str]:
    """named's signing errors after its last successful signing: `last_signed` when the caller
    knows it (from the served SOA RRSIG), else the signed journal's mtime; all of the log's
    recent errors when neither is known (the zone was never signed)."""
    # The served time has whole seconds: an error in that same second counts (rather report a
    # stale error than hide a fresh one; named's own retries are seconds apart).
    after = last_signed if last_signed is not None else last_signed_time(zone_file)
    return signing_errors(log_since(instance), after=after)


def log_time(line: str) -> float | None:
    """The UNIX time of a named log line (named writes local time)."""
    match = _LOG_TIME.match(line)
    if not match:
        return None
    try:
        seconds = time.mktime(time.strptime(match.group("time"), "%d-%b-%Y %H:%M:%S"))
    except ValueError:
        return None
    return seconds + float(match.group("fraction"))


def failure_reason(errors: list[str]) -> str | None:
    """One line from named's error lines: the shim's reason first, then what BIND did with it."""
    if not errors:
        return None
    shim = [e for e in errors if e.startswith("bindpkcs11: ")]
    bind = [e for e in errors if not e.startswith("bindpkcs11: ")]
    parts = []
    if shim:
        parts.append(shim[-1].removeprefix("bindpkcs11: "))
    if bind:
        parts.append(f"named: {_without_zone(bind[-1])}")
    return "; ".join(parts)


def _without_zone(text: str) -> str:
    """`zone example.test/IN (signed): receive_secure_serial: sign failure` -> the part after it."""
    return text.split("(signed): ", 1)[-1]


@dataclass
class SigningWatch:
    """Watches one instance's zone from a log mark on: has named signed the unsigned zone, or
    logged why it cannot?"""

    instance: Instance
    prefix: Path
    zone: str
    zone_file: Path
    mark: LogMark

    @classmethod
    def start(cls, instance: Instance, prefix: Path, zone: str, zone_file: Path) -> "SigningWatch":
        return cls(instance, prefix, zone, zone_file, log_mark(instance))

    def failure(self) -> str | None:
        """named's reason when it logged a signing error since the mark."""
        return failure_reason(signing_errors(log_since(self.instance, self.mark)))

    def state(self) -> SyncState:
        return sync_state(self.instance, self.prefix, self.zone, self.zone_file)

    def raise_if_failed(self) -> None:
        reason = self.failure()
        if reason:
            raise SigningFailed(f"named cannot sign {self.zone}: {reason}")
