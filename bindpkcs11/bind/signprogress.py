"""How far has named got signing a zone, and how long until it is done? From named's own state.

named 9.18 signs an inline zone in batches (config.SigningBatch, lib/dns/zone.c zone_sign); each
batch is one commit that bumps the signed zone's SOA serial by one. After a fresh load the signed
serial starts at the unsigned one, so `signed serial - serial` (`rndc zonestatus`) counts the
batches done, `SigningBatch.batches_for(nodes)` ("nodes": names of the unsigned zone, also from
zonestatus) the batches a full pass of both keys takes, and `rndc signing -list` says whether a
key is still signing. The count is an estimate (a named restarted half-way starts the pass
again from a higher serial): the percentage stays below 100 until named says it is done.

While named signs a zone for the first time it serves no RRSIG until its NSEC chain is complete
(the zone is not "secure"); when the KSK's pass completes the chain first, it serves the apex
signed while most names are still unsigned. So this progress is the only sign of life a slow
pass gives, and "done" is no key still signing, whatever the apex looks like. `SigningMonitor`
turns it into progress lines, a deadline from the zone's size and the ZSK's rate, and
"stalled" when the serial stops moving.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bindpkcs11.bind import rndc
from bindpkcs11.bind.config import SigningBatch, signing_batch, signing_rate
from bindpkcs11.bind.instance import Instance, InstanceSettings
from bindpkcs11.errors import BindPkcs11Error, ToolFailed

BATCH_PAUSE = 0.01  # named waits 10 ms between batches (zone.c)
BATCH_OVERHEAD = 0.03  # named's own work per batch (NSEC chain, commit, journal), 20k-100k names
STALL_AFTER = 60.0  # no new batch for this long while a key is still signing: stuck
POLL_EVERY = 1.0
REPORT_EVERY = 5.0
Report = Callable[[str], None]


class SigningStalled(BindPkcs11Error):
    """named stopped making progress signing the zone."""

    exit_code = 10


class StillSigning(BindPkcs11Error):
    """named is still signing the zone; it keeps running and serves it signed when done."""

    exit_code = 15  # not a failure, not done yet (75 is "another process holds the lock")


@dataclass(frozen=True)
class SigningPace:
    """What one instance's named was configured with: its batch limits and the ZSK's rate."""

    batch: SigningBatch
    rate: int | None

    def expected_seconds(self, names: int) -> float:
        """A full signing pass over `names` names at the measured rate, pauses included."""
        batches = self.batch.batches_for(names)
        signing = 2 * names / self.rate if self.rate else batches * 1.0
        return signing + batches * (BATCH_PAUSE + BATCH_OVERHEAD)

    def timeout(self, names: int, floor: float) -> float:
        """How long a start may wait: twice the expected pass (a loaded machine), at least `floor`."""
        return max(floor, floor + 2 * self.expected_seconds(names))


def pace_for(settings: InstanceSettings) -> SigningPace:
    """The pace config.render gave this instance's named."""
    return SigningPace(signing_batch(settings), signing_rate(settings))


@dataclass(frozen=True)
class SigningProgress:
    """One reading of named's signing state."""

    nodes: int
    done: int  # batches committed (estimate)
    total: int  # batches for a full pass of both keys
    signing: bool  # a key is still signing (`rndc signing -list`)
    secure: bool  # the signed zone is complete enough to be served with RRSIGs
    seconds_left: float | None = None

    @property
    def fraction(self) -> float:
        if not self.signing:
            return 1.0
        return min(0.99, self.done / self.total) if self.total else 0.0

    def text(self) -> str:
        """"signing: 62 % (about 124,000 of 200,000 signatures), about 2 min left"."""
        signatures = 2 * self.nodes
        line = (f"signing: {int(self.fraction * 100)} % (about {int(self.fraction * signatures):,} "
                f"of {signatures:,} signatures, {self.nodes:,} names)")
        if self.seconds_left is not None:
            line += f", about {_duration(self.seconds_left)} left"
        return line


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


