"""Key custody on a token: the key-encryption key (KEK), C_WrapKey / C_UnwrapKey, C_CreateObject.

The only module that wraps, unwraps or imports key material. Everything above it sees frozen records
and bytes; a failure that could leave a half-made object behind (SoftHSM keeps an empty object after
a failed C_UnwrapKey) is cleaned up here, by comparing the session's object handles before and after.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from dataclasses import dataclass

import pkcs11
import pkcs11.exceptions as p11x
from asn1crypto.core import OctetString
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.constants import DEFAULT
from pkcs11.util.ec import encode_named_curve_parameters

from bindpkcs11.errors import BindPkcs11Error, PinIncorrect
from bindpkcs11.token import inittoken
from bindpkcs11.token.keys import CURVE_OIDS, private_key
from bindpkcs11.token.library import translate
from bindpkcs11.token.records import PublicKey

KEK_LABEL_PREFIX = "bindpkcs11-kek-"
# The wrap mechanisms, preferred first. AES key wrap with padding (RFC 5649) authenticates what it
# unwraps; AES-CBC with PKCS#7 padding is what tokens without it offer (opencryptoki 3.8's soft
# token): its IV is random and travels as the first 16 bytes of the wrapped bytes, and a wrong or
# damaged input is caught by the KEK check value, the wrap file's SHA-256 and the signature proof.
WRAP_MECHANISMS = {"CKM_AES_KEY_WRAP_PAD": Mechanism.AES_KEY_WRAP_PAD,
                   "CKM_AES_CBC_PAD": Mechanism.AES_CBC_PAD}
_IV_BYTES = 16
_KEY_TYPES = {"rsa": KeyType.RSA, "ec": KeyType.EC, "ed25519": KeyType.EC_EDWARDS}
# Capability flags a private key object must not state as CK_FALSE on unwrap: SoftHSM refuses a
# template that names attributes the key type does not have (facts.md).
_TRIMMED = {Attribute.DECRYPT: DEFAULT, Attribute.UNWRAP: DEFAULT, Attribute.SIGN_RECOVER: DEFAULT,
            Attribute.DERIVE: DEFAULT, Attribute.ENCRYPT: DEFAULT, Attribute.VERIFY: DEFAULT,
            Attribute.WRAP: DEFAULT, Attribute.VERIFY_RECOVER: DEFAULT}
_RSA_FIELDS = {"Modulus": Attribute.MODULUS, "PublicExponent": Attribute.PUBLIC_EXPONENT,
               "PrivateExponent": Attribute.PRIVATE_EXPONENT, "Prime1": Attribute.PRIME_1,
               "Prime2": Attribute.PRIME_2, "Exponent1": Attribute.EXPONENT_1,
               "Exponent2": Attribute.EXPONENT_2, "Coefficient": Attribute.COEFFICIENT}


class WrapUnsupported(BindPkcs11Error):
    """This token cannot wrap or unwrap keys."""


class KeyNotWrappable(BindPkcs11Error):
    """This key cannot be wrapped off its token."""


class UnwrapFailed(BindPkcs11Error):
    """The token refused to unwrap the key."""


class KekProblem(BindPkcs11Error):
    """The token's key-encryption key is missing or ambiguous."""


@dataclass(frozen=True)
class KekInfo:
    """A KEK object on a token: its label and the KCV it is labelled with."""

    label: str
    kcv: str


def wrap_mechanisms(session: "pkcs11.Session", flag: MechanismFlag) -> list[str]:
    """The names of WRAP_MECHANISMS the token offers with `flag` (WRAP, UNWRAP or both), in order.

    A flags word with bits above the 32 that PKCS#11 defines was never filled in (SoftHSM 2.6.1
    leaves CKM_AES_CBC_PAD's unset, and it cannot unwrap with it): that mechanism does not count.
    """
    slot = session.token.slot
    try:
        offered = set(slot.get_mechanisms())
        flags = {name: int(slot.get_mechanism_info(mechanism).flags)
                 for name, mechanism in WRAP_MECHANISMS.items() if mechanism in offered}
    except p11x.PKCS11Error:
        return []
    return [name for name, value in flags.items() if value >> 32 == 0 and value & flag == flag]


