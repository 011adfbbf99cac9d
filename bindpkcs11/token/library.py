"""Loading a PKCS#11 module, finding a token, logging in once. Every PKCS#11 error is mapped here.

python-pkcs11 keeps one module instance per process, and a token logs in per application, so a
session is opened once per command and handed to the functions in keys.py / objects.py.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import pkcs11
import pkcs11.exceptions as p11x
from pkcs11 import TokenFlag

from bindpkcs11.errors import (
    BindPkcs11Error,
    ModuleMissing,
    PinIncorrect,
    TokenNotFound,
)
from bindpkcs11.token.records import TokenFlags, TokenInfo

PinSource = Callable[[], str]


def load_module(module_path: str) -> "pkcs11.lib":
    """The python-pkcs11 library object for `module_path`, or ModuleMissing with what to install."""
    if not Path(module_path).exists():
        raise ModuleMissing(
            f"PKCS#11 module {module_path} not found: install it (e.g. apt-get install softhsm2) "
            "or pass --module PATH"
        )
    try:
        return pkcs11.lib(module_path)
    except (p11x.PKCS11Error, RuntimeError, OSError) as error:
        raise ModuleMissing(f"cannot load PKCS#11 module {module_path}: {error!r}") from error


def refresh(module_path: str) -> None:
    """Re-initialise the module so it sees tokens created by another process (softhsm2-util).

    SoftHSM scans its token directory only in C_Initialize.
    """
    lib = load_module(module_path)
    try:
        lib.reinitialize()
    except p11x.PKCS11Error as error:
        raise translate(error, "re-initialising the PKCS#11 module") from error


def list_tokens(module_path: str) -> list[TokenInfo]:
    """Every slot that holds a token, in slot order."""
    return [_token_info(token.slot, token) for token in _present_tokens(load_module(module_path))]


def _present_tokens(lib: "pkcs11.lib") -> list["pkcs11.Token"]:
    """The token of every slot that holds one, in slot order; a token whose information cannot
    be read fails the listing."""
    tokens, unreadable = _readable_tokens(lib)
    if unreadable is not None:
        raise unreadable
    return tokens


# SoftHSM 2.6.1 rewrites token.object at every login of any process (truncate, unlock, write at
# fclose; bindpkcs11/shim/bp11.c). A process whose C_Initialize waited on that rewrite reads the
# file empty and lists the token without its label (or fails its C_GetTokenInfo) until its next
# C_Initialize: two processes logging in together in a loop missed the token in 2 of 3 attempts.
# So a SoftHSM token that is not found is looked for again after re-initialising, with the
# shim's settling pauses (there, why 0.95 s: under CPU load about half of these
# re-initialisations tear again), unless this process holds a session of the module
# (re-initialising would close it). A token that is really absent costs 0.95 s more; other
# modules are not re-initialised.
SETTLE_PAUSES = (0.01, 0.02, 0.04, 0.08, 0.16, 0.16, 0.16, 0.16, 0.16)
_sessions_open: dict[str, int] = {}  # module path -> sessions open_session holds in this process


def find_token(module_path: str, label: str) -> "pkcs11.Token":
    """The one token called `label`, or TokenNotFound naming the labels that do exist."""
    lib = load_module(module_path)
    pauses = iter(SETTLE_PAUSES if _may_settle(lib, module_path) else ())
    while True:
        matches, unreadable = _readable_tokens(lib)
        if any(token.label == label for token in matches) or (pause := next(pauses, None)) is None:
            break
        time.sleep(pause)
        try:
            lib.reinitialize()
        except p11x.PKCS11Error:
            break  # the module itself fails now: report what was found before
    found = [token for token in matches if token.label == label]
    if not found and unreadable is not None:
        raise translate(unreadable, f"reading the tokens of {module_path}")
    if not found:
        known = ", ".join(sorted(repr(token.label) for token in matches)) or "none"
        raise TokenNotFound(
            f"token '{label}' not found in {module_path} (tokens present: {known}); "
            "create it with 'bindpkcs11 token init --label LABEL'"
        )
    if len(found) > 1:
        raise TokenNotFound(f"{len(found)} tokens are labelled '{label}': relabel or remove one")
    return found[0]


def _readable_tokens(lib: "pkcs11.lib") -> tuple[list["pkcs11.Token"], Exception | None]:
    """The tokens whose information can be read, and the error of one that cannot (SoftHSM's
    C_GetTokenInfo of a token.object read torn): one unreadable token hides no other."""
    tokens, unreadable = [], None
    for slot in lib.get_slots(token_present=True):
        try:
            tokens.append(slot.get_token())
        except p11x.GeneralError as error:
            unreadable = error
    return tokens, unreadable


def _may_settle(lib: "pkcs11.lib", module_path: str) -> bool:
    """SoftHSM, and no session of it open here (see SETTLE_PAUSES)."""
    return lib.manufacturer_id.startswith("SoftHSM") and not _sessions_open.get(module_path)


def token_info(module_path: str, label: str) -> TokenInfo:
    token = find_token(module_path, label)
    return _token_info(token.slot, token)


@contextlib.contextmanager
def open_session(
    module_path: str, label: str, pin: PinSource | None = None, rw: bool = False,
    locked_hint: str = "unlock it with the SO PIN", so: bool = False,
) -> Iterator["pkcs11.Session"]:
    """A session on token `label`, logged in as user (as SO when `so`) when `pin` is given.

    The PIN is asked for only after the token was found (no prompt for a typo'd label) and C_Login
    is attempted exactly once: a wrong PIN raises PinIncorrect carrying the token's PIN flags, and
    nothing retries it, because smart cards lock after a few failures.
    """
    token = find_token(module_path, label)
    secret = pin() if pin else None
    try:
        session = _open_settling(module_path, label, token, rw, so, secret)
    except (p11x.PinIncorrect, p11x.PinLenRange, p11x.PinInvalid):
        if so:
            raise PinIncorrect(f"wrong SO PIN for token '{label}' (tried once, not retried)") from None
        raise PinIncorrect(_wrong_pin_message(module_path, label)) from None
    except p11x.PinLocked:
        raise PinIncorrect(
            f"the {'SO' if so else 'user'} PIN of token '{label}' is locked: {locked_hint}"
        ) from None
    except p11x.UserAlreadyLoggedIn:
        session = token.open(rw=rw)
    except p11x.PKCS11Error as error:
        raise translate(error, f"opening a session on token '{label}'") from error
    _sessions_open[module_path] = _sessions_open.get(module_path, 0) + 1
    try:
        yield session
    finally:
        _sessions_open[module_path] -= 1
        with contextlib.suppress(p11x.PKCS11Error):
            session.close()


def _open_settling(module_path: str, label: str, token: "pkcs11.Token", rw: bool, so: bool,
                   secret: str | None) -> "pkcs11.Session":
    """token.open (C_OpenSession + C_Login). On SoftHSM a login that met another process's
    rewrite of token.object fails before the PIN is checked (Token::loginUser: the token flags
    or the user PIN blob read torn give CKR_GENERAL_ERROR / CKR_USER_PIN_NOT_INITIALIZED; a
    checked PIN gives only CKR_PIN_INCORRECT), so it is tried again after re-initialising, with
    the settling pauses: no PIN attempt is repeated. Two processes logging in together 300 times
    each failed about 1 % of logins this way; none now (test_rel_token_concurrent_logins)."""
    pauses = iter(SETTLE_PAUSES if _may_settle(load_module(module_path), module_path) else ())
    while True:
        try:
            return token.open(rw=rw, so_pin=secret) if so else token.open(rw=rw, user_pin=secret)
        except (p11x.GeneralError, p11x.UserPinNotInitialized):
            pause = next(pauses, None)
            if pause is None:
                raise
            time.sleep(pause)
            load_module(module_path).reinitialize()
            token = find_token(module_path, label)


def translate(error: Exception, doing: str) -> BindPkcs11Error:
    """One line for a PKCS#11 failure: what we were doing and the CKR name."""
    name = type(error).__name__
    if isinstance(error, p11x.TokenNotPresent | p11x.DeviceRemoved):
        return TokenNotFound(f"{doing}: the token was removed ({name}); reinsert it and try again")
    if isinstance(error, p11x.UserNotLoggedIn):
        return PinIncorrect(f"{doing}: the token requires a login ({name})")
    return BindPkcs11Error(f"{doing} failed: {name} {error}".rstrip())


def _wrong_pin_message(module_path: str, label: str) -> str:
    flags = token_info(module_path, label).flags
    notes = flags.warnings()
    state = f" (token reports: {', '.join(notes)})" if notes else ""
    return (
        f"wrong user PIN for token '{label}'{state}; login was attempted once and will not be "
        "retried: check --pin-file / PKCS11_LIBRARY_PIN"
    )


def _token_info(slot: "pkcs11.Slot", token: "pkcs11.Token") -> TokenInfo:
    flags = token.flags
    return TokenInfo(
        slot_id=slot.slot_id,
        slot_description=slot.slot_description.strip(),
        label=token.label,
        manufacturer=token.manufacturer_id.strip(),
        model=token.model.strip(),
        serial=token.serial.decode(errors="replace").strip()
        if isinstance(token.serial, bytes)
        else str(token.serial).strip(),
        flags=TokenFlags(
            initialized=bool(flags & TokenFlag.TOKEN_INITIALIZED),
            user_pin_initialized=bool(flags & TokenFlag.USER_PIN_INITIALIZED),
            user_pin_count_low=bool(flags & TokenFlag.USER_PIN_COUNT_LOW),
            user_pin_final_try=bool(flags & TokenFlag.USER_PIN_FINAL_TRY),
            user_pin_locked=bool(flags & TokenFlag.USER_PIN_LOCKED),
            so_pin_locked=bool(flags & TokenFlag.SO_PIN_LOCKED),
            login_required=bool(flags & TokenFlag.LOGIN_REQUIRED),
            has_rng=bool(flags & TokenFlag.RNG),
        ),
    )


def module_env_ready(variable: str, value: str) -> None:
    """Set an environment variable a module reads at C_Initialize (e.g. SOFTHSM2_CONF).

    Must happen before the module is first loaded in this process; a later change would be
    silently ignored by the module, so refuse it loudly instead.
    """
    current = os.environ.get(variable)
    if current == value:
        return
    if _loaded_modules():
        raise BindPkcs11Error(
            f"{variable} changed after the PKCS#11 module was loaded; run one command per token"
        )
    os.environ[variable] = value


def _loaded_modules() -> bool:
    return bool(getattr(pkcs11, "_loaded", None))
