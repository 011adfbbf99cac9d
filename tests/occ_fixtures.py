"""The opencryptoki profile under test: a state dir whose pkcsslotd is the sandbox
`bindpkcs11 opencryptoki sandbox` runs (a private mount + IPC namespace), started through the CLI
and always stopped after, pass or fail. Needs root (the sandbox is a mount namespace)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import Cli, clean_env
from namedproc import alive, free_port, kill_instance_nameds

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



def stop_everything(cli: Cli) -> None:
    """named first, then the sandbox through the CLI; a pkcsslotd still alive is killed."""
    kill_instance_nameds(cli.state_dir)
    pids = (sandbox_pid(cli), holder_pid(cli))
    cli("opencryptoki", "sandbox", "stop", check=False, timeout=60)
    for pid in pids:
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def occ_cli(request):
    """A CLI on an empty state dir with the opencryptoki sandbox running; it and any named are
    stopped after, pass or fail. `BINDPKCS11_BIND_DIR` is set when the test asks for
    `patched_bind`."""
    base = Path(tempfile.mkdtemp(prefix="bp11-occ-"))
    base.chmod(0o711)
    extra = {}
    if "patched_bind" in request.fixturenames:
        extra["BINDPKCS11_BIND_DIR"] = str(request.getfixturevalue("patched_bind"))
    cli = Cli(base / "state", clean_env() | extra)
    cli.ports = (free_port(), free_port())
    try:
        cli("opencryptoki", "sandbox", "start", timeout=60)
        yield cli
    finally:
        stop_everything(cli)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def occ_token(occ_cli):
    """The sandbox with token 'dnssec' made by `token init --generate-pins`."""
    oc(occ_cli, "token", "init", "--label", OCC_TOKEN, "--generate-pins")
    return occ_cli


def in_sandbox(cli: Cli, *command: str) -> subprocess.CompletedProcess:
    """`command` run inside the sandbox's namespaces (to look at what the CLI cannot show)."""
    return subprocess.run(["nsenter", "-t", str(holder_pid(cli)), "-m", "-i", "--", *command],
                          capture_output=True, text=True, timeout=60)


def poll(condition, deadline: float = 20.0, what: str = "condition"):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
