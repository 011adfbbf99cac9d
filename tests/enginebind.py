"""BIND 9.18's own engine route, the one an administrator migrates from: a reference build for tests.

Upstream 9.18.49 (the same Debian orig tarball `bindpkcs11 bind build` uses, no bindpkcs11 patch)
built with `-DOPENSSL_API_COMPAT=10100`, which brings back the Engine/Label code that Debian's
OpenSSL 3 build compiles out, plus Debian's libp11 OpenSSL engine (`libengine-pkcs11-openssl`).
Only the dnssec-* tools are built (lib/isc, lib/dns, lib/isccfg, bin/dnssec): the tests need its
`dnssec-keyfromlabel -E pkcs11` to write key files exactly as such a build does, nothing more.

The build is cached in `.cache/engine-bind` with a manifest (source SHA-256, flags, targets) and
rebuilt only when one of those changes. The libp11 engine gets the module and the PIN from an
openssl.cnf (mode 0600) handed only to these processes through OPENSSL_CONF: exported globally it
breaks every stock BIND tool (../shared/facts.md), and a PIN in the label would be stored in the
key file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bindpkcs11 import locks
from bindpkcs11.bind import build
from bindtools import BIND_STATE
from conftest import REPO, SOFTHSM_MODULE

ENGINE_STATE = REPO / ".cache" / "engine-bind"
LIBP11_ENGINE = Path("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so")
CFLAGS = "-g -O2 -DOPENSSL_API_COMPAT=10100"
# Build order matters: dns needs isc, isccfg needs dns, the tools need all three.
TARGETS = ("lib/isc", "lib/dns", "lib/isccfg", "bin/dnssec")
PROGRAMS = ("bin/dnssec-keyfromlabel", "bin/dnssec-signzone", "bin/dnssec-verify")
BUILD_TIMEOUT = 1800


def ensure_engine_bind() -> Path:
    """The engine-route build's prefix, built on first use (about 2.5 minutes on 2 busy cores)."""
    prefix = ENGINE_STATE / "prefix"
    ENGINE_STATE.mkdir(parents=True, exist_ok=True)
    with locks.held(ENGINE_STATE / ".build.lock", "the engine-route BIND build", wait=BUILD_TIMEOUT):
        src = build.cached_or_debian_source(BIND_STATE / "cache", _progress)
        wanted = {"bind_version": src.version, "source_sha256": src.sha256, "cflags": CFLAGS,
                  "configure_flags": list(build.CONFIGURE_FLAGS["9.18"]), "targets": list(TARGETS)}
        if _installed(prefix) == wanted:
            return prefix
        seconds = _build(src, prefix, wanted)
        _progress(f"built the engine-route BIND {src.version} in {seconds:.0f} s")
    return prefix


def _installed(prefix: Path) -> dict | None:
    try:
        manifest = json.loads((prefix / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not all((prefix / program).exists() for program in PROGRAMS):
        return None
    manifest.pop("build_seconds", None)
    return manifest


def _build(src, prefix: Path, wanted: dict) -> float:
    started = time.monotonic()
    work = ENGINE_STATE / "build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    tree = build.unpack(src, work, _progress)
    env = {**os.environ, "CFLAGS": CFLAGS, "LC_ALL": "C"}
    env.pop("OPENSSL_CONF", None)
    jobs = f"-j{os.cpu_count() or 2}"
    _run(["./configure", f"--prefix={prefix}", *build.CONFIGURE_FLAGS["9.18"]], tree, env, work, "configure")
    for target in TARGETS:
        _run(["make", jobs, "-C", target], tree, env, work, f"make-{target.replace('/', '-')}")
    destdir = work / "destdir"
    for target in TARGETS:
        _run(["make", "-C", target, "install", f"DESTDIR={destdir}"], tree, env, work,
             f"install-{target.replace('/', '-')}")
    shutil.rmtree(prefix, ignore_errors=True)
    shutil.copytree(destdir / str(prefix).lstrip("/"), prefix, symlinks=True)
    seconds = time.monotonic() - started
    (prefix / "manifest.json").write_text(json.dumps({**wanted, "build_seconds": round(seconds)}))
    shutil.rmtree(work, ignore_errors=True)
    return seconds


def _run(command: list[str], cwd: Path, env: dict, work: Path, step: str) -> None:
    _progress(f"{step} ...")
    log = work / f"{step}.log"
    with open(log, "w") as out:
        result = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                timeout=BUILD_TIMEOUT)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise AssertionError(f"engine-route BIND build: {step} failed (log {log}):\n{tail}")


def _progress(line: str) -> None:
    print(f"engine-route bind: {line}", file=sys.stderr, flush=True)


def engine_config(directory: Path, pin: str | None) -> Path:
    """An openssl.cnf loading libp11 with SoftHSM as its module and, unless None, the token PIN
    (libp11's PIN control command), mode 0600. The PIN never reaches argv or the label."""
    lines = ["openssl_conf = openssl_init", "[openssl_init]", "engines = engine_section",
             "[engine_section]", "pkcs11 = pkcs11_section", "[pkcs11_section]",
             "engine_id = pkcs11", f"dynamic_path = {LIBP11_ENGINE}",
             f"MODULE_PATH = {SOFTHSM_MODULE}"]
    if pin is not None:
        lines.append(f"PIN = {pin}")
    lines.append("init = 0")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ("openssl-pin.cnf" if pin is not None else "openssl-nopin.cnf")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path


def engine_keyfromlabel(prefix: Path, cli, config: Path, key_dir: Path, algorithm: str, label: str,
                        *extra: str, zone: str = "example.test") -> subprocess.CompletedProcess:
    """The engine build's `dnssec-keyfromlabel -E pkcs11 -K DIR -a ALG -l LABEL [extra] ZONE`,
    as the 9.18 ARM has it, with OPENSSL_CONF and SoftHSM's config given to this process only."""
    key_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in cli.env.items() if not k.startswith("PKCS11_")}
    env.update(OPENSSL_CONF=str(config), SOFTHSM2_CONF=str(cli.softhsm_conf))
    return subprocess.run(
        [str(prefix / "bin" / "dnssec-keyfromlabel"), "-E", "pkcs11", "-K", str(key_dir),
         "-a", algorithm, "-l", label, *extra, zone],
        capture_output=True, text=True, env=env, timeout=120)
