"""`bindpkcs11 status DOMAIN`: every key of a setup-inline zone, where it lives, what it does now.

The keys are the instance's key files and the token objects named after the zone (setup-inline
and rollover label them `<zone>-<role>-<tag>`). A key's state and next event come from its timing
metadata (dnssec/keytiming.py), exactly as named reads it; whether its token object still exists
is asked of the token (one login with the instance's PIN file). On BIND 9.20 (a dnssec-policy)
named's key manager writes those timing fields itself and keeps a .state file per key: its
record states are shown beside them (`named`). A token that cannot be reached
does not hide the key files: their token state shows as "unknown" and the reason is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.name

from bindpkcs11.access import TokenAccess
from bindpkcs11.bind.instance import Instance
from bindpkcs11.dnssec import algorithms, keystate, kskplan
from bindpkcs11.dnssec.dnskey import ds_text, zone_label_text
from bindpkcs11.dnssec.keyfile import KeyPairFiles, key_pairs_in
from bindpkcs11.dnssec.keytiming import NextEvent, private_time, state_at
from bindpkcs11.errors import BindPkcs11Error, UsageError
from bindpkcs11.state import StateDir
from bindpkcs11.token import keys
from bindpkcs11.token.uri import key_uri, parse_uri


# Timing events in the order a key lives through them (ties show the earlier one).
_LIFECYCLE = ("publish", "activate", "sync_publish", "revoke", "sync_delete", "inactive", "delete")


@dataclass(frozen=True)
class KeyStatus:
    """One key of the zone, one line of `status`."""

    role: str
    algorithm: str
    tag: int | None
    location: str  # "token" or "software"
    uri: str | None
    state: str
    next_event: NextEvent | None
    token_object: str | None  # present, missing, unknown; None for a software key
    key_file: str | None
    times: dict[str, int] = field(default_factory=dict)
    cds: bool | None = None  # a KSK: named publishes CDS/CDNSKEY for it now
    # Under a dnssec-policy (BIND 9.20): named's key manager's view from the key's .state file,
    # the state of each record (dnskey, zone_rrsig, key_rrsig, ds) and the goal it moves them to.
    named: dict[str, str] | None = None


@dataclass(frozen=True)
class ZoneKeyStatus:
    zone: str
    now: int
    keys: list[KeyStatus]
    ds: list[str]
    problems: list[str]
    cleanup: list[str] = field(default_factory=list)


def zone_status(state: StateDir, zone: dns.name.Name, now: int | None = None) -> ZoneKeyStatus:
    """The status of every key of `zone`'s setup-inline instance at `now` (default: the clock)."""
    live = now is None  # named's record states are its view now, not at another time
    now = int(time.time()) if now is None else now
    instance = Instance.for_zone(state, zone)
    settings = instance.load_settings()
    pairs = key_pairs_in(instance.key_dir, zone)
    problems: list[str] = []
    objects = _token_objects(state, instance, settings.profile, pairs, settings.token, problems)
    rows = [_key_row(pair, now, objects, live, settings.under_policy) for pair in pairs]
    referenced = {(parse_uri(p.label_uri).token, parse_uri(p.label_uri).object)
                  for p in pairs if p.label_uri}
    prefix = f"{zone_label_text(zone)}-"
    for token, labels in sorted(objects.items()):
        if labels is None:
            continue
        for label in sorted(labels):
            if label.startswith(prefix) and (token, label) not in referenced:
                rows.append(_orphan_row(token, label, prefix))
    offers = [] if settings.under_policy else cleanup_offers(rows, zone)  # rollcleanup.py
    return ZoneKeyStatus(zone.to_text(), now, rows, _parent_ds(zone, pairs, rows), problems,
                         offers)


