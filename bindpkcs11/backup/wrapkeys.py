"""`backup wrap` / `unwrap` / `verify`: a DNSSEC key copied between tokens that hold the same KEK.

Wrap: the private key leaves the token only as C_WrapKey output under the KEK, written with its
DNSKEY and key tag. Unwrap: C_UnwrapKey on the other token, the public key object recreated, the
copy proven by a signature that verifies with the wrap file's DNSKEY, then key files naming the
copy. Any failure after the unwrap removes what was stored, so the token is as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dns.name

from bindpkcs11 import keydirs, keyuse
from bindpkcs11.access import TokenAccess
from bindpkcs11.backup import custody, wrapfile
from bindpkcs11.dnssec.keygen import require_wrap_support
from bindpkcs11.backup.proof import prove
from bindpkcs11.ceremonylog import CeremonyLog
from bindpkcs11.dnssec.algorithms import by_number
from bindpkcs11.dnssec.dnskey import public_key_bytes
from bindpkcs11.dnssec.keyfile import Timing, check_writable, token_private_fields, write_key_pair
from bindpkcs11.errors import DuplicateLabel, ObjectNotFound, UsageError
from bindpkcs11.fileio import read_limited, write_atomic
from bindpkcs11.token import keys, wrapping
from bindpkcs11.token.records import PublicKey
from bindpkcs11.token.uri import key_uri


class KekMismatch(wrapping.KekProblem):
    """The token's KEK is not the one the key was wrapped under."""


@dataclass(frozen=True)
class WrapResult:
    out: Path
    zone: str
    tag: int
    kek_kcv: str
    copies: str


@dataclass(frozen=True)
class UnwrapResult:
    token: str
    label: str
    zone: str
    tag: int
    key_file: Path
    copies: str


def wrap_key(access: TokenAccess, object_label: str, out: Path, extra_key_dir: Path | None,
             log_path: Path) -> WrapResult:
    """Wrap the private key `object_label` under the token's KEK into `out`."""
    if out.exists():
        raise UsageError(f"{out} already exists: choose another --out")
    with CeremonyLog(log_path) as log:
        log.event("START", f"wrap token={access.label} object={object_label}")
        mechanism = require_wrap_support(access)
        use = key_file_of(access, object_label, extra_key_dir)
        pair = use.pair
        log.event("KEY", f"{pair.key_path} tag={pair.tag}")
        with access.session() as session:
            kek = wrapping.find_kek(session)
            if kek is None:
                raise wrapping.KekProblem(
                    f"token '{access.label}' holds no KEK: import the KEK shares with "
                    "'bindpkcs11 backup import-share FILE --token L' first")
            private = keys.private_key(session, object_label)
            _check_public(session, access.label, object_label, pair)
            wrapped = wrapping.wrap_private(session, kek, private, mechanism)
        record = wrapfile.WrapRecord(
            zone=pair.zone.to_text(), algorithm=int(pair.dnskey.algorithm), flags=pair.dnskey.flags,
            public_key=pair.dnskey.key, tag=pair.tag, key_kind=by_number(pair.dnskey.algorithm).spec.kind,
            label=object_label, object_id=use.object_id or b"", kek_kcv=kek.kcv,
            mechanism=mechanism, source_token=access.label,
            timing=timing_fields(pair.timing),
            wrapped=wrapped)
        data = wrapfile.encode(record)
        write_atomic(out, data, mode=0o600)
        log.wrote(out, data)
        known = custody.record(access.state, record.algorithm, record.public_key, record.zone,
                               record.tag, token=access.label, wrap_file=out)
        log.event("END", f"key {record.tag} wrapped under KEK {kek.kcv}; {known.describe()}")
    return WrapResult(out, record.zone, record.tag, kek.kcv, known.describe())


def verify_wrap_file(path: Path) -> wrapfile.WrapRecord:
    """Check a wrap file without a token (digest, DNSKEY, key tag)."""
    data = read_limited(path, wrapfile.MAX_WRAP_FILE_BYTES, "wrap file", wrapfile.WrapFileDamaged)[0]
    return wrapfile.decode(path, data)


