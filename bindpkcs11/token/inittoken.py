"""C_InitToken, C_InitPIN and an SO login check, through ctypes: the calls python-pkcs11 lacks.

Used by profiles whose vendor tool would want PINs on its command line (tpm2_ptool addtoken takes
--sopin/--userpin as arguments, and hands a PIN-derived auth value to tpm2_create's argv): the
module's own C_InitToken keeps every PIN inside this process. Each call is made exactly once; a
wrong SO PIN is reported, never retried.
"""

from __future__ import annotations

import ctypes
from bindpkcs11.errors import BindPkcs11Error, PinIncorrect

CKR_OK = 0x0
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
CKR_USER_ALREADY_LOGGED_IN = 0x100
CKR_PIN_INCORRECT = 0xA0
CKR_PIN_LOCKED = 0xA4
CKF_RW_SESSION = 0x2
CKF_SERIAL_SESSION = 0x4
CKU_SO = 0
_RV_NAMES = {0x5: "CKR_GENERAL_ERROR", 0x6: "CKR_FUNCTION_FAILED", 0x7: "CKR_ARGUMENTS_BAD",
             0x30: "CKR_DEVICE_ERROR", 0xA0: "CKR_PIN_INCORRECT", 0xA2: "CKR_PIN_LEN_RANGE",
             0xA4: "CKR_PIN_LOCKED", 0xB3: "CKR_SESSION_EXISTS", 0xE0: "CKR_TOKEN_NOT_PRESENT",
             0x54: "CKR_FUNCTION_NOT_SUPPORTED"}
_ulong = ctypes.c_ulong


class _Module:
    """The module's C_* symbols, initialised for the duration of a `with` block.

    python-pkcs11 may already have initialised the same module in this process (it is one dlopen
    handle): then CKR_CRYPTOKI_ALREADY_INITIALIZED is fine and C_Finalize is left to it.
    """

    def __init__(self, module_path: str) -> None:
        self.lib = ctypes.CDLL(module_path)
        self.finalize = False

    def __enter__(self) -> "_Module":
        rv = self.lib.C_Initialize(None)
        if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
            raise BindPkcs11Error(f"C_Initialize failed: {rv_name(rv)}")
        self.finalize = rv == CKR_OK
        return self

    def __exit__(self, *exc) -> None:
        if self.finalize:
            self.lib.C_Finalize(None)

    def call(self, name: str, doing: str, *args) -> None:
        rv = getattr(self.lib, name)(*args)
        if rv != CKR_OK:
            raise BindPkcs11Error(f"{doing} failed: {name} returned {rv_name(rv)}")

    def session(self, slot_id: int) -> _ulong:
        handle = _ulong(0)
        self.call("C_OpenSession", "opening a session", _ulong(slot_id),
                  _ulong(CKF_SERIAL_SESSION | CKF_RW_SESSION), None, None, ctypes.byref(handle))
        return handle

    def login_so(self, handle: _ulong, so_pin: str, label: str) -> None:
        """One C_Login as SO; a wrong PIN is PinIncorrect and is not tried again."""
        pin = so_pin.encode()
        rv = self.lib.C_Login(handle, _ulong(CKU_SO), pin, _ulong(len(pin)))
        if rv in (CKR_PIN_INCORRECT, CKR_PIN_LOCKED):
            raise PinIncorrect(
                f"wrong SO PIN for token '{label}' ({rv_name(rv)}); login was attempted once and "
                "will not be retried: check --so-pin-file / PKCS11_SO_PIN"
            )
        if rv not in (CKR_OK, CKR_USER_ALREADY_LOGGED_IN):
            raise BindPkcs11Error(f"logging in as SO on token '{label}' failed: {rv_name(rv)}")


def rv_name(rv: int) -> str:
    return _RV_NAMES.get(rv, f"CKR 0x{rv:x}")


