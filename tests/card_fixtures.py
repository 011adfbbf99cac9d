"""The opensc profile under test: a state dir whose card is the emulated OpenPGP card that
`bindpkcs11 card simulator` runs (jcecard behind vpcd in a private pcscd), started through the CLI
and always stopped after (devicesim.EmulatedDevice); named reaches pcscd's socket under it."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import Cli
from devicesim import EmulatedDevice, bind_dir_env

CARD_TOKEN = "OpenPGP card (User PIN)"
CARD_KEY = "Authentication key"
PROFILE = "opensc"


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


CARD = EmulatedDevice(
    command=("card", "simulator"), start_timeout=90,
    daemon_pids=lambda cli: [(record(cli) or {}).get(key) for key in ("bridge_pid", "pcscd_pid")],
    own_env=("PCSCLITE_CSOCK_NAME",))


@pytest.fixture
def card_cli(request):
    """A CLI on an empty state dir with the card simulator running; `BINDPKCS11_BIND_DIR` is set
    when the test also asks for `patched_bind`."""
    with CARD.state_dir("bp11-card-", bind_dir_env(request)) as cli:
        yield cli


@pytest.fixture
def card_token(card_cli):
    """The emulated card initialised by `token init --generate-pins` (factory reset, new PINs)."""
    sc(card_cli, "token", "init", "--label", CARD_TOKEN, "--generate-pins", timeout=180)
    return card_cli


def stored_pin(cli: Cli, suffix: str = "pin") -> str:
    return (cli.state_dir / "pins" / f"OpenPGP%20card%20%28User%20PIN%29.{suffix}").read_text().strip()
