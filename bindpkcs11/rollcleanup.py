"""`bindpkcs11 rollover cleanup DOMAIN`: destroy the token object of a key a rollover removed.

A rollover leaves the predecessor's private key on the token: named stops serving its DNSKEY at
Delete, but the object stays until someone destroys it, and a destroyed key cannot come back. So
this is offered (status, rollover zsk|ksk print the command), never done by itself, and each key
must be confirmed by tag (a typed "destroy TAG", or --confirm TAG for scripts). A key qualifies
only when all of these hold, each checked again under the instance lock just before destroying:

- its Delete time has passed (the key files say it is removed, as named reads them);
- named no longer serves its DNSKEY nor any RRSIG by it (asked of the instance's own listen
  address: what named does is the truth, not what the files say);
- its token object is still there.

Not on a BIND 9.20 instance (stock or patched): named 9.20 keeps a removed key in its key ring
until purge-keys (90 days by default) has passed, and once the key's files are gone before then
every key event fails ("zone_rekey:zone_verifykeys failed: some key files are missing", lib/dns/
zone.c zone_verifykeys), retried at once: named ran at 94 % CPU and never rolled a key again
until restarted (found by an outside probe, 9.20.23 and the patched 9.20.26). There named
deletes the key files itself at purge-keys, and the object is then destroyed with `token
delete`.

The object is destroyed through the same path as `token delete` (admin.delete_object: per-token
lock, the guard against unreadable key files, never an active key's private key, custody record
updated); then the key files move to `<instance>/retired-keys/` (never deleted) and every step
goes into the audit log there. Success is reported only after the served zone still validates.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dns.name

from bindpkcs11 import admin, inline, keystatus, locks, monitor
from bindpkcs11.access import TokenAccess
from bindpkcs11.bind.instance import Instance
from bindpkcs11.ceremonylog import CeremonyLog
from bindpkcs11.errors import BindPkcs11Error, ObjectNotFound, RefusedDeletion, UsageError
from bindpkcs11.keystatus import KeyStatus
from bindpkcs11.state import StateDir
from bindpkcs11.token.uri import parse_uri

RETIRED_DIR = "retired-keys"
AUDIT_LOG = "cleanup.log"


class UnknownKeyTag(UsageError):
    """No key of the zone has that tag."""


class CleanupRefused(UsageError):
    """The key's token object is not destroyed: a rule forbids it."""


class StillServed(CleanupRefused):
    """named still serves the key; its token object is not destroyed."""


class NamedKeepsKeys(CleanupRefused):
    """BIND 9.20 keeps removed keys until purge-keys; their files are not moved before then."""


class NotConfirmed(UsageError):
    """The destruction was not confirmed; nothing was destroyed."""


class ServedZoneUnknown(BindPkcs11Error):
    """What named serves could not be checked, so no token object is destroyed."""


class CleanupUnverified(BindPkcs11Error):
    """The token object was destroyed but the served zone does not validate now."""


@dataclass(frozen=True)
class Candidate:
    """A key whose token object may be destroyed: past Delete, not served, object present."""

    role: str
    tag: int
    uri: str
    token: str
    object: str
    key_file: str
    delete: int | None


@dataclass(frozen=True)
class Destroyed:
    role: str
    tag: int
    uri: str
    public_destroyed: bool
    moved_to: list[str]


@dataclass(frozen=True)
class CleanupResult:
    zone: str
    destroyed: list[Destroyed]
    served_dnskeys: list[int]
    validates: bool
    audit_log: str


def candidates(state: StateDir, zone: dns.name.Name) -> list[Candidate]:
    """The keys `rollover cleanup` would offer now (what the operator is asked to confirm)."""
    instance = Instance.for_zone(state, zone)
    _refuse_named_920(instance, zone)
    rows = keystatus.zone_status(state, zone).keys
    served = served_tags(zone, instance)
    return [_candidate(row) for row in rows if _refusal(row, served, instance) is None]


