"""`bindpkcs11 bench` under bad input and faults: one line, no key left on the token."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, SOFTHSM_MODULE, SPY_MODULE, TRUST_MODULE, default_sigint, one_line_error
from test_bench import bench_objects


@pytest.mark.parametrize("args, expected", [
    (["--sessions", "0"], "--sessions"), (["--sessions", "1,x"], "--sessions"),
    (["--sessions", ""], "--sessions"), (["--seconds", "0"], "--seconds"),
    (["--seconds", "-1"], "--seconds"), (["--algorithm", "DSA"], "unknown algorithm"),
    (["--algorithm", "13", "--bits", "2048"], "--bits applies to RSA"),
    (["--token", "nosuch"], "nosuch"),
])
def test_bad_input_is_one_line_and_makes_no_key(token_cli, args, expected):
    error = one_line_error(token_cli("bench", *args, check=False))
    assert expected in error
    assert bench_objects(token_cli) == []


def test_an_algorithm_the_token_lacks_makes_no_key(token_cli):
    """p11-kit's trust module is a real token that cannot generate keys."""
    error = one_line_error(token_cli("bench", "--module", TRUST_MODULE, "--token", "System Trust",
                                     "--algorithm", "ED25519", check=False))
    assert "cannot generate" in error


def test_a_wrong_pin_is_tried_once(token_cli, tmp_path):
    log = tmp_path / "spy.log"
    env = {"PKCS11_LIBRARY_PIN": "wrong-pin", "PKCS11SPY": SOFTHSM_MODULE, "PKCS11SPY_OUTPUT": str(log)}
    error = one_line_error(token_cli("bench", "--module", SPY_MODULE, "--seconds", "0.2",
                                     check=False, env=env))
    assert "wrong user PIN" in error and "wrong-pin" not in error
    assert log.read_text().count("C_Login") == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_bench_destroys_its_key(token_cli, signum):
    """Ctrl-C or a service manager's SIGTERM in the middle of the signing loop."""
    command = [sys.executable, "-m", "bindpkcs11", "--state-dir", str(token_cli.state_dir), "bench",
               "--sessions", "1", "--seconds", "60"]
    process = subprocess.Popen(command, env=token_cli.env, cwd=REPO, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 60
        for line in process.stderr:  # progress lines: wait until the loop runs
            if "signing with" in line or time.monotonic() > deadline:
                break
        process.send_signal(signum)
        rest = process.stderr.read()
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode in (130, 143), rest
    assert "destroyed the temporary key" in rest
    assert bench_objects(token_cli) == []
