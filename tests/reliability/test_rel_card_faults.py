"""Issue 9, the opensc profile on the emulated OpenPGP card under bad input and faults: one clear
line, nothing created or lost, the card untouched when the request cannot be met, a wrong PIN tried
exactly once (the card counts it: OpenPGP cards lock a PIN after 3)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from card_fixtures import (  # noqa: F401 - fixtures
    CARD_KEY,
    CARD_TOKEN,
    card_cli,
    card_token,
    record,
    sc,
    tries_left,
)
from conftest import one_line_error

ZONE = "example.test"
FROZEN_TIMEOUT = 30


def private_keys(cli) -> list[dict]:
    shown = json.loads(sc(cli, "token", "show", "--label", CARD_TOKEN, "--json").stdout)
    return [o for o in shown["objects"] if o["object"]["object_class"] == "private"]


def secret(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def frozen_card(card_token):
    """The card process stopped with SIGSTOP: any APDU would hang until SIGCONT, so a command
    that returns promptly cannot have talked to the card."""
    pid = record(card_token)["bridge_pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield card_token
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("algorithm, named", [("ECDSAP256SHA256", "ECDSA P-256"),
                                               ("ED25519", "Ed25519")])
def test_rel_card_ec_is_refused_before_the_card_is_touched_naming_rsa_2048(frozen_card, algorithm,
                                                                            named):
    started = time.monotonic()
    result = sc(frozen_card, "keygen", ZONE, "--role", "ksk", "--algorithm", algorithm,
                "--token", CARD_TOKEN, check=False, timeout=FROZEN_TIMEOUT)
    line = one_line_error(result)
    assert result.returncode == 8 and named in line and "RSA-2048" in line
    assert time.monotonic() - started < FROZEN_TIMEOUT
    assert not list(frozen_card.key_dir.glob("K*"))


def test_rel_card_rsa_sizes_the_card_lacks_are_refused_before_the_card(frozen_card):
    result = sc(frozen_card, "keygen", ZONE, "--role", "ksk", "--algorithm", "RSASHA256",
                "--bits", "3072", "--token", CARD_TOKEN, check=False, timeout=FROZEN_TIMEOUT)
    line = one_line_error(result)
    assert result.returncode == 8 and "RSA-3072" in line and "RSA-2048" in line


def test_rel_card_removed_is_one_line_and_the_key_survives_reinsertion(card_token):
    cli = card_token
    sc(cli, "keygen", ZONE, "--role", "ksk", "--algorithm", "RSASHA256", "--token", CARD_TOKEN,
       timeout=180)
    os.kill(record(cli)["bridge_pid"], signal.SIGTERM)  # the card leaves the reader
    for args in (("token", "show", "--label", CARD_TOKEN),
                 ("keygen", ZONE, "--role", "zsk", "--algorithm", "RSASHA256", "--token", CARD_TOKEN),
                 ("token", "rng", "--label", CARD_TOKEN, "--bytes", "8")):
        result = sc(cli, *args, check=False, timeout=60)
        line = one_line_error(result)
        assert "not in its reader" in line and "card simulator start" in line, line
        assert result.returncode == 3
    cli("card", "simulator", "start", timeout=90)
    assert [k["object"]["label"] for k in private_keys(cli)] == [CARD_KEY]


def test_rel_card_wrong_user_pin_is_tried_exactly_once(card_token, tmp_path):
    cli = card_token
    assert tries_left(cli)["User PIN"] == 3
    wrong = secret(tmp_path, "wrong.pin", "not-the-pin")
    result = sc(cli, "token", "show", "--label", CARD_TOKEN, "--pin-file", str(wrong), check=False)
    line = one_line_error(result)
    assert "wrong user PIN" in line and "attempted once" in line and result.returncode == 5
    assert tries_left(cli)["User PIN"] == 2  # the card counted one failure, no retry
    sc(cli, "token", "show", "--label", CARD_TOKEN)  # the right PIN still works (and resets it)
    assert tries_left(cli)["User PIN"] == 3


def test_rel_card_wrong_so_pin_on_keygen_and_erase_is_tried_once_and_nothing_is_lost(card_token,
                                                                                     tmp_path):
    cli = card_token
    sc(cli, "keygen", ZONE, "--role", "ksk", "--algorithm", "RSASHA256", "--token", CARD_TOKEN,
       timeout=180)
    before = private_keys(cli)
    wrong = secret(tmp_path, "wrong.so-pin", "not-the-admin-pin")
    erase = sc(cli, "token", "erase", "--label", CARD_TOKEN, "--force", "--yes",
               "--destroy-active-keys", "--so-pin-file", str(wrong), check=False, timeout=120)
    line = one_line_error(erase)
    assert "wrong SO PIN" in line and erase.returncode == 5
    assert tries_left(cli)["Admin PIN"] == 2
    assert private_keys(cli) == before


def test_rel_card_keygen_never_replaces_the_key_in_the_cards_slot(card_token):
    cli = card_token
    first = sc(cli, "keygen", ZONE, "--role", "ksk", "--algorithm", "RSASHA256", "--token",
               CARD_TOKEN, "--json", timeout=180)
    tag = json.loads(first.stdout)["tag"]
    again = sc(cli, "keygen", ZONE, "--role", "zsk", "--algorithm", "RSASHA256", "--token",
               CARD_TOKEN, check=False, timeout=180)
    line = one_line_error(again)
    assert "'Authentication key' already exists" in line
    assert len(list(cli.key_dir.glob("K*.key"))) == 1
    shown = private_keys(cli)
    assert [k["dnssec"]["tag"] for k in shown if k["dnssec"]] == [tag]
    init = sc(cli, "token", "init", "--label", CARD_TOKEN, "--generate-pins", check=False)
    assert "already exists" in one_line_error(init)  # token init would wipe it: refused


@pytest.mark.parametrize("kind, pin, rule", [("user", "12345", "at least 6"),
                                             ("so", "1234567", "at least 8")])
def test_rel_card_pins_outside_the_openpgp_rules_are_refused_before_the_card_is_reset(
        card_cli, tmp_path, kind, pin, rule):
    """OpenPGP: user PIN 6+, admin PIN 8+. `token init` resets the card with openpgp-tool; a PIN
    the card would refuse stops it first (the tool is never run: a recorder would log it)."""
    log = tmp_path / "argv.log"
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    for tool in ("openpgp-tool", "pkcs15-tool"):
        (wrappers / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexit 1\n')
        (wrappers / tool).chmod(0o755)
    good = {"user": "123456", "so": "12345678"}
    good[kind] = pin
    user = secret(tmp_path, "user.pin", good["user"])
    so = secret(tmp_path, "so.pin", good["so"])
    result = sc(card_cli, "token", "init", "--label", CARD_TOKEN, "--pin-file", str(user),
                "--so-pin-file", str(so), check=False,
                env={"PATH": f"{wrappers}:{os.environ['PATH']}"})
    assert rule in one_line_error(result)
    assert not log.exists()


def test_rel_card_zsk_on_token_is_refused_before_anything_is_made(card_token, patched_bind):
    cli = card_token
    port, rndc_port = cli.ports
    result = sc(cli, "setup-inline", ZONE, "--token", CARD_TOKEN, "--algorithm", "RSASHA256",
                "--zsk-on", "token", "--port", str(port), "--rndc-port", str(rndc_port),
                check=False, timeout=120)
    line = one_line_error(result)
    assert "--zsk-on software" in line and "--zsk-token 'OpenPGP card (User PIN (sig))'" in line
    assert private_keys(cli) == [] and not (cli.state_dir / "instances" / ZONE).exists()
