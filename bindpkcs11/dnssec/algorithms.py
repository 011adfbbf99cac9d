"""The DNSSEC algorithms bindpkcs11 generates keys for, joined by a registry rather than if-chains."""

from __future__ import annotations

from dataclasses import dataclass, replace

from bindpkcs11.errors import UnknownAlgorithm, UsageError
from bindpkcs11.token.records import KeySpec

RSA_BITS_RANGE = (1024, 4096)


@dataclass(frozen=True)
class Algorithm:
    """One DNSSEC algorithm: its number, BIND's mnemonic, the key to make and how to sign."""

    number: int
    mnemonic: str
    spec: KeySpec
    sign_kind: str

    @property
    def is_rsa(self) -> bool:
        return self.spec.kind == "rsa"

    def with_bits(self, bits: int | None) -> "Algorithm":
        """The same algorithm with another RSA modulus size (only RSA has a choice)."""
        if bits is None:
            return self
        if not self.is_rsa:
            raise UsageError(f"--bits applies to RSA algorithms only, not {self.mnemonic}")
        low, high = RSA_BITS_RANGE
        if not low <= bits <= high or bits % 8:
            raise UsageError(f"--bits must be a multiple of 8 between {low} and {high}")
        return replace(self, spec=replace(self.spec, bits=bits))


_REGISTRY = {
    algorithm.number: algorithm
    for algorithm in (
        Algorithm(8, "RSASHA256", KeySpec("rsa", bits=2048), "rsa-sha256"),
        Algorithm(10, "RSASHA512", KeySpec("rsa", bits=2048), "rsa-sha512"),
        Algorithm(13, "ECDSAP256SHA256", KeySpec("ec", curve="secp256r1"), "ecdsa-sha256"),
        Algorithm(14, "ECDSAP384SHA384", KeySpec("ec", curve="secp384r1"), "ecdsa-sha384"),
        Algorithm(15, "ED25519", KeySpec("ed25519", curve="ed25519"), "eddsa"),
    )
}


def lookup(text: str | int) -> Algorithm:
    """The algorithm for a mnemonic (case-insensitive) or number; UnknownAlgorithm otherwise."""
    candidate = str(text).strip()
    if candidate.isdigit() and int(candidate) in _REGISTRY:
        return _REGISTRY[int(candidate)]
    for algorithm in _REGISTRY.values():
        if algorithm.mnemonic.lower() == candidate.lower():
            return algorithm
    names = ", ".join(f"{a.mnemonic} ({a.number})" for a in _REGISTRY.values())
    raise UnknownAlgorithm(f"unknown algorithm '{text}': choose one of {names}")


def by_number(number: int) -> Algorithm:
    return lookup(number)
