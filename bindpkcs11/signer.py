"""The online signer (the 2012 demo's `signemd`): keeps a zone signed with the software ZSKs and
pre-signed DNSKEY RRsets of an offline-KSK ceremony, with stock BIND tools and no token.

A round: pick the bundle for now (+ margin), decide whether anything changed, compile the
unsigned zone (named-compilezone: parse check, canonical text), bump the serial, add the bundle's
DNSKEY RRset, sign with the bundle's ZSKs (dnssec-signzone, whose self-check verifies every RRSIG
it made), replace the ZSK's DNSKEY signature with the bundle's KSK RRSIG and check that splice in
software, then swap the output atomically and have named reload. Any failure leaves the last good
zone in place. The ZSK private keys exist only in a 0700 temporary directory during the round.

dnssec-signzone signs even small zones: measured (bench/bench_signer.py), dnspython is faster only
for tiny zones (15 ms against 27 ms at 20 hosts) and 2-3 times slower from 1,000 hosts on, and one
code path keeps the output identical to what BIND's own tools produce.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import dns.dnssec
import dns.name
import dns.rdata
import dns.rrset

from bindpkcs11.dnssec.bundles import Bundle, Unlocker, open_bundle
from bindpkcs11.dnssec.bundleselect import Choice, choose
from bindpkcs11.dnssec.dnskey import key_tag
from bindpkcs11.dnssec.keyfile import base_name
from bindpkcs11.dnssec.refusals import SignerRefused, ValidationFailed, ZoneInvalid
from bindpkcs11.dnssec.zonetext import prepare_unsigned, soa_serial, splice_dnskey_rrsigs
from bindpkcs11.errors import BindPkcs11Error, ToolFailed
from bindpkcs11.fileio import write_atomic
from bindpkcs11.run import run_tool, tail
from bindpkcs11.timespec import to_bind_timestamp

CLOCK_SKEW = 3600
STATE_SUFFIX = ".signer.json"


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
    """One round at time `now`: publish a freshly signed zone if anything changed, else nothing."""
    started = time.monotonic()
    choice = choose(config.bundle_dir, config.zone.to_text(), now, config.margin)
    state = _load_state(config.state_path)
    digest = _file_sha256(config.unsigned)
    reason = _resign_reason(config, state, choice, digest, now)
    warnings = _warnings(choice, now, config)
    if reason is None:
        return _result(config, now, False, "up to date", state.get("serial"), choice,
                       tuple(state.get("zsk_tags", ())), warnings, started)
    bundle = open_bundle(choice.path, unlocker)
    if bundle.header != choice.header or bundle.header.zone != config.zone.to_text():
        raise SignerRefused(f"bundle {choice.path.name} changed while it was being read: retry")
    previous = state.get("serial") or _published_serial(config)
    with _private_dir() as work:
        data, serial = _sign(config, bundle, work, previous, now)
    write_atomic(config.out, data, mode=0o644)
    _save_state(config, {
        "serial": serial, "unsigned_sha256": digest, "bundle": _bundle_id(choice),
        "zsk_expiration": now + config.sig_validity, "output_sha256": hashlib.sha256(data).hexdigest(),
        "zsk_tags": list(bundle.content.signing_tags), "published_at": now,
    })
    if config.reload is not None:
        try:
            config.reload()
        except ToolFailed as error:
            raise ReloadFailed(f"published serial {serial} to {config.out} but named did not "
                               f"reload it: {error}") from None
    return _result(config, now, True, reason, serial, choice, bundle.content.signing_tags,
                   warnings, started)


def run_loop(config: SignerConfig, unlocker: Unlocker, clock: Callable[[], int], interval: float,
             report: Callable[[RoundResult | BindPkcs11Error], None], stop: threading.Event) -> None:
    """Rounds every `interval` seconds until `stop` is set; a failed round is reported, not fatal."""
    while not stop.is_set():
        try:
            report(run_round(config, unlocker, clock()))
        except BindPkcs11Error as error:
            report(error)
        stop.wait(interval)


def _sign(config: SignerConfig, bundle: Bundle, work: Path, previous: int | None,
          now: int) -> tuple[bytes, int]:
    """Compile, prepare, sign and splice in `work`; returns the zone to publish and its serial."""
    origin = config.zone.to_text()
    compiled = _compile_unsigned(config, work)
    prepared = prepare_unsigned(compiled, origin, lambda unsigned: _next_serial(previous, unsigned, now),
                                bundle.content.dnskey_rrset)
    zone_in = work / "zone.in"
    zone_in.write_text(prepared.text)
    names = _write_zsks(config, bundle, work / "keys")
    try:
        run_tool(["dnssec-signzone", "-O", "full", "-z", "-N", "keep", "-o", origin,
                  "-K", str(work / "keys"), "-f", str(work / "signed"),
                  "-s", to_bind_timestamp(now - CLOCK_SKEW),
                  "-e", to_bind_timestamp(now + config.sig_validity), str(zone_in), *names],
                 cwd=work, what="dnssec-signzone")
    except ToolFailed as error:
        raise SignerRefused(f"signing failed, nothing published: {error}") from None
    spliced = splice_dnskey_rrsigs((work / "signed").read_bytes(), origin, bundle.content.rrsigs)
    _check_dnskey_splice(config, bundle, spliced.dnskey_lines, now)
    if config.full_verify:
        _verify(config, spliced.data, work)
    return spliced.data, prepared.serial


def _compile_unsigned(config: SignerConfig, work: Path) -> str:
    """The unsigned zone in canonical full style; ZoneInvalid with named's own reason otherwise."""
    target = work / "unsigned.full"
    try:
        run_tool(["named-compilezone", "-i", "local", "-s", "full", "-o", str(target),
                  config.zone.to_text(), str(config.unsigned.resolve())],
                 cwd=config.unsigned.resolve().parent, what="named-compilezone")
    except ToolFailed as error:
        raise ZoneInvalid(f"the unsigned zone {config.unsigned} does not load, nothing published: "
                          f"{_reason(str(error))}") from None
    return target.read_text()