def cleanup(state: StateDir, zone: dns.name.Name, tags: list[int], how: str) -> CleanupResult:
    """Destroy the token objects of the keys `tags` (each confirmed `how`) and retire their files.

    Every tag is checked against every rule before anything is destroyed, under the instance
    lock (a rollover or setup-inline cannot change the key files meanwhile)."""
    instance = Instance.for_zone(state, zone)
    settings = instance.load_settings()
    _refuse_named_920(instance, zone)
    with locks.held(inline.instance_lock(state, zone), f"the instance of {zone}"):
        chosen = _checked(state, zone, instance, tags)
        retired = instance.root / RETIRED_DIR
        retired.mkdir(mode=0o700, exist_ok=True)
        destroyed = []
        with CeremonyLog(retired / AUDIT_LOG) as log:
            for key in chosen:
                log.event("CONFIRM", f"{zone} {key.role.upper()} {key.tag} {key.uri} ({how})")
            for key in chosen:
                destroyed.append(_destroy(state, settings.profile, instance, key, retired, log))
            report = monitor.check_zone(zone, settings.listen, settings.port)
            served = sorted(k.key_tag for k in report.dnskeys)
            log.event("SERVED", f"{zone} at {settings.listen}#{settings.port}: DNSKEY {served}, "
                                f"status {report.status}")
    if report.status == "critical":
        raise CleanupUnverified(
            f"destroyed the token object(s) of key(s) {[d.tag for d in destroyed]}, but "
            f"{zone} does not validate as served now ({'; '.join(report.problems)}): check named")
    return CleanupResult(zone.to_text(), destroyed, served, True, str(retired / AUDIT_LOG))


def _refuse_named_920(instance: Instance, zone: dns.name.Name) -> None:
    """A dnssec-policy instance (BIND 9.20; 9.18 --test-timings, whose zone.c runs the same
    zone_verifykeys): refused before anything is read or destroyed (see the module)."""
    if instance.exists() and instance.load_settings().under_policy:
        raise NamedKeepsKeys(
            f"{zone} is signed under a dnssec-policy (BIND 9.20, or --test-timings), whose key "
            "manager keeps a removed key until "
            "purge-keys (90 days by default) and stops rolling keys if its files go before: "
            "named deletes the key files itself then, and 'bindpkcs11 token delete' destroys "
            "the token object after that; nothing destroyed")


def served_tags(zone: dns.name.Name, instance: Instance) -> set[int]:
    """Tags of the DNSKEYs and apex RRSIGs named serves now at the instance's address."""
    settings = instance.load_settings()
    report = monitor.check_zone(zone, settings.listen, settings.port)
    if not report.dnskeys:
        raise ServedZoneUnknown(
            f"cannot tell whether named still serves the keys of {zone}: no DNSKEY RRset from "
            f"{settings.listen}#{settings.port} ({'; '.join(report.problems) or 'no answer'}); "
            f"start the instance ('bindpkcs11 named start {zone}') and retry; nothing destroyed")
    return {k.key_tag for k in report.dnskeys} | {
        sig.key_tag for rrset in report.rrsets for sig in rrset.signatures}


def _checked(state: StateDir, zone: dns.name.Name, instance: Instance,
             tags: list[int]) -> list[Candidate]:
    """The candidates for `tags`; the first tag that breaks a rule refuses the whole run."""
    rows = keystatus.zone_status(state, zone).keys
    served = served_tags(zone, instance)
    chosen = []
    for tag in dict.fromkeys(tags):
        matches = [row for row in rows if row.tag == tag and row.key_file]
        if not matches:
            raise UnknownKeyTag(f"no key file of {zone} has tag {tag}: 'bindpkcs11 status "
                                f"{zone}' lists its keys; nothing destroyed")
        if len(matches) > 1:
            raise CleanupRefused(f"{len(matches)} keys of {zone} have tag {tag}: destroy the "
                                 "right one with 'bindpkcs11 token delete'; nothing destroyed")
        refusal = _refusal(matches[0], served, instance)
        if refusal is not None:
            raise refusal
        chosen.append(_candidate(matches[0]))
    profile = instance.load_settings().profile
    for key in chosen:
        with _custody_rules(key):
            admin.refuse_destroying_private(_access(state, profile, instance, key), key.object,
                                            None, int(time.time()))
    return chosen


