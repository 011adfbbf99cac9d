"""The opensc profile under test: a state dir whose card is the emulated OpenPGP card that
`bindpkcs11 card simulator` runs (jcecard behind vpcd in a private pcscd), started through the CLI
and always stopped after.

The state dir lives under /tmp itself (mode 0711 above it): named runs as `bind` when the tests
run as root, and reaches pcscd's socket under the state dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import Cli, clean_env
from namedproc import alive, free_port, kill_instance_nameds

CARD_TOKEN = "OpenPGP card (User PIN)"
CARD_KEY = "Authentication key"
PROFILE = "opensc"


def card_cli_in(base: Path, extra_env: dict | None = None) -> Cli:
    env = clean_env() | (extra_env or {})
    env.pop("PCSCLITE_CSOCK_NAME", None)
    cli = Cli(base / "state", env)
    cli.ports = (free_port(), free_port())
    return cli


def sc(cli: Cli, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """The CLI with --profile opensc."""
    return cli("--profile", PROFILE, *args, **kwargs)


def record(cli: Cli) -> dict | None:
    path = cli.state_dir / "card" / "simulator.json"
    return json.loads(path.read_text()) if path.exists() else None


def card_env(cli: Cli) -> dict:
    """Environment for OpenSC's own tools on the emulated card."""
    return {**cli.env, "PCSCLITE_CSOCK_NAME": str(cli.state_dir / "card" / "run" / "pcscd.comm")}


def tries_left(cli: Cli) -> dict[str, int]:
    """The card's PIN retry counters as OpenSC reads them (no PIN needed): {PIN name: tries}."""
    out = subprocess.run(["pkcs15-tool", "--list-pins"], capture_output=True, text=True,
                         env=card_env(cli), timeout=60, check=True).stdout
    names = re.findall(r"^PIN \[(.+)\]", out, re.M)
    tries = [int(n) for n in re.findall(r"Tries left\s*:\s*(\d+)", out)]
    return dict(zip(names, tries))



def stop_everything(cli: Cli) -> None:
    """named first (it holds a card session), then the simulator through the CLI; whatever is
    still alive after that is killed, so a failed test never leaves a daemon behind."""
    kill_instance_nameds(cli.state_dir)
    left = record(cli)
    cli("card", "simulator", "stop", check=False, timeout=60)
    for key in ("bridge_pid", "pcscd_pid"):
        if left and alive(left[key]):
            os.kill(left[key], signal.SIGKILL)


@pytest.fixture
def card_cli(request):
    """A CLI on an empty state dir with the card simulator running; the simulator and any named
    are stopped after the test, pass or fail. `BINDPKCS11_BIND_DIR` is set when the test also
    asks for `patched_bind`."""
    base = Path(tempfile.mkdtemp(prefix="bp11-card-"))
    base.chmod(0o711)
    extra = {}
    if "patched_bind" in request.fixturenames:
        extra["BINDPKCS11_BIND_DIR"] = str(request.getfixturevalue("patched_bind"))
    cli = card_cli_in(base, extra)
    try:
        cli("card", "simulator", "start", timeout=90)
        yield cli
    finally:
        stop_everything(cli)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def card_token(card_cli):
    """The emulated card initialised by `token init --generate-pins` (factory reset, new PINs)."""
    sc(card_cli, "token", "init", "--label", CARD_TOKEN, "--generate-pins", timeout=180)
    return card_cli


def stored_pin(cli: Cli, suffix: str = "pin") -> str:
    return (cli.state_dir / "pins" / f"OpenPGP%20card%20%28User%20PIN%29.{suffix}").read_text().strip()