def offline_status(zone: dns.name.Name, zsk_dir: Path, now: int | None = None,
                   ksk_dir: Path | None = None) -> ZoneKeyStatus:
    """The ZSKs of an offline-KSK zone (software key files in the ceremony's ZSK directory), each
    with its state at `now` from its timing, as `ksk presign` reads it at a period start (the
    bundles follow an event at the first period start at or after it). With `ksk_dir`, its KSK
    files too (a KSK rollover, offlinekskroll.py) and the DS the parent should have now: the
    KSKs CDS names, else those whose DS is at the parent (kskplan.py)."""
    now = int(time.time()) if now is None else now
    if not Path(zsk_dir).is_dir():
        raise UsageError(f"--zsk-dir {zsk_dir} is not a directory: give the ceremony's ZSK directory")
    pairs = key_pairs_in(Path(zsk_dir), zone)
    ds: list[str] = []
    if ksk_dir is not None:
        pairs = [p for p in pairs if p.role == "zsk"]
        if not Path(ksk_dir).is_dir():
            raise UsageError(f"--ksk-dir {ksk_dir} is not a directory: give the zone's KSK files")
        ksks = kskplan.ksk_times([p for p in key_pairs_in(Path(ksk_dir), zone) if p.role == "ksk"])
        pairs = [k.pair for k in ksks] + pairs
        chosen = [k for k in ksks if k.cds(now) and k.published(now)] or \
            [k for k in ksks if k.ds_at_parent(now)]
        ds = [ds_text(zone, k.pair.dnskey) for k in chosen]
    rows = [_key_row(pair, now, {}) for pair in pairs]
    return ZoneKeyStatus(zone.to_text(), now, rows, ds, [])


def cleanup_offers(rows: list[KeyStatus], zone: dns.name.Name) -> list[str]:
    """For each removed key whose token object remains: the command that destroys it. Offered,
    never done: `rollover cleanup` asks for a typed "destroy TAG" (or --confirm TAG), checks that
    named no longer serves the key and applies the custody rules (never an active key's last
    copy)."""
    offers = []
    for row in rows:
        if row.state == "removed" and row.token_object == "present" and row.uri:
            offers.append(f"{row.role.upper()} {row.tag} was removed from the zone; its token "
                          f"object {row.uri} remains; to destroy it (type 'destroy {row.tag}' "
                          f"when asked, or add --confirm {row.tag}): bindpkcs11 rollover cleanup "
                          f"{zone.to_text(omit_final_dot=True)}")
    return offers


def _parent_ds(zone: dns.name.Name, pairs: list[KeyPairFiles], rows: list[KeyStatus]) -> list[str]:
    """The DS the parent should have now: that of each KSK whose CDS named publishes (during a
    KSK rollover, the new KSK once its DNSKEY is in every cache); for keys without CDS timing
    (instances set up before CDS), the active KSKs."""
    ksks = [(pair, row) for pair, row in zip(pairs, rows) if pair.role == "ksk"]
    if any(row.named for _, row in ksks):  # named's key manager: its DS states say
        return [ds_text(zone, pair.dnskey) for pair, row in ksks
                if (row.named or {}).get("ds") in keystate.IN_ZONE]
    with_cds = [pair for pair, row in ksks if row.cds and row.state != "removed"]
    chosen = with_cds or [pair for pair, row in ksks if row.state == "active"]
    return [ds_text(zone, pair.dnskey) for pair in chosen]


def _token_objects(state: StateDir, instance: Instance, profile: str, pairs: list[KeyPairFiles],
                   default_token: str, problems: list[str]) -> dict[str, set[str] | None]:
    """Private-key object labels on each token the zone's keys use; None for a token that could
    not be read (the reason goes to `problems`)."""
    tokens = {parse_uri(p.label_uri).token for p in pairs if p.label_uri} | {default_token}
    found: dict[str, set[str] | None] = {}
    for token in sorted(t for t in tokens if t):
        try:
            access = TokenAccess.build(state, profile, token, pin_file=instance.pin_file)
            with access.session() as session:
                found[token] = {info.label for info in keys.list_objects(session)
                                if info.object_class == "private"}
        except BindPkcs11Error as error:
            found[token] = None
            problems.append(f"token '{token}' could not be read: {error}")
    return found


