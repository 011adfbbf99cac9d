"""Getting BIND source (9.18 or 9.20): Debian's orig tarball through apt (checksum verified), or a
given tarball.

apt is driven with a private APT_CONFIG whose only sources are `deb-src` twins of the machine's own
Debian entries (for Debian 12's suites, also on Debian 13; for 9.20 also bookworm-backports),
so /etc/apt is never changed and whatever mirror the machine uses is used. The newest source
version of the wanted series is asked for by number, so a backports 9.20 never stands in for 9.18.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from bindpkcs11.errors import ToolFailed, UsageError
from bindpkcs11.fileio import write_atomic
from bindpkcs11.run import run_tool

SOURCE_PACKAGE = "bind9"
SOURCE_RELEASE = "bookworm"  # Debian 12: its bind9 is BIND 9.18, its backports' is 9.20
SERIES = ("9.18", "9.20")
_URI_LINE = re.compile(r"^'(?P<uri>[^']+)' (?P<name>\S+) (?P<size>\d+) SHA256:(?P<sha>[0-9a-f]{64})$")


@dataclass(frozen=True)
class SourceTarball:
    """A BIND source tarball with its version and SHA-256."""

    path: Path
    version: str
    sha256: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def given_tarball(path: Path, series: str) -> SourceTarball:
    """An operator-supplied ISC tarball: must exist and be BIND `series`.x."""
    if not path.is_file():
        raise UsageError(f"source tarball {path} does not exist")
    return SourceTarball(path, tarball_version(path, series), sha256_file(path))


def tarball_version(path: Path, series: str) -> str:
    """The BIND version in a tarball's top directory (`bind-9.18.49/`); `series`.x only."""
    try:
        with tarfile.open(path) as archive:
            first = archive.next()
    except (tarfile.TarError, OSError) as error:
        raise UsageError(f"{path} is not a readable tarball: {error}") from None
    top = first.name.split("/", 1)[0] if first else ""
    match = re.fullmatch(r"bind-?(\d+\.\d+\.\d+)", top) or re.fullmatch(r"bind9-?(\d+\.\d+\.\d+)", top)
    if not match or not match.group(1).startswith(series + "."):
        raise UsageError(
            f"{path} holds '{top}', not BIND {series}.x: give a BIND {series} tarball or another --version"
        )
    return match.group(1)


