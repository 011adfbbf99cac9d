"""`key import`: a software key (BIND `.private`) into one or more tokens, each copy proven.

The 2012 demo's `genksk` + `cardwrite`: the key is made offline in software and written into two
cards. Each copy is a sensitive, non-extractable private key plus its public key, proven by a
signature that verifies with the DNSKEY. If any token fails, the copies already made are removed,
so either every token holds the key or none does. The software private key is destroyed only on
`--destroy-source`, after every copy is proven and the key files were rewritten.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bindpkcs11 import keydirs, pins
from bindpkcs11.access import TokenAccess
from bindpkcs11.backup import custody
from bindpkcs11.backup.proof import prove
from bindpkcs11.ceremonylog import CeremonyLog
from bindpkcs11.dnssec.algorithms import by_number
from bindpkcs11.dnssec.ceremony import parse_key_bytes
from bindpkcs11.dnssec.dnskey import zone_label_text
from bindpkcs11.dnssec.keyfile import KeyPairFiles, check_writable, token_private_fields, write_key_pair
from bindpkcs11.errors import BindPkcs11Error, DuplicateLabel, KeyFileError, UsageError
from bindpkcs11.token import keys, library, wrapping
from bindpkcs11.token.profiles import require_key_spec, traits_of
from bindpkcs11.token.records import PublicKey
from bindpkcs11.token.uri import key_uri


@dataclass(frozen=True)
class ImportResult:
    zone: str
    tag: int
    label: str
    tokens: list[str]
    key_files: list[str]
    source_destroyed: bool
    source_kept: str | None
    copies: str


def import_key(accesses: list[TokenAccess], key_path: Path, key_dir: Path, label: str | None,
               destroy_source: bool, log_path: Path,
               confirm: Callable[[Path], str] | None = None) -> ImportResult:
    """Import the key into every token; key files for the first token go into `key_dir`, those of
    each further token into `key_dir/copies/<token>`. With `destroy_source`, `confirm` (None for
    --yes) is asked, after every copy is proven, for the typed word "destroy"."""
    if len({a.label for a in accesses}) != len(accesses):
        raise UsageError("each --token may be given once")
    key_path = _key_path(key_path)
    with CeremonyLog(log_path) as log:
        log.event("START", f"key import {key_path} tokens={','.join(a.label for a in accesses)}")
        pair = _software_pair(log, key_path)
        algorithm = by_number(pair.dnskey.algorithm)
        public = _public_of(pair)
        object_label = label or f"{zone_label_text(pair.zone)}-{pair.role}-{pair.tag}"
        object_id = os.urandom(8)
        fixed = _fixed_slot(accesses, label)
        if fixed is not None:
            object_id, object_label = fixed
        dirs = [key_dir] + [key_dir / "copies" / a.label for a in accesses[1:]]
        for access, directory in zip(accesses, dirs):
            require_key_spec(access.profile, algorithm.spec)
            check_writable(directory)
            _refuse_existing(directory, pair, key_path)
        with contextlib.ExitStack() as stack:
            undo: list[Callable[[], None]] = []  # removes each copy made, on failure
            try:
                for access in accesses:
                    if fixed is not None:
                        challenge = _import_into_fixed_slot(access, public, pair, object_label,
                                                            object_id, undo)
                        log.event("PROOF", f"token={access.label} challenge {challenge[:32]}... "
                                           f"verified with DNSKEY {pair.tag}")
                        continue
                    session = stack.enter_context(access.session(rw=True))
                    if keys.find_objects(session, object_label):
                        raise DuplicateLabel(f"token '{access.label}' already has an object labelled "
                                             f"'{object_label}': choose another --label")
                    private = wrapping.import_private(session, public, pair.private_fields,
                                                      object_label, object_id)
                    undo.append(lambda s=session: wrapping.destroy_label(s, object_label))
                    wrapping.create_public(session, public, object_label, object_id)
                    challenge = prove(private, pair.dnskey, access.label)
                    log.event("PROOF", f"token={access.label} challenge {challenge[:32]}... verified "
                                       f"with DNSKEY {pair.tag}")
                written, software = _write_key_files(accesses, dirs, pair, object_label, key_path,
                                                     log)
            except BaseException:
                for remove in undo:
                    remove()
                raise
        if destroy_source and confirm is not None:
            destroy_source = _confirmed(confirm, key_path, log)
        _dispose_source(software, destroy_source, log)
        known = None
        for access in accesses:
            known = custody.record(access.state, int(pair.dnskey.algorithm), pair.dnskey.key,
                                   pair.zone.to_text(), pair.tag, token=access.label)
        log.event("END", f"key {pair.tag} on {len(accesses)} token(s); "
                         f"source {'destroyed' if destroy_source else 'kept at ' + str(software)}")
    return ImportResult(pair.zone.to_text(), pair.tag, object_label, [a.label for a in accesses],
                        [str(p) for p in written], destroy_source,
                        None if destroy_source else str(software), known.describe() if known else "")


def _fixed_slot(accesses: list[TokenAccess], label: str | None) -> tuple[bytes, str] | None:
    """(CKA_ID, CKA_LABEL) when the token keeps its key in a slot it names itself (an OpenPGP
    card); such a card takes one import per command (its tokens share one card)."""
    fixed = [traits_of(a.profile).fixed_key_object(a.label) for a in accesses]
    if not any(fixed):
        return None
    if len(accesses) > 1:
        raise UsageError(f"token '{accesses[0].label}' is a card that names its key slot itself: "
                         "import into it with one --token per 'key import', then run it again "
                         "for the next copy")
    object_id, object_label = fixed[0]  # type: ignore[misc]
    if label and label != object_label:
        raise UsageError(f"token '{accesses[0].label}' names its key '{object_label}' itself: "
                         "omit --label")
    return object_id, object_label


def _import_into_fixed_slot(access: TokenAccess, public: PublicKey, pair: KeyPairFiles,
                            label: str, object_id: bytes, undo: list) -> str:
    """Store the key in the card's slot as its SO, then prove it in a user session; the slot
    must be empty (storing would replace a key). Returns the proof's challenge."""
    with access.session(login=False) as probe:
        if keys.find_objects(probe, label):
            raise DuplicateLabel(f"token '{access.label}' already holds its key '{label}': erase "
                                 "the card ('bindpkcs11 token erase') first; nothing was imported")
        slot_id = probe.token.slot.slot_id
    so_pin = pins.pin_source(access.state, access.label, pins.SO, access.so_pin_file)()
    wrapping.import_private_as_so(access.module_path, slot_id, access.label, so_pin, public,
                                  pair.private_fields, label, object_id)
    undo.append(lambda: _erase_slot(access, label))
    library.refresh(access.module_path)  # OpenSC lists the new key only after re-reading the card
    with access.session() as session:
        return prove(keys.private_key(session, label), pair.dnskey, access.label)


