"""`rollover zsk|ksk` on a BIND 9.20 instance (stock + pkcs11-provider, or patched): named rolls.

On the stock route named serves the zone under a dnssec-policy whose key-store is the token;
its key manager owns every key's timing (it rewrites timing metadata bindpkcs11 would set, see
rollover.require_key_files_mode). So here bindpkcs11 does not compute a schedule: it asks named
to roll (`rndc dnssec -rollover -key TAG [-when T] ZONE`); named creates the successor inside
the token through the key-store and times each step by its policy (RFC 7583 in lib/dns/keymgr.c).
The command returns once named serves the successor's DNSKEY in a zone that still validates,
and reports the schedule named wrote into the keys' .state files. For a KSK, `--ds-published`
becomes `rndc dnssec -checkds -key NEW published` and `-key OLD withdrawn`: named then retires
the old KSK by its own timing.

On a patched-9.20 instance named cannot create a key inside the token (no pkcs11-provider), so
the one step that differs is who makes the successor: bindpkcs11 makes it on the token first, as
an unused key named's key manager takes from the key directory (tokensuccessor.py), and checks
afterwards that named took that key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.name

from bindpkcs11 import inline, instancekeys, kskroll, locks, monitor, readiness, rollover
from bindpkcs11 import tokensuccessor
from bindpkcs11.bind import named, rndc, route
from bindpkcs11.bind.instance import Instance, InstanceSettings
from bindpkcs11.bind.programs import STOCK
from bindpkcs11.dnssec import keystate
from bindpkcs11.dnssec.dnskey import ds_text
from bindpkcs11.dnssec.keyfile import KeyPairFiles, key_pairs_in
from bindpkcs11.errors import BindPkcs11Error, ToolFailed, UsageError
from bindpkcs11.state import StateDir
from bindpkcs11.timespec import to_bind_timestamp
from bindpkcs11.token.uri import parse_uri

SUCCESSOR_TIMEOUT = 30.0


class NamedUnreachable(BindPkcs11Error):
    """rndc could not reach named; nothing was changed."""


class NamedRefusedRollover(UsageError):
    """named refused the rollover; nothing was changed."""


class SuccessorNotServed(BindPkcs11Error):
    """named took the rollover but did not serve the successor in time."""


@dataclass(frozen=True)
class NamedKey:
    """One key as named's key manager keeps it: its key files and its .state file."""

    tag: int
    role: str
    pair: KeyPairFiles = field(repr=False)
    state: keystate.KeyState

    @property
    def leaving(self) -> bool:
        """named retires it and still has some of its records out (keystate.KeyState.leaving)."""
        return self.state.leaving()

    @property
    def goal(self) -> str | None:
        return self.state.states.get("goal")


@dataclass(frozen=True)
class StockRollover:
    """What named was asked and what it scheduled, as its .state files say."""

    zone: str
    role: str
    step: str  # "rolling" (a ZSK; a KSK waits for its DS) or "DS switched" (--ds-published)
    predecessor: int
    successor: int | None  # None while -when is in the future (named creates it then)
    uri: str | None
    schedule: list[tuple[int, str]]
    new_ds: str | None
    named_status: str
    rndc_commands: list[str]


@dataclass(frozen=True)
class StockRequest:
    zone: dns.name.Name
    role: str
    key: int | None = None
    at: int | None = None
    ds_published: bool = False
    parent_server: tuple[str, int] | None = None
    test_timings: bool = False


def is_named_rolled(state: StateDir, zone: dns.name.Name) -> bool:
    """True for an instance whose named's key manager times rollovers: stock BIND 9.20, or the
    patched 9.20 (a dnssec-policy; 9.20 has no auto-dnssec). False with no instance, so the
    other route's checks (its argument errors first) report that."""
    instance = Instance.for_zone(state, zone)
    if not instance.exists():
        return False
    return instance.load_settings().named_rolls_keys


