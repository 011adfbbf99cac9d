"""Key pairs on a token: generate, read public parts, sign raw digests, list and destroy objects."""

from __future__ import annotations

import hashlib

import pkcs11
import pkcs11.exceptions as p11x
from asn1crypto.core import ObjectIdentifier, OctetString, PrintableString
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.constants import DEFAULT
from pkcs11.util.ec import encode_named_curve_parameters

from bindpkcs11.errors import (
    AlgorithmUnsupported,
    DuplicateLabel,
    ObjectNotFound,
)
from bindpkcs11.token.library import translate
from bindpkcs11.token.records import KeySpec, ObjectInfo, PublicKey

CURVE_OIDS = {
    "secp256r1": "1.2.840.10045.3.1.7",
    "secp384r1": "1.3.132.0.34",
    "ed25519": "1.3.101.112",
}
_OID_CURVES = {oid: name for name, oid in CURVE_OIDS.items()}
_GENERATORS = {
    "rsa": (KeyType.RSA, Mechanism.RSA_PKCS_KEY_PAIR_GEN),
    "ec": (KeyType.EC, Mechanism.EC_KEY_PAIR_GEN),
    "ed25519": (KeyType.EC_EDWARDS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN),
}
# DER DigestInfo prefixes (RFC 8017 section 9.2 note 1): CKM_RSA_PKCS signs DigestInfo||digest, which
# works on every token, including those without CKM_SHA256_RSA_PKCS.
DIGEST_INFO = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_CLASS_NAMES = {
    ObjectClass.PRIVATE_KEY: "private",
    ObjectClass.PUBLIC_KEY: "public",
    ObjectClass.SECRET_KEY: "secret-key",
    ObjectClass.CERTIFICATE: "cert",
    ObjectClass.DATA: "data",
}
CLASS_BY_NAME = {name: cls for cls, name in _CLASS_NAMES.items()}


def require_support(session: "pkcs11.Session", spec: KeySpec) -> None:
    """AlgorithmUnsupported unless the token lists the generator (and, for RSA, the size)."""
    _, generator = _GENERATORS[spec.kind]
    slot = session.token.slot
    if generator in set(slot.get_mechanisms()):
        if spec.kind != "rsa":
            return
        info = slot.get_mechanism_info(generator)
        if info.min_key_length <= spec.bits <= info.max_key_length:
            return
    raise AlgorithmUnsupported(
        f"token '{session.token.label}' cannot generate {describe(spec)} keys; "
        "choose another --algorithm"
    )


def generate_keypair(
    session: "pkcs11.Session",
    spec: KeySpec,
    label: str,
    object_id: bytes,
    extractable: bool = False,
    omit_false_flags: bool = False,
) -> PublicKey:
    """C_GenerateKeyPair on the token with CKA_LABEL/CKA_ID; private key sensitive.

    Non-extractable by default: the key can never leave the token unless the operator asked for
    `--extractable` (needed later for wrap-based backup). `omit_false_flags` leaves out the
    CK_FALSE capability flags python-pkcs11 adds for an EC key (encrypt, wrap, decrypt, unwrap):
    tpm2-pkcs11 refuses a template that states an attribute the TPM object would not have.
    """
    if list(session.get_objects({Attribute.LABEL: label})):
        raise DuplicateLabel(
            f"an object labelled '{label}' already exists on token '{session.token.label}': "
            "choose another --label or delete it first"
        )
    require_support(session, spec)
    key_type, mechanism = _GENERATORS[spec.kind]
    public_template = {
        Attribute.TOKEN: True,
        Attribute.LABEL: label,
        Attribute.ID: object_id,
        Attribute.VERIFY: True,
    }
    private_template = {
        Attribute.TOKEN: True,
        Attribute.LABEL: label,
        Attribute.ID: object_id,
        Attribute.SIGN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: extractable,
    }
    if spec.kind == "rsa":
        public_template[Attribute.MODULUS_BITS] = spec.bits
        public_template[Attribute.PUBLIC_EXPONENT] = b"\x01\x00\x01"
    else:
        public_template[Attribute.EC_PARAMS] = encode_named_curve_parameters(CURVE_OIDS[spec.curve])
        if omit_false_flags:
            public_template.update({Attribute.ENCRYPT: DEFAULT, Attribute.WRAP: DEFAULT})
            private_template.update({Attribute.DECRYPT: DEFAULT, Attribute.UNWRAP: DEFAULT})
    try:
        public, _ = session.generate_keypair(
            key_type,
            spec.bits if spec.kind == "rsa" else None,
            store=True,
            mechanism=mechanism,
            public_template=public_template,
            private_template=private_template,
        )
    except p11x.PKCS11Error as error:
        raise translate(error, f"generating a {describe(spec)} key pair") from error
    return read_public_key(public)


