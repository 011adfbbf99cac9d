"""KEK ceremonies: `backup make-shares` (a fresh KEK in shares) and `backup import-share`.

The KEK exists in host memory twice: when it is made and split, and when T shares are combined
just before C_CreateObject puts it on the token (docs/backup.md says so). Nothing is stored on the
token until the combined key's KCV matches the one every share carries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bindpkcs11.access import TokenAccess
from bindpkcs11.backup import pending, shares
from bindpkcs11.backup.shares import ShareError
from bindpkcs11.ceremonylog import CeremonyLog
from bindpkcs11.dnssec.keygen import require_wrap_support
from bindpkcs11.errors import UsageError
from bindpkcs11.fileio import write_atomic
from bindpkcs11.token import wrapping
from bindpkcs11.token.library import token_info


@dataclass(frozen=True)
class ShareFile:
    path: Path
    index: int
    fingerprint: str


@dataclass(frozen=True)
class MadeShares:
    kcv: str
    set_id: str
    threshold: int
    files: list[ShareFile]


@dataclass(frozen=True)
class ImportedShare:
    token: str
    kcv: str
    index: int
    have: int
    threshold: int
    kek_created: bool
    kek_label: str = ""


def make_shares(out_dir: Path, count: int, threshold: int, passwords: list[str],
                log_path: Path) -> MadeShares:
    """A fresh KEK, split into `count` share files in `out_dir` (refused if any exists)."""
    shares.check_counts(count, threshold)
    if len(passwords) != count:
        raise UsageError(f"{count} shares need {count} passwords, got {len(passwords)}")
    for password in passwords:
        shares.check_password(password)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is not a directory")
    targets = [out_dir / f"kek-share-{index}-of-{count}.share" for index in range(1, count + 1)]
    existing = [path for path in targets if path.exists()]
    if existing:
        raise UsageError(f"{existing[0]} already exists: choose another --out (shares of two KEKs "
                         "must never mix)")
    with CeremonyLog(log_path) as log:
        kek = shares.new_kek()
        kcv, set_id = shares.kcv(kek), os.urandom(8).hex()
        log.event("START", f"make-shares shares={count} threshold={threshold} kcv={kcv} set={set_id}")
        parts = shares.split(kek, count, threshold)
        del kek
        out_dir.mkdir(parents=True, exist_ok=True)
        made: list[ShareFile] = []
        try:
            for (index, value), password, path in zip(parts, passwords, targets):
                data = shares.seal(set_id, kcv, index, count, threshold, value, password)
                write_atomic(path, data, mode=0o600)
                log.wrote(path, data)
                made.append(ShareFile(path, index, shares.fingerprint(data)))
        except BaseException:
            for share in made:
                share.path.unlink(missing_ok=True)
            raise
        log.event("END", f"{count} shares of KEK {kcv}: "
                         + ", ".join(f"{s.index}={s.fingerprint}" for s in made))
    return MadeShares(kcv, set_id, threshold, made)


def import_share(access: TokenAccess, share_path: Path, password: str,
                 log_path: Path) -> ImportedShare:
    """Add one share for token `access.label`; at the threshold, put the KEK on the token."""
    with CeremonyLog(log_path) as log:
        log.event("START", f"import-share {share_path} token={access.label}")
        require_wrap_support(access)
        with access.session(rw=True) as session:
            present = wrapping.find_kek(session)
            data = log.read(share_path, shares.MAX_SHARE_FILE_BYTES, "share file", ShareError)
            share = shares.open_share(share_path, data, password)
            header = share.header
            if present is not None:
                raise ShareError(f"token '{access.label}' already holds KEK {present.kcv}: nothing "
                                 "to import")
            state = pending.load(access.state, access.label)
            if state is not None and state.set_id != header.set_id:
                raise ShareError(
                    f"share {share_path} belongs to KEK {header.kcv}, but the shares already "
                    f"imported for token '{access.label}' belong to KEK {state.kcv}: import "
                    f"shares of one KEK only (remove {pending.path_for(access.state, access.label)} "
                    "to start over)")
            parts = dict(state.parts) if state else {}
            if header.index in parts:
                raise ShareError(f"share {header.index} of KEK {header.kcv} was already imported "
                                 f"for token '{access.label}': bring a different share")
            parts[header.index] = share.value
            log.event("SHARE", f"index={header.index} kcv={header.kcv} set={header.set_id} "
                               f"have={len(parts)}/{header.threshold}")
            if len(parts) < header.threshold:
                pending.save(access.state, access.label,
                             pending.Pending(header.set_id, header.kcv, header.threshold, parts))
                log.event("END", f"{len(parts)} of {header.threshold} shares held for "
                                 f"{access.label}")
                return ImportedShare(access.label, header.kcv, header.index, len(parts),
                                     header.threshold, False)
            kek = shares.combine(sorted(parts.items()))
            if shares.kcv(kek) != header.kcv:
                raise ShareError(f"the shares do not rebuild KEK {header.kcv} (they give "
                                 f"{shares.kcv(kek)}): one of them is not from this KEK")
            info = wrapping.create_kek(session, kek, header.kcv)
            del kek
        pending.wipe(access.state, access.label)
        serial = token_info(access.module_path, access.label).serial
        log.event("END", f"KEK {header.kcv} created on token {access.label} (serial {serial}) "
                         f"as '{info.label}'; pending shares wiped")
    return ImportedShare(access.label, header.kcv, header.index, len(parts), header.threshold,
                         True, info.label)


