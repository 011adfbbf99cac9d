"""Issue 9, the opencryptoki profile under bad input and faults: one clear line, nothing created,
the device not touched when the request cannot be met, a wrong PIN tried exactly once (the soft
token counts failures: USER_PIN_COUNT_LOW after one, FINAL_TRY after two, locked at three)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from conftest import Cli, clean_env, one_line_error
from occ_fixtures import (  # noqa: F401 - fixtures
    OCC_TOKEN,
    in_sandbox,
    needs_opencryptoki,
    oc,
    occ_cli,
    occ_token,
    sandbox_pid,
)
from bindpkcs11.token.profiles.opencryptoki import slot_daemon_socket

EXIT_UNSUPPORTED = 8  # AlgorithmUnsupported
EXIT_NOT_RUNNING = 3
FROZEN_TIMEOUT = 30

pytestmark = needs_opencryptoki


def token_flags(cli: Cli) -> str:
    """The soft token's flags as pkcsconf prints them (read inside the sandbox)."""
    out = in_sandbox(cli, "pkcsconf", "-t").stdout
    return next(line for line in out.splitlines() if "Flags:" in line)


def test_ec_keys_and_ec_bench_are_refused_before_the_device_naming_rsa(occ_token: Cli):
    pid = sandbox_pid(occ_token)
    os.kill(pid, signal.SIGSTOP)  # a module that talked to pkcsslotd now would hang
    try:
        began = time.monotonic()
        commands = [("keygen", "example.test", "--role", role, "--algorithm", alg, "--token",
                     OCC_TOKEN) for role, alg in (("ksk", "13"), ("zsk", "14"), ("ksk", "15"))]
        commands.append(("bench", "--token", OCC_TOKEN, "--algorithm", "13", "--sessions", "1",
                         "--seconds", "1"))
        results = [oc(occ_token, *command, check=False, timeout=FROZEN_TIMEOUT)
                   for command in commands]
        assert time.monotonic() - began < FROZEN_TIMEOUT
    finally:
        os.kill(pid, signal.SIGCONT)
    for result in results:
        assert result.returncode == EXIT_UNSUPPORTED
        line = one_line_error(result)
        assert "opencryptoki" in line and "RSA-2048, RSA-3072, RSA-4096" in line
    assert not list(occ_token.key_dir.glob("K*"))
    assert "example.test" not in oc(occ_token, "token", "show", "--label", OCC_TOKEN).stdout


def test_pins_outside_4_to_8_characters_or_the_factory_so_pin_are_refused(occ_cli: Cli,
                                                                         tmp_path: Path):
    for pin in ("123", "123456789"):
        pin_file = tmp_path / "pin"
        pin_file.write_text(pin + "\n")
        pin_file.chmod(0o600)
        result = oc(occ_cli, "token", "init", "--label", OCC_TOKEN, "--pin-file", str(pin_file),
                    "--generate-pins", check=False)
        line = one_line_error(result)
        assert "user PIN" in line and ("at least 4" in line or "at most 8" in line)
        assert "uninitialized" in oc(occ_cli, "token", "list").stdout
        assert not list(occ_cli.state_dir.glob("pins/*"))
    factory = tmp_path / "so-pin"
    factory.write_text("87654321\n")
    factory.chmod(0o600)
    result = oc(occ_cli, "token", "init", "--label", OCC_TOKEN, "--so-pin-file", str(factory),
                "--generate-pins", check=False)
    assert "factory SO PIN" in one_line_error(result)
    assert "uninitialized" in oc(occ_cli, "token", "list").stdout
    assert not list(occ_cli.state_dir.glob("pins/*"))
    oc(occ_cli, "token", "init", "--label", OCC_TOKEN, "--generate-pins")
    assert len((occ_cli.state_dir / "pins" / f"{OCC_TOKEN}.pin").read_text().strip()) == 8


def test_a_wrong_user_pin_is_tried_once(occ_token: Cli, tmp_path: Path):
    wrong = tmp_path / "wrong"
    wrong.write_text("0000\n")
    wrong.chmod(0o600)
    assert "USER_PIN_COUNT_LOW" not in token_flags(occ_token)
    result = oc(occ_token, "keygen", "example.test", "--role", "ksk", "--algorithm", "8",
                "--token", OCC_TOKEN, "--pin-file", str(wrong), check=False)
    line = one_line_error(result)
    assert "wrong user PIN" in line and "attempted once" in line
    flags = token_flags(occ_token)
    assert "USER_PIN_COUNT_LOW" in flags and "FINAL_TRY" not in flags, flags  # exactly one
    assert "example.test" not in oc(occ_token, "token", "show", "--label", OCC_TOKEN).stdout


def test_a_wrong_so_pin_on_erase_is_tried_once_and_nothing_is_lost(occ_token: Cli,
                                                                    tmp_path: Path):
    oc(occ_token, "keygen", "example.test", "--role", "ksk", "--algorithm", "8", "--token",
       OCC_TOKEN)
    wrong = tmp_path / "wrong-so"
    wrong.write_text("11111111\n")
    wrong.chmod(0o600)
    result = oc(occ_token, "token", "erase", "--label", OCC_TOKEN, "--so-pin-file", str(wrong),
                "--force", "--yes", "--destroy-active-keys", check=False)
    assert "wrong SO PIN" in one_line_error(result)
    flags = token_flags(occ_token)
    assert "SO_PIN_COUNT_LOW" in flags and "SO_PIN_FINAL_TRY" not in flags, flags  # exactly one
    assert "example.test-ksk" in oc(occ_token, "token", "show", "--label", OCC_TOKEN).stdout


def test_a_sandbox_whose_pkcsslotd_died_is_one_clear_line(occ_token: Cli):
    pid = sandbox_pid(occ_token)
    os.kill(pid, signal.SIGKILL)
    for args in (("token", "list"), ("keygen", "example.test", "--role", "ksk", "--algorithm",
                                     "8", "--token", OCC_TOKEN)):
        result = oc(occ_token, *args, check=False)
        assert result.returncode == EXIT_NOT_RUNNING
        line = one_line_error(result)
        assert "sandbox" in line and "not running" in line and "sandbox start" in line
    status = occ_token("opencryptoki", "sandbox", "status", check=False)
    assert status.returncode == EXIT_NOT_RUNNING
    occ_token("opencryptoki", "sandbox", "start")  # a restart brings the same token back
    assert OCC_TOKEN in oc(occ_token, "token", "list").stdout


def test_no_pkcsslotd_on_the_machine_is_one_clear_line(tmp_path: Path):
    if slot_daemon_socket() is not None:
        pytest.skip("this machine runs its own pkcsslotd")
    cli = Cli(tmp_path / "state", clean_env())
    result = oc(cli, "token", "init", "--label", OCC_TOKEN, "--generate-pins", check=False)
    assert result.returncode == EXIT_NOT_RUNNING
    line = one_line_error(result)
    assert "pkcsslotd is not running on this machine" in line
    assert "systemctl start pkcsslotd" in line and "sandbox start" in line
    assert not list(cli.state_dir.glob("pins/*"))
