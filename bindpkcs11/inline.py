"""`bindpkcs11 setup-inline ZONE`: token keys, rendered config, the patched named signing inline.

One idempotent operation: the second run with the same inputs finds the keys, renders identical
files, sees named running and says nothing changed. Every failure before named serves the signed
zone leaves the previous configuration in place and no new named running.
"""

from __future__ import annotations

import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dns.name
import dns.zone

from bindpkcs11 import admin, monitor, pins, readiness
from bindpkcs11.access import TokenAccess
from bindpkcs11.bind import build, config, named, privileges
from bindpkcs11.bind.instance import Instance, InstanceSettings, Secondary
from bindpkcs11.dnssec import keygen
from bindpkcs11.dnssec.algorithms import Algorithm
from bindpkcs11.dnssec.dnskey import ds_text
from bindpkcs11.dnssec.keyfile import KeyPairFiles, Timing, key_pairs_in
from bindpkcs11.dnssec.samplezone import sample_zone_text
from bindpkcs11.errors import TokenNotFound, UsageError
from bindpkcs11.fileio import ensure_private_dir, write_atomic
from bindpkcs11.state import StateDir
from bindpkcs11.token import library
from bindpkcs11.token.uri import parse_uri

DEFAULT_TOKEN = "bindpkcs11"
READY_QUERY_TIMEOUT = 0.5
Progress = Callable[[str], None]


@dataclass(frozen=True)
class SetupRequest:
    zone: dns.name.Name
    algorithm: Algorithm
    zone_file: Path | None = None
    token: str = DEFAULT_TOKEN
    profile: str = "softhsm"
    module: str | None = None
    pin_file: Path | None = None
    listen: str = "127.0.0.1"
    port: int = 5353
    rndc_port: int = 9530
    secondaries: tuple[Secondary, ...] = ()
    test_timings: bool = False


@dataclass(frozen=True)
class KeySummary:
    role: str
    tag: int
    algorithm: int
    uri: str
    key_file: str


@dataclass(frozen=True)
class SetupResult:
    zone: str
    changed: bool
    pid: int
    listen: str
    port: int
    serial: int
    keys: list[KeySummary]
    ds: str
    dig: str
    instance_dir: str
    seconds: float
    created_token: bool
    generated_keys: bool


def setup_inline(state: StateDir, request: SetupRequest, progress: Progress) -> SetupResult:
    started = time.monotonic()
    instance = Instance.for_zone(state, request.zone)
    user = privileges.run_as_user()
    privileges.require_reachable(user, state.root)
    if request.port == request.rndc_port:
        raise UsageError(f"--port and --rndc-port are both {request.port}: choose two ports")
    running = named.running_pid(instance)
    if running is None:
        require_free_port(request.listen, request.port)
        require_free_port("127.0.0.1", request.rndc_port)
    zone_text = _zone_source_text(request)
    prefix = build.build(state, progress=progress).prefix
    _check_zone_text(prefix, request.zone, zone_text)
    access, created_token = _token_access(state, request, progress)
    pin = _verified_pin(access)
    ensure_private_dir(instance.root)
    for sub in (instance.key_dir, instance.zone_dir):
        sub.mkdir(parents=True, exist_ok=True)
    access = TokenAccess(state, access.profile, request.token, _write_pin(instance, pin))
    ksk, zsk, generated = _zone_keys(instance, request, access, progress)
    settings = InstanceSettings(
        zone=request.zone.to_text(), token=request.token, profile=request.profile,
        algorithm=request.algorithm.number, bits=request.algorithm.spec.bits or None,
        listen=request.listen, port=request.port, rndc_port=request.rndc_port,
        secondaries=list(request.secondaries), test_timings=request.test_timings,
        zone_source=str(request.zone_file.resolve()) if request.zone_file else None,
    )
    zone_file = instance.zone_file(request.zone)
    files = config.render(instance, settings, zone_file, _max_ttl(request.zone, zone_text))
    files[zone_file] = zone_text
    changed = config.changed_files(files)
    ready = ready_check(request.zone, request.listen, request.port, ksk.tag, zsk.tag)
    if not changed and running is not None and ready():
        progress("nothing changed: keys, configuration and named are as requested")
        pid = running
    else:
        pid = _apply(instance, prefix, access, changed, running, user, ready, progress)
    instance.save_settings(settings)
    return _result(request, instance, ksk, zsk, pid, bool(changed) or running is None,
                   time.monotonic() - started, created_token, generated)