def debian_orig_tarball(cache_dir: Path, series: str) -> SourceTarball:
    """The newest bind9 `series` orig tarball Debian offers (release or backports) via
    `apt-get source --tar-only`, verified against apt's SHA-256."""
    apt_dir = cache_dir / "apt"
    apt_env = _private_apt(apt_dir, backports=series != "9.18")
    run_tool(["apt-get", "update", "-qq"], env=apt_env, what="apt-get update (deb-src)", timeout=600)
    versions = run_tool(["apt-cache", "showsrc", "--only-source", SOURCE_PACKAGE], env=apt_env,
                        what="apt-cache showsrc").stdout
    version = newest_version(versions, series)
    if version is None:
        raise ToolFailed(f"Debian's sources (with backports) offer no bind9 {series}.x")
    wanted = f"{SOURCE_PACKAGE}={version}"
    listing = run_tool(["apt-get", "source", "--print-uris", "--tar-only", wanted],
                       env=apt_env, cwd=cache_dir, what="apt-get source --print-uris").stdout
    entries = [m for m in map(_URI_LINE.match, listing.splitlines()) if m]
    origs = [m for m in entries if m.group("name").endswith((".orig.tar.xz", ".orig.tar.gz"))]
    target = origs[0] if origs else None
    existing = [p for p in cache_dir.glob(f"{SOURCE_PACKAGE}_{series}.*.orig.tar.*")
                if not p.name.endswith((".asc", ".sha256"))]
    if target is None and not existing:
        raise ToolFailed(f"apt offers no {SOURCE_PACKAGE} orig tarball: {listing.strip()[-300:]}")
    if target is not None:
        run_tool(["apt-get", "source", "--download-only", "--tar-only", wanted],
                 env=apt_env, cwd=cache_dir, what="apt-get source --download-only", timeout=900)
        path = cache_dir / target.group("name")
        expected = target.group("sha")
    else:
        path = existing[0]
        expected = (cache_dir / f"{path.name}.sha256").read_text().strip()
    actual = sha256_file(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise ToolFailed(f"{path.name}: SHA-256 {actual} does not match apt's {expected}; removed it")
    write_atomic(cache_dir / f"{path.name}.sha256", expected + "\n")
    return SourceTarball(path, tarball_version(path, series), actual)


def newest_version(showsrc: str, series: str) -> str | None:
    """The highest `Version:` of `apt-cache showsrc` output in `series` (epoch and revision kept)."""
    found = []
    for line in showsrc.splitlines():
        if line.startswith("Version:"):
            version = line.split(":", 1)[1].strip()
            upstream = version.split(":", 1)[-1]
            if upstream.startswith(series + "."):
                found.append(version)
    return max(found, key=_version_key, default=None)


def _version_key(version: str) -> tuple:
    """Orders Debian versions of one upstream series well enough: numbers compare as numbers, and
    a `~` sorts before everything (1~deb12u1 < 1~deb12u3 < 1)."""
    parts = re.findall(r"\d+|~|[^\d~]+", version.split(":", 1)[-1])
    return tuple((0, int(p)) if p.isdigit() else (-1, p) if p == "~" else (1, p) for p in parts)


def _private_apt(apt_dir: Path, backports: bool = False) -> dict[str, str]:
    """An APT_CONFIG using deb-src twins of the machine's Debian sources, state kept in `apt_dir`."""
    stanzas = debian_source_stanzas(backports=backports)
    if not stanzas:
        raise ToolFailed("no Debian entries in /etc/apt to derive deb-src sources from")
    config = private_apt_config(apt_dir, stanzas, "bindpkcs11-src")
    return {**os.environ, "APT_CONFIG": str(config), "LC_ALL": "C"}


def private_apt_config(apt_dir: Path, stanzas: list[str], name: str) -> Path:
    """An apt.conf whose only sources are `stanzas` (deb822), with its lists and cache inside
    `apt_dir`: apt works for bindpkcs11 without a change to /etc/apt or the machine's lists."""
    parts = apt_dir / "sources.list.d"
    for sub in (parts, apt_dir / "lists" / "partial", apt_dir / "cache" / "archives" / "partial"):
        sub.mkdir(parents=True, exist_ok=True)
    write_atomic(parts / f"{name}.sources", "\n\n".join(stanzas) + "\n")
    write_atomic(apt_dir / "sources.list", "")
    config = apt_dir / "apt.conf"
    write_atomic(config, "\n".join([
        f'Dir::Etc::SourceList "{apt_dir / "sources.list"}";',
        f'Dir::Etc::SourceParts "{parts}";',
        f'Dir::State::Lists "{apt_dir / "lists"}";',
        f'Dir::Cache "{apt_dir / "cache"}";',
        'APT::Sandbox::User "root";',
        "",
    ]))
    return config


def debian_source_stanzas(etc_apt: Path = Path("/etc/apt"), codename: str | None = None,
                          backports: bool = False) -> list[str]:
    """deb822 `deb-src` stanzas on the machine's Debian mirrors (third-party repos skipped) for
    SOURCE_RELEASE, whose bind9 is 9.18: on Debian 13 the twin of `trixie-security` is
    `bookworm-security` (trixie's own bind9 is 9.20, which the 9.18 patch is not for).
    `backports` adds `bookworm-backports` beside `bookworm` (its bind9 is the 9.20 to patch)."""
    codename = codename or _codename()
    stanzas = []
    for uri, suites, components, signed_by in _debian_entries(etc_apt):
        wanted = [SOURCE_RELEASE + s[len(codename):] for s in suites
                  if s == codename or s.startswith(codename + "-")]
        if not wanted:
            continue
        if backports and SOURCE_RELEASE in wanted:
            wanted.append(f"{SOURCE_RELEASE}-backports")
        lines = ["Types: deb-src", f"URIs: {uri}", f"Suites: {' '.join(wanted)}",
                 f"Components: {' '.join(components)}"]
        if signed_by:
            lines.append(f"Signed-By: {signed_by}")
        stanzas.append("\n".join(lines))
    return stanzas


def _debian_entries(etc_apt: Path):
    """(uri, suites, components, signed_by) for each `deb` entry, from one-line and deb822 files."""
    one_line = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] == "deb":
                options = [w for w in words[1:] if w.startswith("[")]
                rest = [w for w in words[1:] if not w.startswith("[") and not w.endswith("]")]
                signed = next((o.split("=", 1)[1].rstrip("]") for o in options if "signed-by" in o), "")
                yield rest[0], [rest[1]], rest[2:], signed
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = _deb822_fields(stanza)
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split(), fields.get("components", "").split(), \
                    fields.get("signed-by", "")


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip() or line[0].isspace():
            continue
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


def _codename() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "bookworm"