def require_wrap_support(session: "pkcs11.Session", mechanism: str | None = None) -> str:
    """The mechanism this token wraps with (the first of WRAP_MECHANISMS it has for C_WrapKey and
    C_UnwrapKey), or, given `mechanism` (a wrap file's), that one if the token can unwrap with it;
    WrapUnsupported in one line otherwise."""
    label = session.token.label
    if mechanism is not None:
        if mechanism in wrap_mechanisms(session, MechanismFlag.UNWRAP):
            return mechanism
        has = " and ".join(wrap_mechanisms(session, MechanismFlag.WRAP | MechanismFlag.UNWRAP))
        raise WrapUnsupported(
            f"token '{label}' cannot unwrap {mechanism} (it has {has or 'no wrap mechanism'}): "
            f"unwrap onto a token that has {mechanism}, or put the key on it with "
            "'bindpkcs11 key import'")
    usable = wrap_mechanisms(session, MechanismFlag.WRAP | MechanismFlag.UNWRAP)
    if not usable:
        raise WrapUnsupported(
            f"token '{label}' cannot wrap keys (no {' or '.join(WRAP_MECHANISMS)} with C_WrapKey "
            "and C_UnwrapKey): keep a second copy with 'bindpkcs11 key import KEYFILE --token L "
            "--token L2' into two devices instead"
        )
    return usable[0]


def create_kek(session: "pkcs11.Session", value: bytes, kcv: str) -> KekInfo:
    """The KEK as a token AES key that can only wrap and unwrap, and never leaves the token."""
    label = KEK_LABEL_PREFIX + kcv
    template = {
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
        Attribute.VALUE: value, Attribute.TOKEN: True, Attribute.LABEL: label,
        Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
        Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.ENCRYPT: False,
        Attribute.DECRYPT: False, Attribute.SIGN: False, Attribute.VERIFY: False,
    }
    with _no_leftovers(session):
        try:
            obj = session.create_object(template)
        except p11x.PKCS11Error as error:
            raise translate(error, "creating the KEK on the token") from error
        check = _attr(obj, Attribute.CHECK_VALUE)
        if check is not None and check.hex() != kcv:
            raise KekProblem(f"the token computed KCV {check.hex()} for the KEK, not {kcv}: "
                             "the KEK was not stored")
    return KekInfo(label, kcv)


def find_kek(session: "pkcs11.Session") -> KekInfo | None:
    """The one KEK on the token, None if there is none; KekProblem if there are several."""
    found = [_attr(obj, Attribute.LABEL) or "" for obj in
             session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})]
    keks = [label for label in found if label.startswith(KEK_LABEL_PREFIX)]
    if len(keks) > 1:
        raise KekProblem(f"token '{session.token.label}' holds {len(keks)} KEKs "
                         f"({', '.join(sorted(keks))}): delete all but one with 'token delete'")
    if not keks:
        return None
    return KekInfo(keks[0], keks[0].removeprefix(KEK_LABEL_PREFIX))


def wrapping_keys(session: "pkcs11.Session") -> list[str]:
    """Labels of every secret key on the token that may wrap (CKA_WRAP true)."""
    return sorted(_attr(obj, Attribute.LABEL) or "" for obj in
                  session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.WRAP: True}))


def is_extractable(private: "pkcs11.PrivateKey") -> bool:
    return bool(_attr(private, Attribute.EXTRACTABLE))


def wrap_private(session: "pkcs11.Session", kek: KekInfo, private: "pkcs11.PrivateKey",
                 mechanism: str) -> bytes:
    """C_WrapKey of `private` under the KEK with `mechanism` (a WRAP_MECHANISMS name; for
    CKM_AES_CBC_PAD the random IV comes first); KeyNotWrappable says why a key cannot leave."""
    iv = os.urandom(_IV_BYTES) if mechanism == "CKM_AES_CBC_PAD" else b""
    try:
        wrapped = _kek_object(session, kek).wrap_key(
            private, mechanism=WRAP_MECHANISMS[mechanism], mechanism_param=iv or None)
    except (p11x.KeyUnextractable, p11x.KeyNotWrappable) as error:
        raise KeyNotWrappable(
            f"'{private.label}' on token '{session.token.label}' cannot be wrapped "
            f"({type(error).__name__}: it was made without --backup, or the token cannot wrap this "
            "key type): it cannot be backed up; roll over to a key made with 'keygen --backup'"
        ) from None
    except p11x.PKCS11Error as error:
        raise translate(error, f"wrapping '{private.label}'") from error
    return iv + wrapped


