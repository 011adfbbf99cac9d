"""A dnspython `GenericPrivateKey` whose signatures are made on the token.

dnspython builds the RRSIG and the data to sign; the token only signs. This keeps RRSIG code out of
bindpkcs11 and lets `dns.dnssec.sign()` work with keys that never leave the hardware.
"""

from __future__ import annotations

from typing import Callable

import dns.dnssecalgs
from dns.dnssecalgs.base import GenericPrivateKey, GenericPublicKey

from bindpkcs11.dnssec.algorithms import by_number
from bindpkcs11.token import keys


class TokenPrivateKey(GenericPrivateKey):
    """Signs through `sign_raw` (token-specific) and verifies with the DNSKEY's public key."""

    def __init__(self, key: Callable[[bytes], bytes], dnskey=None) -> None:  # noqa: D107
        self._sign_raw = key
        self._dnskey = dnskey
        self.signatures = 0

    @classmethod
    def on_token(cls, private_key: "object", dnskey) -> "TokenPrivateKey":
        """Wrap a token private key object; the mechanism follows the DNSKEY's algorithm."""
        kind = by_number(dnskey.algorithm).sign_kind
        return cls(lambda data: keys.sign_digest(private_key, kind, data), dnskey)

    def sign(self, data: bytes, verify: bool = False, deterministic: bool = True) -> bytes:
        signature = self._sign_raw(data)
        self.signatures += 1
        if verify:
            self.public_key().verify(signature, data)
        return signature

    def public_key(self) -> GenericPublicKey:
        cls = dns.dnssecalgs.get_algorithm_cls_from_dnskey(self._dnskey)
        return cls.public_cls.from_dnskey(self._dnskey)

    @classmethod
    def from_pem(cls, private_pem: bytes, password: bytes | None = None) -> "TokenPrivateKey":
        raise NotImplementedError("token keys have no PEM form: they never leave the token")

    def to_pem(self, password: bytes | None = None) -> bytes:
        raise NotImplementedError("token keys have no PEM form: they never leave the token")