def require_free_port(address: str, port: int) -> None:
    """UsageError when `address:port` is taken (UDP or TCP): named would fail to listen there."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as probe:
            try:
                probe.bind((address, port))
            except OSError as error:
                raise UsageError(
                    f"{address} port {port} is in use ({error.strerror}): choose another with "
                    "--port/--rndc-port or stop what listens there"
                ) from None


def _zone_source_text(request: SetupRequest) -> str:
    if request.zone_file is None:
        return sample_zone_text(request.zone)
    try:
        return request.zone_file.read_text()
    except OSError as error:
        raise UsageError(f"cannot read zone file {request.zone_file}: {error.strerror}") from None


def _check_zone_text(prefix: Path, zone: dns.name.Name, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".zone") as handle:
        handle.write(text)
        handle.flush()
        config.check_zone(prefix, zone.to_text(), Path(handle.name))


def _max_ttl(zone: dns.name.Name, text: str) -> int:
    parsed = dns.zone.from_text(text, origin=zone, relativize=False, check_origin=False)
    return max((rdataset.ttl for _, rdataset in parsed.iterate_rdatasets()), default=300)


def _token_access(state: StateDir, request: SetupRequest, progress: Progress) -> tuple[TokenAccess, bool]:
    """Access to the token; the embedded default token is created (random PINs) when missing."""
    access = TokenAccess.build(state, request.profile, request.token, request.module,
                               request.pin_file)
    labels = [info.label for info in library.list_tokens(access.module_path)]
    if request.token in labels:
        return access, False
    if request.token != DEFAULT_TOKEN or request.profile != "softhsm":
        raise TokenNotFound(
            f"token '{request.token}' not found (tokens present: {', '.join(labels) or 'none'}); "
            "create it with 'bindpkcs11 token init' or omit --token for the embedded default"
        )
    result = admin.init_token(access, generate_pins=True)
    pin_path = pins.stored_pin_path(state, request.token, pins.USER)
    if str(pin_path) in result.generated_pin_files:
        progress(f"created token '{request.token}'; its user PIN is {pin_path.read_text().strip()} "
                 f"(shown once; stored in {pin_path}, mode 0600)")
    return access, True


def _verified_pin(access: TokenAccess) -> str:
    """Resolve the PIN once and prove it with one login, before anything is changed."""
    pin = pins.pin_source(access.state, access.label, pins.USER, access.pin_file)()
    with library.open_session(access.module_path, access.label, lambda: pin):
        pass
    return pin


def _write_pin(instance: Instance, pin: str) -> Path:
    """The PIN for the shim inside named: a 0600 file, never argv or named's environment."""
    write_atomic(instance.pin_file, pin + "\n", mode=0o600)
    return instance.pin_file


def _zone_keys(instance: Instance, request: SetupRequest, access: TokenAccess,
               progress: Progress) -> tuple[KeyPairFiles, KeyPairFiles, bool]:
    """The zone's active token KSK and ZSK in the instance key dir, generated when missing."""
    found = {role: active_key(instance, request.zone, request.algorithm.number, request.token, role) for role in ("ksk", "zsk")}
    generated = False
    for role in ("ksk", "zsk"):
        if found[role] is None:
            progress(f"generating the {role.upper()} ({request.algorithm.mnemonic}) on token "
                     f"'{request.token}' ...")
            now = int(time.time())
            key = keygen.generate_on_token(keygen.KeygenRequest(
                zone=request.zone, role=role, algorithm=request.algorithm, key_dir=instance.key_dir,
                timing=Timing(created=now, publish=now, activate=now)), access)
            found[role] = next(p for p in key_pairs_in(instance.key_dir, request.zone)
                               if p.key_path == key.key_file)
            generated = True
    return found["ksk"], found["zsk"], generated


