"""Issue 9, the opensc card kinds that cannot be emulated here (SmartCard-HSM / Nitrokey HSM,
MyEID, Feitian): their initialisation is tested against SCRIPTED STAND-INS of the vendor tools'
dialogs, not against the tools or cards themselves. Each stand-in prints the real tool's prompts
(from OpenSC's sc-hsm-tool.c and pkcs15-init.c), reads each answer from its terminal without echo
as the real tool does, and records its argv and answers; the test checks that every PIN went to
its prompt and none to the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bindpkcs11.errors import UsageError
from bindpkcs11.state import StateDir
from bindpkcs11.token.profiles import TokenPins, get_profile
from bindpkcs11.token.profiles.opensc import CardMissing, run_dialog

PINS = TokenPins(user="424242", so="0123456789ABCDEF")

# The stand-in: prompts taken from the real tools; answers read with getpass (no echo, from the tty).
STAND_IN = '''#!{python}
import getpass, json, sys
LOG = {log!r}
PROMPTS = {prompts!r}
FAIL = {fail!r}
answers = []
for prompt in PROMPTS.get(sys.argv[1], []):
    for line in prompt[:-1]:
        print(line, flush=True)
    answers.append(getpass.getpass(prompt[-1]))
with open(LOG, "a") as log:
    log.write(json.dumps({{"argv": sys.argv, "answers": answers}}) + "\\n")
if FAIL:
    print(FAIL, file=sys.stderr)
    sys.exit(1)
'''

SC_HSM_PROMPTS = {"--initialize": [["Enter SO-PIN (16 hexadecimal characters) : "],
                                   ["Enter initial User-PIN (6 - 16 characters) : "]]}
PKCS15_INIT_PROMPTS = {
    "--erase-card": [],
    "--create-pkcs15": [
        ["New User PIN.", "Please enter User PIN: "],
        ["Please type again to verify: "],
        ["Unblock Code for New User PIN (Optional - press return for no PIN).",
         "Please enter User unblocking PIN (PUK): "],
        ["Please type again to verify: "],
    ],
}


def stand_in(directory: Path, tool: str, prompts: dict, log: Path, fail: str = "") -> None:
    path = directory / tool
    path.write_text(STAND_IN.format(python=sys.executable, log=str(log), prompts=prompts, fail=fail))
    path.chmod(0o755)


@pytest.fixture
def tools(tmp_path, monkeypatch):
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}:/usr/bin:/bin")
    return directory


def runs(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_sc_hsm_initialise_with_dkek_shares_against_a_scripted_stand_in(tools, tmp_path,
                                                                        monkeypatch):
    log = tmp_path / "log"
    stand_in(tools, "sc-hsm-tool", SC_HSM_PROMPTS, log)
    monkeypatch.setenv("BINDPKCS11_DKEK_SHARES", "3")
    profile = get_profile("opensc-sc-hsm", StateDir(tmp_path / "state"))
    for dialog in profile.init_dialogs("dnssec"):
        run_dialog(dialog, PINS)
    (run,) = runs(log)
    assert run["argv"][1:] == ["--initialize", "--dkek-shares", "3", "--label", "dnssec"]
    assert run["answers"] == [PINS.so, PINS.user]
    assert PINS.so not in " ".join(run["argv"]) and PINS.user not in " ".join(run["argv"])


def test_sc_hsm_so_pin_must_be_16_hex_digits_before_the_stand_in_runs(tools, tmp_path):
    log = tmp_path / "log"
    stand_in(tools, "sc-hsm-tool", SC_HSM_PROMPTS, log)
    profile = get_profile("opensc-sc-hsm", StateDir(tmp_path / "state"))
    with pytest.raises(UsageError, match="16 hex digits"):
        profile.init_token("dnssec", TokenPins(user="424242", so="not-hex"))
    assert not log.exists()


@pytest.mark.parametrize("kind", ["myeid", "feitian"])
def test_pkcs15_init_erase_and_create_against_a_scripted_stand_in(tools, tmp_path, kind):
    log = tmp_path / "log"
    stand_in(tools, "pkcs15-init", PKCS15_INIT_PROMPTS, log)
    profile = get_profile(f"opensc-{kind}", StateDir(tmp_path / "state"))
    for dialog in profile.init_dialogs("dnssec"):
        run_dialog(dialog, PINS)
    erase, create = runs(log)
    assert erase["argv"][1:] == ["--erase-card", "--use-default-transport-keys"]
    assert create["argv"][1:] == ["--create-pkcs15", "--profile", "pkcs15+onepin",
                                  "--use-default-transport-keys", "--label", "dnssec"]
    # the user PIN twice, then its unblock code (the SO PIN) twice
    assert create["answers"] == [PINS.user, PINS.user, PINS.so, PINS.so]
    for run in (erase, create):
        assert all(pin not in " ".join(run["argv"]) for pin in (PINS.user, PINS.so))


def test_a_stand_in_without_a_card_is_one_clear_error(tools, tmp_path):
    log = tmp_path / "log"
    stand_in(tools, "pkcs15-init", PKCS15_INIT_PROMPTS, log, fail="Card not present.")
    profile = get_profile("opensc-myeid", StateDir(tmp_path / "state"))
    with pytest.raises(CardMissing, match="no card in the reader"):
        run_dialog(profile.init_dialogs("dnssec")[0], PINS)