def rollover_stock(state: StateDir, request: StockRequest, progress) -> StockRollover:
    """The rollover, handed to named, under the instance lock."""
    instance = Instance.for_zone(state, request.zone)
    settings = instance.load_settings()
    with locks.held(inline.instance_lock(state, request.zone), f"the instance of {request.zone}"):
        if request.test_timings and not settings.test_timings:
            setup = "--bind stock" if settings.bind == STOCK else \
                f"--bind-version {settings.bind_version}"
            raise rollover.RolloverRefused(
                f"on BIND {settings.bind_version} named's dnssec-policy times the rollover of "
                f"{settings.zone}: for short timings set the instance up with 'setup-inline "
                f"{setup} --test-timings', then run 'rollover' without --test-timings")
        if named.running_pid(instance) is None:
            raise rollover.RolloverRefused(
                f"named for {settings.zone} is not running: start it with 'bindpkcs11 named start "
                f"{settings.zone}' (on BIND 9.20 named itself rolls the key)")
        prefix = route.installed(state, settings.bind, settings.bind_prefix,
                                 settings.bind_version).prefix
        if request.ds_published:
            return _ds_published(instance, settings, prefix, request)
        return _roll(state, instance, settings, prefix, request, progress)


def named_keys(instance: Instance, zone: dns.name.Name) -> list[NamedKey]:
    """Every key of the zone that has a .state file (named has adopted or made it)."""
    found = []
    for pair in key_pairs_in(instance.key_dir, zone):
        state = keystate.read_state(pair)
        if state is not None:
            found.append(NamedKey(pair.tag, pair.role, pair, state))
    return found


def run_rndc(instance: Instance, prefix: Path, *args: str) -> str:
    """rndc through the instance's rndc.conf; unreachable named and named's own `Error
    executing ...` answers (rndc exits 0 for those) become one line each."""
    try:
        output = rndc.rndc(instance, prefix, *args)
    except ToolFailed as error:
        raise NamedUnreachable(f"rndc {' '.join(args[:2])} failed: {error}; check that named "
                               "runs and answers rndc ('bindpkcs11 named status DOMAIN'); "
                               "nothing was changed") from None
    errors = [line.strip() for line in output.splitlines() if line.startswith("Error")]
    if errors:
        raise NamedRefusedRollover(f"named refused 'rndc {' '.join(args)}': {errors[0]}; "
                                   "nothing was changed")
    return output


def _roll(state: StateDir, instance: Instance, settings: InstanceSettings, prefix: Path,
          request: StockRequest, progress) -> StockRollover:
    zone, now = request.zone, int(time.time())
    run_rndc(instance, prefix, "dnssec", "-status", settings.zone)  # named answers rndc
    keys = named_keys(instance, zone)
    old = _key_to_roll(keys, request, settings.zone)
    rollover.validating_report(zone, settings)
    when = [] if request.at is None else ["-when", to_bind_timestamp(request.at)]
    if request.at is not None and request.at < now:
        raise rollover.RolloverRefused("--at is in the past: give a time from now on (named "
                                       "would roll at once)")
    command = ["dnssec", "-rollover", "-key", str(old.tag), *when, settings.zone]
    made = tokensuccessor.make(state, instance, settings, old.pair, progress) \
        if tokensuccessor.named_needs_one(settings) else None
    try:
        run_rndc(instance, prefix, *command)
    except BaseException as error:
        if made is None:
            raise
        # named was not asked: the unused key must not wait for a later roll. Its token object
        # stays (a private key is never destroyed by a failure path); the message says so.
        instancekeys.set_aside(instance, [made])
        if not isinstance(error, BindPkcs11Error):
            raise
        uri = parse_uri(made.label_uri) if made.label_uri else None
        where = (f"; its key object '{uri.object}' stays on token '{uri.token}' (delete it with "
                 f"'bindpkcs11 token delete --label {uri.token} --object {uri.object} --force', "
                 "or keep it)") if uri else ""
        raise type(error)(f"{str(error).removesuffix('; nothing was changed')}; the "
                          f"{request.role.upper()} {made.tag} bindpkcs11 made for the roll was "
                          f"set aside in {instance.root / 'abandoned-keys'}{where}") from None
    successor = made.tag if made is not None else None
    if request.at is None:
        progress(f"named rolls {request.role.upper()} {old.tag}: waiting for it to "
                 f"{'take ' + str(made.tag) if made else 'create the successor in the token'} "
                 "and serve its DNSKEY ...")
        successor = _wait_successor(instance, settings, zone, old)
        keys = named_keys(instance, zone)
        if made is not None:
            taken = next(k for k in keys if k.tag == successor)
            tokensuccessor.confirm(state, instance, settings, made, taken.pair)
    status_text = run_rndc(instance, prefix, "dnssec", "-status", settings.zone)
    new = next((k for k in keys if k.tag == successor), None)
    pair = new.pair if new else made
    return StockRollover(
        zone.to_text(), request.role, "rolling", old.tag, successor,
        pair.label_uri if pair else None, _schedule(keys, old.tag, successor),
        ds_text(zone, pair.dnskey) if pair and request.role == "ksk" else None,
        status_text, [f"rndc {' '.join(command)}"])


