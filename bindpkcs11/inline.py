"""`bindpkcs11 setup-inline ZONE`: token keys, rendered config, named signing inline.

named is the patched BIND 9.18 or a stock BIND >= 9.20 with pkcs11-provider (bind/route.py);
the rest of the job is the same for both.

One idempotent operation: the second run with the same inputs finds the keys, renders identical
files, sees named running and says nothing changed. Every failure before named serves the signed
zone leaves the previous configuration in place and no new named running.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dns.exception
import dns.name
import dns.zone

from bindpkcs11 import admin, instancekeys, locks, monitor, pins, readiness, zskplace
from bindpkcs11.access import TokenAccess
from bindpkcs11.bind import build, config, named, ports, privileges, route, signprogress, stock
from bindpkcs11.bind.instance import Instance, InstanceSettings, Secondary, settings_text
from bindpkcs11.bind.programs import STOCK, Route
from bindpkcs11.dnssec.algorithms import Algorithm
from bindpkcs11.dnssec.dnskey import ds_text, zone_label_text
from bindpkcs11.dnssec.keyfile import KeyPairFiles
from bindpkcs11.dnssec import zonetiming
from bindpkcs11.dnssec.samplezone import sample_zone_text
from bindpkcs11.dnssec.zonesource import read_zone_source
from bindpkcs11.errors import BindPkcs11Error, TokenNotFound, ToolFailed, UsageError
from bindpkcs11.fileio import ensure_private_dir
from bindpkcs11.state import StateDir
from bindpkcs11.token import library
from bindpkcs11.token.profiles import get_profile, require_key_spec, traits_of

DEFAULT_TOKEN = "bindpkcs11"
DEFAULT_ALGORITHM = "ECDSAP256SHA256"
PORTS_WAIT = 1800.0  # another zone's setup-inline may be building BIND or generating keys
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
    zsk_on: str | None = None  # "token" or "software"; None: the instance's choice, else by rate
    timeout: float | None = None  # wait for the signed zone; None: from the zone's size and rate
    zsk_token: str | None = None  # the ZSK's own token (same profile); None: the instance's, or `token`
    bind: str | None = None  # "stock" or "patched"; None: the instance's route, else route.default_name
    bind_version: str = build.DEFAULT_SERIES  # which patched BIND (`bind build --version`)


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
    bind: str = "patched"
    bind_version: str = ""


def setup_inline(state: StateDir, request: SetupRequest, progress: Progress) -> SetupResult:
    """The whole job, under the instance's lock: a second run for the same zone waits or fails."""
    instance = Instance.for_zone(state, request.zone)
    with locks.held(instance_lock(state, request.zone), f"the instance of {request.zone}"), \
            ports.assignment_locked(state, wait=PORTS_WAIT):
        return _setup(state, instance, request, progress)


def previous_settings(state: StateDir, zone: dns.name.Name) -> InstanceSettings | None:
    """What the zone's instance was set up with (None for a new zone): a re-run keeps these for
    every option it is not given, so it never swaps the operator's zone file, token or ports
    for the defaults."""
    instance = Instance.for_zone(state, zone)
    return instance.load_settings() if instance.exists() else None


def instance_lock(state: StateDir, zone: dns.name.Name) -> Path:
    """The lock every command that changes or (re)starts the instance of `zone` holds."""
    return locks.lock_path(state, f"instance-{zone_label_text(zone)}")


