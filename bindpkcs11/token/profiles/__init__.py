"""Device profiles: how to find a family's PKCS#11 module and initialise or erase its tokens.

Only these modules run vendor tools; the rest of bindpkcs11 talks plain PKCS#11 through a profile's
`module_path` after `activate()` has set whatever environment the module reads at start-up.
A profile also says what its device can do (`traits`): key kinds, PIN rules and keygen quirks, so
that a request the device cannot meet is refused before the device is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bindpkcs11.errors import AlgorithmUnsupported, UsageError
from bindpkcs11.state import StateDir
from bindpkcs11.token.records import KeySpec


@dataclass(frozen=True)
class TokenPins:
    """PINs for initialising a token; kept out of every repr."""

    user: str
    so: str

    def __repr__(self) -> str:
        return "TokenPins(<hidden>)"


@dataclass(frozen=True)
class PinRules:
    """What a device accepts as a PIN; `check` says so in one line before the device sees it."""

    min_length: int = 4
    max_length: int = 255
    note: str = ""
    so_min_length: int | None = None  # when the SO PIN has its own minimum (OpenPGP admin PIN: 8)

    def check(self, what: str, pin: str) -> None:
        size = len(pin.encode())
        least = self.so_min_length if what.startswith("SO") and self.so_min_length else self.min_length
        if size < least:
            raise UsageError(f"the {what} must have at least {least} characters")
        if size > self.max_length:
            raise UsageError(f"the {what} must have at most {self.max_length} bytes{self.note}")


@dataclass(frozen=True)
class DeviceTraits:
    """What a device family can do, known without asking the device.

    `key_specs` None means "whatever the token lists" (checked on the token, as for SoftHSM);
    a tuple is the complete list of key kinds the family can generate.
    `omit_false_flags`: the device refuses python-pkcs11's explicit CK_FALSE capability flags in a
    key-generation template (tpm2-pkcs11 checks each against what the TPM object allows).
    `pin_locked_hint`: what to do when the device reports the user PIN locked.
    `signatures_per_second`: the family's measured P-256 signing rate through the shim (bench),
    when it is slow enough to matter: setup-inline then keeps the ZSK in software for big zones.
    `wraps_keys`: the family has C_WrapKey/C_UnwrapKey (False: backups go through `key import`).
    `keygen_as_so`: the device generates keys only for its SO (an OpenPGP card's admin PIN).
    `fixed_key_objects`: (token label, CKA_ID, CKA_LABEL) of a device that keeps one key per token
    in a fixed slot and names it itself (OpenPGP card): keygen makes the key there, under that name.
    """

    key_specs: tuple[KeySpec, ...] | None = None
    rsa_bits: tuple[int, ...] = ()
    pin_rules: PinRules = field(default_factory=PinRules)
    omit_false_flags: bool = False
    pin_locked_hint: str = "unlock it with the SO PIN"
    signatures_per_second: int | None = None
    wraps_keys: bool = True
    keygen_as_so: bool = False
    fixed_key_objects: tuple[tuple[str, bytes, str], ...] = ()

    def fixed_key_object(self, token_label: str) -> tuple[bytes, str] | None:
        """(CKA_ID, CKA_LABEL) the device gives a key generated on `token_label`, if fixed."""
        for label, object_id, object_label in self.fixed_key_objects:
            if label == token_label:
                return object_id, object_label
        return None

    def device_tokens(self, token_label: str) -> tuple[str, ...]:
        """Every token of the device that `token_label` is on, `token_label` first.

        An OpenPGP card shows one token per key slot (its `fixed_key_objects`): they share the
        card's PINs, and resetting the card wipes them all. A token of any other device stands
        alone.
        """
        labels = [label for label, _, _ in self.fixed_key_objects]
        if token_label not in labels:
            return (token_label,)
        return (token_label, *[label for label in labels if label != token_label])

    def pin_label(self, token_label: str) -> str:
        """The token label whose PIN files hold `token_label`'s PINs: a card's first token (the
        one `token init` names), so all tokens of one card use the one PIN pair it stored."""
        labels = [label for label, _, _ in self.fixed_key_objects]
        return labels[0] if token_label in labels else token_label


GENERIC = DeviceTraits()


class Profile(Protocol):
    """What bindpkcs11 needs from a device family."""

    name: str
    module_path: str
    traits: DeviceTraits

    def activate(self) -> None:
        """Set the environment the module must see before it is loaded."""

    def module_env(self) -> dict[str, str]:
        """Environment a child process (named, the shim) needs for this module."""

    def init_token(self, label: str, pins: TokenPins) -> None:
        """Create and initialise a token called `label`."""

    def erase_token(self, label: str, pins: TokenPins) -> None:
        """Re-initialise token `label`: all objects gone, same label, given PINs."""


def traits_of(profile: Profile) -> DeviceTraits:
    """The profile's traits; a profile that declares none is generic (the token lists its own)."""
    return getattr(profile, "traits", GENERIC)


def require_key_spec(profile: Profile, spec: KeySpec) -> None:
    """AlgorithmUnsupported, naming what the device can make instead, if its family cannot make
    `spec`; called before any session so that the device is never touched for it."""
    traits = traits_of(profile)
    if traits.key_specs is None:
        return
    kinds = {(s.kind, s.curve) for s in traits.key_specs}
    wanted = (spec.kind, spec.curve if spec.kind != "rsa" else "")
    if wanted in kinds and (spec.kind != "rsa" or not traits.rsa_bits or spec.bits in traits.rsa_bits):
        return
    raise AlgorithmUnsupported(
        f"a {profile.name} device cannot generate {_describe(spec)} keys; it can make "
        f"{can_make(traits)}: choose one of those with --algorithm (and --bits)"
    )


def can_make(traits: DeviceTraits) -> str:
    """The key kinds of `traits` in words, e.g. "ECDSA P-256, ECDSA P-384, RSA-2048"."""
    names = []
    for spec in traits.key_specs or ():
        if spec.kind == "rsa":
            names.extend(f"RSA-{bits}" for bits in traits.rsa_bits or (spec.bits,))
        else:
            names.append(_describe(spec))
    return ", ".join(names)


def _describe(spec: KeySpec) -> str:
    curves = {"secp256r1": "ECDSA P-256", "secp384r1": "ECDSA P-384", "ed25519": "Ed25519"}
    if spec.kind == "rsa":
        return f"RSA-{spec.bits}"
    return curves.get(spec.curve, spec.curve)


def _registry() -> dict[str, type]:
    from bindpkcs11.token.profiles.softhsm import SoftHsmProfile
    from bindpkcs11.token.profiles.opencryptoki import OpencryptokiProfile
    from bindpkcs11.token.profiles.tpm2 import Tpm2Profile
    from bindpkcs11.token.profiles.opensc import PROFILES as OPENSC_PROFILES

    return {"softhsm": SoftHsmProfile, "tpm2": Tpm2Profile, "opencryptoki": OpencryptokiProfile,
            **OPENSC_PROFILES}


def get_profile(name: str, state: StateDir, module: str | None = None) -> Profile:
    """The profile called `name`; `module` overrides its module path."""
    registry = _registry()
    try:
        factory = registry[name]
    except KeyError:
        raise UsageError(
            f"unknown profile '{name}': choose one of {', '.join(sorted(registry))}"
        ) from None
    profile = factory(state)
    if module:
        if not Path(module).exists():
            raise UsageError(f"module {module} does not exist: check --module")
        profile.module_path = module
    return profile