def describe(spec: KeySpec) -> str:
    return f"RSA-{spec.bits}" if spec.kind == "rsa" else spec.curve


def read_public_key(obj: "pkcs11.Object") -> PublicKey:
    """Public material of a public or private key object (whichever holds the attributes)."""
    key_type = obj[Attribute.KEY_TYPE]
    if key_type == KeyType.RSA:
        return PublicKey(
            kind="rsa",
            modulus=int.from_bytes(obj[Attribute.MODULUS], "big"),
            exponent=int.from_bytes(obj[Attribute.PUBLIC_EXPONENT], "big"),
        )
    curve = curve_name(obj[Attribute.EC_PARAMS])
    point = _decode_point(obj[Attribute.EC_POINT])
    if key_type == KeyType.EC:
        return PublicKey(kind="ec", curve=curve, point=point[1:] if point[:1] == b"\x04" else point)
    return PublicKey(kind="ed25519", curve="ed25519", point=point)


def curve_name(params: bytes) -> str:
    """Curve name of CKA_EC_PARAMS: an OID, or SoftHSM's PrintableString form for Edwards curves."""
    if params[:1] == b"\x06":
        oid = ObjectIdentifier.load(params).dotted
        return _OID_CURVES.get(oid, oid)
    if params[:1] == b"\x13":
        name = PrintableString.load(params).native
        return "ed25519" if name == "edwards25519" else name
    return params.hex()


def _decode_point(raw: bytes) -> bytes:
    """CKA_EC_POINT is DER OCTET STRING(point) per the spec; some tokens give the raw point."""
    if raw[:1] == b"\x04" and len(raw) > 2:
        try:
            inner = OctetString.load(raw).native
            if len(inner) in (32, 57, 65, 97, 133):
                return inner
        except ValueError:
            pass
    return raw


def private_key(session: "pkcs11.Session", label: str) -> "pkcs11.PrivateKey":
    """The one private key labelled `label` (ObjectNotFound otherwise)."""
    try:
        return session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
    except p11x.NoSuchKey:
        raise ObjectNotFound(
            f"no private key labelled '{label}' on token '{session.token.label}'"
        ) from None
    except p11x.MultipleObjectsReturned:
        raise ObjectNotFound(
            f"several private keys are labelled '{label}' on token '{session.token.label}'"
        ) from None


def sign_digest(key: "pkcs11.PrivateKey", mechanism_kind: str, data: bytes) -> bytes:
    """Sign with the mechanisms every token has: RSA over DigestInfo||digest, ECDSA over the digest.

    `mechanism_kind` is "rsa-sha1" / "rsa-sha256" / "rsa-sha512" (data = the message, hashed here),
    "ecdsa-sha256" / "ecdsa-sha384" (hashed here; output r||s), or "eddsa" (the message itself).
    """
    try:
        if mechanism_kind == "eddsa":
            return key.sign(data, mechanism=Mechanism.EDDSA)
        family, hash_name = mechanism_kind.split("-")
        digest = hashlib.new(hash_name, data).digest()
        if family == "rsa":
            return key.sign(DIGEST_INFO[hash_name] + digest, mechanism=Mechanism.RSA_PKCS)
        return key.sign(digest, mechanism=Mechanism.ECDSA)
    except p11x.PKCS11Error as error:
        raise translate(error, f"signing with '{key.label}'") from error