def _setup(state: StateDir, instance: Instance, request: SetupRequest,
           progress: Progress) -> SetupResult:
    """Check every input, then touch the token, then swap the configuration in.

    Nothing is created (no token, no key, no file) until the zone, the key files already there,
    the ports and the configuration that will be rendered have all passed their checks.
    """
    started = time.monotonic()
    require_key_spec(get_profile(request.profile, state, request.module), request.algorithm.spec)
    user = privileges.run_as_user()
    privileges.require_reachable(user, state.root)
    running = named.running_pid(instance)
    current = instance.load_settings() if running is not None and instance.exists() else None
    ports.require_ports(state, instance, request.listen, request.port, request.rndc_port,
                        current)
    zone_text = _zone_source_text(request)
    existing = instancekeys.existing_keys(instance, request.zone)
    bind = _route(state, instance, request, progress)
    prefix = bind.prefix
    instancekeys.check_keys_load(prefix, existing, _keys_env(instance, bind, request, state))
    _check_zone_text(prefix, request.zone, zone_text, request.zone_file)
    max_ttl, rrsets, expire = _zone_stats(request.zone, zone_text, request.zone_file)
    if not request.test_timings:  # 30-minute signatures are for loopback demos only
        zonetiming.require_expire_within_refresh(
            expire, max_ttl, config.NORMAL_TIMINGS["sig_validity_days"] * 86400,
            config.NORMAL_TIMINGS["sig_refresh_days"] * 86400,
            f"zone file {request.zone_file}" if request.zone_file else "the sample zone",
            "sig-validity-interval {sig_validity_days} {sig_refresh_days} in zone.conf".format(
                **config.NORMAL_TIMINGS))
    request = zskplace.with_zsk_token(state, instance, request)
    zsk_on = zskplace.place(state, instance, request, rrsets, progress)
    settings = InstanceSettings(
        zone=request.zone.to_text(), token=request.token, profile=request.profile,
        algorithm=request.algorithm.number, bits=request.algorithm.spec.bits or None,
        listen=request.listen, port=request.port, rndc_port=request.rndc_port,
        secondaries=list(request.secondaries), test_timings=request.test_timings,
        zone_source=str(request.zone_file.resolve()) if request.zone_file else None,
        zsk_on=zsk_on, zsk_token=request.zsk_token, bind=bind.name,
        bind_prefix=str(bind.prefix) if bind.name == STOCK else None,
        bind_version=request.bind_version,
    )
    module = Path(get_profile(request.profile, state, request.module).module_path)
    _check_rendered(bind, instance, settings, max_ttl, module, len(zone_text.encode()))
    zsk_access = zskplace.zsk_access(state, request) if request.zsk_token else None
    access, created_token = _token_access(state, request, progress)
    pin = verified_pin(access)
    if zsk_access is not None:
        zskplace.verify_same_pin(zsk_access, pin, request.token)
    ensure_private_dir(instance.root)
    for sub in (instance.key_dir, instance.zone_dir):
        sub.mkdir(parents=True, exist_ok=True)
    ksk, zsk, generated = instancekeys.zone_keys(instance, request.zone, request.algorithm, zsk_on,
                                                 access, existing, progress,
                                                 "9.20" if bind.name == STOCK else "9.18",
                                                 zsk_access, settings.under_policy)
    try:
        cds_added = instancekeys.publish_cds(ksk)
        zone_file = instance.zone_file(request.zone)
        files = config.render(instance, settings, zone_file, max_ttl,
                              _provider(bind, Path(access.module_path), instance), bind.version,
                              len(zone_text.encode()))
        files[zone_file] = zone_text
        files[instance.pin_file] = pin + "\n"
        changed = config.changed_files(files)
        if changed and not instance.exists():
            # a first start: `named status` shows the signing progress meanwhile; a failed start
            # rolls it back with the other files
            changed[instance.settings_file] = settings_text(settings)
        ready = ready_check(request.zone, request.listen, request.port, ksk.tag, zsk.tag)
        if not changed and not cds_added and running is not None and ready():
            progress("nothing changed: keys, configuration and named are as requested")
            pid = running
        else:
            named_access = TokenAccess(state, access.profile, request.token, instance.pin_file)
            pid = _apply(instance, bind, named_access, changed, running, current, user, ready,
                         progress, signprogress.pace_for(settings), request.timeout)
    except signprogress.StillSigning:
        instance.save_settings(settings)  # named runs this configuration: it is the instance's
        raise
    except BaseException:
        instancekeys.set_aside(instance, generated)
        raise
    instance.save_settings(settings)
    return _result(request, instance, ksk, zsk, pid, bool(changed) or running is None,
                   time.monotonic() - started, created_token, bool(generated), bind)


class RouteSwitch(UsageError):
    """An instance keeps the BIND route it was set up with."""


def _route(state: StateDir, instance: Instance, request: SetupRequest, progress: Progress) -> Route:
    """The BIND to run: an existing stock instance keeps the BIND it was set up with."""
    name = _route_name(state, instance, request)
    if name == STOCK and instance.exists():
        settings = instance.load_settings()
        if settings.bind_prefix:
            return route.installed(state, name, settings.bind_prefix)
    if name == STOCK and request.bind_version != build.DEFAULT_SERIES:
        raise UsageError(f"--bind-version {request.bind_version} is for the patched BIND; the stock "
                         "route runs the BIND it finds (bindpkcs11 bind status)")
    return route.prepare(state, name, progress, request.bind_version)


def _route_name(state: StateDir, instance: Instance, request: SetupRequest) -> str:
    """--bind; else the instance's route; else stock when a usable one is found, else patched.

    An existing instance does not switch: its key files are in its BIND's format (9.20 refuses
    9.18's `Engine:` line) and its keys' state lives in that BIND's files."""
    current = instance.load_settings().bind if instance.exists() else None
    if request.bind is None:
        return current or route.default_name(state)
    wanted = route.check_name(request.bind)
    if current is not None and wanted != current:
        raise RouteSwitch(f"the instance of {request.zone} runs the {current} BIND; it cannot "
                          f"switch to --bind {wanted}: set the zone up under another state "
                          f"directory, or keep --bind {current}")
    return wanted


