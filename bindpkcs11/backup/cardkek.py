"""The backup commands on a SmartCard-HSM (`--profile opensc-sc-hsm`): the card's own DKEK scheme
(token/profiles/schsm.py) behind `backup make-shares`, `import-share`, `wrap` and `unwrap`.

What differs from the PKCS#11 KEK (kek.py, wrapkeys.py): the DKEK is made and combined on the
card, so every one of the N shares is needed (no threshold) and no share value is ever in this
process; the card's KCV is known only once all N are in. The wrap file is the same format, with
mechanism SC-HSM-DKEK and the card's wrapped blob; a key is named on the card by its key
reference (1-255), given with --key-reference. The same ceremony log records every file's SHA-256.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


from bindpkcs11 import pins
from bindpkcs11.access import TokenAccess
from bindpkcs11.backup import custody, wrapfile
from bindpkcs11.backup.kek import ImportedShare, MadeShares, ShareFile
from bindpkcs11.backup.proof import prove
from bindpkcs11.backup.wrapkeys import (KekMismatch, UnwrapResult, WrapResult,
                                        check_copy_target, finish_unwrap, key_file_of,
                                        timing_fields, write_copy_files)
from bindpkcs11.ceremonylog import CeremonyLog
from bindpkcs11.dnssec.algorithms import by_number
from bindpkcs11.errors import UsageError
from bindpkcs11.fileio import write_atomic
from bindpkcs11.token import keys, wrapping
from bindpkcs11.token.profiles import Profile
from bindpkcs11.token.profiles import schsm
from bindpkcs11.token.profiles.opensc import ScHsmProfile


def uses_card_dkek(profile: Profile) -> bool:
    """True for a device whose backups go through its own DKEK scheme (SmartCard-HSM)."""
    return isinstance(profile, ScHsmProfile)


def make_shares(out_dir: Path, count: int, threshold: int, passwords: list[str],
                log_path: Path) -> MadeShares:
    """N DKEK share files made by the card (sc-hsm-tool --create-dkek-share), one per password."""
    if threshold != count:
        raise UsageError(f"a SmartCard-HSM needs all of its DKEK shares (no threshold): give "
                         f"--threshold {count} or leave it out")
    if not 1 <= count <= 255 or len(passwords) != count:
        raise UsageError(f"{count} DKEK shares need {count} passwords, got {len(passwords)}")
    for password in passwords:
        if len(password) < schsm.MIN_PASSWORD:
            raise UsageError(f"a SmartCard-HSM DKEK share password needs at least "
                             f"{schsm.MIN_PASSWORD} characters")
    targets = [out_dir / f"dkek-share-{index}-of-{count}.pbe" for index in range(1, count + 1)]
    existing = [path for path in targets if path.exists()]
    if existing:
        raise UsageError(f"{existing[0]} already exists: choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    made: list[ShareFile] = []
    with CeremonyLog(log_path) as log:
        log.event("START", f"make-shares (SmartCard-HSM DKEK) shares={count}")
        try:
            for index, (password, path) in enumerate(zip(passwords, targets), start=1):
                schsm.create_share(path, password)
                os.chmod(path, 0o600)
                data = path.read_bytes()
                log.wrote(path, data)
                made.append(ShareFile(path, index, hashlib.sha256(data).hexdigest()[:16]))
        except BaseException:
            for path in targets:
                path.unlink(missing_ok=True)
            raise
        log.event("END", f"{count} DKEK shares: "
                         + ", ".join(f"{s.index}={s.fingerprint}" for s in made))
    return MadeShares("", "", count, made)


def import_share(access: TokenAccess, share_path: Path, password: str,
                 log_path: Path) -> ImportedShare:
    """One DKEK share into the card; refused once the card's DKEK is complete."""
    with CeremonyLog(log_path) as log:
        log.event("START", f"import-share {share_path} token={access.label} (SmartCard-HSM DKEK)")
        log.read(share_path, 4 << 10, "DKEK share", schsm.DkekShareRefused)
        before = schsm.status()
        if before.missing == 0 and before.kcv:
            raise schsm.DkekProblem(
                f"the SmartCard-HSM's DKEK is complete already ({before.shares} of "
                f"{before.shares} shares, KCV {before.kcv}): nothing to import")
        after = schsm.import_share(share_path, password)
        have = after.shares - after.missing
        log.event("END", f"DKEK share {have} of {after.shares} imported"
                         + (f"; DKEK complete, KCV {after.kcv}" if after.kcv else ""))
    return ImportedShare(access.label, after.kcv, have, have, after.shares, bool(after.kcv),
                         "DKEK" if after.kcv else "")


