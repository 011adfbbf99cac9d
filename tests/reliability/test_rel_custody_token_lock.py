"""Issue 8 item 4 (second half): token creation is serialised per state dir.

Two `token init` runs for one label used to both see "no such token": both wrote PIN files (the
second overwriting the first) and both created a token, leaving two tokens with one label and
PIN files that opened at most one of them.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import REPO, TOKEN, Cli, clean_env, one_line_error
from namedproc import free_port

GATE_WAIT = 30.0

# Started before the race, each process waits for the gate file, then becomes the real CLI:
# both begin `token init` within milliseconds of each other.
_GATED = """
import os, sys, time
gate, argv = sys.argv[1], sys.argv[2:]
deadline = time.monotonic() + {wait}
while not os.path.exists(gate):
    if time.monotonic() > deadline:
        sys.exit("gate never opened")
    time.sleep(0.002)
os.execv(sys.executable, [sys.executable, "-m", "bindpkcs11", *argv])
""".format(wait=GATE_WAIT)


def _race(cli, tmp_path, args: list[str], runners: int = 2) -> list[subprocess.CompletedProcess]:
    gate = tmp_path / "gate"
    gate.unlink(missing_ok=True)
    command = [sys.executable, "-c", _GATED, str(gate), "--state-dir", str(cli.state_dir), *args]
    procs = [subprocess.Popen(command, env=cli.env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(runners)]
    gate.write_text("go")
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return results


def test_two_concurrent_inits_of_one_label_make_one_token_whose_pins_work(cli, tmp_path):
    cli("token", "list")  # state dir and SoftHSM config exist before the race
    for round_number in range(3):
        label = f"race{round_number}"
        results = _race(cli, tmp_path, ["token", "init", "--label", label, "--generate-pins"])
        winners = [r for r in results if r.returncode == 0]
        losers = [r for r in results if r.returncode != 0]
        assert len(winners) == 1, [(r.returncode, r.stderr) for r in results]
        assert "already exists" in one_line_error(losers[0])
        labels = [t["label"] for t in cli.json("token", "list")]
        assert labels.count(label) == 1, labels
        # the stored PIN is the one the single token was given
        cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13", "--token", label)


_HOLD_LOCK = """
import sys
from pathlib import Path
from bindpkcs11 import locks
from bindpkcs11.state import StateDir
state = StateDir.open(Path(sys.argv[1]))
with locks.held(locks.lock_path(state, "tokens"), "test"):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def _token_lock_held(cli):
    """Another process holding the state dir's token-creation lock until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(cli.state_dir)], env=cli.env,
                              cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_held_token_lock_names_its_holder(cli):
    """While another process creates tokens, init waits, then fails with one line naming it."""
    cli("token", "list")
    with _token_lock_held(cli) as pid:
        started = time.monotonic()
        error = one_line_error(cli("token", "init", "--label", "late", "--generate-pins", check=False))
        assert str(pid) in error and "busy" in error
        assert time.monotonic() - started < 60
    assert not (cli.state_dir / "pins" / "late.pin").exists()
    assert "late" not in {t["label"] for t in cli.json("token", "list")}


def test_setup_inline_creates_its_default_token_under_the_same_lock(patched_bind):
    """setup-inline's default token is made by admin.init_token, so it waits for the lock too."""
    base = Path(tempfile.mkdtemp(prefix="bindpkcs11-custody-"))
    base.chmod(0o711)  # named's user must be able to reach the state dir
    try:
        cli = Cli(base / "state", clean_env() | {"BINDPKCS11_BIND_DIR": str(patched_bind)})
        cli("token", "list")
        with _token_lock_held(cli) as pid:
            error = one_line_error(cli("setup-inline", "example.test", "--port", str(free_port()),
                                       "--rndc-port", str(free_port()), check=False))
            assert str(pid) in error and "busy" in error
        assert TOKEN not in {t["label"] for t in cli.json("token", "list")}
        assert not (cli.state_dir / "pins" / f"{TOKEN}.pin").exists()
        assert not list((cli.state_dir / "instances").glob("*/named.pid"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
