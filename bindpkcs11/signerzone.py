"""One signing pass of the online signer (signer.py): from the unsigned zone's bytes and an
opened, checked bundle to the exact bytes to publish.

Compile the unsigned zone (named-compilezone: parse check, canonical text), bump the serial, add
the bundle's DNSKEY RRset, sign with the bundle's ZSKs (dnssec-signzone, whose self-check verifies
every RRSIG it made), replace the ZSK's DNSKEY signature with the bundle's KSK RRSIG and check that
splice in software. Kept apart from signer.py, which decides *whether* to sign and publishes: this
module only turns inputs into a zone or refuses with the reason.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

import dns.dnssec
import dns.name
import dns.rrset

from bindpkcs11.dnssec.bundlecheck import parse_rrset
from bindpkcs11.dnssec.bundles import Bundle
from bindpkcs11.dnssec.dnskey import key_tag
from bindpkcs11.dnssec.keyfile import base_name
from bindpkcs11.dnssec.refusals import SignerRefused, ValidationFailed, ZoneInvalid
from bindpkcs11.dnssec.zonesource import read_zone_source
from bindpkcs11.dnssec.zonetext import check_rrsig_signers, prepare_unsigned, splice_dnskey_rrsigs
from bindpkcs11.errors import InputFileError, ToolFailed
from bindpkcs11.fileio import write_atomic
from bindpkcs11.run import run_tool, tail
from bindpkcs11.timespec import to_bind_timestamp

if TYPE_CHECKING:
    from bindpkcs11.signer import SignerConfig

CLOCK_SKEW = 3600
MAX_UNSIGNED_BYTES = 1 << 30


def sign_zone(config: "SignerConfig", bundle: Bundle, anchor: dns.rrset.RRset, unsigned: bytes,
          work: Path, previous: int | None, now: int) -> tuple[bytes, int]:
    """Compile, prepare, sign and splice in `work`; returns the zone to publish and its serial.

    The inception is back-dated from the earlier of `now` and the real clock: dnssec-signzone's
    self-check judges the signatures by the real clock, so a rehearsal (`--now` in the future)
    with inception now - 1 h found every signature "not yet valid" ("No self-signed DNSKEY
    found"). The expiration still follows `now`.
    """
    origin = config.zone.to_text()
    compiled = _compile_unsigned(config, unsigned, work)
    prepared = prepare_unsigned(compiled, origin, lambda unsigned: next_serial(previous, unsigned, now),
                                bundle.content.dnskey_rrset + bundle.content.sync_rrsets)
    zone_in = work / "zone.in"
    zone_in.write_text(prepared.text)
    names = _write_zsks(config, bundle, work / "keys")
    inception = min(now, int(time.time())) - CLOCK_SKEW
    try:
        run_tool(["dnssec-signzone", "-O", "full", "-z", "-N", "keep", "-o", origin,
                  "-K", str(work / "keys"), "-f", str(work / "signed"),
                  "-s", to_bind_timestamp(inception),
                  "-e", to_bind_timestamp(now + config.sig_validity), str(zone_in), *names],
                 cwd=work, what="dnssec-signzone")
    except ToolFailed as error:
        raise SignerRefused(f"signing failed, nothing published: {error}") from None
    spliced = splice_dnskey_rrsigs((work / "signed").read_bytes(), origin,
                                   bundle.content.rrsigs + bundle.content.sync_rrsigs)
    _check_dnskey_splice(config, bundle, anchor, spliced.dnskey_lines, now)
    check_rrsig_signers(spliced.data, origin, bundle.header.ksk_tags, bundle.content.signing_tags)
    if config.full_verify:
        _verify(config, spliced.data, work)
    return spliced.data, prepared.serial


def read_unsigned(path: Path, zone: dns.name.Name) -> bytes:
    """The unsigned zone's bytes with its $INCLUDEs expanded: regular files of at most
    MAX_UNSIGNED_BYTES in all (a FIFO, a device or a huge file is refused with one line, without
    blocking or reading it all), included files only from the zone file's own directory, so that
    named-compilezone (run as root) reads nothing but bytes bindpkcs11 hashed and checked."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise ZoneInvalid(f"cannot read the unsigned zone {path}: {error.strerror}") from None
    if stat.S_ISREG(info.st_mode) and info.st_size > MAX_UNSIGNED_BYTES:
        raise ZoneInvalid(f"the unsigned zone {path} is {info.st_size} bytes, more than the "
                          f"{MAX_UNSIGNED_BYTES} this signer reads: is it the right file?")
    try:
        return read_zone_source(path, zone, MAX_UNSIGNED_BYTES).encode()
    except InputFileError as error:
        raise ZoneInvalid(f"the unsigned zone cannot be used, nothing published: {error}") from None


def _compile_unsigned(config: "SignerConfig", unsigned: bytes, work: Path) -> str:
    """The unsigned zone (exactly the bytes hashed this round) in canonical full style;
    ZoneInvalid with named's own reason, naming the operator's file, otherwise."""
    source, target = work / "unsigned.in", work / "unsigned.full"
    source.write_bytes(unsigned)
    try:
        run_tool(["named-compilezone", "-i", "local", "-s", "full", "-o", str(target),
                  config.zone.to_text(), str(source)],
                 cwd=config.unsigned.resolve().parent, what="named-compilezone")
    except ToolFailed as error:
        reason = _reason(str(error)).replace(str(source), str(config.unsigned))
        raise ZoneInvalid(f"the unsigned zone {config.unsigned} does not load, nothing published: "
                          f"{reason}") from None
    return target.read_text()


def _write_zsks(config: "SignerConfig", bundle: Bundle, key_dir: Path) -> list[str]:
    """The period's ZSKs as BIND key files in a 0700 directory; returns their names."""
    key_dir.mkdir(mode=0o700)
    algorithms = {key_tag(rdata): rdata.algorithm
                  for rdata in parse_rrset(bundle, bundle.content.dnskey_rrset)}
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


def _check_dnskey_splice(config: "SignerConfig", bundle: Bundle, anchor: dns.rrset.RRset,
                         dnskey_lines: tuple[str, ...], now: int) -> None:
    """The published DNSKEY RRset is byte for byte the bundle's, and each of its RRSIGs validates
    now with its KSK alone (the trust anchor): a resolver holding either KSK's DS validates."""
    published = parse_rrset(bundle, "\n".join(dnskey_lines))
    expected = parse_rrset(bundle, bundle.content.dnskey_rrset)
    if published != expected or published.ttl != expected.ttl:
        raise ValidationFailed("the DNSKEY RRset in the signed zone differs from the bundle's, "
                               "nothing published")
    rrsigs = parse_rrset(bundle, bundle.content.rrsigs)
    for rrsig in rrsigs:
        single = dns.rrset.RRset(rrsigs.name, rrsigs.rdclass, rrsigs.rdtype, rrsigs.covers)
        single.add(rrsig)
        try:
            dns.dnssec.validate(published, single, {anchor.name: anchor}, now=now)
        except dns.dnssec.ValidationFailure as error:
            raise ValidationFailed(f"the bundle's DNSKEY signature by KSK {rrsig.key_tag} does not "
                                   f"validate at {to_bind_timestamp(now)} ({error}), nothing "
                                   "published") from None
    if min(rrsig.expiration for rrsig in rrsigs) < now + config.margin:
        raise ValidationFailed("the bundle's DNSKEY signature expires within the margin, "
                               "nothing published")


def _verify(config: "SignerConfig", data: bytes, work: Path) -> None:
    """Stock dnssec-verify on the exact bytes to publish (-x: DNSKEY signed by the KSK only)."""
    final = work / "final"
    final.write_bytes(data)
    try:
        run_tool(["dnssec-verify", "-q", "-x", "-o", config.zone.to_text(), str(final)],
                 what="dnssec-verify")
    except ToolFailed as error:
        raise ValidationFailed(f"dnssec-verify rejected the signed zone, nothing published: "
                               f"{error}") from None


def next_serial(previous: int | None, unsigned: int, now: int) -> int:
    """Always higher than the last published serial: max(previous + 1, unsigned, now)."""
    candidates = [unsigned, now] + ([previous + 1] if previous is not None else [])
    return max(candidates) % (1 << 32)


def _reason(message: str) -> str:
    """The first thing named-compilezone complained about (ToolFailed joins lines with ' | ')."""
    detail = message.split("): ", 1)[-1]
    return detail.split(" | ")[0] or tail(message)
