"""The online signer (the 2012 demo's `signemd`): keeps a zone signed with the software ZSKs and
pre-signed DNSKEY RRsets of an offline-KSK ceremony, with stock BIND tools and no token.

A round: pick the bundle for now (+ margin), decide whether anything changed, compile the
unsigned zone (named-compilezone: parse check, canonical text), bump the serial, add the bundle's
DNSKEY RRset, sign with the bundle's ZSKs (dnssec-signzone, whose self-check verifies every RRSIG
it made), replace the ZSK's DNSKEY signature with the bundle's KSK RRSIG and check that splice in
software, then swap the output atomically and have named reload (the signing pass itself is
signerzone.py). Any failure leaves the last good
zone in place. The ZSK private keys exist only in a 0700 work directory under the state directory
during the round (signerwork.py).

The bundle is the trust anchor: its authenticated header names the zone and the KSK, and nothing
is published unless the bundle passes bundlecheck.py, the DNSKEY RRset in the output is the
bundle's, its RRSIG verifies with that KSK alone at `now`, and every other RRSIG in the output was
made by one of the period's ZSKs (a pass over the final bytes). dnssec-signzone's self-check has
verified every RRSIG it made against that DNSKEY RRset.

dnssec-signzone signs even small zones: measured (bench/bench_signer.py), dnspython is faster only
for tiny zones (15 ms against 27 ms at 20 hosts) and 2-3 times slower from 1,000 hosts on, and one
code path keeps the output identical to what BIND's own tools produce.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import dns.name

from bindpkcs11.dnssec.bundlecheck import check_bundle
from bindpkcs11.dnssec.bundles import Unlocker, open_bundle
from bindpkcs11.dnssec.bundleselect import Candidate, Choice, choose, scan
from bindpkcs11.dnssec.refusals import SignerRefused, ZoneInvalid
from bindpkcs11.dnssec.zonetext import soa_serial
from bindpkcs11.errors import BindPkcs11Error, ToolFailed, UsageError, os_error_message
from bindpkcs11.fileio import read_limited, write_atomic
from bindpkcs11.signerwork import round_dir
from bindpkcs11.signerzone import CLOCK_SKEW, read_unsigned, sign_zone
from bindpkcs11.timespec import to_bind_timestamp

STATE_SUFFIX = ".signer.json"
MAX_STATE_BYTES = 1 << 16


class ReloadFailed(BindPkcs11Error):
    """The zone was published but named did not reload it."""

    exit_code = 10


@dataclass(frozen=True)
class SignerConfig:
    """What `bindpkcs11 signer run` keeps signed, and its safety settings (seconds)."""

    zone: dns.name.Name
    unsigned: Path
    bundle_dir: Path
    out: Path
    margin: int
    sig_validity: int
    refresh: int
    warn: int
    work_root: Path
    full_verify: bool = False
    reload: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def state_path(self) -> Path:
        return self.out.with_name(self.out.name + STATE_SUFFIX)


@dataclass(frozen=True)
class RoundResult:
    """What one round did; `runway_end` is when the bundles on hand stop covering now + margin."""

    zone: str
    now: int
    published: bool
    reason: str
    serial: int | None
    bundle: str
    period_index: int
    zsk_tags: tuple[int, ...]
    runway_end: int
    runway_low: bool
    warnings: tuple[str, ...]
    seconds: float


def run_round(config: SignerConfig, unlocker: Unlocker, now: int) -> RoundResult:
    """One round at time `now`: publish a freshly signed zone if anything changed, else nothing.

    A file that cannot be written (a full disk, a read-only file system) refuses the round like
    any other fault: the last good zone stays published and the loop goes on."""
    try:
        return _round(config, unlocker, now)
    except OSError as error:
        raise SignerRefused(f"{os_error_message(error)}; nothing published, the last good zone "
                            "stays") from None


def _round(config: SignerConfig, unlocker: Unlocker, now: int) -> RoundResult:
    started = time.monotonic()
    choice = choose(config.bundle_dir, config.zone.to_text(), now, config.margin)
    state = _load_state(config.state_path)
    unsigned = read_unsigned(config.unsigned, config.zone)
    digest = hashlib.sha256(unsigned).hexdigest()
    reason = _resign_reason(config, state, choice, digest, now)
    warnings = _warnings(choice, now, config)
    if reason is None:
        note = "reloaded named, whose last reload had failed" if _reload(config, state) else \
            "up to date"
        return _result(config, now, False, note, state.get("serial"), choice,
                       tuple(state.get("zsk_tags", ())), warnings, started)
    bundle = open_bundle(choice.path, unlocker)
    if bundle.header != choice.header:
        raise SignerRefused(f"bundle {choice.path.name} changed while it was being read: retry")
    anchor = check_bundle(bundle, config.zone)
    previous = state.get("serial") or _published_serial(config)
    with round_dir(config.work_root) as work:
        data, serial = sign_zone(config, bundle, anchor, unsigned, work, previous, now)
    write_atomic(config.out, data, mode=0o644)
    record = {
        "serial": serial, "unsigned_sha256": digest, "bundle": _bundle_id(choice),
        "zsk_expiration": now + config.sig_validity, "output_sha256": hashlib.sha256(data).hexdigest(),
        "zsk_tags": list(bundle.content.signing_tags), "published_at": now,
        "reloaded": config.reload is None,
    }
    _save_state(config, record)
    _reload(config, record)
    return _result(config, now, True, reason, serial, choice, bundle.content.signing_tags,
                   warnings, started)


def _reload(config: SignerConfig, record: dict) -> bool:
    """Have named load the published zone if it has not yet; True if it was reloaded now.

    The state says whether the last reload happened, so one that failed (or was cut short by
    SIGTERM) is retried by every later round instead of named serving the old zone until the
    next re-sign."""
    if config.reload is None or record.get("reloaded", True):
        return False
    try:
        config.reload()
    except ToolFailed as error:
        raise ReloadFailed(f"published serial {record.get('serial')} to {config.out} but named did "
                           f"not reload it (retried each round): {error}") from None
    _save_state(config, {**record, "reloaded": True})
    return True


def run_loop(config: SignerConfig, unlocker: Unlocker, clock: Callable[[], int], interval: float,
             report: Callable[[RoundResult | BindPkcs11Error], None], stop: threading.Event) -> None:
    """Rounds every `interval` seconds until `stop` is set; a failed round is reported, not fatal."""
    while not stop.is_set():
        try:
            report(run_round(config, unlocker, clock()))
        except BindPkcs11Error as error:
            report(error)
        stop.wait(interval)


def check_upcoming(config: SignerConfig, unlocker: Unlocker, now: int) -> list[Path]:
    """Decrypt and check every bundle of the zone whose period falls within now .. now + warn,
    so a corrupted copy or a wrong passphrase shows at start, not at the next switch."""
    needed = [c for c in scan(config.bundle_dir, config.zone.to_text()) if _needed(c, config, now)]
    for candidate in needed:
        try:
            check_bundle(open_bundle(candidate.path, unlocker), config.zone)
        except BindPkcs11Error as error:
            raise type(error)(f"bundle {candidate.path.name} (period {candidate.header.index}, "
                              f"from {to_bind_timestamp(candidate.header.period_start)}) is needed "
                              f"within --warn and cannot be used: {error}") from None
    return [c.path for c in needed]


def _needed(candidate: Candidate, config: SignerConfig, now: int) -> bool:
    header = candidate.header
    return header.period_start <= now + config.warn and now < header.expiration


def rehearsing(now: int) -> bool:
    """True when `now` lies ahead of the real clock by more than the signatures' back-dating."""
    return now - CLOCK_SKEW > time.time()


