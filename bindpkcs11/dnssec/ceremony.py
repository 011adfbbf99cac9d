"""The offline-KSK ceremony: check, confirm, sign each period's DNSKEY RRset on the token, seal.

Everything is logged to an append-only ceremony log (every file read and written with its SHA-256,
key tags, the token serial, every policy rule, the operator's exact answer), and nothing is written
but that log until every policy rule passed and the operator typed "yes". The token makes exactly
one signature per bundle; every other check uses public keys in software.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import dns.name
from dns.rrset import RRset

from bindpkcs11.access import TokenAccess
from bindpkcs11.ceremonylog import CeremonyLog
from bindpkcs11.dnssec import bundles, kskplan, kskpolicy, policy
from bindpkcs11.dnssec.algorithms import by_number
from bindpkcs11.dnssec.dnskey import make_dnskey, zone_label_text
from bindpkcs11.dnssec.keyfile import KeyPairFiles, parse_key_pair
from bindpkcs11.dnssec.presign import PeriodPlan, Schedule, build_plan, dnskey_rrset, sign_rrset
from bindpkcs11.dnssec.skr import SignedRRsets, skr_text
from bindpkcs11.dnssec.tokensigner import TokenPrivateKey
from bindpkcs11.errors import BindPkcs11Error, KeyFileError, ObjectNotFound, UsageError
from bindpkcs11.fileio import write_atomic
from bindpkcs11.token import keys, library
from bindpkcs11.token.uri import parse_uri
from bindpkcs11.timespec import to_bind_timestamp


class CeremonyAborted(BindPkcs11Error):
    """The ceremony was aborted: nothing was signed or written."""


@dataclass(frozen=True)
class PresignRequest:
    """What `bindpkcs11 ksk presign` was asked for."""

    zone: dns.name.Name
    ksk_files: tuple[Path, ...]
    """One KSK, or the old and the new one during a KSK rollover (kskplan.py)."""
    zsk_dir: Path
    schedule: Schedule
    policy: policy.CeremonyPolicy
    out_dir: Path
    log_path: Path
    skr_path: Path | None = None
    assume_yes: bool = False


@dataclass(frozen=True)
class PresignResult:
    """What the ceremony produced; `token_signatures` is the number of C_Sign calls made."""

    zone: str
    ksk_tag: int
    ksk_tags: list[int]
    zsk_tags: list[int]
    token_serial: str
    bundles: list[Path]
    token_signatures: int
    first_start: int
    last_expiration: int
    log: Path
    skr: Path | None
    seconds: float


@dataclass(frozen=True)
class _Key:
    """A key pair parsed from exactly the bytes whose SHA-256 was logged."""

    pair: KeyPairFiles
    key_text: str
    private_text: str = field(repr=False)


def run_presign(request: PresignRequest, access: TokenAccess, unlocker: Callable[[], bundles.Unlocker],
                show: Callable[[str], None], ask: Callable[[], str]) -> PresignResult:
    """The whole ceremony. `unlocker` gets the passphrase, `show` displays the plan, `ask` returns
    the operator's answer (not called with `assume_yes`)."""
    started = time.monotonic()
    with CeremonyLog(request.log_path) as log:
        log.event("START", f"zone={request.zone} periods={request.schedule.periods} "
                           f"start={to_bind_timestamp(request.schedule.start)} "
                           f"period={request.schedule.period}s validity={request.schedule.validity}s "
                           f"dnskey_ttl={request.schedule.dnskey_ttl}s token={access.label}")
        ksk_keys = [_load_key(log, path) for path in request.ksk_files]
        ksk_pairs = [key.pair for key in ksk_keys]
        ksk = ksk_pairs[0]
        times = kskplan.ksk_times(ksk_pairs)
        candidates = _load_zsks(log, request)
        plans = build_plan(request.schedule, [k.pair for k in candidates],
                           lambda start: kskplan.ksk_period(times, start))
        zsks = _relevant(candidates, plans, log)
        for rule, note in policy.offline_rules(request.zone, request.schedule, plans, ksk,
                                               [z.pair for z in zsks], request.policy):
            log.event("RULE", f"{rule} ok: {note}")
        for rule, note in _second_ksk_rules(request, ksk_pairs) + kskpolicy.ksk_rules(
                plans, request.schedule, times):
            log.event("RULE", f"{rule} ok: {note}")
        targets = _bundle_paths(request, plans)
        source = unlocker()
        log.event("PASSPHRASE", "obtained (never logged)")
        serial = library.token_info(access.module_path, access.label).serial
        log.event("TOKEN", f"label={access.label} serial={serial}")
        with access.session() as session:
            privates = {pair.tag: _token_ksk(session, access.label, pair, log) for pair in ksk_pairs}
            rrsets = [dnskey_rrset(request.zone, request.schedule.dnskey_ttl, ksk_pairs,
                                   [z.pair for z in zsks], plan) for plan in plans]
            syncs = [kskplan.sync_rrsets(request.zone, request.schedule.dnskey_ttl, ksk_pairs,
                                         plan.cds) for plan in plans]
            show(_summary(request, ksk_pairs, zsks, plans, access.label, serial))
            _confirm(request, ask, log)
            signers = {pair.tag: (TokenPrivateKey.on_token(privates[pair.tag], pair.dnskey), pair)
                       for pair in ksk_pairs}
            chosen = [[signers[tag] for tag in plan.ksks] for plan in plans]
            signed = [sign_rrset(rrset, plan, keys_) for plan, rrset, keys_ in
                      zip(plans, rrsets, chosen)]
            signed_syncs = [[sign_rrset(rrset, plan, keys_) for rrset in sync]
                            for plan, sync, keys_ in zip(plans, syncs, chosen)]
        count = sum(signer.signatures for signer, _ in signers.values())
        log.event("SIGNED", f"{count} on-token signatures for {len(plans)} bundles")
        _write_bundles(request, source, ksk_keys, zsks, plans,
                       [_Signed(r, s, y, ys) for r, s, y, ys in zip(rrsets, signed, syncs,
                                                                     signed_syncs)],
                       targets, log)
        per_period = [[(rrset, rrsigs), *zip(sync, sync_sigs)] for rrset, rrsigs, sync, sync_sigs
                      in zip(rrsets, signed, syncs, signed_syncs)]
        skr = _write_skr(request, plans, per_period, log)
        log.event("END", f"{len(targets)} bundles, {count} token signatures")
    return PresignResult(
        zone=request.zone.to_text(), ksk_tag=ksk.tag, ksk_tags=[p.tag for p in ksk_pairs],
        zsk_tags=[z.pair.tag for z in zsks],
        token_serial=serial, bundles=targets, token_signatures=count,
        first_start=plans[0].start, last_expiration=plans[-1].expiration, log=request.log_path,
        skr=skr, seconds=round(time.monotonic() - started, 3),
    )


