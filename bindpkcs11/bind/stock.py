"""The stock route: an unmodified BIND >= 9.20 signing through OpenSSL's pkcs11-provider.

Nothing is built. BIND 9.20 opens a key whose `.private` holds `Label: pkcs11:...` through
OpenSSL's store API, and the provider named in an OpenSSL config passes it to the token's
PKCS#11 module. Three traps, each handled here and only here (../shared/facts.md):

- OPENSSL_CONF naming the provider goes to BIND's processes only, never into the operator's
  shell environment: `bind env` prints it for a shell that runs BIND tools and nothing else.
- Every BIND 9.20 program needs `LD_PRELOAD=<the token's module>`: Debian's BIND links jemalloc,
  and the provider loads the module with RTLD_DEEPBIND, so memory allocated on one side and freed
  on the other aborts (`free(): invalid pointer`) unless the module is loaded first.
- The PIN reaches the provider as `pkcs11-module-token-pin = file:<0600 file>`, never inside a
  URI: BIND copies the key-store's URI, PIN and all, into every `.private` it writes.

Where a stock BIND is looked for, first found wins: $BINDPKCS11_STOCK_PREFIX (a `usr` directory
holding sbin/named), the private unpacked backports tree (`bind extract-backports`), /usr.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bindpkcs11 import resources
from bindpkcs11.bind.programs import STOCK, SYSTEM_PREFIX, Route, named_version, tool_env, version_tuple
from bindpkcs11.errors import UsageError
from bindpkcs11.fileio import write_atomic
from bindpkcs11.output import printable
from bindpkcs11.state import StateDir

MIN_VERSION = (9, 20)
PROVIDER_GLOB = "lib/*/ossl-modules/pkcs11.so"
TEMPLATE = "openssl-provider.cnf.j2"
# OpenSSL's config syntax expands `$name` and ends a value at `#`; paths are written unquoted.
_UNSAFE_IN_OPENSSL_CONF = frozenset("$#\"'\\") | frozenset(map(chr, range(0x21))) | {"\x7f"}


class StockBindMissing(UsageError):
    """No BIND >= 9.20 with pkcs11-provider found: on Debian 12 run 'bindpkcs11 bind install-backports' (system) or 'bindpkcs11 bind extract-backports' (private copy); on Debian 13 'apt-get install bind9 bind9-utils pkcs11-provider'."""


class UnsafeOpensslValue(UsageError):
    """A path cannot be written into an OpenSSL config."""


def private_dir(state: StateDir) -> Path:
    """Where `bind extract-backports` unpacks; $BINDPKCS11_STOCK_DIR shares one copy (tests)."""
    shared = os.environ.get("BINDPKCS11_STOCK_DIR")
    return Path(shared).resolve() if shared else state.root / "bind-stock"


def private_prefix(state: StateDir) -> Path:
    return private_dir(state) / "tree" / "usr"


def candidates(state: StateDir) -> list[tuple[Path, str]]:
    """(prefix, origin) in the order they are tried."""
    found = []
    configured = os.environ.get("BINDPKCS11_STOCK_PREFIX")
    if configured:
        found.append((Path(configured), "configured"))
    found.append((private_prefix(state), "private"))
    found.append((SYSTEM_PREFIX, "system"))
    return found


def origin_of(state: StateDir, prefix: Path) -> str:
    """Which candidate `prefix` is (`configured` when none)."""
    return next((origin for path, origin in candidates(state) if Path(path) == Path(prefix)),
                "configured")


def provider_module(prefix: Path) -> Path | None:
    """pkcs11-provider's OpenSSL module in `prefix` (Debian: lib/<multiarch>/ossl-modules)."""
    found = sorted(Path(prefix).glob(PROVIDER_GLOB))
    return found[0] if found else None


def usable(prefix: Path, origin: str) -> Route | None:
    """A Route when `prefix` has a named >= 9.20 that runs and pkcs11-provider beside it."""
    provider = provider_module(prefix)
    if provider is None:
        return None
    version = named_version(prefix)
    if version is None or version_tuple(version)[:2] < MIN_VERSION:
        return None
    return Route(STOCK, Path(prefix), version, origin, provider)


def find(state: StateDir) -> Route | None:
    """The first usable stock BIND, or None."""
    for prefix, origin in candidates(state):
        route = usable(prefix, origin)
        if route is not None:
            return route
    return None


def require(state: StateDir) -> Route:
    """The stock BIND, or one line saying what to install."""
    route = find(state)
    if route is None:
        system = named_version(SYSTEM_PREFIX)
        seen = f" (/usr/sbin/named is BIND {system})" if system else ""
        raise StockBindMissing(StockBindMissing.__doc__.replace(" found:", f" found{seen}:", 1))
    return route


@dataclass(frozen=True)
class ProviderConfig:
    """What the OpenSSL config for BIND's processes names: the provider, the token's module, and
    the 0600 file holding the token's user PIN."""

    provider: Path
    token_module: Path
    pin_file: Path


def render_provider_config(config: ProviderConfig) -> str:
    """The OpenSSL config text (templates/openssl-provider.cnf.j2); unsafe paths are refused."""
    env = resources.template_environment(_openssl_value)
    return env.get_template(TEMPLATE).render(provider=config.provider,
                                             token_module=config.token_module,
                                             pin_file=config.pin_file)


def write_provider_config(path: Path, config: ProviderConfig) -> Path:
    write_atomic(path, render_provider_config(config), mode=0o600)
    return path


def _openssl_value(value: object) -> object:
    if isinstance(value, (str, Path)):
        text = str(value)
        bad = sorted(set(text) & _UNSAFE_IN_OPENSSL_CONF)
        if bad:
            raise UnsafeOpensslValue(
                f"'{printable(text)}' cannot be written into an OpenSSL config (it contains "
                f"{', '.join(repr(c) for c in bad)}): use a path without blanks, quotes, '$' or '#'")
    return value


def extra_env(route: Route, token_module: Path, openssl_conf: Path) -> dict[str, str]:
    """What a stock BIND program needs on top of the library path: the provider's config and the
    token module preloaded (the jemalloc/RTLD_DEEPBIND trap above)."""
    return {"OPENSSL_CONF": str(openssl_conf), "LD_PRELOAD": str(token_module)}


def program_env(route: Route, token_module: Path, openssl_conf: Path,
                module_env: dict[str, str]) -> dict[str, str]:
    """The full environment for one stock BIND program (dnssec-*) using the token: ours without
    secrets, the library path, the token module's own variables (SOFTHSM2_CONF), the provider."""
    return tool_env(route.prefix) | module_env | extra_env(route, token_module, openssl_conf)
