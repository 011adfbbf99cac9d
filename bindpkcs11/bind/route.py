"""Choosing the BIND an instance runs: stock (>= 9.20 + pkcs11-provider) or patched (bind build).

`--bind stock|patched` decides; without it an instance keeps the route it was set up with, and a
new one gets stock when a usable stock BIND is found (stock.find), else the patched build. On a
Debian 12 machine without backports that is the patched build: its /usr/sbin/named is 9.18,
whose PKCS#11 support is compiled out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from bindpkcs11.bind import build, stock
from bindpkcs11.bind.programs import PATCHED, ROUTES, STOCK, Route
from bindpkcs11.errors import UsageError
from bindpkcs11.state import StateDir

Progress = Callable[[str], None]


def check_name(name: str) -> str:
    if name not in ROUTES:
        raise UsageError(f"--bind must be one of {', '.join(ROUTES)}, not '{name}'")
    return name


def default_name(state: StateDir) -> str:
    return STOCK if stock.find(state) is not None else PATCHED


def prepare(state: StateDir, name: str, progress: Progress,
            version: str = build.DEFAULT_SERIES) -> Route:
    """The route's BIND, ready to run: the stock one found, or the patched one (BIND `version`,
    9.18 or 9.20) built (or found up to date)."""
    if check_name(name) == STOCK:
        return stock.require(state)
    result = build.build(state, progress=progress, series=version)
    return Route(PATCHED, result.prefix, result.manifest.bind_version, "built")


def installed(state: StateDir, name: str, prefix: str | None = None,
              version: str = build.DEFAULT_SERIES) -> Route:
    """The route's BIND for an existing instance, never building: one line when it is gone.
    A stock instance names the prefix it was set up with; that BIND must still be usable.
    A patched one names its BIND series (`bind build --version`)."""
    if check_name(name) == STOCK:
        if prefix is None:
            return stock.require(state)
        found = stock.usable(Path(prefix), stock.origin_of(state, Path(prefix)))
        if found is None:
            raise stock.StockBindMissing(f"the stock BIND this instance was set up with "
                                         f"({prefix}) is gone or no longer runs: "
                                         f"{stock.StockBindMissing.__doc__}")
        return found
    patched = build.prefix_for(state, version)
    manifest = build.installed_manifest(patched)
    if manifest is None:
        raise UsageError(f"no patched BIND in {patched}: run "
                         f"'bindpkcs11 bind build --version {version}'")
    return Route(PATCHED, patched, manifest.bind_version, "built")
