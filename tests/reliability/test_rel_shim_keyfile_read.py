"""Issue 8, bad input: key files are read with a byte limit and must be regular files.

A FIFO named like a key file blocked every command that lists a key directory, and /dev/zero
behind a key file name filled memory. Now reading fails at once with one line naming the file,
and commands that scan a key directory carry on without it. Real CLI, real SoftHSM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO, TOKEN

READ = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # the old code read /dev/zero forever
    from bindpkcs11.dnssec.keyfile import read_key_pair
    from bindpkcs11.errors import KeyFileError
    try:
        read_key_pair(sys.argv[1])
    except KeyFileError as error:
        print("KeyFileError:", error)
""")


def read_in_child(key_path, env) -> str:
    """read_key_pair in a fresh process with a memory cap; a hang is a TimeoutExpired (a failure)."""
    result = subprocess.run([sys.executable, "-c", READ, str(key_path)], capture_output=True, text=True,
                            env=env, timeout=30, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def a_key_pair(token_cli):
    key = token_cli.json("keygen", "example.test", "--role", "zsk", "--algorithm", "ECDSAP256SHA256")
    key_file = token_cli.key_dir / os.path.basename(key["key_file"])
    return key_file, key_file.with_suffix(".private")


def test_fifo_or_dev_zero_as_key_file_fails_with_one_line(token_cli, tmp_path):
    key_file, private = a_key_pair(token_cli)
    fifo_dir, zero_dir = tmp_path / "fifo", tmp_path / "zero"
    for directory in (fifo_dir, zero_dir):
        directory.mkdir()
        (directory / private.name).write_bytes(private.read_bytes())
    os.mkfifo(fifo_dir / key_file.name)
    (zero_dir / key_file.name).write_bytes(key_file.read_bytes())
    (zero_dir / private.name).unlink()
    (zero_dir / private.name).symlink_to("/dev/zero")

    fifo = read_in_child(fifo_dir / key_file.name, token_cli.env)
    assert fifo == f"KeyFileError: key file {fifo_dir / key_file.name} is a FIFO: give a regular file"
    zero = read_in_child(zero_dir / key_file.name, token_cli.env)
    assert zero == (f"KeyFileError: key file {zero_dir / private.name} is a character device: "
                    "give a regular file")


def test_a_fifo_in_the_key_directory_does_not_hang_token_show(token_cli):
    key_file, private = a_key_pair(token_cli)
    stem = "Kexample.test.+013+00001"
    os.mkfifo(token_cli.key_dir / f"{stem}.key")
    (token_cli.key_dir / f"{stem}.private").write_bytes(private.read_bytes())
    result = token_cli("token", "show", "--label", TOKEN, "--json", timeout=60)
    report = json.loads(result.stdout)
    fifo = token_cli.key_dir / f"{stem}.key"
    assert f"warning: skipping a key pair: key file {fifo} is a FIFO" in result.stderr
    matched = [o for o in report["objects"] if o.get("dnssec") and o["dnssec"].get("key_file")]
    assert {os.path.basename(o["dnssec"]["key_file"]) for o in matched} == {key_file.name}
