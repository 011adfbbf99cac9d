"""Ceremony policy: one function per named rule, each raising an exception named after the rule.

All rules run before anything is signed or written. Each returns a one-line note for the ceremony
log when it passes; the first violation stops the ceremony with one clear line naming the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import dns.name

from bindpkcs11.dnssec import algorithms
from bindpkcs11.dnssec.dnskey import KSK_FLAGS, ZSK_FLAGS, key_tag
from bindpkcs11.dnssec.keyfile import KeyPairFiles
from bindpkcs11.dnssec.presign import PeriodPlan, Schedule
from bindpkcs11.errors import BindPkcs11Error
from bindpkcs11.timespec import to_bind_timestamp

DAY = 86400
_EC_KEY_BYTES = {13: 64, 14: 96, 15: 32}


class PolicyViolation(BindPkcs11Error):
    """A ceremony policy rule was violated."""

    exit_code = 12
    rule = "POLICY"

    def __init__(self, message: str) -> None:
        super().__init__(f"policy {self.rule} violated: {message}")


class ValidityGap(PolicyViolation):
    rule = "NO-VALIDITY-GAP"


class OverlapShorterThanTtl(PolicyViolation):
    rule = "OVERLAP-COVERS-DNSKEY-TTL"


class ValidityTooLong(PolicyViolation):
    rule = "MAX-SIGNATURE-VALIDITY"


class NoSigningZsk(PolicyViolation):
    rule = "ZSK-SIGNS-EVERY-PERIOD"


class SigningZskNotPublished(PolicyViolation):
    rule = "SIGNING-ZSK-PUBLISHED"


class ZskNotPrepublished(PolicyViolation):
    rule = "ZSK-PREPUBLISHED"


class ZskRemovedTooEarly(PolicyViolation):
    rule = "ZSK-POSTPUBLISHED"


class AlgorithmNotAllowed(PolicyViolation):
    rule = "ALGORITHM-ALLOWED"


class KeySizeNotAllowed(PolicyViolation):
    rule = "KEY-SIZE-ALLOWED"


class ZskNotSoftware(PolicyViolation):
    rule = "ZSK-IS-SOFTWARE"


class KskNotOnToken(PolicyViolation):
    rule = "KSK-ON-TOKEN"


class TokenKskMismatch(PolicyViolation):
    rule = "KSK-MATCHES-TOKEN"


class KeyNotOfZone(PolicyViolation):
    rule = "KEY-OWNER-IS-ZONE"


@dataclass(frozen=True)
class CeremonyPolicy:
    """The limits a ceremony enforces (defaults follow the root zone's KSK practice)."""

    max_validity: int = 21 * DAY
    algorithms: tuple[int, ...] = (8, 10, 13, 14, 15)
    min_rsa_bits: int = 2048


def check_key_owner_is_zone(zone: dns.name.Name, ksk: KeyPairFiles,
                            zsks: Sequence[KeyPairFiles]) -> str:
    """KEY-OWNER-IS-ZONE: every key's DNSKEY owner is the zone being signed. A KSK of another zone
    would publish this zone under a key its parent's DS does not name: a validation outage."""
    for key in (ksk, *zsks):
        if key.zone != zone:
            raise KeyNotOfZone(f"{key.key_path} holds a {key.role.upper()} of {key.zone}, not of "
                               f"{zone}: pass {zone}'s key")
    return f"all {1 + len(zsks)} keys belong to {zone}"


def check_no_validity_gap(plans: Sequence[PeriodPlan]) -> str:
    """NO-VALIDITY-GAP: each period starts where the last ended, and its RRSIG is valid by then."""
    for before, after in zip(plans, plans[1:]):
        if after.start != before.end or after.inception > before.expiration:
            raise ValidityGap(
                f"period {before.index}'s signature expires at {to_bind_timestamp(before.expiration)} "
                f"but period {after.index}'s is valid only from {to_bind_timestamp(after.inception)}: "
                "raise --validity (or --overlap)"
            )
    return f"{len(plans)} consecutive periods, no gap"


def check_overlap_covers_dnskey_ttl(schedule: Schedule) -> str:
    """OVERLAP-COVERS-DNSKEY-TTL: an RRSIG cached just before the switch stays valid for its TTL."""
    if schedule.overlap < schedule.dnskey_ttl:
        raise OverlapShorterThanTtl(
            f"signatures outlive their period by {schedule.overlap} s, less than the DNSKEY TTL "
            f"({schedule.dnskey_ttl} s): raise --overlap or lower --dnskey-ttl"
        )
    return f"overlap {schedule.overlap} s >= DNSKEY TTL {schedule.dnskey_ttl} s"


def check_max_signature_validity(plans: Sequence[PeriodPlan], policy: CeremonyPolicy) -> str:
    """MAX-SIGNATURE-VALIDITY: a stolen bundle is useful for a bounded time only."""
    for plan in plans:
        lifetime = plan.expiration - plan.inception
        if lifetime > policy.max_validity:
            raise ValidityTooLong(
                f"period {plan.index}'s signature would be valid for {lifetime} s, more than the "
                f"maximum {policy.max_validity} s: lower --validity or raise --max-validity"
            )
    return f"signature lifetimes <= {policy.max_validity} s"


def check_zsk_signs_every_period(plans: Sequence[PeriodPlan]) -> str:
    """ZSK-SIGNS-EVERY-PERIOD: the online signer always has a ZSK to sign with."""
    for plan in plans:
        if not plan.signing:
            raise NoSigningZsk(
                f"no ZSK is active at the start of period {plan.index} "
                f"({to_bind_timestamp(plan.start)}): generate one or fix the keys' Activate/Inactive"
            )
    return "every period has an active ZSK"


def check_signing_zsk_published(plans: Sequence[PeriodPlan]) -> str:
    """SIGNING-ZSK-PUBLISHED: every ZSK that signs in a period is in that period's DNSKEY RRset."""
    for plan in plans:
        missing = sorted(set(plan.signing) - set(plan.published))
        if missing:
            raise SigningZskNotPublished(
                f"ZSK {missing[0]} signs in period {plan.index} but is not published then: "
                "its Publish must not be later than its Activate, nor Delete earlier than Inactive"
            )
    return "every signing ZSK is published"


def check_zsk_prepublished(plans: Sequence[PeriodPlan], schedule: Schedule,
                           zsks: Sequence[KeyPairFiles]) -> str:
    """ZSK-PREPUBLISHED: a ZSK that starts signing in a period has been served in the DNSKEY RRset
    for at least DNSKEY TTL + propagation delay (RFC 7583 pre-publication): a resolver may hold the
    RRset without it that long, and could not validate the new signatures meanwhile. Served means
    in the bundles of the periods before (period granularity: a Publish between period starts
    counts from the next start), or since its Publish for a key already in the first period."""
    publish = {zsk.tag: zsk.timing.publish for zsk in zsks}
    for index in range(1, len(plans)):
        for tag in sorted(set(plans[index].signing) - set(plans[index - 1].signing)):
            since = _served_since(plans, index, tag, publish.get(tag))
            start = plans[index].start
            if start - since < schedule.prepublish:
                raise ZskNotPrepublished(
                    f"ZSK {tag} signs from period {index} ({to_bind_timestamp(start)}) but its "
                    f"DNSKEY is served only {start - since} s before; caches need DNSKEY TTL "
                    f"{schedule.dnskey_ttl} s + propagation delay {schedule.propagation_delay} s: "
                    f"publish it by {to_bind_timestamp(start - schedule.prepublish)} (a period "
                    "start) or activate it later")
    return f"new ZSKs are served >= {schedule.prepublish} s before they sign"


def _served_since(plans: Sequence[PeriodPlan], index: int, tag: int, publish: int | None) -> int:
    """When `tag` entered the DNSKEY RRset it is in, unbroken, up to period `index` (exclusive)."""
    first = index
    while first > 0 and tag in plans[first - 1].published:
        first -= 1
    if first == 0 and first < index and publish is not None:
        return min(publish, plans[0].start)
    return plans[first].start


def check_zsk_postpublished(plans: Sequence[PeriodPlan], schedule: Schedule,
                            zsks: Sequence[KeyPairFiles]) -> str:
    """ZSK-POSTPUBLISHED: a ZSK that stops signing stays in the DNSKEY RRset for max zone TTL +
    propagation delay (RFC 7583 retire interval): the signer replaces all its signatures in the
    first round of the period, but resolvers may hold them that long. Beyond the last period the
    key's Delete time is what the next ceremony will follow."""
    delete = {zsk.tag: zsk.timing.delete for zsk in zsks}
    for index in range(1, len(plans)):
        start = plans[index].start
        for tag in sorted(set(plans[index - 1].signing) - set(plans[index].signing)):
            gone = next((plan.start for plan in plans[index:] if tag not in plan.published),
                        delete.get(tag))
            if gone is not None and gone - start < schedule.postpublish:
                raise ZskRemovedTooEarly(
                    f"ZSK {tag} stops signing at period {index} ({to_bind_timestamp(start)}) but "
                    f"leaves the DNSKEY RRset {gone - start} s later; caches may hold its "
                    f"signatures for max zone TTL {schedule.max_zone_ttl} s + propagation delay "
                    f"{schedule.propagation_delay} s: set its Delete to "
                    f"{to_bind_timestamp(start + schedule.postpublish)} or later")
    return f"retired ZSKs stay published >= {schedule.postpublish} s"


def check_algorithm_allowed(ksk: KeyPairFiles, zsks: Sequence[KeyPairFiles],
                            policy: CeremonyPolicy) -> str:
    """ALGORITHM-ALLOWED: allowed algorithms only, one for all keys (no algorithm rollover)."""
    for key in (ksk, *zsks):
        if key.dnskey.algorithm not in policy.algorithms:
            raise AlgorithmNotAllowed(
                f"key {key.tag} uses algorithm {key.dnskey.algorithm}; allowed: "
                f"{', '.join(str(a) for a in policy.algorithms)}"
            )
        if key.dnskey.algorithm != ksk.dnskey.algorithm:
            raise AlgorithmNotAllowed(
                f"ZSK {key.tag} uses algorithm {key.dnskey.algorithm} but the KSK uses "
                f"{ksk.dnskey.algorithm}: every key must share one algorithm"
            )
    return f"algorithm {ksk.dnskey.algorithm} for all {1 + len(zsks)} keys"


def check_key_size_allowed(ksk: KeyPairFiles, zsks: Sequence[KeyPairFiles],
                           policy: CeremonyPolicy) -> str:
    """KEY-SIZE-ALLOWED: RSA moduli of at least `min_rsa_bits`, EC keys of their curve's size."""
    for key in (ksk, *zsks):
        number, blob = key.dnskey.algorithm, key.dnskey.key
        if algorithms.by_number(number).is_rsa:
            bits = rsa_modulus_bits(blob)
            if bits < policy.min_rsa_bits:
                raise KeySizeNotAllowed(f"key {key.tag} is RSA-{bits}; the minimum is "
                                        f"{policy.min_rsa_bits} bits")
        elif len(blob) != _EC_KEY_BYTES.get(number, len(blob)):
            raise KeySizeNotAllowed(f"key {key.tag} has a {len(blob)}-byte public key, wrong for "
                                    f"algorithm {number}")
    return "key sizes allowed"


def check_zsk_is_software(zsks: Sequence[KeyPairFiles]) -> str:
    """ZSK-IS-SOFTWARE: the online side signs with ZSKs from files, so they must be software keys."""
    for zsk in zsks:
        if zsk.dnskey.flags != ZSK_FLAGS:
            raise ZskNotSoftware(f"{zsk.key_path.name} is not a ZSK (flags {zsk.dnskey.flags})")
        if zsk.label_uri or "Engine" in zsk.private_fields:
            raise ZskNotSoftware(f"ZSK {zsk.tag} lives on a token; the online signer needs "
                                 "software ZSKs from 'bindpkcs11 keygen --software'")
    return f"{len(zsks)} software ZSKs"


def check_ksk_on_token(ksk: KeyPairFiles) -> str:
    """KSK-ON-TOKEN: the KSK file names a token key (its private part never leaves the token)."""
    if ksk.dnskey.flags != KSK_FLAGS:
        raise KskNotOnToken(f"{ksk.key_path.name} is not a KSK (flags {ksk.dnskey.flags})")
    if not ksk.label_uri:
        raise KskNotOnToken(f"{ksk.key_path.name} is a software key: the KSK must be a token key "
                            "('bindpkcs11 keygen --role ksk' without --software)")
    return f"KSK {ksk.tag} is {ksk.label_uri}"


def check_ksk_matches_token(ksk: KeyPairFiles, token_dnskey) -> str:
    """KSK-MATCHES-TOKEN: the key on the token is the key the DS record was made from."""
    tag = key_tag(token_dnskey)
    if tag != ksk.tag or token_dnskey.key != ksk.dnskey.key or \
            token_dnskey.algorithm != ksk.dnskey.algorithm:
        raise TokenKskMismatch(
            f"the token's key (tag {tag}) differs from {ksk.key_path.name} (tag {ksk.tag}): "
            "wrong token, wrong --ksk, or the key was replaced"
        )
    return f"token key matches KSK {ksk.tag} (tag and public key)"


def offline_rules(zone: dns.name.Name, schedule: Schedule, plans: Sequence[PeriodPlan],
                  ksk: KeyPairFiles, zsks: Sequence[KeyPairFiles],
                  policy: CeremonyPolicy) -> list[tuple[str, str]]:
    """Run every rule that needs no token; returns (rule, note) pairs for the log."""
    checks = [
        (KeyNotOfZone.rule, lambda: check_key_owner_is_zone(zone, ksk, zsks)),
        (KskNotOnToken.rule, lambda: check_ksk_on_token(ksk)),
        (ZskNotSoftware.rule, lambda: check_zsk_is_software(zsks)),
        (AlgorithmNotAllowed.rule, lambda: check_algorithm_allowed(ksk, zsks, policy)),
        (KeySizeNotAllowed.rule, lambda: check_key_size_allowed(ksk, zsks, policy)),
        (ValidityGap.rule, lambda: check_no_validity_gap(plans)),
        (OverlapShorterThanTtl.rule, lambda: check_overlap_covers_dnskey_ttl(schedule)),
        (ValidityTooLong.rule, lambda: check_max_signature_validity(plans, policy)),
        (NoSigningZsk.rule, lambda: check_zsk_signs_every_period(plans)),
        (SigningZskNotPublished.rule, lambda: check_signing_zsk_published(plans)),
        (ZskNotPrepublished.rule, lambda: check_zsk_prepublished(plans, schedule, zsks)),
        (ZskRemovedTooEarly.rule, lambda: check_zsk_postpublished(plans, schedule, zsks)),
    ]
    return [(rule, check()) for rule, check in checks]


def rsa_modulus_bits(blob: bytes) -> int:
    """Modulus size of an RFC 3110 public key (exponent length, exponent, modulus)."""
    if blob[:1] == b"\x00":
        offset = 3 + int.from_bytes(blob[1:3], "big")
    else:
        offset = 1 + blob[0]
    return int.from_bytes(blob[offset:], "big").bit_length()