def _provider(bind: Route, module: Path, instance: Instance) -> stock.ProviderConfig | None:
    """The stock route's pkcs11-provider config: the route's provider, the token's module, and
    the instance's 0600 PIN file."""
    if bind.name != STOCK or bind.provider is None:
        return None
    return stock.ProviderConfig(bind.provider, module, instance.pin_file)


def _keys_env(instance: Instance, bind: Route, request: SetupRequest,
              state: StateDir) -> dict[str, str] | None:
    """The environment in which BIND reads the instance's existing key files: on the stock route
    token keys are opened through the provider, with the instance's own (previous) config."""
    if bind.name != STOCK or not instance.openssl_conf.exists():
        return None
    profile = get_profile(request.profile, state, request.module)
    return stock.program_env(bind, Path(profile.module_path), instance.openssl_conf,
                             profile.module_env())


def _zone_source_text(request: SetupRequest) -> str:
    """The zone to serve: the operator's file with its $INCLUDEs expanded, or the sample zone."""
    if request.zone_file is None:
        return sample_zone_text(request.zone, ns_address=request.listen)
    return read_zone_source(request.zone_file, request.zone)


def _check_zone_text(prefix: Path, zone: dns.name.Name, text: str, shown_as: Path | None) -> None:
    """named-checkzone on a private copy (never on the operator's files, never following their
    includes); errors name the operator's file."""
    with tempfile.NamedTemporaryFile("w", suffix=".zone") as handle:
        handle.write(text)
        handle.flush()
        config.check_zone(prefix, zone.to_text(), Path(handle.name),
                          shown_as=shown_as or "the sample zone")


def _check_rendered(bind: Route, instance: Instance, settings: InstanceSettings,
                    max_ttl: int, module: Path, zone_bytes: int) -> None:
    """Render the configuration into a scratch copy of the instance and named-checkconf it, so a
    value named refuses fails before the token is touched or a key generated. The provider's
    config names the real instance's PIN file: a path OpenSSL would misread fails here too."""
    with tempfile.TemporaryDirectory(prefix="bindpkcs11-check-") as scratch:
        trial = Instance(Path(scratch) / instance.root.name)
        trial.root.mkdir()
        files = config.render(trial, settings, trial.zone_file(dns.name.from_text(settings.zone)),
                              max_ttl, _provider(bind, module, instance), bind.version, zone_bytes)
        for path, text in files.items():
            path.write_text(text)
        config.check_config(bind.prefix, trial.named_conf)


def _zone_stats(zone: dns.name.Name, text: str,
                shown_as: Path | None) -> tuple[int, int, int]:
    """The zone's largest TTL (for max-zone-ttl), its number of RRsets (what signing costs) and
    its SOA EXPIRE (zonetiming's rule)."""
    try:
        parsed = dns.zone.from_text(text, origin=zone, relativize=False, check_origin=False)
    except dns.exception.DNSException as error:
        raise UsageError(f"zone file {shown_as or 'the sample zone'} does not parse as {zone}: "
                         f"{error}") from None
    ttls = [rdataset.ttl for _, rdataset in parsed.iterate_rdatasets()]
    return max(ttls, default=300), len(ttls), parsed.get_soa().expire


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
    result = admin.init_token(access, generate_pins=True, exist_ok=True)
    if result is None:  # a concurrent run (another zone) created it while we waited for the lock
        return access, False
    pin_path = pins.stored_pin_path(state, request.token, pins.USER)
    if str(pin_path) in result.generated_pin_files:
        progress(f"created token '{request.token}'; its user PIN is {pin_path.read_text().strip()} "
                 f"(shown once; stored in {pin_path}, mode 0600)")
    return access, True


def verified_pin(access: TokenAccess) -> str:
    """Resolve the PIN once and prove it with one login, before anything is changed. Also used
    before a stock named starts: pkcs11-provider logs no reason for a wrong PIN (named only says
    `receive_secure_serial: not found`), so the PIN file is proven first, once."""
    pin = pins.pin_source(access.state, access.pin_label, pins.USER, access.pin_file)()
    with library.open_session(access.module_path, access.label, lambda: pin,
                              locked_hint=traits_of(access.profile).pin_locked_hint):
        pass
    return pin


def ready_check(zone: dns.name.Name, server: str, port: int, ksk_tag: int,
                zsk_tag: int) -> Callable[[], bool]:
    """True once everything validates (monitor's checks) with SOA signed by the ZSK and DNSKEY by
    the KSK; start_named adds the check that the signed zone caught up (readiness.py)."""
    return readiness.ServedSigned(zone, server, port, frozenset({ksk_tag}), frozenset({zsk_tag}))