def _key_to_roll(keys: list[NamedKey], request: StockRequest, zone: str) -> NamedKey:
    """--key TAG (a key of this role of the zone), else the zone's one key of the role; a
    rollover already under way (a key named is retiring) is refused."""
    of_role = [k for k in keys if k.role == request.role]
    if request.key is not None:
        chosen = [k for k in of_role if k.tag == request.key]
        if not chosen:
            tags = ", ".join(str(k.tag) for k in of_role) or "none"
            raise rollover.RolloverRefused(
                f"key {request.key} is not a {request.role.upper()} of {zone} (its "
                f"{request.role.upper()}s: {tags}): give one of those with --key")
    leaving = [k for k in of_role if k.leaving]
    if leaving:
        key = leaving[0]
        raise rollover.RolloverUnderWay(
            f"a {request.role.upper()} rollover is under way ({request.role.upper()} {key.tag} "
            f"is being retired by named, removal {_when(key.state.times.get('delete'))}): wait "
            "until it completes ('bindpkcs11 status' shows named's schedule)")
    live = [k for k in of_role if k.goal == "omnipresent"]
    if request.key is not None:
        chosen = [k for k in live if k.tag == request.key]
        if not chosen:
            raise rollover.RolloverRefused(
                f"{request.role.upper()} {request.key} of {zone} is not one named keeps in the "
                "zone (its goal is not omnipresent): give an active key with --key")
        return chosen[0]
    if len(live) != 1:
        raise rollover.RolloverRefused(
            f"{zone} has {len(live)} {request.role.upper()}s named keeps "
            f"({', '.join(str(k.tag) for k in live) or 'none'}): name the one to roll with --key")
    return live[0]


def _wait_successor(instance: Instance, settings: InstanceSettings, zone: dns.name.Name,
                    old: NamedKey) -> int:
    """Until named has made the successor (its .state names the predecessor) and serves its
    DNSKEY in a zone that validates."""
    deadline = time.monotonic() + SUCCESSOR_TIMEOUT
    new: NamedKey | None = None
    while time.monotonic() < deadline:
        new = next((k for k in named_keys(instance, zone) if k.state.predecessor == old.tag), None)
        if new is not None and _served(zone, settings, new.tag):
            return new.tag
        time.sleep(0.2)
    what = "did not create a successor" if new is None else \
        f"made {old.role.upper()} {new.tag} but did not serve its DNSKEY in a validating zone"
    raise SuccessorNotServed(
        f"named took the rollover of {old.role.upper()} {old.tag} but {what} within "
        f"{SUCCESSOR_TIMEOUT:.0f} s: see {instance.log_file} ('keymgr' lines) and "
        "'bindpkcs11 status'")


