"""The opencryptoki profile under test: a state dir whose pkcsslotd is the sandbox
`bindpkcs11 opencryptoki sandbox` runs (a private mount + IPC namespace), started through the CLI
and always stopped after, pass or fail. Needs root (the sandbox is a mount namespace)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import Cli
from devicesim import EmulatedDevice, bind_dir_env

OCC_TOKEN = "dnssec"
MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so"

needs_opencryptoki = pytest.mark.skipif(
    not Path(MODULE).exists() or os.geteuid() != 0,
    reason="needs the opencryptoki package and root (scripts/setup.sh)")


def oc(cli: Cli, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """The CLI with --profile opencryptoki."""
    return cli("--profile", "opencryptoki", *args, **kwargs)


def holder_pid(cli: Cli) -> int | None:
    """The process holding the sandbox's namespace (from the sandbox record)."""
    path = cli.state_dir / "opencryptoki" / "sandbox.json"
    return json.loads(path.read_text())["holder"] if path.exists() else None


def sandbox_pid(cli: Cli) -> int | None:
    """The sandbox's pkcsslotd: the pid in its pid file, read through the holder."""
    holder = holder_pid(cli)
    if holder is None:
        return None
    for pid_file in ("run/pkcsslotd.pid", "run/opencryptoki/pkcsslotd.pid"):
        try:
            return int(Path(f"/proc/{holder}/root/{pid_file}").read_text())
        except (OSError, ValueError):
            continue
    return None


OPENCRYPTOKI = EmulatedDevice(
    command=("opencryptoki", "sandbox"), start_timeout=60,
    daemon_pids=lambda cli: [sandbox_pid(cli), holder_pid(cli)])


@pytest.fixture
def occ_cli(request):
    """A CLI on an empty state dir with the opencryptoki sandbox running; `BINDPKCS11_BIND_DIR`
    is set when the test asks for `patched_bind`."""
    with OPENCRYPTOKI.state_dir("bp11-occ-", bind_dir_env(request)) as cli:
        yield cli


@pytest.fixture
def occ_token(occ_cli):
    """The sandbox with token 'dnssec' made by `token init --generate-pins`."""
    oc(occ_cli, "token", "init", "--label", OCC_TOKEN, "--generate-pins")
    return occ_cli


def in_sandbox(cli: Cli, *command: str) -> subprocess.CompletedProcess:
    """`command` run inside the sandbox's namespaces (to look at what the CLI cannot show)."""
    return subprocess.run(["nsenter", "-t", str(holder_pid(cli)), "-m", "-i", "--", *command],
                          capture_output=True, text=True, timeout=60)
