"""Frozen records the token layer hands out, so callers never touch python-pkcs11 objects."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class KeySpec:
    """What key pair to make: `kind` is "rsa", "ec" or "ed25519"."""

    kind: str
    bits: int = 0
    curve: str = ""


@dataclass(frozen=True)
class PublicKey:
    """Public key material in the forms DNSSEC needs.

    rsa: `modulus`, `exponent`; ec: `point` = x||y (no 04 prefix); ed25519: `point` = 32 bytes.
    """

    kind: str
    curve: str = ""
    modulus: int = 0
    exponent: int = 0
    point: bytes = b""

    @property
    def bits(self) -> int:
        if self.kind == "rsa":
            return self.modulus.bit_length()
        return len(self.point) * 4 if self.kind == "ec" else 256


@dataclass(frozen=True)
class TokenFlags:
    """The user-PIN state flags an operator must see before a card locks."""

    initialized: bool
    user_pin_initialized: bool
    user_pin_count_low: bool
    user_pin_final_try: bool
    user_pin_locked: bool
    so_pin_locked: bool
    login_required: bool
    has_rng: bool

    def warnings(self) -> list[str]:
        notes = []
        if self.user_pin_locked:
            notes.append("user PIN locked")
        elif self.user_pin_final_try:
            notes.append("user PIN final try")
        elif self.user_pin_count_low:
            notes.append("user PIN count low")
        if self.so_pin_locked:
            notes.append("SO PIN locked")
        return notes


@dataclass(frozen=True)
class TokenInfo:
    """One slot with its token."""

    slot_id: int
    slot_description: str
    label: str
    manufacturer: str
    model: str
    serial: str
    flags: TokenFlags


@dataclass(frozen=True)
class ObjectInfo:
    """One object on a token, with the attributes `token show` lists."""

    object_class: str
    key_type: str
    label: str
    id: bytes
    size: int
    curve: str
    sensitive: bool | None
    extractable: bool | None
    public_key: PublicKey | None = field(default=None, repr=False)

    @property
    def id_hex(self) -> str:
        return self.id.hex()