def list_objects(session: "pkcs11.Session") -> list[ObjectInfo]:
    """Every object visible in the session, sorted by label then class."""
    infos = [_object_info(obj) for obj in session.get_objects()]
    return sorted(infos, key=lambda info: (info.label, info.object_class, info.id))


def find_objects(
    session: "pkcs11.Session", label: str, object_class: str | None = None
) -> list["pkcs11.Object"]:
    template = {Attribute.LABEL: label}
    if object_class:
        template[Attribute.CLASS] = CLASS_BY_NAME[object_class]
    return list(session.get_objects(template))


def class_name(obj: "pkcs11.Object") -> str:
    return _CLASS_NAMES.get(obj[Attribute.CLASS], str(obj[Attribute.CLASS]))


def destroy(obj: "pkcs11.Object") -> None:
    try:
        obj.destroy()
    except p11x.PKCS11Error as error:
        raise translate(error, "destroying the object") from error


def generate_random(session: "pkcs11.Session", count: int) -> bytes:
    """`count` bytes from C_GenerateRandom (python-pkcs11 takes a bit count)."""
    try:
        return session.generate_random(count * 8)
    except p11x.PKCS11Error as error:
        raise translate(error, "C_GenerateRandom") from error


def _object_info(obj: "pkcs11.Object") -> ObjectInfo:
    object_class = obj[Attribute.CLASS]
    key_type, size, curve, public = "", 0, "", None
    if object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY):
        key_type = _key_type_name(_attr(obj, Attribute.KEY_TYPE, None))
    if object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY):
        public = _public_or_none(obj)
        if public:
            size, curve = public.bits, public.curve
        elif key_type in ("EC", "EC_EDWARDS"):
            curve = curve_name(_attr(obj, Attribute.EC_PARAMS, b"") or b"")
    elif object_class == ObjectClass.SECRET_KEY:
        size = int(_attr(obj, Attribute.VALUE_LEN, 0) or 0) * 8
    sensitive = extractable = None
    if object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY):
        sensitive = bool(_attr(obj, Attribute.SENSITIVE, None))
        extractable = bool(_attr(obj, Attribute.EXTRACTABLE, None))
    return ObjectInfo(
        object_class=_CLASS_NAMES.get(object_class, str(object_class)),
        key_type=key_type,
        label=_attr(obj, Attribute.LABEL, "") or "",
        id=_attr(obj, Attribute.ID, b"") or b"",
        size=size,
        curve=curve,
        sensitive=sensitive,
        extractable=extractable,
        public_key=public,
    )


def _key_type_name(value) -> str:
    if value is None:
        return ""
    try:
        return KeyType(int(value)).name
    except ValueError:
        return f"0x{int(value):x}"


def _public_or_none(obj: "pkcs11.Object") -> PublicKey | None:
    try:
        return read_public_key(obj)
    except (p11x.PKCS11Error, KeyError, ValueError):
        return None


def _attr(obj: "pkcs11.Object", attribute: Attribute, default):
    try:
        return obj[attribute]
    except (p11x.AttributeTypeInvalid, p11x.AttributeSensitive, KeyError, NotImplementedError):
        return default


def relabel(session: "pkcs11.Session", old: str, new: str) -> None:
    """Give every object labelled `old` the label `new` (C_SetAttributeValue on CKA_LABEL)."""
    for obj in find_objects(session, old):
        try:
            obj[Attribute.LABEL] = new
        except p11x.PKCS11Error as error:
            raise translate(error, f"relabelling '{old}' as '{new}'") from error