def _resign_reason(config: SignerConfig, state: dict, choice: Choice, digest: str,
                   now: int) -> str | None:
    """Why this round must sign, or None when the published zone is still good."""
    if not state or not config.out.exists():
        return "no signed zone yet"
    if state.get("output_sha256") != _file_sha256(config.out):
        return "the published zone was changed on disk"
    if state.get("unsigned_sha256") != digest:
        return "the unsigned zone changed"
    if state.get("bundle") != _bundle_id(choice):
        return f"switching to bundle {choice.path.name} (period {choice.header.index})"
    if state.get("zsk_expiration", 0) <= now + config.refresh:
        return f"signatures expire at {to_bind_timestamp(state.get('zsk_expiration', 0))}"
    return None


def _warnings(choice: Choice, now: int, config: SignerConfig) -> tuple[str, ...]:
    notes = []
    if choice.runway_end - now < config.warn:
        notes.append(f"the bundles run out at {to_bind_timestamp(choice.runway_end)} (in "
                     f"{max(0, choice.runway_end - now)} s): hold the next ceremony")
    if choice.gap_after is not None:
        notes.append(f"gap in the bundles at {to_bind_timestamp(choice.gap_after)}")
    if not choice.current_period:
        notes.append(f"no bundle for the current period: using period {choice.header.index}'s "
                     f"until {to_bind_timestamp(choice.header.expiration - config.margin)}")
    return tuple(notes)


def _result(config: SignerConfig, now: int, published: bool, reason: str, serial, choice: Choice,
            zsk_tags, warnings: tuple[str, ...], started: float) -> RoundResult:
    return RoundResult(
        zone=config.zone.to_text(), now=now, published=published, reason=reason, serial=serial,
        bundle=choice.path.name, period_index=choice.header.index, zsk_tags=tuple(zsk_tags),
        runway_end=choice.runway_end, runway_low=choice.runway_end - now < config.warn,
        warnings=warnings, seconds=round(time.monotonic() - started, 3),
    )


def _published_serial(config: SignerConfig) -> int | None:
    """The serial of the zone already at --out (a state file lost or a first run over old output)."""
    try:
        with _open_regular(config.out) as handle:
            head = handle.read(1 << 16).decode("utf-8", errors="replace") if handle else ""
    except OSError:
        return None
    return soa_serial(head, config.zone.to_text())


def _bundle_id(choice: Choice) -> str:
    return f"{choice.path.name}#{choice.header.ceremony}#{choice.header.index}"


def check_out_path(path: Path) -> None:
    """--out must be a regular file (or not exist yet): the signer hashes and replaces it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as error:
        raise UsageError(f"--out {path}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"--out {path} is not a regular file: give the path of the signed zone file")


def _file_sha256(path: Path) -> str:
    """SHA-256 of the published zone ("" if it is not a regular file: it will be replaced)."""
    try:
        with _open_regular(path) as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest() if handle else ""
    except OSError as error:
        raise ZoneInvalid(f"cannot read {path}: {error.strerror}") from None


def _open_regular(path: Path):
    """`path` opened for reading without blocking (a FIFO would), or None if it is not a
    regular file; a context manager either way."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return os.fdopen(fd, "rb")
    os.close(fd)
    return contextlib.nullcontext(None)


def _load_state(path: Path) -> dict:
    """The last round's record; unreadable or damaged means none (the next round re-signs)."""
    try:
        state = json.loads(read_limited(path, MAX_STATE_BYTES, "signer state")[0])
    except (BindPkcs11Error, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _save_state(config: SignerConfig, state: dict) -> None:
    write_atomic(config.state_path, json.dumps(state, indent=2) + "\n", mode=0o644)