def unwrap_private(session: "pkcs11.Session", kek: KekInfo, kind: str, wrapped: bytes,
                   label: str, object_id: bytes, mechanism: str) -> "pkcs11.PrivateKey":
    """C_UnwrapKey into a sensitive, non-extractable token private key; nothing is left on failure."""
    template = {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False, Attribute.SIGN: True, **_TRIMMED}
    iv = b""
    if mechanism == "CKM_AES_CBC_PAD":
        iv, wrapped = wrapped[:_IV_BYTES], wrapped[_IV_BYTES:]
    with _no_leftovers(session):
        try:
            private = _kek_object(session, kek).unwrap_key(
                ObjectClass.PRIVATE_KEY, _KEY_TYPES[kind], wrapped, label=label, id=object_id,
                store=True, mechanism=WRAP_MECHANISMS[mechanism], mechanism_param=iv or None,
                template=template)
            _require_sensitive(session, private)
            return private
        except p11x.MechanismInvalid:
            raise WrapUnsupported(f"token '{session.token.label}' cannot unwrap {mechanism}: "
                                  f"unwrap onto a token that has {mechanism}, or put the key on "
                                  "it with 'bindpkcs11 key import'; nothing was stored") from None
        except p11x.PKCS11Error as error:
            raise UnwrapFailed(
                f"token '{session.token.label}' refused to unwrap the key ({type(error).__name__}): "
                "the wrap file was made under another KEK or is damaged; nothing was stored"
            ) from None


def _require_sensitive(session: "pkcs11.Session", private: "pkcs11.PrivateKey") -> None:
    """A token that ignored CKA_SENSITIVE / CKA_EXTRACTABLE in the unwrap template (opencryptoki
    3.8's soft token) is told again; both changes are one-way in PKCS#11, so a token that refuses
    them too leaves a copy that could leave it, and the unwrap is undone."""
    if _attr(private, Attribute.SENSITIVE) and not _attr(private, Attribute.EXTRACTABLE):
        return
    with contextlib.suppress(p11x.PKCS11Error):
        private[Attribute.SENSITIVE] = True
        private[Attribute.EXTRACTABLE] = False
    if not _attr(private, Attribute.SENSITIVE) or _attr(private, Attribute.EXTRACTABLE):
        raise UnwrapFailed(f"token '{session.token.label}' would keep the unwrapped key extractable "
                           "(it ignores CKA_SENSITIVE/CKA_EXTRACTABLE): nothing was stored")


def import_private(session: "pkcs11.Session", public: PublicKey, fields: dict[str, bytes],
                   label: str, object_id: bytes) -> "pkcs11.PrivateKey":
    """C_CreateObject of a software private key (BIND `.private` fields): sensitive, non-extractable."""
    template = _private_template(public, fields, label, object_id)
    with _no_leftovers(session):
        try:
            return session.create_object(template)
        except p11x.PKCS11Error as error:
            raise translate(error, f"importing the private key as '{label}'") from error


def import_private_as_so(module_path: str, slot_id: int, token_label: str, so_pin: str,
                         public: PublicKey, fields: dict[str, bytes], label: str,
                         object_id: bytes) -> None:
    """The same private key object, stored by the SO through plain C calls: how a card that keeps
    its keys in fixed slots (an OpenPGP card through OpenSC) takes an imported key (see
    inittoken.create_object_as_so for why not python-pkcs11)."""
    width = ctypes.sizeof(ctypes.c_ulong)

    def raw(value) -> bytes:
        if isinstance(value, bool):
            return b"\x01" if value else b"\x00"
        if isinstance(value, int):
            return int(value).to_bytes(width, sys.byteorder)
        return value.encode() if isinstance(value, str) else bytes(value)

    template = [(int(kind), raw(value)) for kind, value in
                _private_template(public, fields, label, object_id).items()]
    try:
        inittoken.create_object_as_so(module_path, slot_id, token_label, so_pin, template)
    except PinIncorrect:
        raise
    except BindPkcs11Error as error:
        raise BindPkcs11Error(f"importing the private key as '{label}' failed: {error}") from None


