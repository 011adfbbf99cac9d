"""Everything a command needs to reach one token: state dir, device profile, label, PIN sources."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from bindpkcs11 import pins
from bindpkcs11.state import StateDir
from bindpkcs11.token import library
from bindpkcs11.token.profiles import Profile, get_profile, traits_of


@dataclass(frozen=True)
class TokenAccess:
    """How to open token `label`; PIN files are paths, the PINs themselves are read on login."""

    state: StateDir
    profile: Profile
    label: str
    pin_file: Path | None = field(default=None, repr=False)
    so_pin_file: Path | None = field(default=None, repr=False)

    @classmethod
    def build(cls, state: StateDir, profile_name: str, label: str, module: str | None = None,
              pin_file: Path | None = None, so_pin_file: Path | None = None) -> "TokenAccess":
        profile = get_profile(profile_name, state, module)
        profile.activate()
        return cls(state, profile, label, pin_file, so_pin_file)

    @property
    def module_path(self) -> str:
        return self.profile.module_path

    @property
    def pin_label(self) -> str:
        """The label the stored PIN files are named after (a card's tokens share one pair)."""
        return traits_of(self.profile).pin_label(self.label)

    @contextlib.contextmanager
    def session(self, login: bool = True, rw: bool = False, so: bool = False) -> Iterator["object"]:
        """A python-pkcs11 session, logged in as user (as SO when `so`) when `login` (one C_Login
        attempt)."""
        kind, pin_file = (pins.SO, self.so_pin_file) if so else (pins.USER, self.pin_file)
        source = pins.pin_source(self.state, self.pin_label, kind, pin_file) if login else None
        hint = traits_of(self.profile).pin_locked_hint
        with library.open_session(self.module_path, self.label, source, rw=rw,
                                  locked_hint=hint, so=so) as session:
            yield session
