"""Issue 10 faults of the SmartCard-HSM DKEK scheme, against the SCRIPTED STAND-IN of sc-hsm-tool
(tests/test_backup_schsm_stand_in.py says what it is): a wrong share password, a wrong user PIN
(tried once), share counts the card cannot take, a failing tool, and a wrap file of another scheme:
one clear line each, the stand-in card's state unchanged, no secret on any command line."""

from __future__ import annotations

import json

from conftest import Cli, clean_env, one_line_error
from test_backup_schsm_stand_in import (OBJECT, PROFILE, TOKEN, card_key_file, card_state, hsm,  # noqa: F401
                                        import_share, install_stand_in, make_shares, new_card,
                                        no_secret_on_argv, passwords)


def test_sc_hsm_stand_in_wrong_share_password_is_one_line_and_the_card_keeps_its_shares(hsm, tmp_path):
    shares, pws = make_shares(hsm, tmp_path)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    wrong.chmod(0o600)
    error = one_line_error(import_share(hsm, shares[0], wrong, check=False))
    assert "wrong password for DKEK share" in error and str(shares[0]) in error
    assert card_state(hsm.card)["imported"] == 0
    no_secret_on_argv(hsm.argv_log, "not the password")


def test_sc_hsm_stand_in_wrong_user_pin_at_wrap_is_tried_once(hsm, tmp_path):
    shares, pws = make_shares(hsm, tmp_path)
    for share, pw in zip(shares, pws):
        import_share(hsm, share, pw)
    card_key_file(hsm, tmp_path)
    bad = tmp_path / "bad.pin"
    bad.write_text("999999\n")
    bad.chmod(0o600)
    wrap = tmp_path / "ksk.wrap"
    error = one_line_error(hsm(*PROFILE, "--pin-file", str(bad), "backup", "wrap", "--token",
                               TOKEN, "--object", OBJECT, "--key-reference", "1", "--out",
                               str(wrap), check=False))
    assert "wrong user PIN" in error
    assert card_state(hsm.card)["pin_tries"] == 1 and not wrap.exists()
    no_secret_on_argv(hsm.argv_log, "999999")


def test_sc_hsm_stand_in_share_counts_and_a_failing_tool_are_one_line_each(hsm, tmp_path):
    pws = passwords(tmp_path, 3)
    threshold = one_line_error(hsm(*PROFILE, "backup", "make-shares", "--shares", "3",
                                   "--threshold", "2", "--out", str(tmp_path / "t"),
                                   *sum((["--password-file", str(p)] for p in pws), []),
                                   check=False))
    assert "needs all of its DKEK shares" in threshold and not (tmp_path / "t").exists()
    assert not hsm.argv_log.exists()  # refused before the card was asked

    shares, pws = make_shares(hsm, tmp_path)
    card_key_file(hsm, tmp_path)
    incomplete = one_line_error(hsm(*PROFILE, "--pin-file", str(hsm.pin_file), "backup", "wrap",
                                    "--token", TOKEN, "--object", OBJECT, "--key-reference", "1",
                                    "--out", str(tmp_path / "w"), check=False))
    assert "lacks 2 of 2 shares" in incomplete
    no_reference = one_line_error(hsm(*PROFILE, "backup", "wrap", "--token", TOKEN, "--object",
                                      OBJECT, "--out", str(tmp_path / "w"), check=False))
    assert "--key-reference" in no_reference

    no_dkek = new_card(tmp_path, "no-dkek", shares=0)
    install_stand_in(hsm.tools, no_dkek)
    error = one_line_error(import_share(hsm, shares[0], pws[0], check=False))
    assert "initialised without DKEK shares" in error

    broken = new_card(tmp_path, "broken")
    state = card_state(broken) | {"fail": "Failed to connect to card: Transmission failed"}
    broken.write_text(json.dumps(state))
    install_stand_in(hsm.tools, broken)
    error = one_line_error(import_share(hsm, shares[0], pws[0], check=False))
    assert "sc-hsm-tool" in error and "Transmission failed" in error


def test_sc_hsm_stand_in_refuses_a_pkcs11_wrap_file_in_one_line(hsm, tmp_path):
    """A wrap file made with a PKCS#11 KEK (two SoftHSM tokens' scheme) is not the card's."""
    shares, pws = make_shares(hsm, tmp_path)
    for share, pw in zip(shares, pws):
        import_share(hsm, share, pw)
    soft = Cli(tmp_path / "soft-state", clean_env())
    soft("token", "init", "--label", "A", "--generate-pins")
    from test_backup_ceremony import import_share as soft_import, make_shares as soft_shares

    kek_shares, kek_pws, _ = soft_shares(soft, tmp_path, out="kek")
    for index in (0, 1):
        soft_import(soft, kek_shares[index], kek_pws[index], "A")
    ksk = soft.json("keygen", "example.test", "--role", "ksk", "--algorithm", "13", "--token",
                    "A", "--backup")
    wrap = tmp_path / "soft.wrap"
    soft("backup", "wrap", "--token", "A", "--object", ksk["object_label"], "--out", str(wrap))
    before = card_state(hsm.card)
    error = one_line_error(hsm(*PROFILE, "--pin-file", str(hsm.pin_file), "backup", "unwrap",
                               str(wrap), "--token", TOKEN, "--key-reference", "2", check=False))
    assert "CKM_AES_KEY_WRAP_PAD" in error and "key import" in error
    assert card_state(hsm.card) == before
