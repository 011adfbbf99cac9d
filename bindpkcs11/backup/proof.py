"""Proof that a token holds the private half of a DNSKEY: sign a fresh challenge, verify in software."""

from __future__ import annotations

import os

import dns.dnssec
from cryptography.exceptions import InvalidSignature

from bindpkcs11.dnssec.tokensigner import TokenPrivateKey
from bindpkcs11.errors import BindPkcs11Error


class CopyNotProven(BindPkcs11Error):
    """The copy on the token does not sign for this DNSKEY."""


def prove(private_key: "object", dnskey, token: str) -> str:
    """Sign a random challenge on the token and verify it with `dnskey`; returns the challenge hex."""
    challenge = b"bindpkcs11 custody proof " + os.urandom(32)
    signer = TokenPrivateKey.on_token(private_key, dnskey)
    signature = signer.sign(challenge)
    try:
        signer.public_key().verify(signature, challenge)
    except (InvalidSignature, dns.dnssec.ValidationFailure, ValueError):
        raise CopyNotProven(f"the key stored on token '{token}' does not sign for DNSKEY tag "
                            f"{dns.dnssec.key_id(dnskey)}: the copy was removed") from None
    return challenge.hex()
