"""BIND 9.18's own engine route, the one an administrator migrates from, for tests.

The build itself (upstream 9.18 without bindpkcs11's patch, `-DOPENSSL_API_COMPAT=10100`, only the
dnssec-* tools) is bench/enginebuild.py, shared with bench/bench_signing.py, which times the same
build. Here: where the tests keep it (`.cache/engine-bind`, built once, rebuilt only when the
source, flags or targets change), the openssl.cnf for SoftHSM, and the engine build's
`dnssec-keyfromlabel`, whose key files the tests check bindpkcs11 adopts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench import enginebuild
from bindtools import BIND_STATE
from conftest import REPO, SOFTHSM_MODULE

ENGINE_STATE = REPO / ".cache" / "engine-bind"


def ensure_engine_bind() -> Path:
    """The engine-route build's prefix, built on first use (about 2.5 minutes on 2 busy cores)."""
    try:
        return enginebuild.ensure_engine_bind(ENGINE_STATE, BIND_STATE / "cache")
    except enginebuild.EngineBuildFailed as exc:
        raise AssertionError(str(exc)) from exc


def engine_config(directory: Path, pin: str | None) -> Path:
    """An openssl.cnf loading libp11 with SoftHSM as its module and, unless None, the token PIN,
    mode 0600, in `directory`. The PIN never reaches argv or the label."""
    name = "openssl-pin.cnf" if pin is not None else "openssl-nopin.cnf"
    return enginebuild.engine_config(directory / name, SOFTHSM_MODULE, pin)


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
