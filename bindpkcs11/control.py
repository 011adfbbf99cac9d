"""Day-to-day control of an instance set up by setup-inline: start, stop, status, reload, rndc."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.serial
import dns.zone

from bindpkcs11 import inline, instancekeys, locks, monitor, processes, readiness
from bindpkcs11.access import TokenAccess
from bindpkcs11.bind import config, named, ports, privileges, rndc, route, signing, signprogress
from bindpkcs11.bind.health import SigningHealth, signing_health
from bindpkcs11.backup import custody
from bindpkcs11.bind.instance import Instance, InstanceSettings
from bindpkcs11.bind.programs import STOCK
from bindpkcs11.dnssec.keyfile import key_pairs_in
from bindpkcs11.dnssec.zonesource import read_zone_source
from bindpkcs11.errors import BindPkcs11Error, KeyFileError, PinIncorrect, UsageError
from bindpkcs11.fileio import write_atomic
from bindpkcs11.state import StateDir
from bindpkcs11.token.uri import parse_uri


RELOAD_TIMEOUT = 15.0
MAX_CHANGED_LOOKUPS = 50
_DNSSEC_TYPES = {dns.rdatatype.SOA, dns.rdatatype.DNSKEY, dns.rdatatype.RRSIG, dns.rdatatype.NSEC,
                 dns.rdatatype.NSEC3, dns.rdatatype.NSEC3PARAM, dns.rdatatype.CDS,
                 dns.rdatatype.CDNSKEY}


@dataclass(frozen=True)
class InstanceStatus:
    zone: str
    running: bool
    pid: int | None
    listen: str
    port: int
    serial: int | None
    signing: list[rndc.SigningKey]
    problem: str | None
    health: SigningHealth | None = None
    progress: signprogress.SigningProgress | None = None  # while a key is still signing
    custody: list[KeyCustody] = field(default_factory=list)


@dataclass(frozen=True)
class KeyCustody:
    """One active key of the instance and its known copies (backup/custody.py)."""

    role: str
    tag: int
    copies: str


def _loaded(state: StateDir, zone: dns.name.Name) -> tuple[Instance, InstanceSettings, Path]:
    instance = Instance.for_zone(state, zone)
    settings = instance.load_settings()
    return instance, settings, route.installed(state, settings.bind, settings.bind_prefix,
                                               settings.bind_version).prefix


def _access(state: StateDir, instance: Instance, settings: InstanceSettings) -> TokenAccess:
    return TokenAccess.build(state, settings.profile, settings.token, pin_file=instance.pin_file)


def start(state: StateDir, zone: dns.name.Name, timeout: float | None = None,
          progress: signprogress.Report | None = None) -> int:
    """Start named for `zone` and wait until it serves the signed zone caught up with the
    unsigned one and has signed a new serial through the token (_load_and_sign); the pid.
    A signing failure stops named again and names named's reason; a named still signing a big
    zone at the deadline (`timeout`, else from the zone's size) keeps running (StillSigning)."""
    with _instance_locked(state, zone), ports.assignment_locked(state):
        return _start(state, zone, timeout, progress)


def _instance_locked(state: StateDir, zone: dns.name.Name):
    """The instance lock setup-inline holds: start, stop and reload never race it or each other."""
    return locks.held(inline.instance_lock(state, zone), f"the instance of {zone}")


def _start(state: StateDir, zone: dns.name.Name, timeout: float | None,
           progress: signprogress.Report | None) -> int:
    instance, settings, prefix = _loaded(state, zone)
    named.require_stopped(instance)
    ports.require_ports(state, instance, settings.listen, settings.port, settings.rndc_port, None)
    access = _access(state, instance, settings)
    ksk, zsk = (_key(instance, zone, settings, role) for role in ("ksk", "zsk"))
    ready = inline.ready_check(zone, settings.listen, settings.port, ksk.tag, zsk.tag)
    if settings.bind == STOCK:
        _check_instance_pin(access, instance)
    # start_named waits until the signed zone has caught up (readiness.SignedAndSynced)
    pid = inline.start_named(instance, route.installed(state, settings.bind, settings.bind_prefix,
                                                       settings.bind_version),
                             access, privileges.run_as_user(), ready,
                             signprogress.pace_for(settings), timeout, progress)
    try:
        _load_and_sign(instance, settings, prefix, zone, _parsed(instance.zone_file(zone), zone),
                       timeout, progress)
    except BindPkcs11Error as error:
        named.stop(instance)
        raise type(error)(f"{error}; stopped named: fix the cause, then start it again") from None
    return pid


def _check_instance_pin(access: TokenAccess, instance: Instance) -> None:
    """One login with the instance's PIN file before a stock named starts: pkcs11-provider logs
    no reason for a wrong PIN, and a wrong PIN then never reaches it."""
    try:
        inline.verified_pin(access)
    except PinIncorrect as error:
        raise PinIncorrect(f"{str(error).split(': check', 1)[0]}: the instance's PIN file "
                           f"{instance.pin_file} holds a wrong PIN; run 'bindpkcs11 setup-inline' "
                           "with the right --pin-file (named was not started)") from None


def _key(instance: Instance, zone: dns.name.Name, settings: InstanceSettings, role: str):
    pair = instancekeys.active_key(instance, zone, settings.algorithm, settings.token_of(role),
                                   role, on_token=role == "ksk" or settings.zsk_on == "token",
                                   under_policy=settings.under_policy)
    if pair is None:
        raise KeyFileError(f"no active {role.upper()} for {zone} in {instance.key_dir}: "
                           "run 'bindpkcs11 setup-inline' again")
    return pair


def stop(state: StateDir, zone: dns.name.Name) -> bool:
    instance = Instance.for_zone(state, zone)
    instance.load_settings()
    with _instance_locked(state, zone):
        return named.stop(instance)


def status(state: StateDir, zone: dns.name.Name) -> InstanceStatus:
    """Running or not, the served serial, the keys signing, and signing health: a zone that
    validates but whose unsigned changes named cannot sign is a problem too."""
    instance, settings, prefix = _loaded(state, zone)
    pid = named.running_pid(instance)
    serial, keys, health = None, [], None
    if pid is not None:
        before = _signing_progress(instance, settings, prefix, pid)
        report = monitor.check_zone(zone, settings.listen, settings.port)
        serial = report.serial
        problems = list(report.problems) if report.status == "critical" else []
        progress = _signing_progress(instance, settings, prefix, pid)
        # No RRSIGs are served until the first pass completes its NSEC chain. Read before and
        # after the query: the zone can turn secure while it is asked (big batches make that
        # turn a visible moment), and an unsigned answer from just before it is no problem.
        if any(reading is not None and not reading.secure for reading in (before, progress)):
            problems = []
        keys = _with_roles(instance, zone, rndc.signing_list(
            instance, prefix, settings.zone, settings.under_policy)[1])
        health = signing_health(instance, prefix, settings.zone, instance.zone_file(zone),
                                monitor.last_signed(report))
        problems += [health.problem] if health.problem else []
        problem = "; ".join(problems) or None
        return InstanceStatus(settings.zone, True, pid, settings.listen, settings.port,
                              serial, keys, problem, health, progress,
                              _custody(state, instance, zone, settings))
    errors = signing.errors_since_success(instance, instance.zone_file(zone))
    reason = signing.failure_reason(errors)
    problem = f"named's last run could not sign: {reason}" if reason else None
    return InstanceStatus(settings.zone, False, pid, settings.listen, settings.port,
                          serial, keys, problem, health, None,
                          _custody(state, instance, zone, settings))


def _custody(state: StateDir, instance: Instance, zone: dns.name.Name,
             settings: InstanceSettings) -> list[KeyCustody]:
    """The instance's active KSK and ZSK with their custody lines, as `token show` words them."""
    found = []
    for role in ("ksk", "zsk"):
        try:
            pair = _key(instance, zone, settings, role)
        except KeyFileError:
            continue
        token = parse_uri(pair.label_uri).token if pair.label_uri else None
        found.append(KeyCustody(role, pair.tag, custody.describe(
            state, int(pair.dnskey.algorithm), pair.dnskey.key, token)))
    return found


def _signing_progress(instance: Instance, settings: InstanceSettings, prefix: Path,
                      pid: int) -> signprogress.SigningProgress | None:
    """named's progress while a key is still signing; the time left from the batches named
    did since it started when this is its first pass (it began at start-up), else from the
    ZSK's rate."""
    pace = signprogress.pace_for(settings)
    reading = signprogress.read_progress(instance, prefix, settings.zone, pace.batch)
    if reading is None or not reading.signing:
        return None
    uptime = processes.uptime(pid)
    if not reading.secure and reading.done and uptime:
        per_batch = uptime / reading.done
    else:
        per_batch = pace.expected_seconds(reading.nodes) / max(1, reading.total)
    return signprogress.with_time_left(reading, per_batch)


def reload(state: StateDir, zone: dns.name.Name, timeout: float | None = None,
           progress: signprogress.Report | None = None) -> str:
    """Re-read the unsigned zone and the key files (after edits or a new key); named keeps running."""
    with _instance_locked(state, zone):
        return _reload(state, zone, timeout, progress)


def _reload(state: StateDir, zone: dns.name.Name, timeout: float | None,
            progress: signprogress.Report | None) -> str:
    instance, settings, prefix = _loaded(state, zone)
    if named.running_pid(instance) is None:
        raise BindPkcs11Error(f"named for {zone} is not running: 'bindpkcs11 named start {zone}'")
    served = instance.zone_file(zone)
    previous = _parsed(served, zone)
    if settings.zone_source:
        _refresh_zone_copy(prefix, zone, Path(settings.zone_source), served)
    else:
        config.check_zone(prefix, settings.zone, served)
    inline.hand_over(instance, _access(state, instance, settings), privileges.run_as_user())
    try:
        return _load_and_sign(instance, settings, prefix, zone, previous, timeout, progress)
    except signing.SigningFailed as error:
        raise signing.SigningFailed(f"{error}; the zone stays served as signed before, and "
                                    f"{_recovery(settings, zone)}") from None


def _recovery(settings: InstanceSettings, zone: dns.name.Name) -> str:
    """What brings signing back after a token fault, per route: the patched named retries by
    itself (the shim re-opens the module); a stock named (9.20.23 + pkcs11-provider 1.0) keeps
    failing with `crypto failure` after the token is back until it is restarted (measured)."""
    if settings.bind == STOCK:
        return (f"once the token is back restart named ('bindpkcs11 named stop {zone}', then "
                f"'named start {zone}'): a stock named does not recover from a lost token by itself")
    return "named retries by itself (at most every minute)"


def _load_and_sign(instance: Instance, settings: InstanceSettings, prefix: Path,
                   zone: dns.name.Name, previous: dns.zone.Zone | None,
                   timeout: float | None = None,
                   progress: signprogress.Report | None = None) -> str:
    """Have named load the served unsigned copy under a new serial and wait until it serves it
    signed: the changed RRsets by an active ZSK, the signed zone caught up (readiness.py).

    named keeps serving the signed zone it has when it cannot sign (old signatures still
    validate), so only a new unsigned serial proves that signing works *now*; `named start`
    uses this too. On a signing error named logged, fail at once with named's reason.
    """
    served = instance.zone_file(zone)
    loaded = _loaded_serial(instance, prefix, settings.zone)
    note = _ensure_serial_above(served, zone, loaded)
    changed = _changed_rrsets(previous, _parsed(served, zone), zone)
    watch = signing.SigningWatch.start(instance, prefix, settings.zone, served)
    output = rndc.rndc(instance, prefix, "reload", settings.zone)
    output += rndc.rndc(instance, prefix, "loadkeys", settings.zone)
    wanted = _zone_serial(served, zone)
    _wait_for(lambda: _loaded_serial(instance, prefix, settings.zone) == wanted, RELOAD_TIMEOUT,
              lambda: f"named did not load serial {wanted} of {served}: {named.log_tail(instance)}")
    ready = readiness.SignedAndSynced(readiness.ServedSigned(
        zone, settings.listen, settings.port, _signing_tags(instance, zone, settings, "ksk"),
        _signing_tags(instance, zone, settings, "zsk"), changed), watch)
    monitor = signprogress.SigningMonitor(instance, prefix, settings.zone,
                                          signprogress.pace_for(settings), RELOAD_TIMEOUT,
                                          timeout, progress)
    try:
        _wait_signed(ready, monitor, instance, wanted)
    except signing.SigningFailed as error:
        raise signing.SigningFailed(f"unsigned serial {wanted} loaded, but {error}") from None
    signed = ready.state.signed_serial if ready.state else None
    return "\n".join(filter(None, [note, output.strip(),
                                   f"unsigned serial {wanted} loaded and signed (signed serial "
                                   f"{signed}, {len(changed)} changed RRsets checked)"]))


def _wait_signed(ready: readiness.SignedAndSynced, monitor: signprogress.SigningMonitor,
                 instance: Instance, wanted: int) -> None:
    """Poll `ready` up to the monitor's deadline; then StillSigning when named is still making
    progress (a new key's pass over a big zone), else NotServedSigned with what was seen."""
    while time.monotonic() < monitor.deadline():
        if ready() and monitor.finished():
            return
        monitor.poll()
        time.sleep(0.05)
    if monitor.still_signing():
        raise monitor.left_running(named.running_pid(instance) or 0)
    waited = time.monotonic() - monitor.started
    raise signing.NotServedSigned(f"unsigned serial {wanted} loaded but not served signed within "
                                  f"{waited:.0f} s: {ready.why_not()}")


def _loaded_serial(instance: Instance, prefix: Path, zone: str) -> int | None:
    """The unsigned zone's serial as named holds it (`rndc zonestatus`: "serial: N")."""
    for line in rndc.rndc(instance, prefix, "zonestatus", zone).splitlines():
        if line.startswith("serial:"):
            return int(line.split(":", 1)[1])
    return None


def _zone_serial(path: Path, zone: dns.name.Name) -> int:
    return _parsed_strictly(path, zone).get_soa().serial


def _parsed_strictly(path: Path, zone: dns.name.Name) -> dns.zone.Zone:
    """The served unsigned copy, parsed; a zone named accepts but dnspython cannot read is one
    line naming the file, not an unexpected error."""
    try:
        return dns.zone.from_file(str(path), origin=zone, relativize=False, check_origin=False)
    except (OSError, dns.exception.DNSException, KeyError) as error:
        raise UsageError(f"cannot read the SOA serial of {path} as {zone}: {error}") from None


def _parsed(path: Path, zone: dns.name.Name) -> dns.zone.Zone | None:
    """The unsigned zone in `path`; None when it is missing or does not parse (nothing to diff)."""
    try:
        return dns.zone.from_file(str(path), origin=zone, relativize=False, check_origin=False)
    except (OSError, dns.exception.DNSException):
        return None


def _changed_rrsets(old: dns.zone.Zone | None, new: dns.zone.Zone | None,
                    zone: dns.name.Name) -> tuple[monitor.Lookup, ...]:
    """RRsets of `new` that `old` lacks or holds differently, which named must serve signed:
    no SOA (checked anyway), no DNSSEC types, nothing at or below a delegation (unsigned)."""
    if new is None:
        return ()
    cuts = [name for name, rdataset in new.iterate_rdatasets(dns.rdatatype.NS) if name != zone]
    changed = []
    for name, rdataset in new.iterate_rdatasets():
        if rdataset.rdtype in _DNSSEC_TYPES or any(name.is_subdomain(cut) for cut in cuts):
            continue
        before = old.get_rdataset(name, rdataset.rdtype) if old is not None else None
        if before is None or before != rdataset or before.ttl != rdataset.ttl:
            changed.append((name, rdataset.rdtype))
    return tuple(sorted(changed)[:MAX_CHANGED_LOOKUPS])


def _signing_tags(instance: Instance, zone: dns.name.Name, settings: InstanceSettings,
                  role: str) -> frozenset[int]:
    """Tags of the instance's `role` keys that should sign now (active, not retired)."""
    now = int(time.time())
    tags = frozenset(pair.tag for pair in key_pairs_in(instance.key_dir, zone)
                     if pair.role == role and pair.dnskey.algorithm == settings.algorithm
                     and pair.timing.is_signing(now))
    if not tags:
        raise KeyFileError(f"no active {role.upper()} for {zone} in {instance.key_dir}: "
                           "run 'bindpkcs11 setup-inline' again")
    return tags


def _ensure_serial_above(served: Path, zone: dns.name.Name, loaded: int | None) -> str | None:
    """Inline signing ignores an edited unsigned zone whose SOA serial did not increase; bump it
    in the served copy (never the operator's own file) and say so."""
    if loaded is None:
        return None
    parsed = _parsed_strictly(served, zone)
    soa = parsed.get_soa()
    if dns.serial.Serial(soa.serial) > dns.serial.Serial(loaded):
        return None
    bumped = (loaded + 1) % 2**32
    _write_serial(served, parsed, zone, bumped)
    return f"SOA serial {soa.serial} was not above the loaded {loaded}: served copy now has {bumped}"


def _write_serial(served: Path, parsed: dns.zone.Zone, zone: dns.name.Name, serial: int) -> None:
    node = parsed.find_node(zone)
    rdataset = node.find_rdataset(dns.rdataclass.IN, dns.rdatatype.SOA)
    rdataset.update(dns.rdataset.from_rdata(rdataset.ttl, rdataset[0].replace(serial=serial)))
    write_atomic(served, parsed.to_text(relativize=False), mode=0o644)


def _wait_for(condition, timeout: float, failure, error=BindPkcs11Error) -> None:
    """Poll `condition` until true; `error(failure())` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise error(failure())


def _refresh_zone_copy(prefix: Path, zone: dns.name.Name, source: Path, served: Path) -> None:
    """Copy the operator's zone file (its $INCLUDEs expanded, as setup-inline does) over the
    served unsigned copy, only if it loads; named-checkzone reads a private copy, never the
    operator's files, and its messages name the operator's file."""
    text = read_zone_source(source, zone)
    with tempfile.NamedTemporaryFile("w", suffix=".zone") as handle:
        handle.write(text)
        handle.flush()
        config.check_zone(prefix, zone.to_text(), Path(handle.name), shown_as=source)
    if not served.exists() or served.read_text() != text:
        write_atomic(served, text, mode=0o644)


def run_rndc(state: StateDir, zone: dns.name.Name, *args: str) -> str:
    instance, _, prefix = _loaded(state, zone)
    return rndc.rndc(instance, prefix, *args)


def signing_list(state: StateDir, zone: dns.name.Name) -> tuple[str, list[rndc.SigningKey]]:
    instance, settings, prefix = _loaded(state, zone)
    output, keys = rndc.signing_list(instance, prefix, settings.zone, settings.under_policy)
    return output, _with_roles(instance, zone, keys)


def _with_roles(instance: Instance, zone: dns.name.Name,
                keys: list[rndc.SigningKey]) -> list[rndc.SigningKey]:
    """`rndc signing -list` names tags only: take each key's role from its key file."""
    roles = {pair.tag: pair.role for pair in key_pairs_in(instance.key_dir, zone)}
    return [key if key.role else replace(key, role=roles.get(key.tag)) for key in keys]


def only_instance_zone(state: StateDir) -> dns.name.Name:
    """The zone of the single instance in the state dir (for `rndc -- ARGS` without --zone)."""
    root = state.root / "instances"
    zones = sorted(p.name for p in root.iterdir() if (p / "instance.json").exists()) if root.is_dir() else []
    if len(zones) != 1:
        raise UsageError(f"{len(zones)} instances exist ({', '.join(zones) or 'none'}): add --zone DOMAIN")
    return dns.name.from_text(zones[0])
