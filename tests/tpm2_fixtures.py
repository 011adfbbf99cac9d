"""The tpm2 profile under test: a state dir whose TPM is the simulator `bindpkcs11 tpm2 simulator`
runs (swtpm + a private-bus tpm2-abrmd), started through the CLI and always stopped after.

The state dir lives under /tmp itself (mode 0711 above it): named runs as `bind` when the tests
run as root, and pytest's own temp root is private to root.
"""

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

TPM_TOKEN = "dnssec"
PROCESSES = ("swtpm_pid", "dbus_pid", "abrmd_pid")
MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"


def tpm2_cli_in(base: Path, extra_env: dict | None = None) -> Cli:
    env = clean_env() | (extra_env or {})
    for variable in ("TPM2_PKCS11_TCTI", "TPM2_PKCS11_STORE", "DBUS_SESSION_BUS_ADDRESS"):
        env.pop(variable, None)
    cli = Cli(base / "state", env)
    cli.ports = (free_port(), free_port())
    return cli


def tp(cli: Cli, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """The CLI with --profile tpm2."""
    return cli("--profile", "tpm2", *args, **kwargs)


def record(cli: Cli) -> dict | None:
    path = cli.state_dir / "tpm2" / "simulator.json"
    return json.loads(path.read_text()) if path.exists() else None



def stop_everything(cli: Cli) -> None:
    """named first (it holds a TPM session), then the simulator through the CLI; whatever is
    still alive after that is killed, so a failed test never leaves a daemon behind."""
    kill_instance_nameds(cli.state_dir)
    left = record(cli)
    cli("tpm2", "simulator", "stop", check=False, timeout=60)
    for key in PROCESSES:
        if left and alive(left[key]):
            os.kill(left[key], signal.SIGKILL)


@pytest.fixture
def tpm2_cli(request):
    """A CLI on an empty state dir with the TPM simulator running; the simulator and any named
    are stopped after the test, pass or fail. `BINDPKCS11_BIND_DIR` is set when the test also
    asks for `patched_bind`."""
    base = Path(tempfile.mkdtemp(prefix="bp11-tpm2-"))
    base.chmod(0o711)
    extra = {}
    if "patched_bind" in request.fixturenames:
        extra["BINDPKCS11_BIND_DIR"] = str(request.getfixturevalue("patched_bind"))
    cli = tpm2_cli_in(base, extra)
    try:
        cli("tpm2", "simulator", "start", timeout=60)
        yield cli
    finally:
        stop_everything(cli)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def tpm2_token(tpm2_cli):
    """The simulator with token 'dnssec' made by `token init --generate-pins`."""
    tp(tpm2_cli, "token", "init", "--label", TPM_TOKEN, "--generate-pins")
    return tpm2_cli


def tpm_env(cli: Cli) -> dict:
    """Environment for tpm2-tools on the simulator (to read TPM state the CLI does not show)."""
    rec = record(cli)
    return {**cli.env, "TPM2TOOLS_TCTI": "tabrmd:bus_type=session",
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={rec['bus']}"}


def lockout_counter(cli: Cli) -> int:
    """TPM2_PT_LOCKOUT_COUNTER: how many failed authorisations the TPM has counted."""
    out = subprocess.run(["tpm2_getcap", "properties-variable"], capture_output=True, text=True,
                         env=tpm_env(cli), timeout=30, check=True).stdout
    for line in out.splitlines():
        if line.startswith("TPM2_PT_LOCKOUT_COUNTER:"):
            return int(line.split(":")[1].strip(), 0)
    raise AssertionError(f"no lockout counter in tpm2_getcap output: {out}")


def poll(condition, deadline: float = 20.0, what: str = "condition"):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
