"""BIND 9.18's own engine route, the one an administrator migrates from: a reference build.

Upstream 9.18 (the same Debian orig tarball `bindpkcs11 bind build` uses, no bindpkcs11 patch)
built with `-DOPENSSL_API_COMPAT=10100`, which brings back the Engine/Label code that Debian's
OpenSSL 3 build compiles out, plus Debian's libp11 OpenSSL engine (`libengine-pkcs11-openssl`).
Only the dnssec-* tools are built (lib/isc, lib/dns, lib/isccfg, bin/dnssec).

Two users, one build: bench/bench_signing.py times its `dnssec-signzone -E pkcs11` (the speed
anchor), and the tests (tests/enginebind.py) check that key files written by its
`dnssec-keyfromlabel -E pkcs11` are adopted. It lives under bench/ rather than in the package
because the product never builds or runs an unpatched BIND: it is a yardstick, not a feature.
Imported as `enginebuild` by the bench scripts (bench/ is their sys.path[0]) and as
`bench.enginebuild` by the tests (the repository root is on their path); it imports only the
standard library and bindpkcs11.

The build is cached in a state directory with a manifest (source SHA-256, flags, targets) and
rebuilt only when one of those changes; a lock file lets parallel test workers and a bench share it.
The libp11 engine gets the module and the PIN from an openssl.cnf (mode 0600) handed only to these
processes through OPENSSL_CONF: exported globally it breaks every stock BIND tool
(../shared/facts.md), and a PIN in the label would be stored in the key file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from bindpkcs11 import locks
from bindpkcs11.bind import build

LIBP11_ENGINE = Path("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so")
CFLAGS = "-g -O2 -DOPENSSL_API_COMPAT=10100"
# Build order matters: dns needs isc, isccfg needs dns, the tools need all three.
TARGETS = ("lib/isc", "lib/dns", "lib/isccfg", "bin/dnssec")
PROGRAMS = ("bin/dnssec-keyfromlabel", "bin/dnssec-signzone", "bin/dnssec-verify")
BUILD_TIMEOUT = 1800

Progress = Callable[[str], None]


class EngineBuildFailed(Exception):
    """The engine-route BIND build failed; its log names the step."""


def _progress(line: str) -> None:
    print(f"engine-route bind: {line}", file=sys.stderr, flush=True)


def ensure_engine_bind(state: Path, source_cache: Path, progress: Progress = _progress) -> Path:
    """The engine-route build's prefix (<state>/prefix), built on first use (about 2.5 minutes
    on 2 busy cores) from the 9.18 tarball in `source_cache` (fetched through apt if absent)."""
    prefix = state / "prefix"
    state.mkdir(parents=True, exist_ok=True)
    with locks.held(state / ".build.lock", "the engine-route BIND build", wait=BUILD_TIMEOUT):
        src = build.cached_or_debian_source(source_cache, progress)
        wanted = {"bind_version": src.version, "source_sha256": src.sha256, "cflags": CFLAGS,
                  "configure_flags": list(build.CONFIGURE_FLAGS["9.18"]), "targets": list(TARGETS)}
        if installed(prefix) == wanted:
            return prefix
        seconds = _build(src, state, prefix, wanted, progress)
        progress(f"built the engine-route BIND {src.version} in {seconds:.0f} s")
    return prefix


def installed(prefix: Path) -> dict | None:
    """The manifest of a complete build at `prefix` (without its build time), else None."""
    try:
        manifest = json.loads((prefix / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not all((prefix / program).exists() for program in PROGRAMS):
        return None
    manifest.pop("build_seconds", None)
    return manifest


def _build(src, state: Path, prefix: Path, wanted: dict, progress: Progress) -> float:
    started = time.monotonic()
    work = state / "build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    tree = build.unpack(src, work, progress)
    env = {**os.environ, "CFLAGS": CFLAGS, "LC_ALL": "C"}
    env.pop("OPENSSL_CONF", None)
    jobs = f"-j{os.cpu_count() or 2}"
    _run(["./configure", f"--prefix={prefix}", *build.CONFIGURE_FLAGS["9.18"]], tree, env, work,
         "configure", progress)
    for target in TARGETS:
        _run(["make", jobs, "-C", target], tree, env, work, f"make-{target.replace('/', '-')}",
             progress)
    destdir = work / "destdir"
    for target in TARGETS:
        _run(["make", "-C", target, "install", f"DESTDIR={destdir}"], tree, env, work,
             f"install-{target.replace('/', '-')}", progress)
    shutil.rmtree(prefix, ignore_errors=True)
    shutil.copytree(destdir / str(prefix).lstrip("/"), prefix, symlinks=True)
    seconds = time.monotonic() - started
    (prefix / "manifest.json").write_text(json.dumps({**wanted, "build_seconds": round(seconds)}))
    shutil.rmtree(work, ignore_errors=True)
    return seconds


def _run(command: list[str], cwd: Path, env: dict, work: Path, step: str,
         progress: Progress) -> None:
    progress(f"{step} ...")
    log = work / f"{step}.log"
    with open(log, "w") as out:
        result = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                timeout=BUILD_TIMEOUT)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise EngineBuildFailed(f"engine-route BIND build: {step} failed (log {log}):\n{tail}")


def engine_config(path: Path, module: str, pin: str | None,
                  engine_so: Path = LIBP11_ENGINE) -> Path:
    """Write an openssl.cnf loading libp11 with `module` and, unless None, the token PIN
    (libp11's PIN control command), mode 0600. The PIN never reaches argv or the label."""
    lines = ["# only for the engine-route BIND's processes (OPENSSL_CONF), never globally",
             "openssl_conf = openssl_init", "[openssl_init]", "engines = engine_section",
             "[engine_section]", "pkcs11 = pkcs11_section", "[pkcs11_section]",
             "engine_id = pkcs11", f"dynamic_path = {engine_so}", f"MODULE_PATH = {module}"]
    if pin is not None:
        lines.append(f"PIN = {pin}")
    lines.append("init = 0")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path
