"""Issue 9, the tpm2 profile under bad input and faults: one clear line, nothing created or lost,
the TPM untouched when the request cannot be met, a wrong PIN tried exactly once (the TPM counts
every failed authorisation towards its dictionary-attack lockout: swtpm locks after 3)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import one_line_error
from tpm2_fixtures import (  # noqa: F401 - fixtures
    TPM_TOKEN,
    lockout_counter,
    record,
    TPM2,
    tp,
    tpm2_cli,
    tpm2_token,
)

EXIT_UNSUPPORTED = 8  # AlgorithmUnsupported
FROZEN_TIMEOUT = 30


def store_files(cli) -> dict:
    store = cli.state_dir / "tpm2" / "store"
    return {p.name: p.stat().st_mtime_ns for p in store.iterdir()} if store.exists() else {}


@pytest.fixture
def frozen_tpm(tpm2_token):
    """The simulator's swtpm stopped with SIGSTOP: any TPM command would hang until SIGCONT, so a
    command that returns promptly did not touch the TPM."""
    pid = record(tpm2_token)["swtpm_pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield tpm2_token
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("command", ["keygen", "setup-inline"])
def test_ed25519_is_refused_before_the_tpm_is_touched_naming_what_it_can_do(frozen_tpm, command):
    before = store_files(frozen_tpm)
    if command == "keygen":
        args = ["keygen", "example.test", "--role", "ksk", "--algorithm", "ED25519",
                "--token", TPM_TOKEN]
    else:
        port, rndc_port = frozen_tpm.ports
        args = ["setup-inline", "example.test", "--token", TPM_TOKEN, "--algorithm", "ED25519",
                "--port", str(port), "--rndc-port", str(rndc_port)]
    started = time.monotonic()
    result = tp(frozen_tpm, *args, check=False, timeout=FROZEN_TIMEOUT)
    assert time.monotonic() - started < FROZEN_TIMEOUT
    line = one_line_error(result)
    assert "Ed25519" in line and "ECDSA P-256" in line and "ECDSA P-384" in line and "RSA-2048" in line
    assert result.returncode == EXIT_UNSUPPORTED
    assert store_files(frozen_tpm) == before
    assert not list(frozen_tpm.key_dir.glob("*")) if frozen_tpm.key_dir.exists() else True
    assert not (frozen_tpm.state_dir / "instances").exists() or not list(
        (frozen_tpm.state_dir / "instances").glob("*/keys/*"))


@pytest.fixture
def no_simulator():
    """A state dir whose simulator was never started."""
    if Path("/dev/tpmrm0").exists():
        pytest.skip("this machine has a TPM: the profile would use it")
    with TPM2.state_dir("bp11-tpm2-", started=False) as cli:
        yield cli


COMMANDS = [
    ("token", "list"),
    ("token", "init", "--label", TPM_TOKEN, "--generate-pins"),
    ("keygen", "example.test", "--role", "zsk", "--algorithm", "ECDSAP256SHA256", "--token", TPM_TOKEN),
]


@pytest.mark.parametrize("args", COMMANDS, ids=["list", "init", "keygen"])
def test_no_simulator_and_no_tpm_is_one_line_saying_how_to_start_one(no_simulator, args):
    result = tp(no_simulator, *args, check=False)
    line = one_line_error(result)
    assert "no TPM" in line and "bindpkcs11 tpm2 simulator start" in line and "--tcti" in line
    assert result.returncode == 3
    assert not (no_simulator.state_dir / "pins").exists() or not list(
        (no_simulator.state_dir / "pins").iterdir())


def test_a_stopped_simulator_is_one_line_and_the_token_survives_a_restart(tpm2_token):
    tp(tpm2_token, "keygen", "example.test", "--role", "zsk", "--algorithm", "ECDSAP256SHA256",
       "--token", TPM_TOKEN)
    tpm2_token("tpm2", "simulator", "stop")
    if not Path("/dev/tpmrm0").exists():
        line = one_line_error(tp(tpm2_token, "token", "show", "--label", TPM_TOKEN, check=False))
        assert "no TPM" in line and "simulator start" in line
    tpm2_token("tpm2", "simulator", "start")
    shown = json.loads(tp(tpm2_token, "token", "show", "--label", TPM_TOKEN, "--json").stdout)
    assert len(shown["objects"]) == 2  # the key pair made before the stop is still usable


def test_a_dead_abrmd_is_one_line_naming_it(tpm2_token):
    rec = record(tpm2_token)
    os.kill(rec["abrmd_pid"], signal.SIGKILL)
    for args in COMMANDS[0:1] + COMMANDS[2:]:
        line = one_line_error(tp(tpm2_token, *args, check=False))
        assert "not running" in line and "tpm2-abrmd gone" in line and "simulator start" in line
    status = tpm2_token("tpm2", "simulator", "status", check=False)
    assert status.returncode == 3 and "tpm2-abrmd: pid" in status.stdout and "gone" in status.stdout
    restarted = tpm2_token("tpm2", "simulator", "start")
    assert "started" in restarted.stdout
    assert TPM_TOKEN in tp(tpm2_token, "token", "list").stdout


def test_a_wrong_pin_is_tried_exactly_once(tpm2_token, tmp_path):
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("not-the-pin\n")
    wrong.chmod(0o600)
    before = lockout_counter(tpm2_token)
    result = tp(tpm2_token, "token", "show", "--label", TPM_TOKEN, "--pin-file", str(wrong),
                check=False)
    line = one_line_error(result)
    assert "wrong user PIN" in line and "attempted once" in line and result.returncode == 5
    assert lockout_counter(tpm2_token) == before + 1  # the TPM saw one failed authorisation
    assert TPM_TOKEN in tp(tpm2_token, "token", "list").stdout


def test_a_wrong_so_pin_on_erase_is_tried_once_and_nothing_is_erased(tpm2_token, tmp_path):
    tp(tpm2_token, "keygen", "example.test", "--role", "zsk", "--algorithm", "ECDSAP256SHA256",
       "--token", TPM_TOKEN)
    wrong = tmp_path / "wrong.so-pin"
    wrong.write_text("not-the-so-pin\n")
    wrong.chmod(0o600)
    before = lockout_counter(tpm2_token)
    result = tp(tpm2_token, "token", "erase", "--label", TPM_TOKEN, "--force", "--yes",
                "--destroy-active-keys",
                "--so-pin-file", str(wrong), check=False)
    line = one_line_error(result)
    assert "wrong SO PIN" in line and "attempted once" in line and result.returncode == 5
    assert lockout_counter(tpm2_token) == before + 1
    shown = json.loads(tp(tpm2_token, "token", "show", "--label", TPM_TOKEN, "--json").stdout)
    assert len(shown["objects"]) == 2


@pytest.mark.parametrize("pin, rule", [("abc", "at least 4"), ("x" * 129, "at most 128")])
def test_pins_outside_the_tpm_rules_are_refused_before_the_tpm(tpm2_cli, tmp_path, pin, rule):
    pin_file = tmp_path / "user.pin"
    pin_file.write_text(pin + "\n")
    pin_file.chmod(0o600)
    before = store_files(tpm2_cli)
    result = tp(tpm2_cli, "token", "init", "--label", TPM_TOKEN, "--pin-file", str(pin_file),
                env={"PKCS11_SO_PIN": "so-pin-1234"}, check=False)
    assert rule in one_line_error(result) and result.returncode == 2
    assert store_files(tpm2_cli) == before
    listed = json.loads(tp(tpm2_cli, "token", "list", "--json").stdout)
    assert TPM_TOKEN not in [t["label"] for t in listed]


def test_initialising_an_existing_label_again_is_refused(tpm2_token):
    line = one_line_error(tp(tpm2_token, "token", "init", "--label", TPM_TOKEN, "--generate-pins",
                             check=False))
    assert "already exists" in line
    assert [t["label"] for t in json.loads(tp(tpm2_token, "token", "list", "--json").stdout)
            ].count(TPM_TOKEN) == 1


def test_a_tpm_in_lockout_says_so_instead_of_blaming_the_user_pin(tpm2_token, tmp_path):
    """swtpm locks out after 3 failed authorisations: then even the right PIN fails, and the
    message must say it is the TPM's lockout (not 'unlock it with the SO PIN', which fails too)."""
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("not-the-pin\n")
    wrong.chmod(0o600)
    for _ in range(3):
        tp(tpm2_token, "token", "show", "--label", TPM_TOKEN, "--pin-file", str(wrong), check=False)
    assert lockout_counter(tpm2_token) == 3
    line = one_line_error(tp(tpm2_token, "token", "show", "--label", TPM_TOKEN, check=False))
    assert "dictionary-attack lockout" in line and "SO PIN" not in line


def test_a_failed_simulator_start_leaves_nothing_running(no_simulator, tmp_path):
    """tpm2-abrmd failing at start-up (here: a stand-in that exits 1): the swtpm and dbus-daemon
    already started for it are stopped again, no record is left, and the error names abrmd."""
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    fake = wrappers / "tpm2-abrmd"
    fake.write_text("#!/bin/sh\necho 'stand-in abrmd: cannot start' >&2\nexit 1\n")
    fake.chmod(0o755)
    result = no_simulator("tpm2", "simulator", "start", check=False,
                          env={"PATH": f"{wrappers}:{os.environ['PATH']}"})
    line = one_line_error(result)
    assert "tpm2-abrmd exited at start-up" in line and "stand-in abrmd" in line
    assert record(no_simulator) is None
    state = str(no_simulator.state_dir).encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            assert state not in cmdline, cmdline