def active_key(instance: Instance, zone: dns.name.Name, algorithm: int, token: str,
               role: str) -> KeyPairFiles | None:
    """The zone's token key for `role` in the instance key dir that is not yet retired."""
    now = int(time.time())
    for pair in key_pairs_in(instance.key_dir, zone):
        if (pair.role == role and pair.dnskey.algorithm == algorithm
                and pair.label_uri and parse_uri(pair.label_uri).token == token
                and not pair.timing.is_retired(now)):
            return pair
    return None


def signed_by(report: monitor.ZoneReport, rdtype: str) -> set[int]:
    """Tags of the valid RRSIGs over the apex RRset of `rdtype` in a monitor report."""
    return {sig.key_tag for rrset in report.rrsets if rrset.rdtype == rdtype and rrset.name == report.zone
            for sig in rrset.signatures if sig.valid}


def ready_check(zone: dns.name.Name, server: str, port: int, ksk_tag: int,
                zsk_tag: int) -> Callable[[], bool]:
    """True once everything validates (monitor's checks) with SOA signed by the ZSK and DNSKEY by
    the KSK; start_named adds the check that the signed zone caught up (readiness.py)."""
    return readiness.ServedSigned(zone, server, port, frozenset({ksk_tag}), frozenset({zsk_tag}))


def _apply(instance: Instance, prefix: Path, access: TokenAccess, changed: dict[Path, str],
           running: int | None, user: str | None, ready: Callable[[], bool],
           progress: Progress) -> int:
    """Swap the files in, check, (re)start named, wait until it serves; roll back on any failure."""
    swap = config.ConfigSwap()
    try:
        swap.write(changed, secret_files={instance.rndc_key, instance.pin_file})
        config.check_config(prefix, instance.named_conf)
        if running is not None:
            progress(f"stopping named (pid {running}) to load the new configuration ...")
            named.stop(instance)
        progress("starting named and waiting for the signed zone ...")
        pid = start_named(instance, prefix, access, user, ready)
    except BaseException:
        swap.rollback()
        raise
    swap.commit()
    return pid


def start_named(instance: Instance, prefix: Path, access: TokenAccess, user: str | None,
                ready: Callable[[], bool]) -> int:
    """Give named's user its files, then start named with the token's environment and wait."""
    hand_over(instance, access, user)
    env = named.named_env(prefix, access.profile.module_env(), instance.pin_file)
    return named.start(instance, prefix, env, user, readiness.with_signing(instance, prefix, ready))


def hand_over(instance: Instance, access: TokenAccess, user: str | None) -> None:
    profile = access.profile
    token_dir = getattr(profile, "token_dir", None)
    owned = [instance.root] + ([token_dir] if token_dir else [])
    traversed = [access.state.root] + ([token_dir.parent] if token_dir else [])
    readable = [profile.conf_path] if getattr(profile, "conf_path", None) else []
    privileges.hand_over(user, owned, traversed, readable)


def _result(request: SetupRequest, instance: Instance, ksk: KeyPairFiles, zsk: KeyPairFiles,
            pid: int, changed: bool, seconds: float, created_token: bool,
            generated: bool) -> SetupResult:
    serial = monitor.check_zone(request.zone, request.listen, request.port).serial
    keys = [KeySummary(p.role, p.tag, int(p.dnskey.algorithm), p.label_uri or "", str(p.key_path))
            for p in (ksk, zsk)]
    zone = request.zone.to_text()
    return SetupResult(
        zone=zone, changed=changed, pid=pid, listen=request.listen, port=request.port, serial=serial,
        keys=keys, ds=ds_text(request.zone, ksk.dnskey),
        dig=f"dig +dnssec @{request.listen} -p {request.port} {zone} SOA",
        instance_dir=str(instance.root), seconds=seconds, created_token=created_token,
        generated_keys=generated,
    )

