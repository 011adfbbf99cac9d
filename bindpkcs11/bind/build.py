"""`bindpkcs11 bind build`: source -> patch -> configure -> make -> install into `<state>/bind`
(BIND 9.18, the default) or `<state>/bind-9.20`, so both series can be installed side by side.

The install carries a manifest (BIND version, source/patch/shim SHA-256, configure flags); a run
whose inputs match the manifest does nothing, so tests and setup-inline can call it freely.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from bindpkcs11 import locks
from bindpkcs11.bind import patching, source
from bindpkcs11.errors import ToolFailed, UsageError
from bindpkcs11.fileio import write_atomic
from bindpkcs11.run import stream_tool
from bindpkcs11.shim import sharedlib
from bindpkcs11.state import StateDir

DEFAULT_SERIES = "9.18"
SERIES = source.SERIES
# jemalloc stays on (BIND's default, and what Debian's own BIND links): with glibc malloc the
# patched 9.20 spent 7 % more CPU per ECDSA RRSIG and trailed the stock 9.20 + provider by 3.6 %
# on RSA, 1.0 % with it (bench/profile_signing.py, docs/benchmarks.md).
_FLAGS_9_18 = (
    "--disable-doh", "--disable-linux-caps", "--without-gssapi", "--without-lmdb",
    "--without-libxml2", "--without-json-c", "--without-maxminddb", "--disable-geoip",
    "--without-libidn2", "--without-cmocka", "--without-readline",
    "--without-zlib",
)
CONFIGURE_FLAGS = {"9.18": _FLAGS_9_18,
                   "9.20": tuple(f for f in _FLAGS_9_18 if f != "--disable-linux-caps")}
MANIFEST = "manifest.json"
BUILD_LOCK_WAIT = 1800.0
REQUIRED_PROGRAMS = ("sbin/named", "bin/dnssec-signzone", "bin/dnssec-verify", "bin/dnssec-settime",
                     "bin/dnssec-keyfromlabel", "sbin/rndc", "bin/named-checkconf",
                     "bin/named-checkzone", "lib/libbp11.so")
_COMPILE_LINE = re.compile(r"^\s*CC(LD)?\s+(\S+)")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Manifest:
    """What an installed build was made from; equal manifests mean nothing to rebuild."""

    bind_version: str
    source_sha256: str
    patch_sha256: str
    shim_sha256: str
    configure_flags: list[str]


@dataclass(frozen=True)
class BuildResult:
    prefix: Path
    manifest: Manifest
    rebuilt: bool
    seconds: float


def shim_sha256() -> str:
    return source.sha256_file(sharedlib.source()) + source.sha256_file(sharedlib.header())


def installed_manifest(prefix: Path) -> Manifest | None:
    """The manifest of a complete install, or None when missing, partial or unreadable."""
    try:
        data = json.loads((prefix / MANIFEST).read_text())
        manifest = Manifest(**data)
    except (OSError, ValueError, TypeError):
        return None
    if not all((prefix / program).exists() for program in REQUIRED_PROGRAMS):
        return None
    return manifest


def prefix_for(state: StateDir, series: str = DEFAULT_SERIES) -> Path:
    """Where the patched BIND `series` lives: `state.bind_dir` for 9.18 (as always), a sibling
    `<bind_dir>-9.20` for 9.20, so one $BINDPKCS11_BIND_DIR shares both between state dirs."""
    if series not in SERIES:
        raise UsageError(f"BIND {series} is not supported: choose one of {', '.join(SERIES)}")
    base = state.bind_dir
    return base if series == DEFAULT_SERIES else base.with_name(f"{base.name}-{series}")


def build(state: StateDir, tarball: Path | None = None, force: bool = False,
          progress: Progress = lambda line: None, jobs: int | None = None,
          series: str = DEFAULT_SERIES) -> BuildResult:
    """Build and install the patched BIND `series` unless an identical build is already installed.

    One build at a time per prefix (several state dirs may share one through
    $BINDPKCS11_BIND_DIR): a second caller waits for the first and then finds it up to date.
    """
    prefix = prefix_for(state, series)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with locks.held(prefix.parent / f".{prefix.name}.build.lock", f"the BIND build in {prefix}",
                    wait=BUILD_LOCK_WAIT):
        return _build(prefix, series, tarball, force, progress, jobs)


def _build(prefix: Path, series: str, tarball: Path | None, force: bool, progress: Progress,
           jobs: int | None) -> BuildResult:
    started = time.monotonic()
    cache = prefix.parent / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    src = (source.given_tarball(tarball, series) if tarball
           else cached_or_debian_source(cache, progress, series))
    patches = patching.patch_files(series)
    wanted = Manifest(src.version, src.sha256, patching.patches_sha256(patches), shim_sha256(),
                      list(CONFIGURE_FLAGS[series]))
    if not force and installed_manifest(prefix) == wanted:
        progress(f"BIND {src.version} with the bindpkcs11 patch is up to date in {prefix}; nothing to do")
        return BuildResult(prefix, wanted, False, time.monotonic() - started)
    work = prefix.parent / f"build-{prefix.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tree = unpack(src, work, progress)
    progress(f"applying {', '.join(p.name for p in patches)}")
    patching.apply_patches(tree, patches)
    staging = Path(f"{prefix}.new")
    shutil.rmtree(staging, ignore_errors=True)
    _compile(tree, staging, prefix, CONFIGURE_FLAGS[series], progress, jobs or os.cpu_count() or 2,
             work)
    write_atomic(staging / MANIFEST, json.dumps(asdict(wanted), indent=2) + "\n")
    _swap_in(staging, prefix)
    shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    progress(f"installed BIND {src.version} (patched) into {prefix} in {seconds:.0f} s")
    return BuildResult(prefix, wanted, True, seconds)


def cached_or_debian_source(cache: Path, progress: Progress,
                            series: str = DEFAULT_SERIES) -> source.SourceTarball:
    """Reuse a verified cached tarball of `series`; otherwise fetch Debian's through apt.

    Public for the tests' unpatched engine-route reference build, which must use the same source.
    """
    for path in sorted(cache.glob(f"{source.SOURCE_PACKAGE}_{series}.*.orig.tar.*")):
        stamp = cache / f"{path.name}.sha256"
        if not path.name.endswith(".sha256") and stamp.exists():
            if source.sha256_file(path) == stamp.read_text().strip():
                return source.SourceTarball(path, source.tarball_version(path, series),
                                            stamp.read_text().strip())
    progress(f"fetching Debian's bind9 {series} source tarball through apt (deb-src) ...")
    return source.debian_orig_tarball(cache, series)


def _plain_members(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member, if all are regular files, directories or links that stay inside the tree
    (what tarfile's "data" filter allows); a source tarball with anything else is refused."""
    members = archive.getmembers()
    for member in members:
        name = Path(member.name)
        target = Path(member.linkname) if (member.issym() or member.islnk()) else Path()
        inside = os.path.normpath(name.parent / target if member.issym() else target)
        if (name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()
                or member.issym() or member.islnk()) or target.is_absolute()
                or inside == ".." or inside.startswith("../")):
            raise ToolFailed(f"refusing to unpack the BIND source: member '{member.name}' is not a plain "
                             "file inside the tree")
    return members


