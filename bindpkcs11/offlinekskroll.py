"""`bindpkcs11 rollover ksk DOMAIN --ksk-dir D [--ds-published]`: a KSK rollover of an
offline-KSK zone, written into the KSK key files for `ksk presign` to carry into the bundles.

Double-KSK (RFC 7583 section 3.3.2), as the inline `rollover ksk` (kskroll.py), because the
offline ceremony signs exactly the DNSKEY RRset: the new KSK joins it and signs it beside the old
one, so a resolver holding either DS validates, and the parent changes its DS once (double-DS
would need the parent twice: add the new DS, later remove the old). Each interval is rounded up
to whole ceremony periods, because a bundle follows a key event only from the first period start
at or after it:

    step 1   Publish(new) = Activate(new) = T                 (--at: put it on a period start)
             SyncPublish(new) = SyncDelete(old) = T + ceil((DNSKEY TTL + propagation) / period)
             the old KSK's DSPublish is recorded (its DS is at the parent: the zone validates)
    step 2   --ds-published [--at C]: the parent serves the new DS since C (>= SyncPublish)
             DSPublish(new) = DSRemoved(old) = C
             Inactive(old) = Delete(old) = C + parent DS TTL + parent propagation delay

The successor is generated on the predecessor's token (the ceremony token, present for step 1),
or given (`--new-ksk`: a token KSK the operator made, e.g. with a backup, on the same token).
`ksk presign --ksk OLD --ksk NEW` then checks the schedule as its periods round it
(kskpolicy.py) and refuses a gap or a withdrawal while the old DS may be the only one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dns.name

from bindpkcs11 import keydirs, kskroll, rollover
from bindpkcs11.backup import custody
from bindpkcs11.access import TokenAccess
from bindpkcs11.dnssec import keygen, keytiming, rollplan
from bindpkcs11.dnssec.algorithms import by_number
from bindpkcs11.dnssec.dnskey import ds_text
from bindpkcs11.dnssec.keyfile import (MAX_KEY_FILE_BYTES, KeyPairFiles, Timing, key_pairs_in,
                                       read_key_pair)
from bindpkcs11.errors import KeyFileError
from bindpkcs11.fileio import read_limited, write_atomic
from bindpkcs11.dnssec.policy import rsa_modulus_bits
from bindpkcs11.errors import UsageError
from bindpkcs11.timespec import check_key_time
from bindpkcs11.token.uri import parse_uri


@dataclass(frozen=True)
class OfflineKskRequest:
    zone: dns.name.Name
    ksk_dir: Path
    period: int
    timings: rollplan.ZoneTimings
    parent: rollplan.ParentTimings
    at: int | None = None
    ds_published: bool = False
    parent_server: tuple[str, int] | None = None
    new_ksk: Path | None = None
    """A successor the operator made (a `.key` file of a token KSK); default: made here."""


def rollover_ksk_offline(request: OfflineKskRequest,
                         token: Callable[[str], TokenAccess]) -> kskroll.KskRollover:
    """Step 1 (successor on the token, CDS switch scheduled) or step 2 (--ds-published)."""
    pairs = _ksks(request)
    if request.ds_published:
        return _confirm_ds(request, pairs)
    return _introduce(request, pairs, token)


def _ksks(request: OfflineKskRequest) -> list[KeyPairFiles]:
    if not Path(request.ksk_dir).is_dir():
        raise UsageError(f"--ksk-dir {request.ksk_dir} is not a directory: give the directory of "
                         "the zone's KSK key files")
    pairs = [p for p in key_pairs_in(request.ksk_dir, request.zone) if p.role == "ksk"]
    if not pairs:
        raise rollover.RolloverRefused(
            f"no KSK of {request.zone} in {request.ksk_dir}: generate it with 'bindpkcs11 keygen "
            f"{request.zone} --role ksk' (its files go to the state's key directory)")
    return pairs


def _introduce(request: OfflineKskRequest, pairs: list[KeyPairFiles],
               token: Callable[[str], TokenAccess]) -> kskroll.KskRollover:
    now = int(time.time())
    start = rollover.start_time(request.at, now)
    given = _given_successor(request) if request.new_ksk is not None else None
    if given is not None:
        pairs = [p for p in pairs if p.tag != given.tag]
    if not any(keytiming.state_at(p.timing, start) == "active" for p in pairs):
        raise rollover.RolloverRefused(f"no KSK of {request.zone} in {request.ksk_dir} is active at "
                                       "the rollover's start: give the directory of the KSK that "
                                       "signs now")
    old = kskroll.sole_ksk(pairs, start)
    if not old.label_uri:
        raise rollover.RolloverRefused(f"KSK {old.tag} is a software key: an offline-KSK zone's "
                                       "KSK lives on the ceremony token")
    sync = start + rollplan.whole_periods(
        request.timings.dnskey_ttl + request.timings.propagation_delay, request.period)
    for name, value in (("Publish", start), ("SyncPublish", sync)):
        check_key_time(name, value, now)
    before = {name: keytiming.private_time(old, name) for name in ("sync_delete", "ds_publish")}
    ds_publish = before["ds_publish"] or min(
        t for t in (old.timing.publish, old.timing.activate, old.timing.created) if t is not None)
    keytiming.set_times(old, sync_delete=sync, ds_publish=ds_publish)
    try:
        if given is None:
            new = _make_successor(request, old, Timing(created=now, publish=start,
                                                       activate=start), token)
        else:
            new = _adopt_successor(request, old, given)
            keytiming.set_times(new, publish=start, activate=start)
        keytiming.set_times(new, sync_publish=sync)
    except BaseException:
        keytiming.set_times(old, **before)
        raise
    return kskroll.KskRollover(request.zone.to_text(), "waiting for DS", old.tag, new.tag,
                               new.label_uri, start, sync, None, ds_text(request.zone, new.dnskey),
                               request.timings, request.parent)


def _make_successor(request: OfflineKskRequest, old: KeyPairFiles, timing: Timing,
                    token: Callable[[str], TokenAccess]) -> KeyPairFiles:
    """A KSK of the predecessor's algorithm (and RSA size) on the predecessor's token."""
    algorithm = by_number(old.dnskey.algorithm)
    if algorithm.is_rsa:
        algorithm = algorithm.with_bits(rsa_modulus_bits(old.dnskey.key))
    label = parse_uri(old.label_uri or "").token
    if not label:
        raise rollover.RolloverRefused(f"KSK {old.tag}'s key file names no token: pass the KSK "
                                       "files 'bindpkcs11 keygen --role ksk' wrote")
    access = token(label)
    keydirs.record(access.state, Path(request.ksk_dir))  # the token guard finds its key file
    generated = keygen.generate_on_token(keygen.KeygenRequest(
        zone=request.zone, role="ksk", algorithm=algorithm, key_dir=Path(request.ksk_dir),
        timing=timing), access)
    custody.record_generated(access.state, generated.key_file, access.label, False)
    return read_key_pair(generated.key_file)


def _given_successor(request: OfflineKskRequest) -> KeyPairFiles:
    """--new-ksk: a KSK key file of this zone that names a token key."""
    path = Path(request.new_ksk or "")
    pair = read_key_pair(path if path.suffix == ".key" else path.with_name(path.name + ".key"))
    if pair.role != "ksk" or pair.zone != request.zone or not pair.label_uri:
        raise rollover.RolloverRefused(
            f"--new-ksk {path} is not a token KSK of {request.zone}: make one with 'bindpkcs11 "
            f"keygen {request.zone} --role ksk --key-dir DIR'")
    return pair


def _adopt_successor(request: OfflineKskRequest, old: KeyPairFiles,
                     given: KeyPairFiles) -> KeyPairFiles:
    """The given successor, on the old KSK's token (one ceremony token), its algorithm, its
    files copied into --ksk-dir if they are elsewhere (an existing file is never replaced)."""
    token_of = lambda pair: parse_uri(pair.label_uri or "").token  # noqa: E731
    if token_of(given) != token_of(old) or given.dnskey.algorithm != old.dnskey.algorithm:
        raise rollover.RolloverRefused(
            f"--new-ksk {given.key_path.name} must be a key of algorithm {old.dnskey.algorithm} "
            f"on token '{token_of(old)}' like KSK {old.tag}: the ceremony signs with one token")
    if given.key_path.parent.resolve() == Path(request.ksk_dir).resolve():
        return given
    targets = [Path(request.ksk_dir) / p.name for p in (given.key_path, given.private_path)]
    existing = [t for t in targets if t.exists()]
    if existing:
        raise rollover.RolloverRefused(f"{existing[0]} already exists: not replaced")
    for source, target in zip((given.key_path, given.private_path), targets):
        write_atomic(target, read_limited(source, MAX_KEY_FILE_BYTES, "key file",
                                          KeyFileError)[0],
                     mode=0o600 if target.suffix == ".private" else 0o644)
    return read_key_pair(targets[0])


def _confirm_ds(request: OfflineKskRequest, pairs: list[KeyPairFiles]) -> kskroll.KskRollover:
    now = int(time.time())
    confirmed = now if request.at is None else request.at
    if confirmed > now and not request.timings.test:
        raise rollplan.TimingRuleBroken(
            f"--at is {confirmed - now} s in the future: confirm the new DS once the parent serves "
            "it (a rehearsal may plan it with --test-timings)")
    old, new = kskroll.waiting_pair(pairs, confirmed)
    sync = keytiming.private_time(new, "sync_publish") or 0
    rollplan.require_ds_switch_allowed(confirmed, sync)
    if request.parent_server is not None:
        kskroll.require_ds_at_parent(request.zone, new, *request.parent_server)
    retire = rollplan.old_ksk_retirement(confirmed, request.parent)
    keytiming.set_times(new, ds_publish=confirmed)
    keytiming.set_times(old, ds_removed=confirmed, inactive=retire, delete=retire)
    return kskroll.KskRollover(request.zone.to_text(), "retiring old KSK", old.tag, new.tag,
                               new.label_uri, new.timing.publish or 0, sync, retire,
                               ds_text(request.zone, new.dnskey), None, request.parent)
