"""Why the online signer refused to publish: each case is one clear line, the last good zone stays."""

from __future__ import annotations

from bindpkcs11.errors import BindPkcs11Error


class SignerRefused(BindPkcs11Error):
    """The signer refused to publish; the last good zone is still served."""

    exit_code = 13


class NoCoveringBundle(SignerRefused):
    """No bundle covers now plus the safety margin."""


class ZoneInvalid(SignerRefused):
    """The unsigned zone cannot be used."""


class ValidationFailed(SignerRefused):
    """The signed zone did not validate."""