def unpack(src: source.SourceTarball, work: Path, progress: Progress) -> Path:
    progress(f"unpacking {src.path.name} (SHA-256 {src.sha256[:16]}...)")
    with tarfile.open(src.path) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(work, filter="data")
        else:  # Python before 3.11.4 (Debian 12 ships 3.11.2): the same refusals, checked here
            archive.extractall(work, members=_plain_members(archive))
    trees = [p for p in work.iterdir() if p.is_dir()]
    if len(trees) != 1:
        raise ToolFailed(f"{src.path.name} did not unpack to one directory")
    return trees[0]


def _compile(tree: Path, staging: Path, prefix: Path, flags: tuple[str, ...], progress: Progress,
             jobs: int, work: Path) -> None:
    """configure + make + make install, linking the shim from `<prefix>/lib` (rpath)."""
    shim_dir = staging / "lib"
    sharedlib.build_shared_library(shim_dir)
    final_lib = prefix / "lib"
    env = {
        **os.environ,
        # BIND's configure drops LDFLAGS in its second compiler check; LIBS survives.
        "CPPFLAGS": f"-I{shim_dir}",
        "LIBS": f"-L{shim_dir} -lbp11 -Wl,-rpath,{final_lib}",
        # configure runs what it links before the rpath target exists: find the shim meanwhile.
        "LD_LIBRARY_PATH": str(shim_dir),
        "LC_ALL": "C",
    }
    progress("configuring (about 15 s) ...")
    stream_tool(["./configure", f"--prefix={prefix}", *flags], lambda line: None,
                cwd=tree, env=env, what="configure", log_path=work / "configure.log")
    total = max(1, len(list(tree.glob("lib/**/*.c"))) + len(list(tree.glob("bin/**/*.c"))))
    counter = _Counter(total, progress)
    progress(f"compiling with make -j{jobs} (1 to 2 minutes on 2 cores) ...")
    stream_tool(["make", f"-j{jobs}"], counter.line, cwd=tree, env=env, what="make",
                log_path=work / "make.log")
    progress("installing ...")
    stream_tool(["make", "install", f"DESTDIR={work / 'destdir'}"], lambda line: None, cwd=tree,
                env=env, what="make install", log_path=work / "install.log")
    installed = work / "destdir" / str(prefix).lstrip("/")
    shutil.copytree(installed, staging, dirs_exist_ok=True, symlinks=True)


class _Counter:
    """Turns make's `CC file.lo` lines into a percentage, printed every 10 %."""

    def __init__(self, total: int, progress: Progress) -> None:
        self.total, self.done, self.shown, self.progress = total, 0, 0, progress

    def line(self, text: str) -> None:
        if _COMPILE_LINE.match(text):
            self.done += 1
            percent = min(99, self.done * 100 // self.total)
            if percent >= self.shown + 10:
                self.shown = percent - percent % 10
                self.progress(f"  make: {self.shown}% ({self.done} files)")


def _swap_in(staging: Path, prefix: Path) -> None:
    """Replace the old install with the new one in two renames (the old one is kept until then)."""
    old = Path(f"{prefix}.old")
    shutil.rmtree(old, ignore_errors=True)
    if prefix.exists():
        prefix.rename(old)
    staging.rename(prefix)
    shutil.rmtree(old, ignore_errors=True)


def bind_env(prefix: Path, module_env: dict[str, str]) -> dict[str, str]:
    """Environment for running the patched tools by hand: PATH first, module and token variables."""
    path = f"{prefix / 'sbin'}:{prefix / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    return {"PATH": path, "LD_LIBRARY_PATH": str(prefix / "lib"), **module_env}


def print_progress(line: str) -> None:
    print(f"bind build: {line}", file=sys.stderr, flush=True)