@dataclass(frozen=True)
class _Signed:
    """One period's signed RRsets: DNSKEY and (during a KSK roll or with CDS) CDS/CDNSKEY."""

    dnskey: RRset
    dnskey_rrsigs: RRset
    sync: list[RRset]
    sync_rrsigs: list[RRset]


def _second_ksk_rules(request: PresignRequest, ksks: Sequence[KeyPairFiles]) -> list[tuple[str, str]]:
    """The per-key rules offline_rules ran for the first KSK, for the other one of a rollover:
    this zone's, on the token, the same algorithm (no algorithm rollover), an allowed size."""
    notes = []
    for other in ksks[1:]:
        notes += [(policy.KeyNotOfZone.rule, policy.check_key_owner_is_zone(request.zone, other, [])),
                  (policy.KskNotOnToken.rule, policy.check_ksk_on_token(other)),
                  (policy.AlgorithmNotAllowed.rule,
                   policy.check_algorithm_allowed(ksks[0], [other], request.policy)),
                  (policy.KeySizeNotAllowed.rule,
                   policy.check_key_size_allowed(other, [], request.policy))]
    return notes


def _confirm(request: PresignRequest, ask: Callable[[], str], log: CeremonyLog) -> None:
    """An exact "yes" from the operator (or --yes for scripts), logged as typed."""
    if request.assume_yes:
        log.event("CONFIRM", "--yes given: no prompt")
        return
    answer = ask()
    log.event("CONFIRM", f"operator answered {answer!r}")
    if answer != "yes":
        raise CeremonyAborted(f'signing not confirmed (answer {answer!r}, expected exactly "yes"): '
                              "nothing was signed or written")


