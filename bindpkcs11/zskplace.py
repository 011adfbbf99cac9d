"""Where setup-inline puts a zone's ZSK: on the KSK's token, on a token of its own, or in software.

The choice is the operator's (`--zsk-on`, `--zsk-token`), else the instance's (a re-run keeps it),
else made from the zone's size and the profile's measured signing rate. An OpenPGP card shows one
token per key slot, so a ZSK on the card needs the card's other token (`--zsk-token`); the shim in
named logs in to both with the instance's one PIN.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from bindpkcs11.access import TokenAccess
from bindpkcs11.bind.instance import Instance
from bindpkcs11.errors import PinIncorrect, TokenNotFound, UsageError
from bindpkcs11.state import StateDir
from bindpkcs11.token import library
from bindpkcs11.token.profiles import get_profile, traits_of

if TYPE_CHECKING:
    from bindpkcs11.inline import SetupRequest

SLOW_SIGNING_SECONDS = 60
Progress = Callable[[str], None]


def place(state: StateDir, instance: Instance, request: SetupRequest, rrsets: int,
          progress: Progress) -> str:
    """Where the ZSK lives ("token" or "software"): on its own token when `request.zsk_token`
    (settled by with_zsk_token) names one; else as asked; else as the instance already has it;
    else on the token unless the device signs too slowly for this zone (a full signing pass
    would take longer than SLOW_SIGNING_SECONDS at the profile's rate), when a software ZSK
    seeded by the token's randomness keeps re-signing fast while the KSK stays in hardware.
    A token that holds one key (an OpenPGP card's) holds the KSK: without a ZSK token the ZSK
    is in software."""
    if request.zsk_token is not None:
        return "token"
    traits = traits_of(get_profile(request.profile, state, request.module))
    if traits.fixed_key_object(request.token) is not None:
        if request.zsk_on == "token":
            other = traits.device_tokens(request.token)[1:]
            raise UsageError(f"token '{request.token}' holds one key (the KSK): put the ZSK on "
                             f"the card's other token with --zsk-token '{other[0]}', or use "
                             "--zsk-on software")
        return "software"
    if request.zsk_on is not None:
        return request.zsk_on
    if instance.exists():
        return instance.load_settings().zsk_on
    rate = traits.signatures_per_second
    if rate and rrsets / rate > SLOW_SIGNING_SECONDS:
        progress(f"a '{request.profile}' token signs about {rate} signatures/s: signing {rrsets} "
                 f"RRsets would take {rrsets / rate:.0f} s, so the ZSK is made in software (seeded "
                 "from the token) and the KSK stays on the token; --zsk-on token overrides")
        return "software"
    return "token"


def with_zsk_token(state: StateDir, instance: Instance, request: SetupRequest) -> SetupRequest:
    """The request with the ZSK's token settled: as given; else the instance's (a re-run keeps
    it) unless the ZSK moves to software. The KSK's own token is no separate token (None),
    except on a card, whose token holds only one key. Nothing is touched."""
    zsk_token = request.zsk_token
    if zsk_token is not None and request.zsk_on == "software":
        raise UsageError("--zsk-token puts the ZSK on a token and --zsk-on software keeps it off "
                         "every token: give one of them")
    if zsk_token is None and request.zsk_on != "software" and instance.exists():
        current = instance.load_settings()
        if current.token == request.token and current.zsk_on == "token":
            zsk_token = current.zsk_token
    if zsk_token == request.token:
        traits = traits_of(get_profile(request.profile, state, request.module))
        if traits.fixed_key_object(request.token) is not None:
            other = traits.device_tokens(request.token)[1:]
            raise UsageError(f"--zsk-token is the KSK's token '{request.token}', which holds one "
                             f"key: give the card's other token, --zsk-token '{other[0]}'")
        zsk_token = None
    return replace(request, zsk_token=zsk_token)


def zsk_access(state: StateDir, request: SetupRequest) -> TokenAccess:
    """Access to the ZSK's own token (same profile and PIN sources); it must exist already."""
    access = TokenAccess.build(state, request.profile, request.zsk_token or "", request.module,
                               request.pin_file)
    labels = [info.label for info in library.list_tokens(access.module_path)]
    if request.zsk_token not in labels:
        raise TokenNotFound(f"--zsk-token '{request.zsk_token}' not found (tokens present: "
                            f"{', '.join(labels) or 'none'}); create it with 'bindpkcs11 token "
                            "init' or give one of those")
    return access


def verify_same_pin(access: TokenAccess, pin: str, ksk_token: str) -> None:
    """named's shim logs in to every token with the instance's one PIN: prove with one login
    (never retried) that the ZSK's token takes the KSK token's PIN."""
    try:
        with library.open_session(access.module_path, access.label, lambda: pin,
                                  locked_hint=traits_of(access.profile).pin_locked_hint):
            pass
    except PinIncorrect as error:
        raise PinIncorrect(f"{error}; named logs in to the ZSK's token and the KSK's token "
                           f"'{ksk_token}' with one PIN: give both the same user PIN") from None

