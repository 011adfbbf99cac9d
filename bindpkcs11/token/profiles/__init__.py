"""Device profiles: how to find a family's PKCS#11 module and initialise or erase its tokens.

Only these modules run vendor tools; the rest of bindpkcs11 talks plain PKCS#11 through a profile's
`module_path` after `activate()` has set whatever environment the module reads at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bindpkcs11.errors import UsageError
from bindpkcs11.state import StateDir


@dataclass(frozen=True)
class TokenPins:
    """PINs for initialising a token; kept out of every repr."""

    user: str
    so: str

    def __repr__(self) -> str:
        return "TokenPins(<hidden>)"


class Profile(Protocol):
    """What bindpkcs11 needs from a device family."""

    name: str
    module_path: str

    def activate(self) -> None:
        """Set the environment the module must see before it is loaded."""

    def module_env(self) -> dict[str, str]:
        """Environment a child process (named, the shim) needs for this module."""

    def init_token(self, label: str, pins: TokenPins) -> None:
        """Create and initialise a token called `label`."""

    def erase_token(self, label: str, pins: TokenPins) -> None:
        """Re-initialise token `label`: all objects gone, same label, given PINs."""


def get_profile(name: str, state: StateDir, module: str | None = None) -> Profile:
    """The profile called `name`; `module` overrides its module path."""
    from bindpkcs11.token.profiles.softhsm import SoftHsmProfile

    registry = {"softhsm": SoftHsmProfile}
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