def _served(zone: dns.name.Name, settings: InstanceSettings, tag: int) -> bool:
    """The zone validates as served and its DNSKEY RRset holds key `tag`."""
    report = monitor.check_zone(zone, settings.listen, settings.port,
                                timeout=readiness.READY_QUERY_TIMEOUT)
    return report.status != "critical" and any(k.key_tag == tag for k in report.dnskeys)


def require_cds_published(new: NamedKey, zone: str) -> None:
    """The parent may carry the new DS only once every cache can hold the new DNSKEY (RFC 7583):
    named marks that by publishing the new KSK's CDS, when its DNSKEY and key RRSIG states are
    omnipresent. named 9.20.23 itself accepts `-checkds published` earlier, so this is checked
    here, before named is told anything."""
    states = new.state.states
    if states.get("dnskey") != "omnipresent" or states.get("key_rrsig") != "omnipresent":
        raise rollover.RolloverRefused(
            f"named has not published the CDS of KSK {new.tag} of {zone} yet (its DNSKEY is "
            f"{states.get('dnskey')}, not yet in every cache): the parent must not switch to its "
            "DS before; try again once 'bindpkcs11 status' shows its CDS")


def _schedule(keys: list[NamedKey], old: int, new: int | None) -> list[tuple[int, str]]:
    """The events named wrote for the two keys, in time order."""
    labels = {"publish": "published", "activate": "active", "inactive": "retired",
              "delete": "removed", "sync_publish": "CDS/CDNSKEY published",
              "sync_delete": "CDS/CDNSKEY withdrawn", "ds_published": "DS at the parent",
              "ds_removed": "DS withdrawn from the parent"}
    events = []
    for key in keys:
        if key.tag not in (old, new):
            continue
        for name, value in key.state.times.items():
            if key.tag == old and name in ("publish", "activate", "sync_publish"):
                continue
            events.append((value, f"{key.role.upper()} {key.tag} {labels.get(name, name)}"))
    return sorted(events)


def _when(value: int | None) -> str:
    return monitor.iso_time(value) if value else "not scheduled yet"


def _ds_published(instance: Instance, settings: InstanceSettings, prefix: Path,
                  request: StockRequest) -> StockRollover:
    """Step 2 of a KSK roll: tell named the parent serves the new DS and no longer the old."""
    if request.role != "ksk":
        raise UsageError("--ds-published is for 'rollover ksk'")
    zone = request.zone
    keys = [k for k in named_keys(instance, zone) if k.role == "ksk"]
    old = [k for k in keys if k.leaving]
    new = [k for k in keys if old and k.state.predecessor == old[0].tag]
    if not old or not new:
        raise kskroll.NoKskRollover("no KSK rollover is waiting for its DS: start one with "
                                    "'bindpkcs11 rollover ksk DOMAIN' ('bindpkcs11 status' "
                                    "shows the keys)")
    require_cds_published(new[0], settings.zone)
    if request.parent_server is not None:
        kskroll.require_ds_at_parent(zone, new[0].pair, *request.parent_server)
    commands = [["dnssec", "-checkds", "-key", str(new[0].tag), "published", settings.zone],
                ["dnssec", "-checkds", "-key", str(old[0].tag), "withdrawn", settings.zone]]
    for command in commands:
        run_rndc(instance, prefix, *command)
    status_text = run_rndc(instance, prefix, "dnssec", "-status", settings.zone)
    keys = named_keys(instance, zone)
    return StockRollover(
        zone.to_text(), "ksk", "DS switched", old[0].tag, new[0].tag, new[0].pair.label_uri,
        _schedule(keys, old[0].tag, new[0].tag), ds_text(zone, new[0].pair.dnskey), status_text,
        [f"rndc {' '.join(c)}" for c in commands])