def _load_key(log: CeremonyLog, key_path: Path) -> _Key:
    """Parse a key pair from exactly the logged bytes (what is hashed is what is used)."""
    key_path = Path(key_path)
    private_path = key_path.with_suffix(".private")
    key_bytes, private_bytes = log.read(key_path), log.read(private_path)
    pair = parse_key_bytes(key_path, key_bytes, private_bytes)
    log.event("KEY", f"{key_path.name} tag={pair.tag} role={pair.role} "
                     f"algorithm={pair.dnskey.algorithm}")
    return _Key(pair, key_bytes.decode(), private_bytes.decode())


def parse_key_bytes(key_path: Path, key_bytes: bytes, private_bytes: bytes) -> KeyPairFiles:
    """Parse a key pair from exactly the bytes that were read and logged; messages name the
    operator's files."""
    texts = []
    for path, data in ((key_path, key_bytes), (key_path.with_suffix(".private"), private_bytes)):
        try:
            texts.append(data.decode())
        except UnicodeDecodeError as error:
            raise KeyFileError(f"{path} is not a text key file (byte {error.start} is not UTF-8)") \
                from None
    return parse_key_pair(key_path, *texts)


def _load_zsks(log: CeremonyLog, request: PresignRequest) -> list[_Key]:
    """Every ZSK of the zone in --zsk-dir (KSK files there are skipped)."""
    pattern = f"K{request.zone.to_text()}+*.key"
    paths = sorted(Path(request.zsk_dir).glob(pattern))
    loaded = [_load_key(log, path) for path in paths if path.with_suffix(".private").exists()]
    found = [key for key in loaded if key.pair.role == "zsk"]
    if not found:
        raise UsageError(f"no ZSK key files for {request.zone} in {request.zsk_dir}: generate them "
                         "with 'bindpkcs11 keygen --role zsk --software --key-dir DIR'")
    return found


def _relevant(candidates: Sequence[_Key], plans: Sequence[PeriodPlan], log: CeremonyLog) -> list[_Key]:
    """ZSKs published or signing in some period; the others are logged and left out."""
    used = {tag for plan in plans for tag in (*plan.published, *plan.signing)}
    for key in candidates:
        if key.pair.tag not in used:
            log.event("SKIP", f"ZSK {key.pair.tag} is not published in any period")
    return [key for key in candidates if key.pair.tag in used]


def _bundle_paths(request: PresignRequest, plans: Sequence[PeriodPlan]) -> list[Path]:
    """Where the bundles go; refuses to replace bundles an earlier ceremony wrote, and checks
    --out and --skr before the token signs (a failure after it would waste the ceremony)."""
    if request.out_dir.exists() and not request.out_dir.is_dir():
        raise UsageError(f"--out {request.out_dir} is not a directory: give the bundles' directory")
    if request.skr_path is not None and not request.skr_path.parent.is_dir():
        raise UsageError(f"--skr {request.skr_path}: directory {request.skr_path.parent} does not "
                         "exist")
    zone_text = zone_label_text(request.zone)
    zone_text = "root" if zone_text == "." else zone_text
    paths = [request.out_dir / bundles.bundle_file_name(zone_text, to_bind_timestamp(plan.start))
             for plan in plans]
    existing = [path for path in paths if path.exists()]
    if existing:
        raise UsageError(f"{existing[0]} already exists: move the old bundles away or choose "
                         "another --out")
    return paths


def _token_ksk(session, token_label: str, ksk: KeyPairFiles, log: CeremonyLog):
    """The KSK's private key object, after checking the token's public key against the KSK file."""
    uri = parse_uri(ksk.label_uri or "")
    if uri.token and uri.token != token_label:
        raise UsageError(f"{ksk.key_path.name} names token '{uri.token}', not '{token_label}': "
                         "pass --token " + uri.token)
    label = uri.object or ""
    private = keys.private_key(session, label)
    publics = keys.find_objects(session, label, "public")
    if not publics:
        raise ObjectNotFound(f"no public key labelled '{label}' on token '{token_label}': "
                             "cannot check it against the KSK file")
    algorithm = by_number(ksk.dnskey.algorithm)
    token_dnskey = make_dnskey(keys.read_public_key(publics[0]), algorithm, "ksk")
    log.event("RULE", f"{policy.TokenKskMismatch.rule} ok: "
                      f"{policy.check_ksk_matches_token(ksk, token_dnskey)}")
    return private