def _key_row(pair: KeyPairFiles, now: int, objects: dict[str, set[str] | None],
             live: bool = False, policy: bool = True) -> KeyStatus:
    times = {name: value for name, value in vars(pair.timing).items() if value is not None}
    for name in ("sync_publish", "sync_delete"):
        value = private_time(pair, name) if pair.role == "ksk" else None
        if value is not None:
            times[name] = value
    named, kept = _named_states(pair) if policy else (None, None)  # else a stale leftover
    state = _named_key_state(kept, pair.role) if live and kept else None
    ds_removed = kept.times.get("ds_removed") if kept else None
    if ds_removed is not None:  # named deleted the CDS when told the parent withdrew the DS
        times.setdefault("sync_delete", ds_removed)
    token_object = None
    if pair.label_uri:
        uri = parse_uri(pair.label_uri)
        labels = objects.get(uri.token or "")
        token_object = "unknown" if labels is None else (
            "present" if uri.object in labels else "missing")
    return KeyStatus(
        role=pair.role, algorithm=_mnemonic(pair.dnskey.algorithm), tag=pair.tag,
        location="token" if pair.label_uri else "software", uri=pair.label_uri,
        state=state or state_at(pair.timing, now), next_event=_next(times, now),
        token_object=token_object, key_file=str(pair.key_path),
        times=times, cds=(kept.cds if live and kept else _cds_now(times, now))
        if pair.role == "ksk" else None,
        named=named,
    )


def _named_states(pair: KeyPairFiles) -> tuple[dict[str, str] | None, keystate.KeyState | None]:
    """The key manager's record states, for keys named keeps under a policy, and its whole
    .state file; a .state file that cannot be read shows as such rather than hiding the key."""
    try:
        state = keystate.read_state(pair)
    except BindPkcs11Error as error:
        return {"error": str(error)}, None
    if state is None:
        return None, None
    return dict(state.states), state


def _named_key_state(state: keystate.KeyState, role: str) -> str | None:
    """The key's state as named's key manager holds it now, in `status`'s words. Under a
    policy named 9.20 keeps signing with a retired key until its successor's signatures are
    everywhere, and removes a DNSKEY only when its rules allow (measured: after its Delete time),
    so its record states, not the timing fields, say what DNS shows. A key it never published
    (a successor waiting in the key directory) is "generated", never "removed"."""
    dnskey = state.states.get("dnskey")
    if dnskey is None:
        return None
    if dnskey not in keystate.IN_ZONE:
        return "removed" if state.retiring else "generated"
    if state.signing(role):
        return "active"
    return "inactive" if state.states.get("goal") == "hidden" else "published"


def _next(times: dict[str, int], now: int) -> NextEvent | None:
    """The earliest future event among the timing fields (CDS changes included)."""
    future = sorted((value, _LIFECYCLE.index(name), name) for name, value in times.items()
                    if name in _LIFECYCLE and value > now)
    return NextEvent(future[0][2], future[0][0]) if future else None


def _cds_now(times: dict[str, int], now: int) -> bool:
    """named's rule (dnssec.c syncpublish/syncdelete): SyncPublish reached, SyncDelete not (at
    SyncDelete itself named deletes the CDS)."""
    published = times.get("sync_publish") is not None and times["sync_publish"] <= now
    return published and not (times.get("sync_delete") is not None and times["sync_delete"] <= now)


def _orphan_row(token: str, label: str, prefix: str) -> KeyStatus:
    """A token object named after the zone that no key file refers to (a key file lost, or a
    key generated by hand): named cannot use it, the operator should know it is there."""
    role, _, tag = label[len(prefix):].partition("-")
    return KeyStatus(
        role=role if role in ("ksk", "zsk") else "?", algorithm="?",
        tag=int(tag) if tag.isdigit() else None, location="token",
        uri=key_uri(token, label), state="no key file", next_event=None,
        token_object="present", key_file=None)


def _mnemonic(number: int) -> str:
    try:
        return algorithms.by_number(number).mnemonic
    except BindPkcs11Error:
        return str(number)