def _erase_slot(access: TokenAccess, label: str) -> None:
    """Rollback of a card import: the key object destroyed as SO (best effort; OpenSC may refuse,
    and then 'token erase' is the way)."""
    with contextlib.suppress(BindPkcs11Error, OSError):
        library.refresh(access.module_path)
        with access.session(rw=True, so=True) as session:
            wrapping.destroy_label(session, label)


def _confirmed(confirm: Callable[[Path], str], key_path: Path, log: CeremonyLog) -> bool:
    """The operator's exact answer, logged as typed; anything but "destroy" keeps the source."""
    answer = confirm(key_path.with_suffix(".private"))
    log.event("CONFIRM", f"destroy source: operator answered {answer!r}")
    return answer == "destroy"


def _key_path(path: Path) -> Path:
    path = Path(path)
    return path.with_suffix(".key") if path.suffix == ".private" else path


def _software_pair(log: CeremonyLog, key_path: Path) -> KeyPairFiles:
    key_bytes = log.read(key_path)
    private_bytes = log.read(key_path.with_suffix(".private"))
    pair = parse_key_bytes(key_path, key_bytes, private_bytes)
    if pair.label_uri:
        raise KeyFileError(f"{pair.private_path} already names a token key ({pair.label_uri}): "
                           "only software keys can be imported")
    return pair


def _public_of(pair: KeyPairFiles) -> PublicKey:
    spec = by_number(pair.dnskey.algorithm).spec
    fields = pair.private_fields
    needed = ("Modulus", "PublicExponent", "PrivateExponent", "Prime1", "Prime2", "Exponent1",
              "Exponent2", "Coefficient") if spec.kind == "rsa" else ("PrivateKey",)
    missing = [name for name in needed if name not in fields]
    if missing:
        raise KeyFileError(f"{pair.private_path} lacks {', '.join(missing)}: not a complete "
                           "software private key")
    if spec.kind == "rsa":
        return PublicKey(kind="rsa", modulus=int.from_bytes(fields["Modulus"], "big"),
                         exponent=int.from_bytes(fields["PublicExponent"], "big"))
    return PublicKey(kind=spec.kind, curve=spec.curve, point=pair.dnskey.key)


def _refuse_existing(directory: Path, pair: KeyPairFiles, source: Path) -> None:
    target = directory / pair.key_path.name
    if target.exists() and target.resolve() != source.resolve():
        raise UsageError(f"{target} already exists: choose another --key-dir")


def _write_key_files(accesses: list[TokenAccess], dirs: list[Path], pair: KeyPairFiles,
                     label: str, source: Path, log: CeremonyLog) -> tuple[list[Path], Path]:
    """Key files naming each copy, and where the software private key now is. When the source
    is itself in a target dir, its `.private` is moved aside to `.private.software` (its `.key`,
    public, is replaced); both are put back if writing fails."""
    written: list[Path] = []
    software = source.with_suffix(".private")
    moved: list[tuple[Path, Path]] = []
    try:
        for access, directory in zip(accesses, dirs):
            if (directory / source.name).exists():  # the source itself: make room
                aside = source.with_suffix(".private.software")
                if aside.exists():
                    raise UsageError(f"{aside} already exists: move it away first")
                pairs = ((software, aside), (source, source.with_suffix(".key.software")))
                for original, target in pairs:
                    os.rename(original, target)
                    moved.append((target, original))
                software = aside
            keydirs.record(access.state, directory)
            uri = key_uri(access.label, label)
            public = _public_of(pair)
            fields = token_private_fields(pair.dnskey, uri, public.modulus, public.exponent)
            key_file, private_file = write_key_pair(directory, pair.zone, pair.dnskey, fields,
                                                    pair.timing)
            written += [key_file, private_file]
            log.wrote(key_file, key_file.read_bytes())
            log.wrote(private_file, private_file.read_bytes())
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        for target, original in reversed(moved):
            os.rename(target, original)
        raise
    if moved:  # the public .key was rewritten; only the private key is kept aside
        source.with_suffix(".key.software").unlink(missing_ok=True)
    return written, software


def _dispose_source(private: Path, destroy: bool, log: CeremonyLog) -> None:
    """With `destroy`, the software private key is overwritten and removed."""
    if not destroy:
        return
    size = private.stat().st_size
    with open(private, "r+b", buffering=0) as handle:
        handle.write(os.urandom(size))
        os.fsync(handle.fileno())
    private.unlink()
    log.event("DESTROYED", f"software private key {private.resolve()} overwritten and removed")