@contextlib.contextmanager
def _custody_rules(key: Candidate) -> Iterator[None]:
    """token delete's custody refusals, told without its --force hint (cleanup has none)."""
    try:
        yield
    except RefusedDeletion as error:
        reason = str(error).split("; retire it first", 1)[0].split(", or give --force twice")[0]
        raise CleanupRefused(f"{key.role.upper()} {key.tag} not destroyed: {reason} (rule: never "
                             "an active key's private key)") from None


def _access(state: StateDir, profile: str, instance: Instance, key: Candidate) -> TokenAccess:
    return TokenAccess.build(state, profile, key.token, pin_file=instance.pin_file)


def _refusal(row: KeyStatus, served: set[int], instance: Instance) -> CleanupRefused | None:
    """Why `row`'s token object must not be destroyed now (the rule named), or None."""
    name = f"{row.role.upper()} {row.tag}"
    if row.key_file is None:
        return CleanupRefused(f"{name}: token object {row.uri} has no key file, so its Delete "
                              "time is unknown; rollover cleanup only destroys keys whose Delete "
                              "has passed (see 'bindpkcs11 token delete'); nothing destroyed")
    if row.state != "removed":
        delete = row.times.get("delete")
        when = f"Delete at {monitor.iso_time(delete)}" if delete else "no Delete time"
        return CleanupRefused(f"{name} is {row.state} ({when}): only a key whose Delete has "
                              "passed is destroyed; nothing destroyed")
    if row.tag in served:
        return StillServed(f"{name} is past Delete but named still serves it (DNSKEY or RRSIG "
                           f"at {_where(instance)}): only a key gone from the served zone is "
                           "destroyed; wait for named to remove it; nothing destroyed")
    if row.location != "token" or not row.uri:
        return CleanupRefused(f"{name} is a software key: there is no token object to destroy "
                              f"(its files stay in {Path(row.key_file).parent})")
    if row.token_object != "present":
        return CleanupRefused(f"{name}: its token object {row.uri} is {row.token_object} on the "
                              "token; nothing to destroy")
    return None


def _where(instance: Instance) -> str:
    settings = instance.load_settings()
    return f"{settings.listen}#{settings.port}"


def _candidate(row: KeyStatus) -> Candidate:
    uri = parse_uri(row.uri)
    return Candidate(row.role, row.tag, row.uri, uri.token or "", uri.object or "",
                     row.key_file or "", row.times.get("delete"))


def _destroy(state: StateDir, profile: str, instance: Instance, key: Candidate, retired: Path,
             log: CeremonyLog) -> Destroyed:
    """`token delete --type private` (custody rules, guard, token lock), the public half too,
    then the key files to retired/."""
    access = _access(state, profile, instance, key)
    now = int(time.time())
    with _custody_rules(key):  # checked again under the token lock
        admin.delete_object(access, key.object, "private", 1, None, now)
    log.event("DESTROYED", f"private key '{key.object}' on token '{key.token}'")
    try:
        admin.delete_object(access, key.object, "public", 1, None, now)
        log.event("DESTROYED", f"public key '{key.object}' on token '{key.token}'")
        public = True
    except ObjectNotFound:
        public = False
    return Destroyed(key.role, key.tag, key.uri, public, _retire_files(Path(key.key_file),
                                                                       retired, log))


def _retire_files(key_file: Path, retired: Path, log: CeremonyLog) -> list[str]:
    """Move K...key/.private (and any .state) out of the key directory, never deleting them."""
    moved = []
    for path in sorted(key_file.parent.glob(f"{key_file.stem}.*")):
        data = path.read_bytes()
        target = retired / path.name
        if target.exists():
            target = retired / f"{path.name}.{int(time.time())}"
        path.replace(target)
        log.wrote(target, data)
        moved.append(str(target))
    return moved
