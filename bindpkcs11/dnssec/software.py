"""Software keys (the 2012 demo's online ZSKs): generated with `cryptography`, stored in BIND format.

Inside `extra_entropy(data)` (keygen --rng-from-token, the demo's `hgenzsk`), ECDSA and Ed25519
private keys come from SHAKE-256 over fresh OS randomness plus the token's random bytes: the key
is at least as unpredictable as the better of the two sources. RSA key generation in `cryptography`
takes no outside randomness, so RSA refuses rather than pretend to mix.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
from typing import Iterator

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bindpkcs11.dnssec.algorithms import Algorithm
from bindpkcs11.dnssec.dnskey import int_bytes
from bindpkcs11.errors import UsageError
from bindpkcs11.token.records import PublicKey

_CURVES = {"secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1}
# Group orders (SEC 2): private scalars are drawn from [1, n-1].
_ORDERS = {
    "secp256r1": int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16),
    "secp384r1": int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB2"
                     "48B0A77AECEC196ACCC52973", 16),
}
_EXTRA = contextvars.ContextVar("extra_entropy", default=b"")
_MIX_LABEL = b"bindpkcs11 keygen entropy mix v1"


@contextlib.contextmanager
def extra_entropy(data: bytes) -> Iterator[None]:
    """Mix `data` (e.g. from a token's C_GenerateRandom) into every key generated in this block."""
    if len(data) < 32:
        raise UsageError("need at least 32 bytes of extra entropy")
    token = _EXTRA.set(bytes(data))
    try:
        yield
    finally:
        _EXTRA.reset(token)


def supports_extra_entropy(algorithm: Algorithm) -> bool:
    return algorithm.spec.kind in ("ec", "ed25519")


def _random(count: int) -> bytes:
    """`count` bytes: the OS alone, or the OS and the extra entropy through SHAKE-256."""
    extra = _EXTRA.get()
    if not extra:
        return os.urandom(count)
    return hashlib.shake_256(_MIX_LABEL + os.urandom(64) + extra).digest(count)


def generate(algorithm: Algorithm) -> tuple[PublicKey, list[tuple[str, bytes]]]:
    """A new key pair: its public part and the `.private` elements BIND expects, in BIND's order."""
    spec = algorithm.spec
    if spec.kind == "rsa":
        if _EXTRA.get():
            raise UsageError(f"--rng-from-token cannot be used for {algorithm.mnemonic}: RSA key "
                             "generation takes no outside randomness; use an ECDSA or Ed25519 ZSK")
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
        [(name, int_bytes(value)) for name, value in fields],
    )


def _ecdsa(curve: str) -> tuple[PublicKey, list[tuple[str, bytes]]]:
    if _EXTRA.get():
        order = _ORDERS[curve]
        scalar = int.from_bytes(_random((order.bit_length() + 128) // 8), "big") % (order - 1) + 1
        key = ec.derive_private_key(scalar, _CURVES[curve]())
    else:
        key = ec.generate_private_key(_CURVES[curve]())
    size = (key.curve.key_size + 7) // 8
    numbers = key.private_numbers()
    point = numbers.public_numbers.x.to_bytes(size, "big") + numbers.public_numbers.y.to_bytes(size, "big")
    return (
        PublicKey(kind="ec", curve=curve, point=point),
        [("PrivateKey", numbers.private_value.to_bytes(size, "big"))],
    )


def _ed25519() -> tuple[PublicKey, list[tuple[str, bytes]]]:
    if _EXTRA.get():
        key = ed25519.Ed25519PrivateKey.from_private_bytes(_random(32))
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    point = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(kind="ed25519", curve="ed25519", point=point), [("PrivateKey", seed)]