def read_progress(instance: Instance, prefix: Path, zone: str, batch: SigningBatch) -> SigningProgress | None:
    """The current reading; None while named has not loaded the zone (rndc refuses)."""
    try:
        status = rndc.rndc(instance, prefix, "zonestatus", zone)
    except ToolFailed:
        return None
    try:
        keys: str | None = rndc.rndc(instance, prefix, "signing", "-list", zone)
    except ToolFailed:
        keys = None
    if keys is not None and rndc.POLICY_REFUSAL in keys:
        keys = None  # a dnssec-policy zone (--test-timings, stock 9.20): no such list
    fields = dict(line.split(": ", 1) for line in status.splitlines() if ": " in line)
    try:
        serial, signed, nodes = (int(fields[k]) for k in ("serial", "signed serial", "nodes"))
    except (KeyError, ValueError):
        return None
    ahead = (signed - serial) % 2**32
    done = ahead if ahead < 2**31 else 0  # serial arithmetic: a signed serial behind counts 0
    secure = fields.get("secure") == "yes"
    # without the list, only the first pass shows: the zone is not secure until it is done
    signing = any(line.startswith("Signing with key") for line in keys.splitlines()) \
        if keys is not None else not secure
    return SigningProgress(nodes, done, batch.batches_for(nodes), signing, secure)


def with_time_left(progress: SigningProgress, seconds_per_batch: float | None) -> SigningProgress:
    if not progress.signing or seconds_per_batch is None:
        return progress
    left = max(0, progress.total - progress.done) * seconds_per_batch
    return SigningProgress(progress.nodes, progress.done, progress.total, progress.signing,
                           progress.secure, left)


@dataclass
class SigningMonitor:
    """Watches a named that is loading and signing a zone, for `named.start` and reload waits.

    `poll()` reads the progress (at most every POLL_EVERY s), reports it every REPORT_EVERY s
    while a key is signing, and raises SigningStalled when the batch count has not moved for
    `stall_after` seconds although a key is still signing. `deadline()` is the explicit timeout,
    else one derived from the zone's size (known once named reports its nodes) and the rate.
    `still_signing()` at the deadline: the last reading when named was still making progress.
    """

    instance: Instance
    prefix: Path
    zone: str
    pace: SigningPace
    floor: float
    timeout: float | None = None
    report: Report | None = None
    stall_after: float = STALL_AFTER
    started: float = field(default_factory=time.monotonic)
    last: SigningProgress | None = None
    _first: tuple[float, int] | None = None
    _advanced: float | None = None
    _polled: float = float("-inf")
    _reported: float = float("-inf")

    def deadline(self) -> float:
        if self.timeout is not None:
            return self.started + self.timeout
        names = self.last.nodes if self.last else 0
        return self.started + self.pace.timeout(names, self.floor)

    def poll(self) -> None:
        now = time.monotonic()
        if now - self._polled < POLL_EVERY:
            return
        self._polled = now
        reading = read_progress(self.instance, self.prefix, self.zone, self.pace.batch)
        if reading is None:
            return
        if self.last is None or reading.done != self.last.done:
            self._advanced = now
        if self._first is None or reading.done < self._first[1]:
            self._first = (now, reading.done)
        self.last = with_time_left(reading, self._seconds_per_batch(now, reading))
        if not reading.signing:
            return
        if self.report and now - self._reported >= REPORT_EVERY:
            self._reported = now
            self.report(self.last.text())
        if self._advanced is not None and now - self._advanced > self.stall_after:
            raise SigningStalled(f"named stopped signing {self.zone}: signed serial unchanged for "
                                 f"{now - self._advanced:.0f} s with a key still signing "
                                 f"({self.last.text()})")

    def finished(self) -> bool:
        """A fresh reading says no key is still signing. named may serve the apex signed (and
        so pass the readiness checks) while its pass is still signing the rest of the zone:
        when the KSK's pass completes the NSEC chain first, the zone turns secure with names
        not yet signed, so "done" also needs this."""
        self._polled = float("-inf")
        self.poll()
        return self.last is not None and not self.last.signing

    def _seconds_per_batch(self, now: float, reading: SigningProgress) -> float | None:
        """From the batches seen so far; before that, from the pace."""
        if self._first is not None and reading.done > self._first[1] and now > self._first[0]:
            return (now - self._first[0]) / (reading.done - self._first[1])
        if self.pace.rate:
            return self.pace.batch.signatures / self.pace.rate + BATCH_PAUSE + BATCH_OVERHEAD
        return None

    def still_signing(self) -> SigningProgress | None:
        """The last reading if named is still signing and moved within `stall_after`."""
        if self.last is None or not self.last.signing or self._advanced is None:
            return None
        return self.last if time.monotonic() - self._advanced <= self.stall_after else None

    def left_running(self, pid: int) -> StillSigning:
        """The error for a deadline that passed while named kept signing."""
        reading = self.last
        waited = time.monotonic() - self.started
        return StillSigning(
            f"named (pid {pid}) is still signing {self.zone} after {waited:.0f} s "
            f"({reading.text() if reading else 'signing'}); it keeps running and serves the zone "
            f"signed when done: watch it with 'bindpkcs11 named status {self.zone.rstrip('.')}' "
            "(a longer --timeout waits for it)")