def _summary(request: PresignRequest, ksks: Sequence[KeyPairFiles], zsks: Sequence[_Key],
             plans: Sequence[PeriodPlan], token: str, serial: str) -> str:
    lines = [f"zone {request.zone}: {len(plans)} periods of {request.schedule.period} s, "
             f"DNSKEY TTL {request.schedule.dnskey_ttl} s",
             f"KSK {', '.join(str(k.tag) for k in ksks)} on token '{token}' (serial {serial}); "
             f"ZSKs {', '.join(str(z.pair.tag) for z in zsks)}"]
    join = lambda tags: ",".join(map(str, tags)) or "-"  # noqa: E731
    for plan in plans:
        lines.append(f"  period {plan.index:3d} {to_bind_timestamp(plan.start)}-"
                     f"{to_bind_timestamp(plan.end)} RRSIG until {to_bind_timestamp(plan.expiration)} "
                     f"DNSKEY: KSK {join(plan.ksk_published)} + ZSK {join(plan.published)} "
                     f"signed by KSK {join(plan.ksks)} (DS at parent: {join(plan.ds)}; "
                     f"CDS: {join(plan.cds)}) ZSK signing: {join(plan.signing)}")
    count = sum(len(plan.ksks) * (3 if plan.cds else 1) for plan in plans)
    lines.append(f"on-token signatures to make: {count}")
    return "\n".join(lines)


def _write_bundles(request: PresignRequest, unlocker: bundles.Unlocker, ksk_keys: Sequence[_Key],
                   zsks: Sequence[_Key], plans: Sequence[PeriodPlan], signed: Sequence[_Signed],
                   targets: Sequence[Path], log: CeremonyLog) -> None:
    """Seal each period's bundle (one scrypt for all: one salt per ceremony) and write it 0600.
    The signing KSKs' public key files travel too, so the signer can check whose keys they are."""
    key_texts = {k.pair.tag: k.key_text for k in ksk_keys}
    key = unlocker.new_key()
    ceremony = f"{to_bind_timestamp(int(time.time()))}-{os.urandom(4).hex()}"
    by_tag = {z.pair.tag: z for z in zsks}
    request.out_dir.mkdir(parents=True, exist_ok=True)
    for plan, period, path in zip(plans, signed, targets):
        content = bundles.BundleContent(
            dnskey_rrset=period.dnskey.to_text() + "\n",
            rrsigs=period.dnskey_rrsigs.to_text() + "\n",
            signing_tags=plan.signing,
            zsks=tuple(bundles.ZskMaterial(tag, by_tag[tag].key_text, by_tag[tag].private_text)
                       for tag in plan.signing),
            ksk_keys=tuple(key_texts[tag] for tag in plan.ksks),
            sync_rrsets="".join(r.to_text() + "\n" for r in period.sync),
            sync_rrsigs="".join(r.to_text() + "\n" for r in period.sync_rrsigs),
        )
        header = bundles.BundleHeader(
            zone=request.zone.to_text(), index=plan.index, period_start=plan.start,
            period_end=plan.end, inception=plan.inception, expiration=plan.expiration,
            ksk_tags=plan.ksks, ds_tags=plan.ds, ceremony=ceremony, kdf=key.kdf, check=b"",
            nonce=b"", payload_length=0,
        )
        data = bundles.seal(header, content, key)
        bundles.write_bundle(path, data)
        log.wrote(path, data)


def _write_skr(request: PresignRequest, plans: Sequence[PeriodPlan],
               signed: Sequence[SignedRRsets], log: CeremonyLog) -> Path | None:
    """The SKR export: each period's signed DNSKEY RRset, and its CDS/CDNSKEY when it has them."""
    if request.skr_path is None:
        return None
    text = skr_text([(plan.start, rrsets) for plan, rrsets in zip(plans, signed)],
                    int(time.time()))
    write_atomic(request.skr_path, text, mode=0o644)
    log.wrote(request.skr_path, text.encode())
    return request.skr_path