def unwrap_key(access: TokenAccess, path: Path, key_dir: Path | None, log_path: Path) -> UnwrapResult:
    """Unwrap a wrap file's key onto token `access.label`, prove it, write key files naming it."""
    target_dir = key_dir or access.state.key_dir / "copies" / access.label
    with CeremonyLog(log_path) as log:
        log.event("START", f"unwrap {path} token={access.label}")
        data = log.read(path, wrapfile.MAX_WRAP_FILE_BYTES, "wrap file", wrapfile.WrapFileDamaged)
        record = wrapfile.decode(path, data)
        dnskey = record.dnskey()
        check_copy_target(record, target_dir)
        require_wrap_support(access, record.mechanism)
        with access.session(rw=True) as session:
            kek = wrapping.find_kek(session)
            if kek is None or kek.kcv != record.kek_kcv:
                held = f"KEK {kek.kcv}" if kek else "no KEK"
                raise KekMismatch(f"{path} was wrapped under KEK {record.kek_kcv}, but token "
                                  f"'{access.label}' holds {held}: import the shares of KEK "
                                  f"{record.kek_kcv} into it first")
            if keys.find_objects(session, record.label):
                raise DuplicateLabel(f"token '{access.label}' already has an object labelled "
                                     f"'{record.label}': nothing was unwrapped")
            object_id = record.object_id or os.urandom(8)
            private = wrapping.unwrap_private(session, kek, record.key_kind, record.wrapped,
                                              record.label, object_id, record.mechanism)
            try:
                wrapping.create_public(session, public_of(record), record.label, object_id)
                challenge = prove(private, dnskey, access.label)
                log.event("PROOF", f"challenge {challenge[:32]}... signed on {access.label}, "
                                   f"verified with DNSKEY {record.tag}")
                key_path, private_path = write_copy_files(access, record, target_dir)
            except BaseException:
                wrapping.destroy_label(session, record.label)
                raise
        return finish_unwrap(log, access, record, path, key_path, private_path)


def check_copy_target(record: wrapfile.WrapRecord, target_dir: Path) -> None:
    """The copy's key files can be written and would overwrite nothing (checked before the
    token is touched)."""
    check_writable(target_dir)
    stem = f"K{record.zone}+{record.algorithm:03d}+{record.tag:05d}"
    if (target_dir / f"{stem}.key").exists():
        raise UsageError(f"{target_dir / stem}.key already exists: give another --key-dir for "
                         "the copy's key files")


def write_copy_files(access: TokenAccess, record: wrapfile.WrapRecord,
                     target_dir: Path) -> tuple[Path, Path]:
    """Key files naming the unwrapped copy on `access.label`, in a key dir the guard watches."""
    keydirs.record(access.state, target_dir)
    public = public_of(record)
    fields = token_private_fields(record.dnskey(), key_uri(access.label, record.label),
                                  public.modulus, public.exponent)
    return write_key_pair(target_dir, dns.name.from_text(record.zone), record.dnskey(), fields,
                          Timing(**record.timing))


def finish_unwrap(log: CeremonyLog, access: TokenAccess, record: wrapfile.WrapRecord,
                  path: Path, key_path: Path, private_path: Path) -> UnwrapResult:
    """Log the files written, count the new copy, close the ceremony's log entry."""
    log.wrote(key_path, key_path.read_bytes())
    log.wrote(private_path, private_path.read_bytes())
    known = custody.record(access.state, record.algorithm, record.public_key, record.zone,
                           record.tag, token=access.label, wrap_file=path)
    log.event("END", f"key {record.tag} unwrapped onto {access.label}; {known.describe()}")
    return UnwrapResult(access.label, record.label, record.zone, record.tag, key_path,
                        known.describe())


def timing_fields(timing: Timing) -> dict[str, int]:
    return {name.lower(): value for name, value in timing.items()} | {"created": timing.created}


def key_file_of(access: TokenAccess, object_label: str, extra: Path | None) -> keyuse.KeyUse:
    """The key file that names `object_label` on the token (its DNSKEY and timing travel along)."""
    uses = [use for use in keyuse.key_files_on_token(access.state, access.label, extra)
            if use.object_label == object_label]
    if not uses:
        raise ObjectNotFound(f"no key file names '{object_label}' on token '{access.label}': "
                             "pass the key directory with --key-dir")
    return uses[0]


def _check_public(session, token: str, label: str, pair) -> None:
    publics = keys.find_objects(session, label, "public")
    if publics:
        public = keys.read_public_key(publics[0])
        if public_key_bytes(public) != pair.dnskey.key:
            raise UsageError(f"the public key of '{label}' on token '{token}' is not the DNSKEY in "
                             f"{pair.key_path}: refusing to wrap")


def public_of(record: wrapfile.WrapRecord) -> PublicKey:
    """The PublicKey record from the DNSKEY's public key field."""
    key = record.public_key
    if record.key_kind == "rsa":
        if key[0] == 0:
            length, offset = int.from_bytes(key[1:3], "big"), 3
        else:
            length, offset = key[0], 1
        exponent = int.from_bytes(key[offset:offset + length], "big")
        modulus = int.from_bytes(key[offset + length:], "big")
        return PublicKey(kind="rsa", modulus=modulus, exponent=exponent)
    spec = by_number(record.algorithm).spec
    return PublicKey(kind=record.key_kind, curve=spec.curve, point=key)
