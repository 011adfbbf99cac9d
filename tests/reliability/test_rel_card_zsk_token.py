"""Issue 9, `setup-inline --zsk-token` under bad input, and the guard over every token of a card:
one clear line, nothing created (no instance, no key on any token), the card not even asked when
the request itself is wrong; and since resetting an OpenPGP card wipes both of its tokens, `token
init`/`erase` through one of them is refused while a key on the other is in use."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from card_fixtures import CARD_TOKEN, card_cli, card_token, record, sc  # noqa: F401 - fixtures
from conftest import one_line_error
from test_inline import ZONE, inline_cli, setup  # noqa: F401 - fixtures

SIG_TOKEN = "OpenPGP card (User PIN (sig))"
FROZEN_TIMEOUT = 30


def inline_args(cli, *extra: str) -> tuple[str, ...]:
    port, rndc_port = cli.ports
    return ("setup-inline", ZONE, "--token", CARD_TOKEN, "--algorithm", "RSASHA256",
            "--port", str(port), "--rndc-port", str(rndc_port), *extra)


def private_keys(cli, label: str) -> list[dict]:
    shown = json.loads(sc(cli, "token", "show", "--label", label, "--json").stdout)
    return [o for o in shown["objects"] if o["object"]["object_class"] == "private"]


def nothing_made(cli) -> bool:
    return (not (cli.state_dir / "instances" / ZONE).exists()
            and private_keys(cli, CARD_TOKEN) == [] and private_keys(cli, SIG_TOKEN) == [])


def test_rel_card_zsk_token_wrong_requests_are_refused_before_the_card_is_asked(card_token,
                                                                              patched_bind):
    """The card process is stopped (SIGSTOP): a command that returns promptly never talked to it."""
    cli = card_token
    pid = record(cli)["bridge_pid"]
    cases = [(("--zsk-token", CARD_TOKEN), f"--zsk-token '{SIG_TOKEN}'"),  # one key per token
             (("--zsk-token", SIG_TOKEN, "--zsk-on", "software"), "give one of them"),
             (("--zsk-on", "token"), f"--zsk-token '{SIG_TOKEN}'")]
    os.kill(pid, signal.SIGSTOP)
    try:
        for extra, wanted in cases:
            started = time.monotonic()
            result = sc(cli, *inline_args(cli, *extra), check=False, timeout=FROZEN_TIMEOUT)
            line = one_line_error(result)
            assert wanted in line and result.returncode == 2, (extra, line)
            assert time.monotonic() - started < FROZEN_TIMEOUT
    finally:
        os.kill(pid, signal.SIGCONT)
    assert nothing_made(cli)


def test_rel_card_unknown_zsk_token_names_the_cards_tokens_and_makes_nothing(card_token,
                                                                           patched_bind):
    cli = card_token
    result = sc(cli, *inline_args(cli, "--zsk-token", "OpenPGP card (Admin PIN)"), check=False,
                timeout=120)
    line = one_line_error(result)
    assert "--zsk-token 'OpenPGP card (Admin PIN)' not found" in line and SIG_TOKEN in line
    assert result.returncode != 0 and nothing_made(cli)


def test_rel_card_reset_through_one_token_is_refused_while_the_other_holds_a_key(card_token):
    """The ZSK slot's key is made with the PINs `token init` stored for the card (its tokens share
    them); then neither `token init` nor `token erase` through the other token may reset the card."""
    cli = card_token
    key = json.loads(sc(cli, "keygen", ZONE, "--role", "zsk", "--algorithm", "RSASHA256",
                        "--token", SIG_TOKEN, "--json", timeout=180).stdout)
    assert private_keys(cli, CARD_TOKEN) == []
    init = sc(cli, "token", "init", "--label", CARD_TOKEN, "--generate-pins", check=False)
    assert "already exists" in one_line_error(init)
    erase = sc(cli, "token", "erase", "--label", CARD_TOKEN, "--force", "--yes", check=False,
               timeout=120)
    line = one_line_error(erase)
    assert "refusing to erase" in line and f"+{key['tag']:05d}" in line
    assert [k["dnssec"]["tag"] for k in private_keys(cli, SIG_TOKEN)] == [key["tag"]]


def test_rel_zsk_token_with_another_pin_is_refused_before_any_key_is_made(inline_cli):
    """named's shim logs in to both tokens with the instance's one PIN: a ZSK token whose user PIN
    differs is refused after one login, before a key or an instance exists."""
    cli = inline_cli
    for label in ("bindpkcs11", "zsk"):
        cli("token", "init", "--label", label, "--generate-pins")
    result = setup(cli, "--zsk-token", "zsk", check=False)
    line = one_line_error(result)
    assert "same user PIN" in line and "'zsk'" in line and result.returncode == 5
    for label in ("bindpkcs11", "zsk"):
        assert cli.json("token", "show", "--label", label)["objects"] == []
    assert not (cli.state_dir / "instances" / ZONE).exists()


@pytest.mark.parametrize("label, wanted", [("zsk\n", "control characters"),
                                           ("x" * 33, "33 bytes long")])
def test_rel_zsk_token_label_a_token_cannot_carry_is_one_line(inline_cli, label, wanted):
    result = setup(inline_cli, "--zsk-token", label, check=False)
    assert wanted in one_line_error(result) and result.returncode == 2
    assert not (inline_cli.state_dir / "instances").exists()