def _write_zsks(config: SignerConfig, bundle: Bundle, key_dir: Path) -> list[str]:
    """The period's ZSKs as BIND key files in a 0700 directory; returns their names."""
    key_dir.mkdir(mode=0o700)
    algorithms = {key_tag(rdata): rdata.algorithm for rdata in _rrset(bundle.content.dnskey_rrset)}
    names = []
    for zsk in bundle.content.zsks:
        if zsk.tag not in algorithms:
            raise ValidationFailed(f"bundle {bundle.path.name} holds ZSK {zsk.tag}, which is not "
                                   "in its DNSKEY RRset")
        stem = base_name(config.zone, algorithms[zsk.tag], zsk.tag)
        write_atomic(key_dir / f"{stem}.private", zsk.private_text, mode=0o600)
        write_atomic(key_dir / f"{stem}.key", zsk.key_text, mode=0o644)
        names.append(stem)
    return names


def _check_dnskey_splice(config: SignerConfig, bundle: Bundle, dnskey_lines: tuple[str, ...],
                         now: int) -> None:
    """The published DNSKEY RRset is byte for byte the signed one, and its RRSIG validates now."""
    published, expected = _rrset("\n".join(dnskey_lines)), _rrset(bundle.content.dnskey_rrset)
    if published != expected or published.ttl != expected.ttl:
        raise ValidationFailed("the DNSKEY RRset in the signed zone differs from the bundle's, "
                               "nothing published")
    rrsigs = _rrset(bundle.content.rrsigs)
    try:
        dns.dnssec.validate(published, rrsigs, {published.name: published}, now=now)
    except dns.dnssec.ValidationFailure as error:
        raise ValidationFailed(f"the bundle's DNSKEY signature does not validate at "
                               f"{to_bind_timestamp(now)} ({error}), nothing published") from None
    if min(rrsig.expiration for rrsig in rrsigs) < now + config.margin:
        raise ValidationFailed("the bundle's DNSKEY signature expires within the margin, "
                               "nothing published")


def _verify(config: SignerConfig, data: bytes, work: Path) -> None:
    """Stock dnssec-verify on the exact bytes to publish (-x: DNSKEY signed by the KSK only)."""
    final = work / "final"
    final.write_bytes(data)
    try:
        run_tool(["dnssec-verify", "-q", "-x", "-o", config.zone.to_text(), str(final)],
                 what="dnssec-verify")
    except ToolFailed as error:
        raise ValidationFailed(f"dnssec-verify rejected the signed zone, nothing published: "
                               f"{error}") from None


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


def _next_serial(previous: int | None, unsigned: int, now: int) -> int:
    """Always higher than the last published serial: max(previous + 1, unsigned, now)."""
    candidates = [unsigned, now] + ([previous + 1] if previous is not None else [])
    return max(candidates) % (1 << 32)


def _published_serial(config: SignerConfig) -> int | None:
    """The serial of the zone already at --out (a state file lost or a first run over old output)."""
    try:
        with open(config.out, encoding="utf-8", errors="replace") as handle:
            return soa_serial(handle.read(1 << 16), config.zone.to_text())
    except OSError:
        return None


def _bundle_id(choice: Choice) -> str:
    return f"{choice.path.name}#{choice.header.ceremony}#{choice.header.index}"


def _rrset(text: str) -> dns.rrset.RRset:
    """One RRset from zone file lines in full style (owner TTL class type rdata)."""
    rrset = None
    for line in text.splitlines():
        if not line.strip():
            continue
        owner, ttl, rdclass, rdtype, rdata = line.split(None, 4)
        parsed = dns.rdata.from_text(rdclass, rdtype, rdata)
        if rrset is None:
            rrset = dns.rrset.RRset(dns.name.from_text(owner), parsed.rdclass, parsed.rdtype,
                                    parsed.covers())
            rrset.update_ttl(int(ttl))
        rrset.add(parsed)
    if rrset is None:
        raise ValidationFailed("empty RRset in a bundle")
    return rrset


def _file_sha256(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as error:
        raise ZoneInvalid(f"cannot read {path}: {error.strerror}") from None


def _load_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _save_state(config: SignerConfig, state: dict) -> None:
    write_atomic(config.state_path, json.dumps(state, indent=2) + "\n", mode=0o644)


def _reason(message: str) -> str:
    """The first thing named-compilezone complained about (ToolFailed joins lines with ' | ')."""
    detail = message.split("): ", 1)[-1]
    return detail.split(" | ")[0] or tail(message)


@contextlib.contextmanager
def _private_dir() -> Iterator[Path]:
    """A 0700 scratch directory, removed with the ZSK private keys in it whatever happens."""
    path = Path(tempfile.mkdtemp(prefix="bindpkcs11-signer-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
