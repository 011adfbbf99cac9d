"""The exception tree. Each class docstring is the default message; callers add the specifics.

The CLI prints `str(error)` as one line and exits with `error.exit_code`; nothing else in the
package prints errors, so every failure an operator can cause ends up here.
"""

from __future__ import annotations

import errno


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, so that it unwinds through every `finally`, rollback
    and cleanup (a signer's decrypted ZSKs, bench's temporary key) and no `except Exception`
    stops it; the CLI exits 143."""


def raise_terminated(signum, frame) -> None:
    """The SIGTERM handler: raise Terminated once; a second SIGTERM is ignored so that it cannot
    interrupt the cleanup the first one started."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


class BindPkcs11Error(Exception):
    """bindpkcs11 failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class UsageError(BindPkcs11Error):
    """Invalid input."""

    exit_code = 2


class ModuleMissing(BindPkcs11Error):
    """The PKCS#11 module could not be loaded."""

    exit_code = 3


class TokenNotFound(BindPkcs11Error):
    """No token with that label."""

    exit_code = 4


class TokenExists(BindPkcs11Error):
    """A token with that label already exists."""

    exit_code = 4


class PinIncorrect(BindPkcs11Error):
    """The PIN was rejected by the token."""

    exit_code = 5


class PinMissing(BindPkcs11Error):
    """No PIN available."""

    exit_code = 5


class ObjectNotFound(BindPkcs11Error):
    """No object with that label on the token."""

    exit_code = 6


class DuplicateLabel(BindPkcs11Error):
    """An object with that label already exists on the token."""

    exit_code = 6


class RefusedDeletion(BindPkcs11Error):
    """Refusing to destroy the object."""

    exit_code = 7


class UnknownAlgorithm(UsageError):
    """Unknown DNSSEC algorithm."""


class AlgorithmUnsupported(BindPkcs11Error):
    """The token does not support this algorithm."""

    exit_code = 8


class InvalidDomain(UsageError):
    """Invalid domain name."""


class InvalidTime(UsageError):
    """Invalid time or duration."""


class InputFileError(UsageError):
    """An input file cannot be used."""


class InvalidUri(UsageError):
    """Invalid PKCS#11 URI."""


class InvalidCheck(UsageError):
    """Invalid --check: use NAME/TYPE such as www/A or @/MX."""


class InvalidServer(UsageError):
    """Invalid server: give an IP address or a host name that resolves."""


class KeyDirUnwritable(BindPkcs11Error):
    """The key directory cannot be written."""

    exit_code = 9


class KeyFileError(BindPkcs11Error):
    """A BIND key file is missing or malformed."""

    exit_code = 9


class ToolFailed(BindPkcs11Error):
    """An external tool failed."""

    exit_code = 10


_OS_ERROR_ADVICE = {
    errno.ENOSPC: "no space left on the device: free some space and run the command again",
    errno.EDQUOT: "disk quota exceeded: free some space and run the command again",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.EACCES: "permission denied: run as a user who may write there, or choose another path",
    errno.EPERM: "operation not permitted: run as a user who may do this, or choose another path",
    errno.ENOENT: "no such file or directory: check the path (its directory must exist)",
    errno.ENOTDIR: "a part of the path is not a directory: check the path",
    errno.EISDIR: "it is a directory: give a file",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
}


def os_error_message(error: OSError) -> str:
    """One line for a failed file operation: where, what, and what to do.

    Files are written to a temporary name and renamed, so a write that fails this way has not
    replaced anything: the message says so.
    """
    where = f"{error.filename}: " if error.filename else ""
    advice = _OS_ERROR_ADVICE.get(error.errno or 0, error.strerror or str(error))
    kept = " (nothing was replaced)" if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else ""
    return f"{where}{advice}{kept}"
