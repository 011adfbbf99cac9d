"""Shared fixtures: real SoftHSM2 tokens in temporary state dirs, driven through the real CLI.

Each CLI call is its own process, as an operator would run it: a PKCS#11 module reads its
configuration (SOFTHSM2_CONF) once per process, so separate state dirs need separate processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
SPY_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so"
TRUST_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-trust.so"
TOKEN = "bindpkcs11"


@dataclass
class Cli:
    """Runs `python -m bindpkcs11 --state-dir <tmp>` with a clean PIN environment."""

    state_dir: Path
    env: dict

    def __call__(self, *args: str, check: bool = True, env: dict | None = None,
                 stdin: str | None = None, timeout: float = 120,
                 binary: bool = False) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "bindpkcs11", "--state-dir", str(self.state_dir), *args]
        result = subprocess.run(
            command, capture_output=True, text=not binary, timeout=timeout,
            env={**self.env, **(env or {})}, input=stdin, cwd=REPO,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}"
            )
        return result

    def json(self, *args: str, **kwargs) -> object:
        return json.loads(self(*args, "--json", **kwargs).stdout)

    @property
    def key_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def softhsm_conf(self) -> Path:
        return self.state_dir / "softhsm" / "softhsm2.conf"

    def pin(self, label: str = TOKEN) -> str:
        return (self.state_dir / "pins" / f"{label}.pin").read_text().strip()


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PKCS11_LIBRARY_PIN", "PKCS11_SO_PIN", "SOFTHSM2_CONF", "BINDPKCS11_STATE_DIR")}
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A CLI bound to an empty state dir."""
    return Cli(tmp_path / "state", clean_env())


@pytest.fixture
def token_cli(cli: Cli) -> Cli:
    """A CLI whose state dir holds an initialised default token with generated PINs."""
    cli("token", "init", "--label", TOKEN, "--generate-pins")
    return cli


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """Assert the failure is one clear line without a traceback, and return it."""
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and lines[-1].startswith("bindpkcs11: error:"), result.stderr
    error_lines = [line for line in lines if line.startswith("bindpkcs11:")]
    assert len(error_lines) == 1, result.stderr
    return error_lines[0]


def run_python(code: str, env: dict, *args: str, timeout: float = 120) -> str:
    """Run a snippet in a fresh interpreter (its own PKCS#11 module instance); return stdout."""
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            env=env, timeout=timeout, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="session")
def patched_bind() -> Path:
    """The patched BIND prefix, built once per machine (about 2.5 minutes) and then reused."""
    from bindtools import ensure_patched_bind

    return ensure_patched_bind()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "docker: builds and runs the Docker image (run alone: -m docker)")


@pytest.fixture(scope="session")
def dockerd():
    """One private dockerd per session (tests/dockerenv.py), shared by the docker tests."""
    from dockerenv import started_dockerd

    yield from started_dockerd()


@pytest.fixture(scope="session")
def project_image(dockerd) -> dict[str, float]:
    """docker/Dockerfile built once per session on the local Debian 12 base; its timings (s)."""
    from dockerenv import build_image

    return build_image(dockerd)


@pytest.fixture(scope="session")
def patched_bind_920() -> Path:
    """The patched BIND 9.20 prefix (beside the 9.18 one), built once per machine (about 1.5 minutes)."""
    from bindtools import ensure_patched_bind

    return ensure_patched_bind("9.20")


def default_sigint() -> None:
    """preexec_fn for a child a test interrupts with SIGINT. A shell without job control starts
    background jobs (a CI runner's, `cmd &`) with SIGINT ignored, and Python keeps an inherited
    SIG_IGN, so the child would never see the Ctrl-C: give it the default, as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def poll(condition, deadline: float = 30.0, what: str = "condition"):
    """condition() every 0.1 s until it returns something true, which is returned; an
    AssertionError naming `what` after `deadline` seconds. The one way tests wait."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {deadline} s")