def init_token(module_path: str, slot_id: int, label: str, so_pin: str, user_pin: str) -> None:
    """C_InitToken on `slot_id` with the SO PIN, then C_Login(SO) + C_InitPIN for the user PIN."""
    padded = label.encode().ljust(32, b" ")
    if len(padded) > 32:
        raise BindPkcs11Error(f"token label '{label}' is longer than 32 bytes")
    so = so_pin.encode()
    user = user_pin.encode()
    with _Module(module_path) as module:
        module.call("C_InitToken", f"initialising token '{label}'", _ulong(slot_id), so,
                    _ulong(len(so)), padded)
        handle = module.session(slot_id)
        try:
            module.login_so(handle, so_pin, label)
            module.call("C_InitPIN", f"setting the user PIN of token '{label}'", handle, user,
                        _ulong(len(user)))
            module.lib.C_Logout(handle)
        finally:
            module.lib.C_CloseSession(handle)


def verify_so_pin(module_path: str, slot_id: int, label: str, so_pin: str) -> None:
    """Prove the SO PIN with exactly one C_Login(SO) on `slot_id` (before a destructive step)."""
    with _Module(module_path) as module:
        handle = module.session(slot_id)
        try:
            module.login_so(handle, so_pin, label)
            module.lib.C_Logout(handle)
        finally:
            module.lib.C_CloseSession(handle)


def set_so_pin(module_path: str, slot_id: int, label: str, old_pin: str, new_pin: str) -> None:
    """One C_Login(SO) with `old_pin`, then C_SetPIN to `new_pin`: for devices whose fresh tokens
    come with a known factory SO PIN that C_InitToken keeps (opencryptoki)."""
    old = old_pin.encode()
    new = new_pin.encode()
    with _Module(module_path) as module:
        handle = module.session(slot_id)
        try:
            module.login_so(handle, old_pin, label)
            module.call("C_SetPIN", f"setting the SO PIN of token '{label}'", handle, old,
                        _ulong(len(old)), new, _ulong(len(new)))
            module.lib.C_Logout(handle)
        finally:
            module.lib.C_CloseSession(handle)


def reset_user_pin(module_path: str, slot_id: int, label: str, so_pin: str, user_pin: str) -> None:
    """One C_Login(SO), then C_InitPIN: the user PIN replaced (and unlocked) without C_InitToken."""
    user = user_pin.encode()
    with _Module(module_path) as module:
        handle = module.session(slot_id)
        try:
            module.login_so(handle, so_pin, label)
            module.call("C_InitPIN", f"setting the user PIN of token '{label}'", handle, user,
                        _ulong(len(user)))
            module.lib.C_Logout(handle)
        finally:
            module.lib.C_CloseSession(handle)


class _Attribute(ctypes.Structure):
    _fields_ = [("type", _ulong), ("pValue", ctypes.c_void_p), ("ulValueLen", _ulong)]


def create_object_as_so(module_path: str, slot_id: int, label: str, so_pin: str,
                        template: list[tuple[int, bytes]]) -> None:
    """C_CreateObject in a session logged in as SO, each attribute value in its own malloc'd
    buffer that is never freed here.

    Why not python-pkcs11: OpenSC 0.23's OpenPGP driver keeps pointers to the template's values
    and free()s the public exponent's buffer when it pads it to 32 bits (card-openpgp.c,
    pgp_build_extended_header_list), which aborts the process when the buffer belongs to Python.
    The few hundred bytes left allocated go with this short-lived process.
    """
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    attributes = (_Attribute * len(template))()
    for index, (kind, value) in enumerate(template):
        pointer = libc.malloc(max(len(value), 1))
        ctypes.memmove(pointer, value, len(value))
        attributes[index] = _Attribute(_ulong(kind), pointer, _ulong(len(value)))
    with _Module(module_path) as module:
        handle = module.session(slot_id)
        try:
            module.login_so(handle, so_pin, label)
            created = _ulong(0)
            module.call("C_CreateObject", f"storing the key on token '{label}'", handle,
                        attributes, _ulong(len(template)), ctypes.byref(created))
            module.lib.C_Logout(handle)  # OpenSC's openpgp driver may fail it; the key is stored
        finally:
            module.lib.C_CloseSession(handle)
