"""Helpers for tests that need the patched BIND: built once per machine into .cache and reused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, clean_env

BIND_STATE = REPO / ".cache" / "bind-state"
BUILD_TIMEOUT = 1800


def ensure_patched_bind(series: str = "9.18") -> Path:
    """Build (or find up to date) the patched BIND `series`; returns its prefix. Progress goes to
    stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "bindpkcs11", "--state-dir", str(BIND_STATE), "bind", "build",
         "--version", series, "--json"],
        capture_output=True, text=True, env=clean_env(), timeout=BUILD_TIMEOUT, cwd=REPO,
    )
    sys.stderr.write(result.stderr)
    assert result.returncode == 0, result.stderr
    return Path(json.loads(result.stdout)["prefix"])


def tool_env(cli, prefix: Path, pin_file: Path | None = None) -> dict:
    """Environment for the patched tools with `cli`'s token: module, SoftHSM config, PIN file."""
    env = dict(cli.env)
    env.update({
        "PKCS11_LIBRARY_PATH": "/usr/lib/softhsm/libsofthsm2.so",
        "SOFTHSM2_CONF": str(cli.softhsm_conf),
        "PKCS11_LIBRARY_PIN_FILE": str(pin_file or cli.state_dir / "pins" / "bindpkcs11.pin"),
    })
    return env


STOCK_DIR = REPO / ".cache" / "bind-stock"
STOCK_STATE = REPO / ".cache" / "bind-stock-state"


def ensure_stock_bind() -> Path:
    """BIND 9.20 + pkcs11-provider from bookworm-backports, unpacked once per machine into
    .cache/bind-stock (nothing installed); returns the directory for $BINDPKCS11_STOCK_DIR."""
    env = clean_env() | {"BINDPKCS11_STOCK_DIR": str(STOCK_DIR)}
    result = subprocess.run(
        [sys.executable, "-m", "bindpkcs11", "--state-dir", str(STOCK_STATE), "bind",
         "extract-backports", "--json"],
        capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT, cwd=REPO,
    )
    sys.stderr.write(result.stderr)
    assert result.returncode == 0, result.stderr
    return STOCK_DIR
