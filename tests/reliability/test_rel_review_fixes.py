"""Holes a review found in the issue-8 guarantees, each pinned by a test that failed before."""

from __future__ import annotations

import base64
from pathlib import Path

from conftest import TOKEN


def error_line(result) -> str:
    """The one error line (a warning naming the unreadable file may come before it)."""
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("bindpkcs11: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]

ZONE = "example.test"


def test_the_signing_key_is_the_activated_one_not_a_prepublished_successor(cli, tmp_path):
    """A successor made with --activate in the future (a rollover) must never be taken for the
    key that signs now: named start would wait for RRSIGs named does not make, and stop named."""
    from bindpkcs11.dnssec.keyfile import key_pairs_in
    from bindpkcs11.instancekeys import _active

    keys = tmp_path / "keys"
    current = cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software",
                       "--key-dir", str(keys))
    cli.json("keygen", ZONE, "--role", "zsk", "--algorithm", "13", "--software", "--key-dir",
             str(keys), "--publish", "now", "--activate", "now+2d")
    pairs = key_pairs_in(keys)
    for order in (pairs, list(reversed(pairs))):
        assert _active(order, 13, TOKEN, "zsk", on_token=False).tag == current["tag"]


def test_an_unreadable_key_file_blocks_destroying_keys(token_cli):
    """A key file the guard cannot read (here: a Label carrying a PIN, which older versions
    accepted) may be the only record of a live key: one --force must not destroy it."""
    key = token_cli.json("keygen", ZONE, "--role", "ksk", "--algorithm", "13")
    private = (token_cli.key_dir / Path(key["key_file"]).name).with_suffix(".private")
    lines = private.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Label:"):
            label = base64.b64decode(line.split(": ", 1)[1]).rstrip(b"\0") + b"?pin-value=1234\0"
            lines[index] = "Label: " + base64.b64encode(label).decode()
    private.write_text("\n".join(lines) + "\n")
    error = error_line(token_cli("token", "delete", "--label", TOKEN, "--object",
                                 key["object_label"], "--type", "private", "--force", check=False))
    assert private.with_suffix(".key").name in error and "1234" not in error
    error = error_line(token_cli("token", "erase", "--label", TOKEN, "--force", "--yes",
                                 check=False))
    assert "cannot be read" in error
    shown = token_cli.json("token", "show", "--label", TOKEN)["objects"]
    assert any(o["object"]["label"] == key["object_label"] for o in shown)
    token_cli("token", "delete", "--label", TOKEN, "--object", key["object_label"], "--type",
              "private", "--force", "--force")
