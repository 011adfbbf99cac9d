"""The tpm2 profile under test: a state dir whose TPM is the simulator `bindpkcs11 tpm2 simulator`
runs (swtpm + a private-bus tpm2-abrmd), started through the CLI and always stopped after
(devicesim.EmulatedDevice)."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import Cli
from devicesim import EmulatedDevice, bind_dir_env

TPM_TOKEN = "dnssec"
PROCESSES = ("swtpm_pid", "dbus_pid", "abrmd_pid")
MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"


def tp(cli: Cli, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """The CLI with --profile tpm2."""
    return cli("--profile", "tpm2", *args, **kwargs)


def record(cli: Cli) -> dict | None:
    path = cli.state_dir / "tpm2" / "simulator.json"
    return json.loads(path.read_text()) if path.exists() else None


TPM2 = EmulatedDevice(
    command=("tpm2", "simulator"), start_timeout=60,
    daemon_pids=lambda cli: [(record(cli) or {}).get(key) for key in PROCESSES],
    own_env=("TPM2_PKCS11_TCTI", "TPM2_PKCS11_STORE", "DBUS_SESSION_BUS_ADDRESS"))


@pytest.fixture
def tpm2_cli(request):
    """A CLI on an empty state dir with the TPM simulator running; `BINDPKCS11_BIND_DIR` is set
    when the test also asks for `patched_bind`."""
    with TPM2.state_dir("bp11-tpm2-", bind_dir_env(request)) as cli:
        yield cli


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