def _apply(instance: Instance, bind: Route, access: TokenAccess, changed: dict[Path, str],
           running: int | None, current: InstanceSettings | None, user: str | None,
           ready: Callable[[], bool], progress: Progress, pace: signprogress.SigningPace,
           timeout: float | None = None) -> int:
    """Swap the files in, check, (re)start named, wait until it serves; on any failure put the
    previous files back and, if a named was serving before, start it again (certbot's rollback):
    a failed re-run must not take the zone offline. A named still signing (making progress) at
    the deadline keeps running with the new files (StillSigning)."""
    swap = config.ConfigSwap()
    try:
        swap.write(changed, secret_files={instance.rndc_key, instance.pin_file,
                                          instance.openssl_conf})
        config.check_config(bind.prefix, instance.named_conf)
        if running is not None:
            progress(f"stopping named (pid {running}) to load the new configuration ...")
            named.stop(instance)
        progress("starting named and waiting for the signed zone"
                 + (f" (up to {timeout:.0f} s)" if timeout else "") + " ...")
        pid = start_named(instance, bind, access, user, ready, pace, timeout, progress)
    except signprogress.StillSigning:
        swap.commit()
        raise
    except BaseException as failure:
        swap.rollback()
        if running is not None and current is not None and named.running_pid(instance) is None:
            _restart_previous(instance, bind, access, current, user, progress, failure)
        raise
    swap.commit()
    return pid


def _restart_previous(instance: Instance, bind: Route, access: TokenAccess,
                      previous: InstanceSettings, user: str | None, progress: Progress,
                      failure: BaseException) -> None:
    """Start the restored configuration again; if even that fails, say so in the error."""
    progress("the new configuration failed; restarting named with the previous one ...")
    zone = dns.name.from_text(previous.zone)

    def serving() -> bool:
        report = monitor.check_zone(zone, previous.listen, previous.port,
                                     timeout=readiness.READY_QUERY_TIMEOUT)
        return report.status != "critical"

    previous_access = TokenAccess.build(access.state, previous.profile, previous.token,
                                        pin_file=instance.pin_file)  # the restored PIN file
    try:
        start_named(instance, bind, previous_access, user, serving)
    except BindPkcs11Error as error:
        raise ToolFailed(f"{failure}; restarting the previous configuration failed too: "
                         f"{error}") from None


def start_named(instance: Instance, bind: Route, access: TokenAccess, user: str | None,
                ready: Callable[[], bool], pace: signprogress.SigningPace | None = None,
                timeout: float | None = None, progress: Progress | None = None) -> int:
    """Give named's user its files, then start named with the token's environment and wait:
    with a `pace`, up to a deadline from the zone's size and the ZSK's rate (or `timeout`),
    reporting signing progress, and leaving a named that is still signing running.
    A stock named also gets pkcs11-provider's config and the token module preloaded."""
    hand_over(instance, access, user)
    env = named.named_env(bind.prefix, access.profile.module_env(), instance.pin_file)
    if bind.name == STOCK:
        env |= stock.extra_env(bind, Path(access.module_path), instance.openssl_conf)
    monitor = None
    if pace is not None and isinstance(ready, readiness.ServedSigned):
        monitor = signprogress.SigningMonitor(instance, bind.prefix, ready.zone.to_text(), pace,
                                              named.START_TIMEOUT, timeout, progress)
    return named.start(instance, bind.prefix, env, user,
                       readiness.with_signing(instance, bind.prefix, ready),
                       timeout or named.START_TIMEOUT, monitor)


def hand_over(instance: Instance, access: TokenAccess, user: str | None) -> None:
    profile = access.profile
    token_dir = getattr(profile, "token_dir", None)
    owned = [instance.root] + ([token_dir] if token_dir else [])
    traversed = [access.state.root] + ([token_dir.parent] if token_dir else [])
    readable = [profile.conf_path] if getattr(profile, "conf_path", None) else []
    privileges.hand_over(user, owned, traversed, readable)


def _result(request: SetupRequest, instance: Instance, ksk: KeyPairFiles, zsk: KeyPairFiles,
            pid: int, changed: bool, seconds: float, created_token: bool,
            generated: bool, bind: Route) -> SetupResult:
    serial = monitor.check_zone(request.zone, request.listen, request.port).serial
    keys = [KeySummary(p.role, p.tag, int(p.dnskey.algorithm), p.label_uri or "", str(p.key_path))
            for p in (ksk, zsk)]
    zone = request.zone.to_text()
    return SetupResult(
        zone=zone, changed=changed, pid=pid, listen=request.listen, port=request.port, serial=serial,
        keys=keys, ds=ds_text(request.zone, ksk.dnskey),
        dig=f"dig +dnssec @{request.listen} -p {request.port} {zone} SOA",
        instance_dir=str(instance.root), seconds=seconds, created_token=created_token,
        generated_keys=generated, bind=bind.name, bind_version=bind.version,
    )

