"""`bindpkcs11 rollover zsk DOMAIN --zsk-dir D`: a ZSK rollover of an offline-KSK zone.

An offline-KSK zone has no named holding its keys: its ZSKs are software key files in the
ceremony's ZSK directory, and `ksk presign` reads their timing at each period start to decide
which ZSKs each bundle publishes and which sign. So a rollover here is the key files alone: the
successor (software, like every offline ZSK) with Publish and Activate, the predecessor with
Inactive and Delete, the RFC 7583 intervals of an inline rollover (dnssec/rollplan.py) rounded
up to whole ceremony periods, with the durations the ceremony checks them against (`ksk presign`
refuses a schedule that breaks ZSK-PREPUBLISHED / ZSK-POSTPUBLISHED once rounded to its
periods). The re-sign interval term is
the signer's round interval: `signer run` replaces every signature of the old ZSK in its first
round of the period the new one signs in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dns.name

from bindpkcs11 import monitor, rollover
from bindpkcs11.access import TokenAccess
from bindpkcs11.dnssec import keygen, keytiming, rollplan
from bindpkcs11.dnssec.algorithms import by_number
from bindpkcs11.dnssec.keyfile import KeyPairFiles, Timing, key_pairs_in, read_key_pair
from bindpkcs11.dnssec.policy import rsa_modulus_bits
from bindpkcs11.errors import UsageError
from bindpkcs11.timespec import check_key_time


@dataclass(frozen=True)
class OfflineRolloverRequest:
    zone: dns.name.Name
    zsk_dir: Path
    timings: rollplan.ZoneTimings
    period: int
    at: int | None = None
    activate: int | None = None
    delete: int | None = None


def rollover_zsk_offline(request: OfflineRolloverRequest,
                         token_rng: Callable[[], TokenAccess] | None = None) -> rollover.ZskRollover:
    """Successor written with Publish/Activate, predecessor given Inactive/Delete; on a failure
    after the predecessor was changed its timing is restored."""
    now = int(time.time())
    start = rollover.start_time(request.at, now)
    predecessor = _predecessor(request, start)
    schedule = rollplan.zsk_schedule_in_periods(start, request.timings, request.period,
                                                request.activate, request.delete)
    for name, value in vars(schedule).items():
        check_key_time(name.capitalize(), value, now)
    before = predecessor.timing
    keytiming.set_times(predecessor, inactive=schedule.inactive, delete=schedule.delete)
    try:
        successor = _make_successor(request, predecessor, Timing(
            created=now, publish=schedule.publish, activate=schedule.activate), token_rng)
    except BaseException:
        keytiming.set_times(predecessor, inactive=before.inactive, delete=before.delete)
        raise
    return rollover.ZskRollover(request.zone.to_text(), predecessor.tag, successor.tag,
                                "software", None, schedule, request.timings, False,
                                str(successor.key_path))


def _predecessor(request: OfflineRolloverRequest, start: int) -> KeyPairFiles:
    """The one ZSK in --zsk-dir that signs at the successor's Publish, with nothing scheduled."""
    if not Path(request.zsk_dir).is_dir():
        raise UsageError(f"--zsk-dir {request.zsk_dir} is not a directory: give the ceremony's "
                         "ZSK directory")
    zsks = [pair for pair in key_pairs_in(request.zsk_dir, request.zone) if pair.role == "zsk"]
    active = [pair for pair in zsks if keytiming.state_at(pair.timing, start) == "active"]
    if not active:
        raise rollover.RolloverRefused(
            f"no ZSK of {request.zone} in {request.zsk_dir} is active at "
            f"{monitor.iso_time(start)}: generate the first one with 'bindpkcs11 keygen "
            f"{request.zone} --role zsk --software --key-dir {request.zsk_dir}'")
    return rollover.current_zsk(zsks, active[0].dnskey.algorithm, start)


def _make_successor(request: OfflineRolloverRequest, predecessor: KeyPairFiles, timing: Timing,
                    token_rng: Callable[[], TokenAccess] | None) -> KeyPairFiles:
    """A software ZSK of the predecessor's algorithm (and RSA size), in the same directory."""
    algorithm = by_number(predecessor.dnskey.algorithm)
    if algorithm.is_rsa:
        algorithm = algorithm.with_bits(rsa_modulus_bits(predecessor.dnskey.key))
    key_request = keygen.KeygenRequest(zone=request.zone, role="zsk", algorithm=algorithm,
                                       key_dir=Path(request.zsk_dir), timing=timing, software=True)
    if token_rng is None:
        generated = keygen.generate_software(key_request)
    else:
        generated = keygen.generate_software_with_token_rng(key_request, token_rng())
    return read_key_pair(generated.key_file)
