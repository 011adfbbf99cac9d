"""Which BIND bindpkcs11 runs (the route) and how to run a program from its install prefix.

Both routes lay their programs out the same way: `<prefix>/sbin/named`, `<prefix>/sbin/rndc`,
`<prefix>/bin/dnssec-*`, `<prefix>/bin/named-check*`. The patched build finds its libraries
through its rpath; a Debian tree unpacked with `dpkg -x` (the stock route's private copy) keeps
them in `<prefix>/lib/<multiarch>/`, which only LD_LIBRARY_PATH reaches. So every BIND program
is started with `tool_env(prefix)`.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from bindpkcs11.run import child_env

PATCHED, STOCK = "patched", "stock"
ROUTES = (STOCK, PATCHED)
SYSTEM_PREFIX = Path("/usr")
_VERSION = re.compile(r"^BIND (?P<version>\d+\.\d+\.\d+)(?P<rest>\S*)")


@dataclass(frozen=True)
class Route:
    """One usable BIND: the route, where its programs are and its version.

    `provider` is pkcs11-provider's OpenSSL module (stock route only); `origin` says where this
    BIND came from: `built` (bind build), `private` (backports unpacked by bind extract-backports),
    `system` (/usr) or `configured` ($BINDPKCS11_STOCK_PREFIX).
    """

    name: str
    prefix: Path
    version: str
    origin: str
    provider: Path | None = None


def lib_dirs(prefix: Path) -> list[Path]:
    """Where a prefix keeps BIND's shared libraries (none to add for the system's own /usr)."""
    if Path(prefix) == SYSTEM_PREFIX:
        return []
    dirs = [Path(prefix) / "lib"]
    dirs += sorted(p for p in (Path(prefix) / "lib").glob("*-linux-gnu*") if p.is_dir())
    return dirs


def tool_env(prefix: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: ours, without secrets) plus the library path a program of `prefix` needs."""
    result = child_env(env)
    dirs = [str(d) for d in lib_dirs(prefix)]
    if dirs:
        result["LD_LIBRARY_PATH"] = ":".join(dirs)
    else:
        result.pop("LD_LIBRARY_PATH", None)
    return result


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3])


def named_version(prefix: Path) -> str | None:
    """`named -v` of a prefix as `9.20.23` (Debian's suffix dropped); None when it does not run.

    The check runs with the library path only: it proves the tree's libraries resolve.
    """
    named = Path(prefix) / "sbin" / "named"
    if not named.is_file():
        return None
    try:
        result = subprocess.run([str(named), "-v"], capture_output=True, text=True, timeout=20,
                                env=tool_env(prefix))
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.match(result.stdout.strip())
    return match.group("version") if result.returncode == 0 and match else None
