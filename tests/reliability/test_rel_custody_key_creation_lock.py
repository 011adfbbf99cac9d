"""The delete/erase guard and key creation on one token are serialised (issue 8, item 3's race).

`token erase` used to check "no active key file uses this token" and then wipe it with no lock:
a keygen (or setup-inline) that created a key and wrote its key file in between lost that key
to the erase, leaving a key file that points at nothing. Key creation, `token delete` and `token
erase` now hold one lock per token; a second process waits, then fails with one line naming the
holder, and changes nothing.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

from conftest import REPO, TOKEN, one_line_error

# Holds the token's key lock exactly as a keygen on that token does, until stdin closes.
_HOLD_KEY_LOCK = """
import sys
from pathlib import Path
from bindpkcs11 import locks
from bindpkcs11.state import StateDir
state = StateDir.open(Path(sys.argv[1]))
with locks.token_objects(state, sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def _key_creation_in_progress(cli, token: str):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_KEY_LOCK, str(cli.state_dir), token],
                              env=cli.env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def _labels(cli) -> set[str]:
    return {o["object"]["label"] for o in cli.json("token", "show", "--label", TOKEN)["objects"]}


def test_erase_waits_for_key_creation_then_fails_naming_it(token_cli):
    cli = token_cli
    cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13", "--token", TOKEN)
    before = _labels(cli)
    assert before
    with _key_creation_in_progress(cli, TOKEN) as pid:
        result = cli("token", "erase", "--label", TOKEN, "--force", "--yes",
                     "--destroy-active-keys", check=False)
        error = one_line_error(result)
        assert result.returncode == 75 and str(pid) in error and "busy" in error
    assert _labels(cli) == before  # nothing erased


def test_delete_waits_for_key_creation_then_fails_naming_it(token_cli):
    cli = token_cli
    cli("keygen", "example.test", "--role", "zsk", "--algorithm", "13", "--token", TOKEN,
        "--label", "victim", "--inactive", "now", "--delete", "now")
    with _key_creation_in_progress(cli, TOKEN) as pid:
        result = cli("token", "delete", "--label", TOKEN, "--object", "victim", "--type", "public",
                     "--force", check=False)
        assert result.returncode == 75 and str(pid) in one_line_error(result)
    assert "victim" in _labels(cli)


def test_the_lock_is_per_token(token_cli):
    """Creating keys on one token does not hold up an erase of another."""
    cli = token_cli
    cli("token", "init", "--label", "other", "--generate-pins")
    with _key_creation_in_progress(cli, TOKEN):
        cli("token", "erase", "--label", "other", "--force", "--yes")