def _private_template(public: PublicKey, fields: dict[str, bytes], label: str,
                      object_id: bytes) -> dict:
    template = {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: _KEY_TYPES[public.kind],
                Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False, Attribute.SIGN: True, Attribute.LABEL: label,
                Attribute.ID: object_id}
    if public.kind == "rsa":
        template.update({attribute: fields[name] for name, attribute in _RSA_FIELDS.items()})
    else:
        template[Attribute.EC_PARAMS] = encode_named_curve_parameters(CURVE_OIDS[public.curve])
        template[Attribute.VALUE] = fields["PrivateKey"]
    return template


def create_public(session: "pkcs11.Session", public: PublicKey, label: str, object_id: bytes) -> None:
    """The public key object beside an imported or unwrapped private key."""
    template = {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: _KEY_TYPES[public.kind],
                Attribute.TOKEN: True, Attribute.VERIFY: True, Attribute.LABEL: label,
                Attribute.ID: object_id}
    if public.kind == "rsa":
        template[Attribute.MODULUS] = public.modulus.to_bytes((public.modulus.bit_length() + 7) // 8, "big")
        template[Attribute.PUBLIC_EXPONENT] = public.exponent.to_bytes(
            (public.exponent.bit_length() + 7) // 8, "big")
    else:
        point = b"\x04" + public.point if public.kind == "ec" else public.point
        template[Attribute.EC_PARAMS] = encode_named_curve_parameters(CURVE_OIDS[public.curve])
        template[Attribute.EC_POINT] = OctetString(point).dump()
    with _no_leftovers(session):
        try:
            session.create_object(template)
        except p11x.PKCS11Error as error:
            raise translate(error, f"creating the public key '{label}'") from error


def destroy_label(session: "pkcs11.Session", label: str) -> None:
    """Destroy every object labelled `label` (rollback of an import or unwrap that failed its proof)."""
    for obj in list(session.get_objects({Attribute.LABEL: label})):
        with contextlib.suppress(p11x.PKCS11Error):
            obj.destroy()


@contextlib.contextmanager
def _no_leftovers(session: "pkcs11.Session"):
    """Destroy any object that appeared in the session when the block fails."""
    before = {obj.handle for obj in session.get_objects()}
    try:
        yield
    except BaseException:
        for obj in list(session.get_objects()):
            if obj.handle not in before:
                with contextlib.suppress(p11x.PKCS11Error):
                    obj.destroy()
        raise


def _kek_object(session: "pkcs11.Session", kek: KekInfo) -> "pkcs11.SecretKey":
    try:
        return session.get_key(object_class=ObjectClass.SECRET_KEY, label=kek.label)
    except (p11x.NoSuchKey, p11x.MultipleObjectsReturned):
        raise KekProblem(f"no single KEK '{kek.label}' on token '{session.token.label}'") from None


def _attr(obj: "pkcs11.Object", attribute: Attribute):
    try:
        return obj[attribute]
    except (p11x.AttributeTypeInvalid, p11x.AttributeSensitive, KeyError, NotImplementedError):
        return None


def require_backup_ready(session) -> tuple[KekInfo, str]:
    """Before `keygen --backup`: the token can wrap, holds a KEK, and the KEK is the only key that
    may wrap (CKA_EXTRACTABLE lets any wrapping key take the key out, so there must be just one)."""
    mechanism = require_wrap_support(session)
    found = find_kek(session)
    label = session.token.label
    if found is None:
        raise KekProblem(
            f"token '{label}' holds no KEK, so a --backup key could not be wrapped: import the KEK "
            "shares first ('bindpkcs11 backup import-share FILE --token L')")
    others = [name for name in wrapping_keys(session) if name != found.label]
    if others:
        raise KekProblem(
            f"token '{label}' has other keys that can wrap ({', '.join(others)}): an extractable "
            "key could leave under them; delete them before 'keygen --backup'")
    return found, mechanism


def check_wrappable(session, kek: KekInfo, mechanism: str, object_label: str,
                    algorithm: str) -> None:
    """After `keygen --backup`: wrap the new key once and discard the result, so that a key the
    token cannot wrap (SoftHSM 2.6.1 and Ed25519) is refused now, not at the first backup."""
    try:
        wrap_private(session, kek, private_key(session, object_label), mechanism)
    except KeyNotWrappable:
        raise KeyNotWrappable(
            f"token '{session.token.label}' cannot wrap {algorithm} keys, so a --backup key of "
            "this algorithm could never be backed up: nothing was kept; choose another "
            "--algorithm, or generate in software and 'key import' into two tokens") from None
