"""BIND 9.20 + pkcs11-provider from Debian 12's bookworm-backports: a private copy or a system install.

`extract` downloads the packages with a private APT_CONFIG (its only source is the backports twin
of the machine's own Debian mirror, state kept in the target directory) and unpacks them with
`dpkg -x`: nothing is installed, /etc/apt and /usr stay as they are. Tests and benchmarks use this
copy; an operator who wants the distribution's security updates installs the packages instead
(`install`, asked first, the exact apt lines below).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bindpkcs11 import locks
from bindpkcs11.bind import source, stock
from bindpkcs11.bind.programs import Route
from bindpkcs11.errors import ToolFailed, UsageError
from bindpkcs11.fileio import write_atomic
from bindpkcs11.run import run_tool
from bindpkcs11.state import StateDir

CODENAME = "bookworm"
SUITE = f"{CODENAME}-backports"
PACKAGES = ("bind9", "bind9-libs", "bind9-utils", "bind9-dnsutils", "pkcs11-provider")
MANIFEST = "manifest.json"
APT_TIMEOUT = 900
SOURCES_FILE = Path("/etc/apt/sources.list.d/bookworm-backports.sources")
# What `install` does, shown before it asks and in docs/bind920.md.
INSTALL_LINES = (
    f"printf 'Types: deb\\nURIs: http://deb.debian.org/debian\\nSuites: {SUITE}\\n"
    f"Components: main\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' > {SOURCES_FILE}",
    "apt-get update",
    f"apt-get install -t {SUITE} {' '.join(p for p in PACKAGES if p != 'bind9-libs')}",
)

Progress = Callable[[str], None]


class NotBookworm(UsageError):
    """bookworm-backports is for Debian 12: elsewhere install your distribution's bind9 (>= 9.20) and pkcs11-provider."""


@dataclass(frozen=True)
class Extracted:
    """A private unpacked copy: package versions and the SHA-256 of each .deb it came from."""

    prefix: Path
    packages: dict[str, str]
    sha256: dict[str, str]
    changed: bool


def mirror_stanza(etc_apt: Path = Path("/etc/apt")) -> str:
    """A deb822 stanza for bookworm-backports on the mirror (and key) the machine already uses."""
    for uri, suites, components, signed_by in source._debian_entries(etc_apt):
        if CODENAME in suites:
            lines = ["Types: deb", f"URIs: {uri}", f"Suites: {SUITE}", "Components: main"]
            if signed_by:
                lines.append(f"Signed-By: {signed_by}")
            return "\n".join(lines)
    raise NotBookworm(NotBookworm.__doc__)


def _private_apt(apt_dir: Path, stanza: str) -> dict[str, str]:
    """An APT_CONFIG whose only source is `stanza`, lists and cache inside `apt_dir`."""
    config = source.private_apt_config(apt_dir, [stanza], "bindpkcs11-backports")
    return {"APT_CONFIG": str(config), "LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def installed_manifest(target: Path) -> dict | None:
    """The manifest of a complete private copy (its named runs and has the provider), or None."""
    try:
        data = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if stock.usable(target / "tree" / "usr", "private") else None


def extract(state: StateDir, progress: Progress, refresh: bool = False) -> Extracted:
    """Download and unpack the backports packages into the state's private directory
    (stock.private_dir) once; `refresh` fetches the newest again."""
    return extract_to(stock.private_dir(state), progress, refresh)


def extract_to(target: Path, progress: Progress, refresh: bool = False) -> Extracted:
    """The same into any directory (bench/ uses its work dir): `<target>/tree/usr` is the prefix.
    One extraction at a time per directory."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with locks.held(target.parent / f".{target.name}.lock", f"the BIND 9.20 copy in {target}",
                    wait=APT_TIMEOUT):
        found = installed_manifest(target)
        if found and not refresh:
            progress(f"BIND {found['packages']['bind9']} (bookworm-backports) already unpacked in "
                     f"{target}; nothing to do")
            return Extracted(target / "tree" / "usr", found["packages"], found["sha256"], False)
        return _extract(target, progress)


def _extract(target: Path, progress: Progress) -> Extracted:
    stanza = mirror_stanza()
    env = _private_apt(target / "apt", stanza)
    progress(f"apt-get update ({SUITE} only, private lists in {target / 'apt'}) ...")
    run_tool(["apt-get", "update", "-qq"], env=env, what=f"apt-get update ({SUITE})",
             timeout=APT_TIMEOUT)
    debs = target / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    progress(f"downloading {', '.join(PACKAGES)} ...")
    wanted = [f"{name}/{SUITE}" for name in PACKAGES]
    run_tool(["apt-get", "download", "-qq", *wanted], env=env, cwd=debs,
             what="apt-get download", timeout=APT_TIMEOUT)  # apt checks each .deb's hash
    staging = target / "tree.new"
    shutil.rmtree(staging, ignore_errors=True)
    packages, digests = {}, {}
    for deb in sorted(debs.glob("*.deb")):
        name, version = _deb_field(deb, "Package"), _deb_field(deb, "Version")
        packages[name], digests[deb.name] = version, _sha256(deb)
        run_tool(["dpkg-deb", "-x", str(deb), str(staging)], what=f"dpkg-deb -x {deb.name}")
    if set(packages) != set(PACKAGES):
        raise ToolFailed(f"apt-get download gave {sorted(packages)}, not {sorted(PACKAGES)}")
    old = target / "tree"
    shutil.rmtree(old, ignore_errors=True)
    staging.rename(old)
    write_atomic(target / MANIFEST, json.dumps({"suite": SUITE, "packages": packages,
                                                 "sha256": digests}, indent=2) + "\n")
    shutil.rmtree(debs, ignore_errors=True)
    prefix = old / "usr"
    if stock.usable(prefix, "private") is None:
        raise ToolFailed(f"the unpacked BIND in {prefix} does not run: a library it needs is "
                         "missing (install Debian's bind9 once, or its libraries: liburcu8, "
                         "libuv1, libjemalloc2, libnghttp2-14, libfstrm0)")
    progress(f"unpacked BIND {packages['bind9']} and pkcs11-provider {packages['pkcs11-provider']}"
             f" into {old} (nothing installed)")
    return Extracted(prefix, packages, digests, True)


def _deb_field(deb: Path, name: str) -> str:
    return run_tool(["dpkg-deb", "-f", str(deb), name], what="dpkg-deb -f").stdout.strip()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install_plan() -> list[str]:
    """The commands `install` runs as root, in order (after asking)."""
    mirror_stanza()  # NotBookworm elsewhere, before anything is shown or asked
    return list(INSTALL_LINES)


def install(progress: Progress) -> Route:
    """Add bookworm-backports to /etc/apt and install the packages (the operator said yes)."""
    stanza = ("Types: deb\nURIs: http://deb.debian.org/debian\nSuites: " + SUITE +
              "\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    if not SOURCES_FILE.exists():
        write_atomic(SOURCES_FILE, stanza, mode=0o644)
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for command in (["apt-get", "update"],
                    ["apt-get", "install", "-y", "-t", SUITE,
                     *[p for p in PACKAGES if p != "bind9-libs"]]):
        progress(" ".join(command))
        result = subprocess.run(command, env=env)
        if result.returncode != 0:
            raise ToolFailed(f"{' '.join(command)} failed (exit {result.returncode})")
    route = stock.usable(Path("/usr"), "system")
    if route is None:
        raise ToolFailed("the packages are installed but /usr/sbin/named is not a BIND >= 9.20 "
                         "with pkcs11-provider: check 'named -v' and dpkg -l pkcs11-provider")
    return route

