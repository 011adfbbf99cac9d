"""Software keys (the 2012 demo's online ZSKs): generated with `cryptography`, stored in BIND format."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bindpkcs11.dnssec.algorithms import Algorithm
from bindpkcs11.token.records import PublicKey

_CURVES = {"secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1}


def generate(algorithm: Algorithm) -> tuple[PublicKey, list[tuple[str, bytes]]]:
    """A new key pair: its public part and the `.private` elements BIND expects, in BIND's order."""
    spec = algorithm.spec
    if spec.kind == "rsa":
        return _rsa(spec.bits)
    if spec.kind == "ec":
        return _ecdsa(spec.curve)
    return _ed25519()


def _rsa(bits: int) -> tuple[PublicKey, list[tuple[str, bytes]]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    numbers = key.private_numbers()
    public = numbers.public_numbers
    fields = [
        ("Modulus", public.n),
        ("PublicExponent", public.e),
        ("PrivateExponent", numbers.d),
        ("Prime1", numbers.p),
        ("Prime2", numbers.q),
        ("Exponent1", numbers.dmp1),
        ("Exponent2", numbers.dmq1),
        ("Coefficient", numbers.iqmp),
    ]
    return (
        PublicKey(kind="rsa", modulus=public.n, exponent=public.e),
        [(name, _int_bytes(value)) for name, value in fields],
    )


def _ecdsa(curve: str) -> tuple[PublicKey, list[tuple[str, bytes]]]:
    key = ec.generate_private_key(_CURVES[curve]())
    size = (key.curve.key_size + 7) // 8
    numbers = key.private_numbers()
    point = numbers.public_numbers.x.to_bytes(size, "big") + numbers.public_numbers.y.to_bytes(size, "big")
    return (
        PublicKey(kind="ec", curve=curve, point=point),
        [("PrivateKey", numbers.private_value.to_bytes(size, "big"))],
    )


def _ed25519() -> tuple[PublicKey, list[tuple[str, bytes]]]:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    point = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(kind="ed25519", curve="ed25519", point=point), [("PrivateKey", seed)]


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")