def wrap_key(access: TokenAccess, object_label: str, reference: int | None, out: Path,
             extra_key_dir: Path | None, log_path: Path) -> WrapResult:
    """The card's wrapped blob of key `reference`, with the key's DNSKEY, into wrap file `out`."""
    if reference is None:
        raise UsageError("a SmartCard-HSM names its keys by number: give --key-reference N "
                         "(pkcs15-tool --list-keys shows it as 'Key ref')")
    if out.exists():
        raise UsageError(f"{out} already exists: choose another --out")
    with CeremonyLog(log_path) as log:
        log.event("START", f"wrap token={access.label} object={object_label} reference={reference}")
        pair = key_file_of(access, object_label, extra_key_dir).pair
        dkek = _complete_dkek()
        blob = schsm.wrap_key(reference, _user_pin(access))
        record = wrapfile.WrapRecord(
            zone=pair.zone.to_text(), algorithm=int(pair.dnskey.algorithm),
            flags=pair.dnskey.flags, public_key=pair.dnskey.key, tag=pair.tag,
            key_kind=by_number(pair.dnskey.algorithm).spec.kind, label=object_label,
            object_id=b"", kek_kcv=dkek, mechanism=schsm.MECHANISM, source_token=access.label,
            timing=timing_fields(pair.timing), wrapped=blob)
        data = wrapfile.encode(record)
        write_atomic(out, data, mode=0o600)
        log.wrote(out, data)
        known = custody.record(access.state, record.algorithm, record.public_key, record.zone,
                               record.tag, token=access.label, wrap_file=out)
        log.event("END", f"key {record.tag} wrapped under DKEK {dkek}; {known.describe()}")
    return WrapResult(out, record.zone, record.tag, dkek, known.describe())


def unwrap_key(access: TokenAccess, path: Path, reference: int | None, key_dir: Path | None,
               log_path: Path) -> UnwrapResult:
    """The wrap file's blob into key `reference` of this card, proven by a signature through
    PKCS#11; a copy that does not prove is deleted again."""
    if reference is None:
        raise UsageError("a SmartCard-HSM names its keys by number: give --key-reference N, a "
                         "free key number on the card")
    target_dir = key_dir or access.state.key_dir / "copies" / access.label
    with CeremonyLog(log_path) as log:
        log.event("START", f"unwrap {path} token={access.label} reference={reference}")
        data = log.read(path, wrapfile.MAX_WRAP_FILE_BYTES, "wrap file", wrapfile.WrapFileDamaged)
        record = wrapfile.decode(path, data)
        if record.mechanism != schsm.MECHANISM:
            raise wrapping.WrapUnsupported(
                f"{path} was wrapped with {record.mechanism} on '{record.source_token}'; a "
                "SmartCard-HSM unwraps only its own DKEK wrap files: put the key on the card with "
                "'bindpkcs11 key import' instead")
        dkek = _complete_dkek()
        if dkek != record.kek_kcv:
            raise KekMismatch(f"{path} was wrapped under DKEK {record.kek_kcv}, but this card's "
                              f"DKEK is {dkek}: import the shares of DKEK {record.kek_kcv} into a "
                              "freshly initialised card")
        check_copy_target(record, target_dir)
        schsm.unwrap_key(reference, record.wrapped, _user_pin(access))
        dnskey = record.dnskey()
        with access.session(rw=True) as session:
            try:
                challenge = prove(keys.private_key(session, record.label), dnskey, access.label)
            except BaseException:
                wrapping.destroy_label(session, record.label)
                raise
        log.event("PROOF", f"challenge {challenge[:32]}... signed on {access.label}, verified "
                           f"with DNSKEY {record.tag}")
        key_path, private_path = write_copy_files(access, record, target_dir)
        return finish_unwrap(log, access, record, path, key_path, private_path)


def _complete_dkek() -> str:
    """The card's DKEK KCV; DkekProblem while shares are missing."""
    status = schsm.status()
    if status.missing or not status.kcv:
        raise schsm.DkekProblem(f"the SmartCard-HSM's DKEK lacks {status.missing} of "
                                f"{status.shares} shares: import them first "
                                "('bindpkcs11 backup import-share')")
    return status.kcv


def _user_pin(access: TokenAccess) -> str:
    return pins.pin_source(access.state, access.label, pins.USER, access.pin_file)()
