"""Python face of the C signing shim (bp11.c), the same code a patched BIND uses.

Going through the shim rather than python-pkcs11 means Python tests and tools exercise exactly
the login, session-pool and recovery behaviour that named relies on.  The shim keeps per-process
state (one module configuration, a PIN that failed is never retried), so tests that need a fresh
state run it in a subprocess.
"""

from enum import IntEnum

from bindpkcs11._shim import ffi, lib

# Large enough for RSA-4096 (512 bytes); bigger keys are handled by one resize.
_DEFAULT_SIG_BUFFER = 512


class Mechanism(IntEnum):
    """What the input to :func:`sign` is and how the token signs it (BP11_MECH_*)."""

    RSA_SHA1 = lib.BP11_MECH_RSA_SHA1  # SHA-1 digest; the shim adds the DigestInfo
    RSA_SHA256 = lib.BP11_MECH_RSA_SHA256  # SHA-256 digest
    RSA_SHA512 = lib.BP11_MECH_RSA_SHA512  # SHA-512 digest
    ECDSA = lib.BP11_MECH_ECDSA  # digest; signature is r||s, DNSSEC wire format
    EDDSA = lib.BP11_MECH_EDDSA  # the whole message


class KeyType(IntEnum):
    """What :func:`public_key` found (BP11_KEY_*), each with its DNSKEY public-key layout."""

    RSA = lib.BP11_KEY_RSA  # RFC 3110
    EC_P256 = lib.BP11_KEY_EC_P256  # x||y, 64 bytes
    EC_P384 = lib.BP11_KEY_EC_P384  # x||y, 96 bytes
    ED25519 = lib.BP11_KEY_ED25519  # 32 bytes
    ED448 = lib.BP11_KEY_ED448  # 57 bytes


class ErrorCode(IntEnum):
    """The shim's return codes (BP11_*), so callers can react to a kind of failure."""

    OK = lib.BP11_OK
    CONFIG = lib.BP11_ERR_CONFIG
    MODULE = lib.BP11_ERR_MODULE
    URI = lib.BP11_ERR_URI
    TOKEN_NOT_FOUND = lib.BP11_ERR_TOKEN_NOT_FOUND
    KEY_NOT_FOUND = lib.BP11_ERR_KEY_NOT_FOUND
    PIN_INCORRECT = lib.BP11_ERR_PIN_INCORRECT
    PIN_LOCKED = lib.BP11_ERR_PIN_LOCKED
    BUFFER = lib.BP11_ERR_BUFFER
    MECHANISM = lib.BP11_ERR_MECHANISM
    PKCS11 = lib.BP11_ERR_PKCS11


class ShimError(Exception):
    """The shim could not sign; the message is its one-line explanation (never the PIN)."""

    def __init__(self, code: int, ckr: int, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.ckr = ckr
        self.message = message


def _last_error(code: int) -> ShimError:
    # The shim's error state is thread-local: read it on the thread that made the call.
    message = ffi.string(lib.bp11_last_error()).decode("utf-8", "replace")
    return ShimError(code, lib.bp11_last_ckr(), message)


def sign(uri: str, mechanism: Mechanism, data: bytes) -> bytes:
    """Sign ``data`` (a digest, or the message for EdDSA) with the key named by ``uri``.

    cffi releases the GIL for the duration of the C call, so Python threads sign in parallel
    on the shim's session pool.
    """
    source = ffi.from_buffer("unsigned char[]", data)
    size = _DEFAULT_SIG_BUFFER
    for _ in range(2):  # the second round only if the key needs more than the default buffer
        buf = ffi.new("unsigned char[]", size)
        siglen = ffi.new("size_t *", size)
        code = lib.bp11_sign(uri.encode("utf-8"), int(mechanism), source, len(data), buf, siglen)
        if code == lib.BP11_OK:
            return ffi.buffer(buf, siglen[0])[:]
        if code != lib.BP11_ERR_BUFFER or siglen[0] <= size:
            break
        size = siglen[0]
    raise _last_error(code)


def public_key(uri: str) -> tuple[KeyType, bytes]:
    """The key type and DNSKEY public-key field of the token key pair named by ``uri``.

    This is what the patched dnssec-keyfromlabel puts in K*.key, read by the same C code.
    """
    size = 1024
    for _ in range(2):
        buf = ffi.new("unsigned char[]", size)
        length = ffi.new("size_t *", size)
        keytype = ffi.new("int *")
        code = lib.bp11_public_key(uri.encode("utf-8"), keytype, buf, length)
        if code == lib.BP11_OK:
            return KeyType(keytype[0]), ffi.buffer(buf, length[0])[:]
        if code != lib.BP11_ERR_BUFFER or length[0] <= size:
            break
        size = length[0]
    raise _last_error(code)


def check_uri(uri: str) -> None:
    """Raise ShimError (code URI) if the shim would refuse ``uri`` as a key's Label."""
    code = lib.bp11_check_uri(uri.encode("utf-8"))
    if code != lib.BP11_OK:
        raise _last_error(code)


def init() -> None:
    """Load the module named by PKCS11_LIBRARY_PATH now, so configuration errors show early."""
    code = lib.bp11_init()
    if code != lib.BP11_OK:
        raise _last_error(code)


def finalize() -> None:
    """Close the shim's sessions and C_Finalize its modules; the next sign starts afresh.

    A PIN the token rejected stays rejected for the life of the process.
    """
    lib.bp11_finalize()
